// Study (b): shared or fresh initial noise per layer? The lens on the embedded shapes model with
// `noise: shared` (every layer of a (prompt, seed) starts from the same noise: layers differ only by
// conditioning) and `noise: per-layer` (fresh noise per layer, as the official code draws it). Prints, per
// layer, how much each image changes from the previous layer's (mean |difference|, grey levels): with
// shared noise the change is the conditioning's alone.
//
//   node examples/noise-ablation.mjs             # DLENS_EXAMPLE_QUICK=1 for a reduced run
import { experimentImages, LensWorker, parseConfig } from 'diffusion-lens';
import { collect, meanAbsDiff, perLayer, printTable, quick } from './study-helpers.mjs';

const prompts = quick
  ? ['two large orange diamonds']
  : ['a small blue square in the center', 'two large orange diamonds', 'a green cross above a purple bar'];
const seeds = quick ? [0] : [0, 1, 2, 3];
const steps = quick ? 3 : 20;

const worker = await LensWorker.start();
const runs = {};
try {
  for (const noise of ['shared', 'per-layer']) {
    const config = parseConfig({ prompts, seeds, lens: { layers: 'all', noise }, sampler: { steps } });
    runs[noise] = await collect(experimentImages(config, { outDir: `runs/noise-ablation/${noise}`, worker }));
  }
} finally {
  await worker.close();
}

const fromPrevious = (run) => (item) =>
  meanAbsDiff(item.file, run.get(`${item.prompt_index}/${item.seed}/${item.layer - 1}`).file);
const later = (run) => [...run.values()].filter((item) => item.layer > 0);
printTable('mean |image at layer l - image at layer l-1|, grey levels', {
  shared: await perLayer(later(runs.shared), fromPrevious(runs.shared)),
  'per-layer': await perLayer(later(runs['per-layer']), fromPrevious(runs['per-layer'])),
});
