#!/usr/bin/env node
// The README's main job: the lens over the embedded default model, all layers x 4 seeds.
// Until the trained "shapes" model lands, the default model is the tiny random-weight SD fixture,
// built offline on first use under out/tiny-sd (its images are noise: it shows the machinery).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const python = process.env.DIFFUSION_LENS_PYTHON ?? join(root, 'python', '.venv', 'bin', 'python');
const model = join(root, 'out', 'tiny-sd');
if (!existsSync(join(model, 'model_index.json'))) {
  execFileSync(python, ['-m', 'diffusion_lens.fixtures', 'sd', model], {
    cwd: join(root, 'python'),
    stdio: 'inherit',
  });
}
const args = process.argv.slice(2);
execFileSync(
  process.execPath,
  [
    join(root, 'dist', 'cli.js'),
    'lens',
    'a red apple',
    '--model',
    model,
    '--layers',
    'all',
    '--seeds',
    '0,1,2,3',
    '--steps',
    '10',
    '--size',
    '32',
    '--out',
    join(root, 'out', 'demo'),
    ...args,
  ],
  { stdio: 'inherit' },
);
