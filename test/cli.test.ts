// The built CLI (dist/cli.js) end to end, with the real worker and the tiny SD fixture.
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import sharp from 'sharp';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { findPython } from '../src/bridge/python.js';
import type { Manifest, RunEvent } from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const fixture = inject('sdFixture');
const tempDir = tempDirs('dlens-cli-');

function dlens(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  return execa('node', [cli, ...args], { reject: false, cwd: options.cwd ?? root, env: options.env });
}

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));

beforeAll(() => {
  // The CLI tests run the build output; `npm test` builds first. Build here if there is none.
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
});

describe('diffusion-lens lens', () => {
  it('writes one image per (layer, seed), a grid and a manifest', async () => {
    const out = join(tempDir(), 'apple');
    const args = [
      'lens',
      'a red apple',
      '--model',
      fixture,
      '--layers',
      'all',
      '--seeds',
      '0,1',
      '--steps',
      '4',
    ];
    const result = await dlens([...args, '--size', '32', '--out', out]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/done: 12 images made, 0 already on disk/);

    const manifest = readManifest(out);
    expect(Object.keys(manifest).sort()).toEqual(
      [
        'complete',
        'config',
        'grids',
        'images',
        'lens',
        'model',
        'prompt_columns',
        'prompt_set',
        'prompts',
        'timings',
        'tool',
        'version',
        'worker',
      ].sort(),
    );
    expect(manifest).toMatchObject({
      version: 1,
      tool: { name: 'diffusion-lens' },
      complete: true,
      config: {
        name: 'a-red-apple',
        // guidance unset: the model's default.
        sampler: { steps: 4, guidance: 7.5, size: [32, 32], scheduler: 'default', negative: '' },
        lens: { layers: [0, 1, 2, 3, 4, 5], uncond: 'final', noise: 'shared' },
        seeds: [0, 1],
        prompts: ['a red apple'],
      },
      model: { id: fixture, family: 'sd', num_layers: 5, revision: null, dtype: 'fp32', device: 'cpu' },
      timings: { images_generated: 12, images_skipped: 0 },
    });
    expect(manifest.model.pipeline_class).toMatch(/StableDiffusion/);
    expect(manifest.lens.norm).toMatch(/\S/);
    expect(manifest.worker.torch).toMatch(/\d/);
    expect(manifest.timings.seconds).toBeGreaterThan(0);
    expect(manifest.images).toHaveLength(12);
    const pairs = manifest.images.map((i) => `${i.layer}-${i.seed}`);
    expect(new Set(pairs).size).toBe(12);
    for (const image of manifest.images) {
      expect(image).toMatchObject({ prompt: 'a red apple', prompt_index: 0 });
      expect(image.path).toMatch(/^images\/a-red-apple-[0-9a-f]{8}\/L[0-5]-s[01]\.png$/);
      expect(image.key).toMatch(/^[0-9a-f]{64}$/);
      const meta = await sharp(join(out, image.path)).metadata();
      expect([meta.width, meta.height]).toEqual([32, 32]);
    }
    expect(manifest.grids).toEqual([
      {
        prompt: 'a red apple',
        stage: 1,
        path: expect.stringMatching(/^grids\/a-red-apple-[0-9a-f]{8}\.png$/),
      },
    ]);
    expect(manifest.config).toMatchObject({ stages: [1], stage2: null });
    expect(manifest.model).toMatchObject({ family_options: {}, stage2: null });
    expect(manifest.images.every((image) => image.stage === 1)).toBe(true);
    const grid = await sharp(join(out, manifest.grids[0]?.path ?? '')).metadata();
    expect(grid.width).toBeGreaterThan(2 * 32);
    expect(grid.height).toBeGreaterThan(6 * 32);
    expect(readdirSync(join(out, 'images', readdirSync(join(out, 'images'))[0] ?? ''))).toHaveLength(12);

    // A rerun makes nothing.
    const again = await dlens([...args, '--size', '32', '--out', out, '--json']);
    expect(again.exitCode).toBe(0);
    const events = again.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as RunEvent);
    expect(events.find((e) => e.type === 'plan')).toMatchObject({ total: 12, skipped: 12, todo: 0 });
    expect(events.filter((e) => e.type === 'image')).toHaveLength(0);
  });

  it('--json prints one event per line', async () => {
    const out = tempDir();
    const result = await dlens([
      'lens',
      'a cat',
      '--model',
      fixture,
      '--layers',
      '-1',
      '--seeds',
      '3',
      '--steps',
      '2',
      '--size',
      '32',
      '--out',
      out,
      '--json',
    ]);
    expect(result.exitCode).toBe(0);
    const events = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as RunEvent);
    const types = events.map((e) => e.type).filter((t) => t !== 'progress');
    expect(types).toEqual(['start', 'worker-ready', 'model-loaded', 'plan', 'image', 'grid', 'done']);
    expect(events.find((e) => e.type === 'image')).toMatchObject({
      layer: 5,
      seed: 3,
      images_done: 1,
      images_total: 1,
    });
  });

  it('exits 130 on Ctrl-C, leaving a resumable run', async () => {
    const out = tempDir();
    const args = [
      'lens',
      'a slow cat',
      '--model',
      fixture,
      '--seeds',
      '0,1',
      '--steps',
      '12',
      '--size',
      '32',
      '--max-batch',
      '1',
      '--out',
      out,
    ];
    const child = execa('node', [cli, ...args, '--json'], { reject: false, cwd: root });
    let sent = false;
    child.stdout?.on('data', (chunk: Buffer) => {
      if (!sent && chunk.toString().includes('"type":"image"')) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const result = await child;
    expect(sent).toBe(true);
    expect(result.exitCode).toBe(130);
    const manifest = readManifest(out);
    expect(manifest.complete).toBe(false);
    const made = manifest.images.length;
    expect(made).toBeGreaterThan(0);
    expect(made).toBeLessThan(12);

    const resumed = await dlens([...args, '--json']);
    expect(resumed.exitCode).toBe(0);
    const events = resumed.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as RunEvent);
    expect(events.filter((e) => e.type === 'image')).toHaveLength(12 - made);
    expect(readManifest(out).complete).toBe(true);
  }, 300_000);

  it('reports bad options as usage errors (exit 2), one line each, no stack', async () => {
    const result = await dlens([
      'lens',
      'x',
      '--model',
      fixture,
      '--out',
      tempDir(),
      '--steps',
      'abc',
      '--seeds',
      '0,0',
    ]);
    expect(result.exitCode).toBe(2);
    expect(result.stderr.trim().split('\n')).toEqual([
      'error: --steps: must be an integer in plain digits (got "abc")',
      'error: --seeds: 0 is listed twice',
    ]);
    const missing = await dlens(['lens', 'x', '--model', 'org/m']);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain("required option '-o, --out <dir>' not specified");
    expect((await dlens(['frobnicate'])).exitCode).toBe(2);
  });

  it('reports a layer out of range before starting the worker, from the model config (exit 1)', async () => {
    const out = join(tempDir(), 'never');
    const result = await dlens([
      'lens',
      'x',
      '--model',
      fixture,
      '--layers',
      '0:30:10',
      '--size',
      '32',
      '--out',
      out,
    ]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr.trim().split('\n').at(-1)).toBe(
      'error: lens.layers: layer 30 is out of range 0..5 (in "0:30:10")',
    );
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(result.stderr).not.toMatch(/worker ready|loaded/);
    expect(existsSync(out)).toBe(false);
  });

  it('a fully cached rerun needs no Python; other settings are refused with the way out', async () => {
    const out = join(tempDir(), 'x');
    const args = [
      'lens',
      'a red circle',
      '--model',
      fixture,
      '--layers',
      '0,5',
      '--seeds',
      '0',
      '--size',
      '32',
    ];
    expect((await dlens([...args, '--steps', '3', '--out', out])).exitCode).toBe(0);
    const before = readFileSync(join(out, readManifest(out).images[0]?.path ?? ''));
    // No interpreter at all: the rerun must not need one.
    const noPython = { ...process.env, DIFFUSION_LENS_PYTHON: '/nonexistent/python' };
    const cached = await dlens([...args, '--steps', '3', '--out', out], { env: noPython });
    expect(cached.stderr).not.toMatch(/error|worker ready|loaded/);
    expect(cached.exitCode).toBe(0);
    expect(cached.stdout).toMatch(/done: 0 images made, 2 already on disk/);
    expect(readFileSync(join(out, 'images.csv'), 'utf8').split('\n')[0]).toBe(
      'prompt,layer,depth,stage,seed,path,key',
    );

    const refused = await dlens([...args, '--steps', '4', '--out', out], { env: noPython });
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(
      /error: .* holds 2 images made with other settings \(sampler\.steps 3 -> 4\)/,
    );
    expect(refused.stderr).toMatch(/--new-variant/);
    expect(refused.stderr).toMatch(/--overwrite/);
    expect(readFileSync(join(out, readManifest(out).images[0]?.path ?? ''))).toEqual(before);

    const both = await dlens([...args, '--steps', '4', '--out', out, '--overwrite', '--new-variant']);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toMatch(/exclude each other/);

    const variant = await dlens([...args, '--steps', '4', '--out', out, '--new-variant']);
    expect(variant.exitCode).toBe(0);
    expect(variant.stderr).toMatch(/variants\/steps-4/);
    expect(readManifest(join(out, 'variants', 'steps-4')).config.sampler.steps).toBe(4);
  });

  it('checks the output folder before starting anything', async () => {
    const dir = tempDir();
    const file = join(dir, 'file');
    writeFileSync(file, '');
    const args = ['lens', 'x', '--model', fixture, '--size', '32', '--steps', '1'];
    const onFile = await dlens([...args, '--out', file]);
    expect(onFile.exitCode).toBe(1);
    expect(onFile.stderr.trim()).toBe(`error: output folder ${file} is a file, not a folder`);
    const under = await dlens([...args, '--out', join(file, 'sub')]);
    expect(under.stderr.trim()).toBe(
      `error: cannot create output folder ${join(file, 'sub')}: ${file} is a file`,
    );
    if (process.getuid?.() !== 0) {
      const locked = join(dir, 'locked');
      mkdirSync(locked, { mode: 0o555 });
      const readOnly = await dlens([...args, '--out', join(locked, 'run')]);
      expect(readOnly.stderr).toMatch(/cannot write to output folder .*: permission denied/);
    }
    for (const result of [onFile, under]) expect(result.stderr).not.toMatch(/worker|loaded/);
  });

  it('names model.id when a local model folder does not exist', async () => {
    const result = await dlens(['lens', 'x', '--model', './no/such/model', '--out', tempDir()]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr.trim()).toMatch(
      /^error: model\.id: local model "\.\/no\/such\/model" does not exist/,
    );
  });
});

