#!/usr/bin/env node
// Writes configs/paper/*.yaml: one experiment file per model x prompt set of Diffusion Lens (Toker et al.,
// ACL 2024), from the table of models below and the prompt sets in configs/prompts/sets.yaml, so that all
// of them say the same things the same way. test/paper-presets.test.ts fails while the committed files
// differ from what this writes.
//
//   node scripts/paper-presets.mjs           write the files (and remove other *.yaml files in configs/paper/)
//   node scripts/paper-presets.mjs --check   write nothing; exit 1 naming each file that is missing or differs
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT_DIR = join('configs', 'paper');
const SETS_FILE = join('configs', 'prompts', 'sets.yaml');

/**
 * The models: each preset is `<key>-<set file name>.yaml`. `layers` is how many layers the spec selects on
 * the checkpoint's encoder (the header's image count; the test checks it against `plan`). `body` is the
 * YAML before `prompts`, as in the hand-written presets each one follows.
 */
const MODELS = [
  {
    key: 'sd21',
    title: 'Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1)',
    settings:
      "the paper's SD 2.1 setting, as configs/sd21-two-colors.yaml: 50 DPM-Solver steps, CFG 7.5, 768 px, " +
      "the figure layers 3, 7, ..., 23 of the OpenCLIP encoder's 0..23 (`layers: all` for every one), four seeds",
    needs:
      'the checkpoint (hub access, or a local copy: set model.id to its folder) and a GPU; the weights are ' +
      'about 2.6 GB in fp16 (an estimate from the parameter counts, not measured here), and a batch that ' +
      'does not fit is halved by itself',
    layers: 6,
    stages: 1,
    body: [
      'model: { id: stabilityai/stable-diffusion-2-1, family: sd, dtype: fp16 }',
      'sampler: { steps: 50, guidance: 7.5, size: 768, scheduler: dpm-multistep }',
      'lens: { layers: "3:23:4", uncond: final, noise: shared }',
      'seeds: [0, 1, 2, 3]',
    ],
    tail: ['runtime: { max_batch: 8 }'],
  },
  {
    key: 'if',
    title: 'DeepFloyd IF (DeepFloyd/IF-I-XL-v1.0, then DeepFloyd/IF-II-L-v1.0)',
    settings:
      "the paper's IF setting, as configs/if-paper.yaml: stage I 100 DPM-Solver steps, CFG 7.0, 64 px; " +
      'stage II 50 steps, CFG 4.0, 256 px, conditioned on the same layer; the figure layers 0, 4, ..., 24 ' +
      "of T5-XXL's 0..24 (`layers: all` for every one), four seeds",
    needs:
      'the two checkpoints, gated on the hub (accept their licence and log in, or download them first), and ' +
      'a GPU: `offload: encoder` keeps T5-XXL (about 9.5 GB in fp16, an estimate from the parameter counts) ' +
      'on the CPU except while prompts are encoded, which fits a 24 GB card; use `offload: model` on ' +
      'smaller ones, `none` on 40 GB and up',
    layers: 7,
    stages: 2,
    body: [
      'model: { id: DeepFloyd/IF-I-XL-v1.0, family: if, dtype: fp16, variant: fp16, offload: encoder }',
      'sampler: { steps: 100, guidance: 7.0, size: 64, scheduler: dpm-multistep }',
      'lens: { layers: "0:24:4", uncond: final, noise: shared }',
      'stages: [1, 2]',
      'stage2: { model: DeepFloyd/IF-II-L-v1.0, steps: 50, guidance: 4.0, size: 256, seed: same }',
      'seeds: [0, 1, 2, 3]',
    ],
    tail: ['runtime: { max_batch: 8 }'],
  },
  {
    key: 'sdxl',
    title: 'Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0)',
    settings:
      "the stock pipeline's settings, as configs/sdxl-base.yaml: 50 steps with the checkpoint's own " +
      'scheduler (Euler), guidance 5.0, 1024 px, fp16; layers over the second encoder (OpenCLIP bigG, 0..32) ' +
      'at 0%, 12.5%, ..., 100% and `stock` (31, the penultimate, what the stock pipeline uses), four seeds',
    needs:
      'the checkpoint (hub access or a local copy) and a GPU: the UNet is about 5.1 GB in fp16, the two ' +
      'encoders about 1.6 GB (estimates from the parameter counts, not measured here)',
    layers: 10,
    stages: 1,
    body: [
      'model: { id: stabilityai/stable-diffusion-xl-base-1.0, family: sdxl, dtype: fp16, variant: fp16 }',
      'sampler: { steps: 50, guidance: 5.0, size: 1024 }',
      'lens: { layers: "0%:100%:12.5%, stock" }',
      'seeds: [0, 1, 2, 3]',
    ],
    tail: [],
  },
  {
    key: 'flux',
    title: 'FLUX.1-dev (black-forest-labs/FLUX.1-dev)',
    settings:
      "the stock pipeline's settings, as configs/flux-dev.yaml: 28 steps with the checkpoint's " +
      'flow-matching scheduler, embedded guidance 3.5 (guidance-distilled: one transformer pass a step), ' +
      "1024 px, bf16; layers at 0%, 12.5%, ..., 100% of T5-XXL's 0..24, four seeds",
    needs:
      'the checkpoint, gated on the hub (accept its licence and give the worker a token), and a GPU: the 12B ' +
      'transformer is about 24 GB in bf16 and T5-XXL about 9.5 GB (estimates from the parameter counts, not ' +
      'measured here); `offload: encoder` keeps the encoders on the CPU except while the prompts are ' +
      'encoded (a 40 GB card; `offload: model` fits smaller ones, slower)',
    layers: 9,
    stages: 1,
    body: [
      'model: { id: black-forest-labs/FLUX.1-dev, family: flux, dtype: bf16, offload: encoder }',
      'sampler: { steps: 28, guidance: 3.5, size: 1024 }',
      'lens: { layers: "0%:100%:12.5%" }',
      'seeds: [0, 1, 2, 3]',
    ],
    tail: [],
  },
];

