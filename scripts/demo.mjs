#!/usr/bin/env node
// The README's main job: the lens over the embedded shapes model (configs/shapes-demo.yaml), all
// layers x 4 seeds, into out/demo. Extra arguments go to `diffusion-lens run` (e.g. --json).
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, 'dist', 'cli.js');
const config = join(root, 'configs', 'shapes-demo.yaml');
execFileSync(
  process.execPath,
  [cli, 'run', config, '--out', join(root, 'out', 'demo'), ...process.argv.slice(2)],
  {
    stdio: 'inherit',
  },
);