describe('single-file checkpoints and LoRA weights (the tiny SD fixture as one file, a random LoRA)', () => {
  const dir = tempDir();
  const single = join(dir, 'tiny-sd.safetensors');
  const lora = join(dir, 'style.safetensors');

  beforeAll(async () => {
    // The fixture's own weights (same seed) in the original layout, and LoRA weights for it.
    const build = (flag: string, file: string) =>
      execa(findPython(), ['-m', 'diffusion_lens.fixtures', 'sd', file, flag], { cwd: join(root, 'python') });
    await Promise.all([build('--single-file', single), build('--lora', lora)]);
  });

  it('lens --model FILE --config DIR --lora FILE:0.5 writes images and records both; a rerun is cached', async () => {
    const out = join(dir, 'apple');
    const args = ['lens', 'a red apple', '--model', single, '--config', fixture, '--lora', `${lora}:0.5`];
    const settings = ['--layers', '0,5', '--seeds', '0', '--steps', '2', '--size', '32', '--out', out];
    const result = await dlens([...args, ...settings]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/done: 2 images made, 0 already on disk/);
    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({
      id: single,
      family: 'sd',
      num_layers: 5,
      config: fixture,
      lora: [{ path: lora, scale: 0.5, components: ['text_encoder', 'unet'] }],
    });
    expect(manifest.config.model).toMatchObject({ config: fixture, lora: [{ path: lora, scale: 0.5 }] });
    const first = readFileSync(join(out, manifest.images[1]?.path ?? ''));

    // Every checkpoint is a local file or folder: a fully cached rerun needs no Python.
    const noPython = { ...process.env, DIFFUSION_LENS_PYTHON: '/nonexistent/python' };
    const cached = await dlens([...args, ...settings], { env: noPython });
    expect(cached.exitCode).toBe(0);
    expect(cached.stdout).toMatch(/done: 0 images made, 2 already on disk/);

    // Another scale is other images: never served from these.
    const stronger = ['lens', 'a red apple', '--model', single, '--config', fixture, '--lora', lora];
    const variant = await dlens([...stronger, ...settings, '--new-variant']);
    expect(variant.exitCode).toBe(0);
    expect(variant.stdout).toMatch(/done: 2 images made, 0 already on disk/);
    const [name] = readdirSync(join(out, 'variants'));
    const other = readManifest(join(out, 'variants', name ?? ''));
    expect(other.model.lora).toEqual([{ path: lora, scale: 1, components: ['text_encoder', 'unet'] }]);
    expect(readFileSync(join(out, 'variants', name ?? '', other.images[1]?.path ?? ''))).not.toEqual(first);
  });

  it('says what to pass for a configuration that does not apply or a LoRA scale that is no number', async () => {
    const beside = await dlens(['lens', 'x', '--model', fixture, '--config', fixture, '--out', tempDir()]);
    expect(beside.exitCode).toBe(1);
    expect(beside.stderr).toMatch(
      /error: model\.config: is for a single-file model\.id; .* is a diffusers checkpoint/,
    );
    const scale = await dlens([
      'lens',
      'x',
      '--model',
      single,
      '--lora',
      `${lora}:strong`,
      '--out',
      tempDir(),
    ]);
    expect(scale.exitCode).toBe(2);
    expect(scale.stderr).toMatch(
      /error: --lora: ".*style\.safetensors:strong": the scale after ":" must be a number/,
    );
  });
});

