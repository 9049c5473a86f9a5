import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';

export { packageRoot };

/** The folder holding lens_server.py and the diffusion_lens package. */
export const pythonDir = join(packageRoot, 'python');

/**
 * The interpreter that runs the worker: $DIFFUSION_LENS_PYTHON, else the project's python/.venv
 * (made by `npm install`), else python3 on PATH.
 */
export function findPython(env: NodeJS.ProcessEnv = process.env): string {
  const override = env.DIFFUSION_LENS_PYTHON;
  if (override) return override;
  const venv =
    process.platform === 'win32'
      ? join(pythonDir, '.venv', 'Scripts', 'python.exe')
      : join(pythonDir, '.venv', 'bin', 'python');
  if (existsSync(venv)) return venv;
  return process.platform === 'win32' ? 'python' : 'python3';
}
