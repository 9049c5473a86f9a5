// Study (a): where does the unconditional branch come from? The lens on the embedded shapes model with
// `uncond: final` (the stock unconditional branch, the paper's setting) and `uncond: same-layer` (both
// branches from layer l), one worker for both runs. Prints, per layer, how far each setting's image is from
// its own final-layer image, and how far the two settings' images are from each other (mean |difference|,
// grey levels). Run it from the repository (or a project with diffusion-lens installed):
//
//   node examples/uncond-ablation.mjs            # DLENS_EXAMPLE_QUICK=1 for a reduced run
import { experimentImages, LensWorker, parseConfig } from 'diffusion-lens';
import { collect, meanAbsDiff, perLayer, printTable, quick } from './study-helpers.mjs';

const prompts = quick
  ? ['a large red circle at the left']
  : [
      'a large red circle at the left',
      'two small blue squares',
      'a green cross above a purple bar',
      'three small yellow triangles',
    ];
const seeds = quick ? [0] : [0, 1, 2, 3];
const steps = quick ? 3 : 20;

const worker = await LensWorker.start(); // started once, used by both runs
const runs = {};
try {
  for (const uncond of ['final', 'same-layer']) {
    const config = parseConfig({ prompts, seeds, lens: { layers: 'all', uncond }, sampler: { steps } });
    runs[uncond] = await collect(
      experimentImages(config, { outDir: `runs/uncond-ablation/${uncond}`, worker }),
    );
  }
} finally {
  await worker.close();
}

const items = [...runs.final.values()];
const last = Math.max(...items.map((item) => item.layer));
const toFinal = (run) => (item) =>
  meanAbsDiff(
    run.get(`${item.prompt_index}/${item.seed}/${item.layer}`).file,
    run.get(`${item.prompt_index}/${item.seed}/${last}`).file,
  );
printTable('mean |image - its final-layer image| and |final - same-layer|, grey levels', {
  'final→L': await perLayer(items, toFinal(runs.final)),
  'same-layer→L': await perLayer(items, toFinal(runs['same-layer'])),
  'final↔same': await perLayer(items, (item) =>
    meanAbsDiff(item.file, runs['same-layer'].get(`${item.prompt_index}/${item.seed}/${item.layer}`).file),
  ),
});