describe('diffusion-lens run', () => {
  it('runs a YAML config with a CSV prompt file into runs/<name>', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'experiments', 'prompts'), { recursive: true });
    writeFileSync(
      join(dir, 'experiments', 'prompts', 'colors.csv'),
      'id,prompt,category\n1,"a red, shiny apple",fruit\n2,"a ""blue"" car",vehicle\n',
    );
    writeFileSync(
      join(dir, 'experiments', 'colors.yaml'),
      [
        `model: { id: ${JSON.stringify(fixture)} }`,
        'sampler: { steps: 2, size: [32, 40], scheduler: euler }',
        'lens: { layers: "1:5:2" }',
        'seeds: [0, 7]',
        'prompts: { file: prompts/colors.csv, column: prompt }',
        'runtime: { max_batch: 4 }',
        '',
      ].join('\n'),
    );
    const result = await dlens(['run', 'experiments/colors.yaml'], { cwd: dir });
    expect(result.stderr).not.toMatch(/error/);
    expect(result.exitCode).toBe(0);
    const out = join(dir, 'runs', 'colors');
    const manifest = readManifest(out);
    expect(manifest.config).toMatchObject({
      name: 'colors',
      prompts: ['a red, shiny apple', 'a "blue" car'],
      prompts_file: { file: 'prompts/colors.csv', column: 'prompt' },
      lens: { layers: [1, 3, 5], layer_spec: '1:5:2' },
      sampler: { size: [32, 40], height: 32, width: 40, scheduler: 'euler' },
      seeds: [0, 7],
    });
    expect(manifest.images).toHaveLength(2 * 3 * 2);
    expect(manifest.images.filter((i) => i.prompt_index === 1)).toHaveLength(6);
    expect(manifest.grids).toHaveLength(2);
    const meta = await sharp(join(out, manifest.images[0]?.path ?? '')).metadata();
    expect([meta.height, meta.width]).toEqual([32, 40]);
    // The prompt file's other columns, per prompt and per image.
    expect(manifest.prompt_columns).toEqual(['id', 'category']);
    expect(manifest.prompts[1]).toEqual({
      prompt: 'a "blue" car',
      columns: { id: '2', category: 'vehicle' },
      truncated: null,
      lensed_tokens: null,
      // Not a prompt set's file (no sets.yaml beside it): the generic question.
      questions: [{ id: 'matches_prompt', text: 'Does the image show "a "blue" car"?', expected: 'yes' }],
    });
    expect(manifest.prompt_set).toBeNull();
    const csv = readFileSync(join(out, 'images.csv'), 'utf8').trimEnd().split('\n');
    expect(csv[0]).toBe('prompt,id,category,layer,depth,stage,seed,path,key');
    expect(csv).toHaveLength(1 + 12);
    expect(csv[1]).toMatch(/^"a red, shiny apple",1,fruit,1,20,1,0,images\/[^,]+\/L1-s0\.png,[0-9a-f]{64}$/);
    expect(csv[7]).toMatch(/^"a ""blue"" car",2,vehicle,1,20,1,0,/);
  });

  it('names the file, line and field of a bad config (exit 1)', async () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, 'bad.yaml'),
      `model: { id: ${JSON.stringify(fixture)} }\nprompts: [a]\nlens:\n  layer: all\n`,
    );
    const result = await dlens(['run', 'bad.yaml'], { cwd: dir });
    expect(result.exitCode).toBe(1);
    expect(result.stderr.trim()).toBe(
      'error: bad.yaml:4: lens: unexpected key "layer" (did you mean "layers"?)',
    );
  });

  it('names the missing CSV column', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'p.csv'), 'text\na cat\n');
    writeFileSync(
      join(dir, 'e.yaml'),
      `model: { id: ${JSON.stringify(fixture)} }\nprompts: { file: p.csv }\n`,
    );
    const result = await dlens(['run', 'e.yaml', '--out', join(dir, 'out')], { cwd: dir });
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(
      'prompts.column: column "prompt" not found in p.csv; columns found: "text"',
    );
    expect(existsSync(join(dir, 'out'))).toBe(false);
  });
});

