// The done criterion, per family: `lens "a red apple" --model <tiny fixture> --layers 0%:100%:25%`
// writes images, grids and a manifest whose per-image readout says which hidden state of which encoder
// each image was made from. The families' own details are tested in cli.test.ts and python/tests.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import sharp from 'sharp';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { Manifest } from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const tempDir = tempDirs('dlens-families-');

beforeAll(() => {
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
});

// family, fixture, L, the layers 0%..100% by 25% give (nearest, halves up), size (IF: its native 16).
const FAMILIES = [
  { family: 'sd', fixture: inject('sdFixture'), depth: 5, layers: [0, 1, 3, 4, 5], size: 32 },
  { family: 'if', fixture: inject('ifFixture'), depth: 4, layers: [0, 1, 2, 3, 4], size: 16 },
  { family: 'pixart', fixture: inject('pixartFixture'), depth: 3, layers: [0, 1, 2, 3], size: 64 },
  { family: 'sdxl', fixture: inject('sdxlFixture'), depth: 5, layers: [0, 1, 3, 4, 5], size: 32 },
  { family: 'flux', fixture: inject('fluxFixture'), depth: 3, layers: [0, 1, 2, 3], size: 32 },
  { family: 'sd3', fixture: inject('sd3Fixture'), depth: 3, layers: [0, 1, 2, 3], size: 32 },
  { family: 'sana', fixture: inject('sanaFixture'), depth: 3, layers: [0, 1, 2, 3], size: 64 },
];

describe.each(FAMILIES)('lens on the tiny $family fixture', ({ family, fixture, depth, layers, size }) => {
  it('sweeps 0%:100%:25% into images, a grid and a manifest', async () => {
    const out = join(tempDir(), family);
    const args = ['lens', 'a red apple', '--model', fixture, '--layers', '0%:100%:25%', '--seeds', '0'];
    const result = await execa('node', [cli, ...args, '--steps', '2', '--size', String(size), '--out', out], {
      reject: false,
      cwd: root,
    });
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const manifest: Manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(manifest.model).toMatchObject({ family, num_layers: depth });
    expect(manifest.images.map((image) => image.layer)).toEqual(layers);
    for (const image of manifest.images) {
      expect((await sharp(join(out, image.path)).metadata()).width).toBe(size);
      // The readout names at least one encoder that followed the layer, within its own depth.
      const followed = image.readout.encoders.filter((encoder) => encoder.follows_layer);
      expect(followed.length).toBeGreaterThan(0);
      for (const encoder of followed) expect(encoder.hidden_state).toBeLessThanOrEqual(depth);
    }
    expect(manifest.images.at(-1)?.depth).toBe(100);
    expect(manifest.grids).toHaveLength(1);
    expect(existsSync(join(out, manifest.grids[0]?.path ?? 'missing'))).toBe(true);
  });
});