const SEEDS = 4;
const WIDTH = 110;

/** `# ` lines of at most WIDTH characters, wrapped between words. */
function comment(text) {
  const lines = [];
  let line = '#';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line.length + 1 + word.length > WIDTH && line !== '#') {
      lines.push(line);
      line = '#';
    }
    line += ` ${word}`;
  }
  lines.push(line);
  return lines;
}

const count = (n) => n.toLocaleString('en-US');

/** The preset files, by path relative to the repository root: the script's whole output. */
export function presets() {
  const index = parse(readFileSync(join(root, SETS_FILE), 'utf8'));
  const files = new Map();
  for (const model of MODELS) {
    for (const set of index.sets) {
      const stem = set.file.replace(/\.csv$/, '');
      const name = `${model.key}-${stem}`;
      const path = join(OUT_DIR, `${name}.yaml`);
      const images = set.count * model.layers * SEEDS * model.stages;
      const size =
        `${count(set.count)} prompts x ${model.layers} layers x ${SEEDS} seeds` +
        `${model.stages > 1 ? ` x ${model.stages} stages` : ''} = ${count(images)} images`;
      const text = [
        ...comment(
          'Generated by scripts/paper-presets.mjs from configs/prompts/sets.yaml: change the script and run ' +
            '`node scripts/paper-presets.mjs`, not this file (test/paper-presets.test.ts compares them).',
        ),
        '#',
        ...comment(
          `Diffusion Lens (Toker et al., ACL 2024), the ${set.category} experiment: prompt set ` +
            `\`${set.id}\` (prompts/${set.file}, ${set.count} prompts; its columns and per-image questions ` +
            `are in prompts/sets.yaml) on ${model.title}.`,
        ),
        ...comment(`Settings: ${model.settings}.`),
        ...comment(
          `Size: ${size}; \`diffusion-lens plan ${OUT_DIR}/${name}.yaml\` counts them, checks the output ` +
            'folder and estimates time and disk.',
        ),
        ...comment(`Needs ${model.needs}.`),
        `name: ${name}`,
        ...model.body,
        `prompts: { file: ../prompts/${set.file}, column: prompt }`,
        ...model.tail,
        '',
      ].join('\n');
      files.set(path, text);
    }
  }
  return files;
}

function main(args) {
  const files = presets();
  const dir = join(root, OUT_DIR);
  const existing = existsSync(dir) ? readdirSync(dir).filter((name) => name.endsWith('.yaml')) : [];
  const stale = existing.map((name) => join(OUT_DIR, name)).filter((path) => !files.has(path));
  if (args.includes('--check')) {
    const differ = [...files].filter(([path, text]) => {
      const full = join(root, path);
      return !existsSync(full) || readFileSync(full, 'utf8') !== text;
    });
    const problems = [
      ...differ.map(([path]) => `${path}: missing or not what the script writes`),
      ...stale.map((path) => `${path}: not written by the script`),
    ];
    for (const problem of problems) console.error(problem);
    if (problems.length > 0) {
      console.error('run `node scripts/paper-presets.mjs` and commit configs/paper/');
      process.exit(1);
    }
    console.log(`${files.size} presets in ${OUT_DIR} are up to date`);
    return;
  }
  mkdirSync(dir, { recursive: true });
  for (const [path, text] of files) writeFileSync(join(root, path), text);
  for (const path of stale) rmSync(join(root, path));
  console.log(
    `wrote ${files.size} presets to ${OUT_DIR}${stale.length > 0 ? `, removed ${stale.length}` : ''}`,
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main(process.argv.slice(2));