describe('DeepFloyd IF (tiny fixtures: stage I 16x16, stage II 32x32, T5 with 4 blocks)', () => {
  const ifFixture = inject('ifFixture');
  const ifSrFixture = inject('ifSrFixture');

  const jsonEvents = (stdout: string): RunEvent[] =>
    stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as RunEvent);

  it('lens runs both stages; a rerun after deleting one stage II image makes only that one', async () => {
    const out = join(tempDir(), 'if');
    const args = [
      'lens',
      'a red cube',
      '--model',
      ifFixture,
      '--stages',
      '1,2',
      '--stage2-model',
      ifSrFixture,
      '--layers',
      '0,2,4',
      '--seeds',
      '0,1',
      '--steps',
      '2',
      '--stage2-steps',
      '2',
      '--out',
      out,
    ];
    const result = await dlens(args);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(result.stderr).toMatch(/family if, 4 encoder layers.*; stage II .*\(IFSuperResolutionPipeline\)/);
    expect(result.stderr).toMatch(
      /plan: 12 images \(1 prompt x 3 layers x 2 seeds x 2 stages, 16x16, stage II 32x32\)/,
    );
    expect(result.stdout).toMatch(/done: 12 images made, 0 already on disk/);

    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({
      family: 'if',
      pipeline_class: 'IFPipeline',
      num_layers: 4,
      stage2: { id: ifSrFixture, pipeline_class: 'IFSuperResolutionPipeline' },
    });
    expect(manifest.config).toMatchObject({
      stages: [1, 2],
      sampler: { steps: 2, guidance: 7, size: [16, 16] },
      stage2: { model: ifSrFixture, steps: 2, size: [32, 32], seed: 'same', scheduler: 'default' },
    });
    expect(manifest.images).toHaveLength(12);
    for (const image of manifest.images) {
      const meta = await sharp(join(out, image.path)).metadata();
      const side = image.stage === 1 ? 16 : 32;
      expect([image.stage, meta.width, meta.height]).toEqual([image.stage, side, side]);
      expect(image.path).toMatch(image.stage === 1 ? /\/L[024]-s[01]\.png$/ : /\/L[024]-s[01]-stage2\.png$/);
    }
    expect(manifest.images.filter((image) => image.stage === 2)).toHaveLength(6);
    expect(manifest.grids.map((grid) => grid.stage)).toEqual([1, 2]);
    expect(manifest.grids[1]?.path).toMatch(/^grids\/a-red-cube-[0-9a-f]{8}-stage2\.png$/);
    for (const grid of manifest.grids) expect(existsSync(join(out, grid.path))).toBe(true);

    const deleted = manifest.images.find(
      (image) => image.stage === 2 && image.layer === 2 && image.seed === 1,
    );
    if (!deleted) throw new Error('no stage II image of layer 2, seed 1');
    const before = new Map(
      manifest.images.map((image) => [image.path, statSync(join(out, image.path)).mtimeMs]),
    );
    rmSync(join(out, deleted.path));
    const again = await dlens([...args, '--json']);
    expect(again.exitCode).toBe(0);
    const events = jsonEvents(again.stdout);
    expect(events.find((e) => e.type === 'plan')).toMatchObject({ total: 12, skipped: 11, todo: 1 });
    const made = events.filter((e) => e.type === 'image');
    expect(made).toHaveLength(1);
    expect(made[0]).toMatchObject({ path: deleted.path, stage: 2, key: deleted.key });
    // Its stage I image came back from the worker too, and was left alone.
    for (const [path, mtime] of before) {
      if (path !== deleted.path) expect(statSync(join(out, path)).mtimeMs).toBe(mtime);
    }
    expect(readManifest(out).images).toHaveLength(12);
  });

  it('runs a YAML config with the family detected from model_index.json and stage II relative to it', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'experiments'));
    symlinkSync(ifSrFixture, join(dir, 'experiments', 'if-ii'));
    writeFileSync(
      join(dir, 'experiments', 'if-two.yaml'),
      [
        `model: { id: ${JSON.stringify(ifFixture)}, clean_caption: false }`,
        'sampler: { steps: 3 }',
        'lens: { layers: "0:4:2" }',
        'stage2: { model: ./if-ii, steps: 2, size: 32, noise_level: 100, seed: 5 }',
        'seeds: [0]',
        'prompts: [a red cube, a blue ball]',
        '',
      ].join('\n'),
    );
    const result = await dlens(['run', 'experiments/if-two.yaml'], { cwd: dir });
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const out = join(dir, 'runs', 'if-two');
    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({ family: 'if', family_options: { clean_caption: false } });
    expect(manifest.config).toMatchObject({
      model: { family: 'auto', clean_caption: false },
      stages: [1, 2],
      sampler: { steps: 3, size: [16, 16], family_options: {} },
      stage2: {
        model: join(dir, 'experiments', 'if-ii'),
        steps: 2,
        seed: 5,
        family_options: { noise_level: 100 },
      },
    });
    expect(manifest.images).toHaveLength(2 * 3 * 2);
    expect(manifest.grids.map((grid) => [grid.prompt, grid.stage])).toEqual([
      ['a red cube', 1],
      ['a red cube', 2],
      ['a blue ball', 1],
      ['a blue ball', 2],
    ]);
    const stage2 = manifest.images.find((image) => image.stage === 2);
    const meta = await sharp(join(out, stage2?.path ?? '')).metadata();
    expect([meta.width, meta.height]).toEqual([32, 32]);
  });

  it('reports a stage II on an SD model, and family sd on an IF checkpoint, as load errors (exit 1)', async () => {
    const stage2OnSd = await dlens([
      'lens',
      'x',
      '--model',
      fixture,
      '--stage2-model',
      ifSrFixture,
      '--out',
      join(tempDir(), 'never'),
    ]);
    expect(stage2OnSd.exitCode).toBe(1);
    const lastLine = (stderr: string): string =>
      stderr
        .trim()
        .split('\n')
        .filter((line) => line.startsWith('error: '))
        .at(-1) ?? '';
    expect(lastLine(stage2OnSd.stderr)).toMatch(
      /^error: cannot load .* with stage II .*: the sd family has no stage II; run stage 1 only/,
    );
    const sdOnIf = await dlens(['lens', 'x', '--model', ifFixture, '--family', 'sd', '--out', tempDir()]);
    expect(sdOnIf.exitCode).toBe(1);
    expect(lastLine(sdOnIf.stderr)).toContain(
      `error: cannot load ${ifFixture}: ${ifFixture} is a IFPipeline checkpoint (family if), not sd: use family if or auto`,
    );
    expect(sdOnIf.stderr).not.toMatch(/\n\s+at /);
  });

  it('refuses stage II options the family cannot run before loading anything, by the option', async () => {
    const out = join(tempDir(), 'never');
    const result = await dlens([
      'lens',
      'x',
      '--model',
      fixture,
      '--family',
      'sd',
      '--stages',
      '1,2',
      '--stage2-model',
      ifSrFixture,
      '--out',
      out,
    ]);
    // The worker says which families have a stage II: known once it is up, before the model loads.
    expect(result.exitCode).toBe(1);
    expect(result.stderr.trim().split('\n').at(-1)).toBe(
      'error: --stages: family sd has no stage II (its pipeline runs one stage)',
    );
    expect(result.stderr).not.toContain('loaded');
    expect(existsSync(out)).toBe(false);
    const noModel = await dlens(['lens', 'x', '--model', ifFixture, '--stages', '1,2', '--out', tempDir()]);
    expect(noModel.exitCode).toBe(2);
    expect(noModel.stderr.trim()).toBe(
      'error: --stage2-model: is required when stages include 2 (the stage II checkpoint, e.g. DeepFloyd/IF-II-L-v1.0)',
    );
  });
});

