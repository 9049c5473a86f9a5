// The Python API (`diffusion_lens.lens(pipe, ...)`, python/diffusion_lens/api.py) writes a folder the TS side
// reads as its own: the manifest's shape, imagePath for every image, images.csv as imagesCsv writes it, and
// the same PNG bytes, paths and readouts as the CLI's run of the same settings on the same fixture.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { findPython } from '../src/bridge/python.js';
import { layerDepth } from '../src/config/index.js';
import { imagesCsv } from '../src/experiment/images-csv.js';
import type { Manifest } from '../src/experiment/index.js';
import { gridPath, imagePath } from '../src/experiment/store.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const tempDir = tempDirs('dlens-python-api-');
const PROMPTS = ['a red apple', 'two "quoted", cubes'];

const SCRIPT = `
import json, sys
import diffusion_lens
from diffusers import StableDiffusionPipeline

fixture, out, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
pipe = StableDiffusionPipeline.from_pretrained(fixture, safety_checker=None)
result = diffusion_lens.lens(
    pipe, prompts, layers="0%:100%:25%", seeds=[0, 2], steps=2, size=32, progress=False,
    return_embeddings=True,
)
result.save(out)
shapes = {layer: list(e["prompt_embeds"].shape) for layer, e in result.embeddings_for(0).items()}
print(json.dumps({"layers": result.layers, "seeds": result.seeds, "shapes": shapes}))
`;

let apiOut = '';
let printed: { layers: number[]; seeds: number[]; shapes: Record<string, number[]> };
let manifest: Manifest;

beforeAll(async () => {
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  const dir = tempDir();
  const script = join(dir, 'api.py');
  writeFileSync(script, SCRIPT);
  apiOut = join(dir, 'api-run');
  const { stdout } = await execa(
    findPython(),
    [script, inject('sdFixture'), apiOut, JSON.stringify(PROMPTS)],
    {
      cwd: dir,
      env: { PYTHONPATH: join(root, 'python') },
    },
  );
  printed = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}');
  manifest = JSON.parse(readFileSync(join(apiOut, 'manifest.json'), 'utf8'));
});

describe('diffusion_lens.lens(...).save(dir)', () => {
  it('returns the layers, seeds and embeddings asked for', () => {
    expect(printed.layers).toEqual([0, 1, 3, 4, 5]);
    expect(printed.seeds).toEqual([0, 2]);
    // The tiny SD fixture's CLIP: 77 tokens of width 40, one per layer.
    expect(Object.keys(printed.shapes).map(Number)).toEqual([0, 1, 3, 4, 5]);
    for (const shape of Object.values(printed.shapes)) expect(shape).toEqual([1, 77, 40]);
  });

  it('writes a manifest of the CLI shape, whose paths are imagePath and gridPath', () => {
    expect(manifest).toMatchObject({ version: 1, complete: true, prompt_columns: [] });
    expect(manifest.tool.name).toBe('diffusion-lens');
    expect(manifest.model).toMatchObject({
      family: 'sd',
      num_layers: 5,
      pipeline_class: 'StableDiffusionPipeline',
      dtype: 'fp32',
      stage2: null,
    });
    expect(manifest.config.lens.layers).toEqual([0, 1, 3, 4, 5]);
    expect(manifest.config.sampler).toMatchObject({ steps: 2, height: 32, width: 32, size: [32, 32] });
    expect(manifest.config.stages).toEqual([1]);
    expect(manifest.prompts.map((p) => p.prompt)).toEqual(PROMPTS);
    expect(manifest.images).toHaveLength(2 * 5 * 2);
    for (const image of manifest.images) {
      expect(image.prompt).toBe(PROMPTS[image.prompt_index]);
      expect(image.path).toBe(imagePath(image.prompt, image.layer, image.seed, 5, image.stage));
      expect(image.depth).toBe(layerDepth(image.layer, 5));
      expect(image.key).toMatch(/^[0-9a-f]{64}$/);
      expect(existsSync(join(apiOut, image.path))).toBe(true);
    }
    expect(manifest.grids.map((grid) => grid.path)).toEqual(PROMPTS.map((prompt) => gridPath(prompt)));
    for (const grid of manifest.grids) expect(existsSync(join(apiOut, grid.path))).toBe(true);
    expect(manifest.timings.images_generated).toBe(20);
  });

  it('writes images.csv as the CLI writes it for that manifest', () => {
    expect(readFileSync(join(apiOut, 'images.csv'), 'utf8')).toBe(imagesCsv(manifest));
  });

  it("matches the CLI's run of the same settings: paths, PNG bytes, readouts", async () => {
    const out = join(tempDir(), 'cli-run');
    const args = ['lens', PROMPTS[0] ?? '', '--model', inject('sdFixture'), '--layers', '0%:100%:25%'];
    await execa('node', [cli, ...args, '--seeds', '0,2', '--steps', '2', '--size', '32', '--out', out], {
      cwd: root,
    });
    const cliManifest: Manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    const ours = manifest.images.filter((image) => image.prompt_index === 0);
    expect(ours.map((image) => image.path)).toEqual(cliManifest.images.map((image) => image.path));
    ours.forEach((image, index) => {
      const theirs = cliManifest.images[index];
      expect(image.readout).toEqual(theirs?.readout);
      expect(image.depth).toBe(theirs?.depth);
      expect(readFileSync(join(apiOut, image.path)).equals(readFileSync(join(out, theirs?.path ?? '')))).toBe(
        true,
      );
    });
    // Every top-level field the CLI writes (a study's optional `variant` aside).
    const cliKeys = Object.keys(cliManifest).filter((key) => key !== 'variant');
    expect(Object.keys(manifest).sort()).toEqual(cliKeys.sort());
    expect(Object.keys(manifest.config).sort()).toEqual(
      Object.keys(cliManifest.config)
        .filter((key) => key !== 'prompts_file')
        .sort(),
    );
    expect(Object.keys(manifest.model).sort()).toEqual(Object.keys(cliManifest.model).sort());
    expect(Object.keys(manifest.config.sampler).sort()).toEqual(
      Object.keys(cliManifest.config.sampler).sort(),
    );
    expect(Object.keys(manifest.config.lens).sort()).toEqual(Object.keys(cliManifest.config.lens).sort());
    expect(manifest.lens).toEqual(cliManifest.lens);
    expect(manifest.config.sampler).toMatchObject({
      guidance: cliManifest.config.sampler.guidance,
      scheduler_class: cliManifest.config.sampler.scheduler_class,
    });
  });
});
