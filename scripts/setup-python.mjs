#!/usr/bin/env node
// Prepares the worker's Python environment (python/.venv) from python/requirements.txt.
// Runs on `npm install`. Skip with DIFFUSION_LENS_SKIP_PYTHON=1, or point DIFFUSION_LENS_PYTHON at an
// interpreter that already has the requirements (e.g. one with a CUDA build of torch).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const pythonDir = join(root, 'python');
const venv = join(pythonDir, '.venv');
const requirements = join(pythonDir, 'requirements.txt');
const stamp = join(venv, '.requirements.sha256');

if (process.env.DIFFUSION_LENS_SKIP_PYTHON === '1' || process.env.DIFFUSION_LENS_PYTHON) {
  console.log(
    'diffusion-lens: skipping Python set-up (DIFFUSION_LENS_SKIP_PYTHON or DIFFUSION_LENS_PYTHON set)',
  );
  process.exit(0);
}

const isWindows = process.platform === 'win32';
const venvPython = join(venv, isWindows ? 'Scripts/python.exe' : 'bin/python');
const wanted = createHash('sha256').update(readFileSync(requirements)).digest('hex');
if (existsSync(venvPython) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === wanted) {
  console.log('diffusion-lens: python/.venv is up to date');
  process.exit(0);
}

const run = (cmd, args) => execFileSync(cmd, args, { stdio: 'inherit' });
const basePython = process.env.PYTHON ?? (isWindows ? 'python' : 'python3');
try {
  if (!existsSync(venvPython)) {
    console.log(`diffusion-lens: creating python/.venv with ${basePython}`);
    run(basePython, ['-m', 'venv', venv]);
  }
  console.log('diffusion-lens: installing python/requirements.txt into python/.venv');
  run(venvPython, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '-r', requirements]);
  writeFileSync(stamp, `${wanted}\n`);
} catch (error) {
  console.error(`diffusion-lens: Python set-up failed (${error.message}).`);
  console.error('Fix: install Python >= 3.10 and rerun `npm install`, or set DIFFUSION_LENS_PYTHON to an');
  console.error('interpreter with python/requirements.txt installed. `npx diffusion-lens doctor` checks it.');
  process.exit(1);
}