describe('PixArt (tiny fixture: T5 with 3 blocks, 256x256 native)', () => {
  const pixartFixture = inject('pixartFixture');

  it('lens takes relative depths, and the manifest, images.csv and grids show layer and depth', async () => {
    const out = join(tempDir(), 'relative');
    const args = ['lens', 'a red apple', '--model', pixartFixture, '--layers', '0%:100%:25%'];
    const result = await dlens([...args, '--seeds', '0', '--steps', '2', '--size', '64', '--out', out]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const manifest = readManifest(out);
    // T5 with 3 blocks: 0%, 25%, 50%, 75%, 100% of 3 are layers 0, 1, 2, 2, 3 (the nearest, halves up).
    expect(manifest.config.lens).toMatchObject({ layers: [0, 1, 2, 3], layer_spec: '0%:100%:25%' });
    expect(manifest.images.map((image) => [image.layer, image.depth])).toEqual([
      [0, 0],
      [1, 33.3],
      [2, 66.7],
      [3, 100],
    ]);
    expect(readFileSync(join(out, 'images.csv'), 'utf8').split('\n')[2]).toMatch(/^a red apple,1,33\.3,1,0,/);
    expect(manifest.grids).toHaveLength(1);
  });

  it('runs from a YAML config with its family options, writing images, grids and the manifest', async () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, 'pixart.yaml'),
      [
        `model: { id: ${JSON.stringify(pixartFixture)}, family_options: { max_sequence_length: 32 } }`,
        'sampler: { steps: 2, size: 64, family_options: { use_resolution_binning: false } }',
        'lens: { layers: "0,-1" }',
        'seeds: [0, 1]',
        'prompts: [a red apple]',
        '',
      ].join('\n'),
    );
    const result = await dlens(['run', 'pixart.yaml', '--out', 'out'], { cwd: dir });
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(result.stderr).toMatch(
      /family pixart, 3 encoder layers.*clean_caption true, max_sequence_length 32/,
    );
    const out = join(dir, 'out');
    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({
      family: 'pixart',
      pipeline_class: 'PixArtAlphaPipeline',
      num_layers: 3,
      family_options: { clean_caption: true, max_sequence_length: 32 },
    });
    expect(manifest.config.sampler).toMatchObject({
      steps: 2,
      guidance: 4.5,
      size: [64, 64],
      family_options: { use_resolution_binning: false },
    });
    expect(manifest.images.map((image) => image.layer)).toEqual([0, 0, 3, 3]);
    for (const image of manifest.images) {
      expect((await sharp(join(out, image.path)).metadata()).width).toBe(64);
    }
    expect(manifest.grids).toHaveLength(1);
    // A family option the family does not have is named by its field before anything loads.
    writeFileSync(
      join(dir, 'bad.yaml'),
      `model: { id: ${JSON.stringify(pixartFixture)}, family: pixart, family_options: { clean_captions: true } }\nprompts: [x]\n`,
    );
    const bad = await dlens(['run', 'bad.yaml', '--out', 'bad'], { cwd: dir });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain(
      'error: bad.yaml:1: model.family_options.clean_captions: the pixart family has no such option ' +
        '(did you mean "clean_caption"?) (its options here: clean_caption, max_sequence_length)',
    );
  });
});

