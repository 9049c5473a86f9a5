// The README's main job on a reduced setting: the lens over the embedded shapes model, with no --model.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { loadConfigFile } from '../src/config/index.js';
import type { Manifest } from '../src/experiment/index.js';
import { EMBEDDED_MODEL_DIR } from '../src/paths.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const out = tempDirs('dlens-demo-')();

describe('the shapes demo', () => {
  it('has a valid config that uses the embedded model', async () => {
    const config = await loadConfigFile(join(root, 'configs', 'shapes-demo.yaml'));
    expect(config.model.id).toBeUndefined();
    expect(config.seeds).toEqual([0, 1, 2, 3]);
    expect(config.lens.layers).toBe('all');
  });

  it('runs the lens on the embedded model when --model is not given', async () => {
    const args = ['lens', 'a green cross above a purple bar', '--layers', '0,4,-1', '--seeds', '0,1'];
    const result = await execa(
      'node',
      [join(root, 'dist', 'cli.js'), ...args, '--steps', '4', '--out', out],
      {
        reject: false,
      },
    );
    expect(result.exitCode, result.stderr).toBe(0);
    const manifest: Manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(manifest.model.id).toBe(EMBEDDED_MODEL_DIR);
    expect(manifest.model.num_layers).toBe(12);
    expect(manifest.images.map((image) => [image.layer, image.seed])).toEqual([
      [0, 0],
      [0, 1],
      [4, 0],
      [4, 1],
      [12, 0],
      [12, 1],
    ]);
    for (const image of manifest.images) expect(existsSync(join(out, image.path))).toBe(true);
    expect(manifest.grids).toHaveLength(1);
  });
});
