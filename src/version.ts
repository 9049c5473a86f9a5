// The tool's name and version (from package.json) and the version of the lens algorithm; both go into
// every image's content key, so a new release or a change to the method recomputes cached images.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './paths.js';

/** Bump when a change to the lens (TS or Python side) changes the images made from the same inputs. */
export const LENS_ALGORITHM_VERSION = 1;

export const TOOL_NAME = 'diffusion-lens';

function readVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export const TOOL_VERSION: string = readVersion();