describe('SDXL (tiny fixture: CLIPs with 3 and 5 layers, 32x32)', () => {
  const sdxlFixture = inject('sdxlFixture');

  it('lens sweeps relative depths with the stock layer, which the grid marks', async () => {
    const out = join(tempDir(), 'sdxl');
    const args = ['lens', 'a red apple', '--model', sdxlFixture, '--layers', '0%:100%:50%,stock'];
    const result = await dlens([...args, '--seeds', '0,1', '--steps', '2', '--out', out]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(result.stderr).toMatch(/family sdxl, 5 encoder layers/);
    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({ family: 'sdxl', pipeline_class: 'StableDiffusionXLPipeline' });
    // 0, 50, 100% of 5 are layers 0, 3 (2.5, halves up), 5; the stock layer is 4, the penultimate.
    expect(manifest.config.lens.layers).toEqual([0, 3, 5, 4]);
    expect(manifest.lens).toMatchObject({ pooled: expect.stringContaining('text_encoder_2') });
    expect(manifest.images).toHaveLength(8);
    expect(manifest.grids).toHaveLength(1);
    // Per image: which hidden state of which encoder, and which pooled vector.
    const layer3 = manifest.images.find((image: { layer: number }) => image.layer === 3);
    expect(layer3?.readout).toEqual({
      encoders: [
        { name: 'text_encoder', hidden_state: 1, norm: null, follows_layer: true },
        { name: 'text_encoder_2', hidden_state: 3, norm: null, follows_layer: true },
      ],
      pooled: { mode: 'final', encoders: [{ name: 'text_encoder_2', hidden_state: 5 }] },
    });
  });

  it('lens takes one encoder through the layers and the pooled vector from the same depth', async () => {
    const out = join(tempDir(), 'sdxl-readout');
    const args = ['lens', 'a red apple', '--model', sdxlFixture, '--layers', '3', '--seeds', '0'];
    const readout = ['--encoders', 'text_encoder', '--pooled', 'same-layer'];
    const result = await dlens([...args, ...readout, '--steps', '2', '--out', out]);
    expect(result.stderr).not.toMatch(/error/i);
    const manifest = readManifest(out);
    expect(manifest.config.lens).toMatchObject({ encoders: ['text_encoder'], pooled: 'same-layer' });
    expect(manifest.images[0]?.readout).toEqual({
      encoders: [
        { name: 'text_encoder', hidden_state: 1, norm: null, follows_layer: true },
        { name: 'text_encoder_2', hidden_state: 4, norm: null, follows_layer: false },
      ],
      pooled: { mode: 'same-layer', encoders: [{ name: 'text_encoder_2', hidden_state: 4 }] },
    });
    // Another reading is other settings: not served from the folder's images.
    const stock = await dlens([...args, '--steps', '2', '--out', out]);
    expect(stock.exitCode).toBe(1);
    expect(stock.stderr).toMatch(/made with other settings \(lens\.encoders/);

    const typo = await dlens([...args, '--encoders', 'text_encoder_3', '--out', join(out, 'typo')]);
    expect(typo.exitCode).toBe(1);
    expect(typo.stderr).toContain(
      'error: --encoders: "text_encoder_3" is not a text encoder of this model whose hidden states the lens can take (did you mean "text_encoder_2"?); choose from text_encoder, text_encoder_2',
    );
  });
});

describe('Flux.1 (tiny fixture: CLIP pooled, T5 with 3 blocks, guidance-distilled)', () => {
  const fluxFixture = inject('fluxFixture');

  it('lens runs without an unconditional branch, and refuses a negative prompt by its option', async () => {
    const out = join(tempDir(), 'flux');
    const args = ['lens', 'a red apple', '--model', fluxFixture, '--layers', '0%:100%:50%', '--seeds', '0'];
    const result = await dlens([...args, '--steps', '2', '--size', '32', '--out', out]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({ family: 'flux', num_layers: 3 });
    expect(manifest.config.lens.layers).toEqual([0, 2, 3]);
    expect(manifest.config.sampler).toMatchObject({ steps: 2, guidance: 3.5 });
    expect(manifest.lens).toMatchObject({ uncond: expect.stringContaining('guidance-distilled') });
    expect(manifest.images).toHaveLength(3);

    const negative = await dlens([
      ...args,
      '--family',
      'flux',
      '--negative',
      'blurry',
      '--out',
      join(out, 'x'),
    ]);
    expect(negative.exitCode).toBe(1);
    expect(negative.stderr).toContain(
      'error: --negative: family flux is guidance-distilled: it has no unconditional branch, so no negative prompt',
    );
    expect(negative.stderr).not.toContain('loaded');
  });
});

describe('SD3 (tiny fixture: CLIPs with 3 and 4 layers, T5 with 3 blocks)', () => {
  const sd3Fixture = inject('sd3Fixture');

  it('lens sweeps T5 depth with the CLIPs stepped back alongside, and records the rule', async () => {
    const out = join(tempDir(), 'sd3');
    const args = ['lens', 'a red apple', '--model', sd3Fixture, '--layers', '0%:100%:50%', '--seeds', '0'];
    const result = await dlens([...args, '--steps', '2', '--out', out]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({ family: 'sd3', num_layers: 3 });
    expect(manifest.config.lens.layers).toEqual([0, 2, 3]);
    expect(manifest.lens).toMatchObject({
      layers: expect.stringContaining('steps back from its stock layer'),
    });
    expect(manifest.images).toHaveLength(3);
  });
});

describe('Sana (tiny fixture: Gemma-2 with 3 layers, 512x512 native)', () => {
  const sanaFixture = inject('sanaFixture');

  it('lens sweeps the Gemma decoder with the stock instruction, writing images, grids and the manifest', async () => {
    const out = join(tempDir(), 'sana');
    const args = ['lens', 'a red apple', '--model', sanaFixture, '--layers', '0%:100%:25%', '--seeds', '0'];
    const result = await dlens([...args, '--steps', '2', '--size', '64', '--out', out]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(result.stderr).toMatch(/family sana, 3 encoder layers/);
    const manifest = readManifest(out);
    expect(manifest.model).toMatchObject({
      family: 'sana',
      pipeline_class: 'SanaPipeline',
      num_layers: 3,
      family_options: { clean_caption: false, max_sequence_length: 300 },
    });
    expect(manifest.model.family_options.complex_human_instruction).toHaveLength(8);
    // Gemma with 3 layers: 0%, 25%, 50%, 75%, 100% of 3 are layers 0, 1, 2, 2, 3.
    expect(manifest.config.lens).toMatchObject({ layers: [0, 1, 2, 3], layer_spec: '0%:100%:25%' });
    expect(manifest.config.sampler).toMatchObject({ steps: 2, guidance: 4.5, size: [64, 64] });
    expect(manifest.lens).toMatchObject({
      norm: expect.stringContaining('text_encoder.norm'),
      tokenization: expect.stringContaining('complex human instruction'),
    });
    expect(manifest.images.map((image) => image.layer)).toEqual([0, 1, 2, 3]);
    for (const image of manifest.images) {
      // Generated at the nearest trained size (stock resolution binning) and resized to the asked one.
      expect((await sharp(join(out, image.path)).metadata()).width).toBe(64);
    }
    expect(manifest.grids).toHaveLength(1);
  });
});

describe('diffusion-lens schema, doctor, --help', () => {
  it('schema prints the JSON Schema', async () => {
    const result = await dlens(['schema']);
    expect(result.exitCode).toBe(0);
    const schema = JSON.parse(result.stdout) as { properties: Record<string, unknown> };
    expect(schema.properties.model).toBeTypeOf('object');
    expect(schema.properties.prompts).toBeTypeOf('object');
    expect(schema.properties.stages).toBeTypeOf('object');
    expect(JSON.stringify(schema.properties.stage2)).toContain('noise_level');
  });

  it('doctor reports versions and device (exit 0)', async () => {
    const result = await dlens(['doctor']);
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/^node\s+20\./m);
    expect(result.stdout).toMatch(/^python\s+3\.\d+/m);
    expect(result.stdout).toMatch(/^torch\s+\d/m);
    expect(result.stdout).toMatch(/^device\s+cpu/m);
    expect(result.stdout).toContain('ok:');
  });

  it('doctor names the fix when Python is missing (exit 1)', async () => {
    const result = await dlens(['doctor'], {
      env: { ...process.env, DIFFUSION_LENS_PYTHON: '/no/such/python3' },
    });
    expect(result.exitCode).toBe(1);
    expect(result.stdout).toContain('Python interpreter "/no/such/python3" not found');
    expect(result.stdout).toMatch(/fix: .*npm install/);
  });

  it.each(['lens', 'run', 'schema', 'doctor'])('%s --help explains the options', async (command) => {
    const result = await dlens([command, '--help']);
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain(`Usage: diffusion-lens ${command}`);
    if (command === 'lens') {
      for (const option of [
        '--layers',
        '--seeds',
        '--steps',
        '--guidance',
        '--size',
        '--scheduler',
        '--negative',
        '--uncond',
        '--noise',
        '--max-batch',
        '--dtype',
        '--device',
        '--out',
        '--json',
        '--offload',
        '--clean-caption',
        '--no-clean-caption',
        '--stages',
        '--stage2-model',
        '--stage2-steps',
        '--stage2-guidance',
        '--stage2-size',
        '--noise-level',
        '--stage2-seed',
      ]) {
        expect(result.stdout).toContain(option);
      }
      expect(result.stdout.match(/\(default:/g)?.length).toBeGreaterThanOrEqual(14);
    }
  });
});
