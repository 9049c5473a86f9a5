// Sweeps: expandSweep (the product, names, validation) and runStudy on the embedded shapes model.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { loadConfigFile, parseConfig, toJsonSchema } from '../src/config/index.js';
import {
  expandSweep,
  type Manifest,
  runExperiment,
  runStudy,
  STUDY_FILE,
  type StudyEvent,
  type StudyRecord,
  StudyRecordSchema,
} from '../src/experiment/index.js';
import { configError, write } from './config-helpers.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const tempDir = tempDirs('dlens-sweep-');

const SWEEP_YAML = `name: study
prompts: [a red circle]
sampler: { steps: 3 }
lens: { layers: "0,8" }
seeds: [0]
sweep:
  lens.uncond: [final, same-layer]
  lens.noise: [shared, per-layer]
`;

describe('expandSweep', () => {
  it('expands the product in order, the first field varying slowest, named by the values', () => {
    const config = parseConfig({
      prompts: ['a cat'],
      sweep: {
        'lens.uncond': ['final', 'same-layer'],
        'lens.noise': ['shared', 'per-layer'],
        'sampler.guidance': [3, 7.5],
      },
    });
    const { variants } = expandSweep(config);
    expect(variants.map((v) => v.name)).toEqual([
      'uncond-final_noise-shared_guidance-3',
      'uncond-final_noise-shared_guidance-7.5',
      'uncond-final_noise-per-layer_guidance-3',
      'uncond-final_noise-per-layer_guidance-7.5',
      'uncond-same-layer_noise-shared_guidance-3',
      'uncond-same-layer_noise-shared_guidance-7.5',
      'uncond-same-layer_noise-per-layer_guidance-3',
      'uncond-same-layer_noise-per-layer_guidance-7.5',
    ]);
    const last = variants.at(-1);
    expect(last?.values).toEqual({
      'lens.uncond': 'same-layer',
      'lens.noise': 'per-layer',
      'sampler.guidance': 7.5,
    });
    expect(last?.config.lens).toMatchObject({ uncond: 'same-layer', noise: 'per-layer' });
    expect(last?.config.sampler.guidance).toBe(7.5);
    expect(last?.config.sweep).toBeUndefined();
    // The base is left as it was.
    expect(config.lens.uncond).toBe('final');
  });

  it('names models by their last path part, and keeps names unique and filesystem-safe', () => {
    const config = parseConfig({
      prompts: ['a cat'],
      sweep: {
        'model.id': ['org/Model-A', 'other/model-a', 'stabilityai/stable-diffusion-2-1'],
        'sampler.guidance': [5],
        'stage2.guidance': [4],
      },
    });
    const names = expandSweep(config).variants.map((v) => v.name);
    expect(names[2]).toBe('id-stable-diffusion-2-1_sampler-guidance-5_stage2-guidance-4');
    expect(new Set(names.map((n) => n.toLowerCase())).size).toBe(3);
    for (const name of names) expect(name).toMatch(/^[a-z0-9][a-z0-9._+-]*[a-z0-9]$/);
    expect(names[0]).toMatch(/^id-model-a_sampler-guidance-5_stage2-guidance-4_[0-9a-f]{8}$/);
  });

  it('sets fields inside mappings it creates, and sweeps whole sections', () => {
    const config = parseConfig({
      prompts: ['a cat'],
      sweep: { 'sampler.family_options.eta': [0, 1], seeds: [[0], [1, 2]] },
    });
    const { variants } = expandSweep(config);
    expect(variants.map((v) => v.name)).toEqual([
      'eta-0_seeds-0',
      'eta-0_seeds-1-2',
      'eta-1_seeds-0',
      'eta-1_seeds-1-2',
    ]);
    expect(variants[3]?.config.sampler.family_options).toEqual({ eta: 1 });
    expect(variants[3]?.config.seeds).toEqual([1, 2]);
  });

  it('rejects unknown fields with a did-you-mean and the YAML line', async () => {
    const dir = tempDir();
    const file = write(
      dir,
      'bad.yaml',
      'prompts: [a cat]\nsweep:\n  lens.uncnd: [final]\n  sampler.nope: [1]\n  name: [a, b]\n  sweep: [x]\n',
    );
    const error = await configError(loadConfigFile(file));
    expect(error.issues.map((i) => [i.line, i.message])).toEqual([
      [3, 'is not a config field: lens has no "uncnd" (did you mean "lens.uncond"?)'],
      [
        4,
        expect.stringMatching(/^is not a config field: sampler has no "nope" \(sampler has: steps, guidance/),
      ],
      [5, expect.stringContaining('name cannot be swept')],
      [6, expect.stringContaining('sweep cannot be swept')],
    ]);
    expect(error.message).toContain('bad.yaml:3: sweep.lens.uncnd: is not a config field');
  });

  it('rejects empty lists and duplicate values', async () => {
    const dir = tempDir();
    const file = write(
      dir,
      'dup.yaml',
      'prompts: [a cat]\nsweep:\n  lens.uncond: []\n  sampler.guidance:\n    - 3\n    - 3\n',
    );
    const error = await configError(loadConfigFile(file));
    expect(error.issues.map((i) => [i.line, i.message])).toEqual([
      [3, 'must list at least one value'],
      [6, '3 is listed twice'],
    ]);
  });

  it('validates each variant, naming it and the field, located at the swept value', async () => {
    const dir = tempDir();
    const file = write(
      dir,
      'variants.yaml',
      'prompts: [a cat]\nsweep:\n  lens.uncond: [final, sideways]\n  sampler.guidance: [3, 200]\n',
    );
    const config = await loadConfigFile(file);
    const error = await configError(() => expandSweep(config));
    expect(error.issues.map((i) => [i.line, i.path.join('.'), i.message])).toEqual([
      [
        3,
        'lens.uncond',
        'must be one of final, same-layer (got "sideways") (sweep variant uncond-sideways_guidance-3)',
      ],
      [4, 'sampler.guidance', 'must be <= 100 (got 200) (sweep variant uncond-final_guidance-200)'],
    ]);
    expect(error.message).toContain('variants.yaml:4: sampler.guidance: must be <= 100');
  });

  it('needs a sweep, and a config with one is not a plain run', async () => {
    const plain = parseConfig({ prompts: ['a cat'] });
    expect((await configError(() => expandSweep(plain))).field).toBe('sweep');
    const swept = parseConfig({ prompts: ['a cat'], sweep: { 'lens.noise': ['shared'] } });
    const error = await configError(runExperiment(swept, { outDir: join(tempDir(), 'x') }));
    expect(error.message).toContain('runStudy');
  });

  it('is described in the JSON Schema', () => {
    const schema = toJsonSchema() as { properties: Record<string, { description?: string }> };
    expect(schema.properties.sweep?.description).toContain('every combination runs as one variant');
  });
});

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

describe('runStudy on the embedded shapes model', () => {
  const out = tempDir();
  const names = [
    'uncond-final_noise-shared',
    'uncond-final_noise-per-layer',
    'uncond-same-layer_noise-shared',
    'uncond-same-layer_noise-per-layer',
  ];

  it('runs every variant into its folder with one worker, and records study.json', async () => {
    const config = await loadConfigFile(write(tempDir(), 'study.yaml', SWEEP_YAML));
    const events: StudyEvent[] = [];
    const result = await runStudy(config, { outDir: out, onEvent: (e) => events.push(e) });
    expect(result.complete).toBe(true);
    expect(result.generated).toBe(8);
    // One worker for the study, started by it (the runs reuse it).
    expect(events.filter((e) => e.type === 'worker-ready')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'variant-start').map((e) => 'variant' in e && e.variant)).toEqual(
      names,
    );
    for (const event of events) {
      if (event.type !== 'study-start' && event.type !== 'study-done')
        expect(event).toHaveProperty('variant');
    }
    const study = StudyRecordSchema.parse(readJson<StudyRecord>(join(out, STUDY_FILE)));
    expect(study).toMatchObject({
      name: 'study',
      complete: true,
      sweep: { 'lens.uncond': ['final', 'same-layer'], 'lens.noise': ['shared', 'per-layer'] },
    });
    expect(study.variants.map((v) => [v.name, v.folder, v.manifest, v.complete, v.images_generated])).toEqual(
      names.map((name) => [name, name, `${name}/manifest.json`, true, 2]),
    );
    for (const variant of study.variants) {
      const manifest = readJson<Manifest>(join(out, variant.manifest as string));
      expect(manifest.variant).toEqual({ name: variant.name, values: variant.values });
      expect(manifest.config.lens).toMatchObject({
        uncond: variant.values['lens.uncond'],
        noise: variant.values['lens.noise'],
      });
      expect(manifest.images.map((image) => image.layer)).toEqual([0, 8]);
      for (const image of manifest.images) expect(existsSync(join(out, variant.name, image.path))).toBe(true);
    }
    // The variants made different images (the swept settings change them).
    const bytes = names.map((name) =>
      readFileSync(
        join(out, name, readJson<Manifest>(join(out, name, 'manifest.json')).images[0]?.path ?? ''),
      ),
    );
    expect(new Set(bytes.map((b) => b.toString('base64'))).size).toBeGreaterThan(1);
  });

  it('reruns from the folders without generating anything or starting a worker', async () => {
    const config = await loadConfigFile(write(tempDir(), 'study.yaml', SWEEP_YAML));
    const events: StudyEvent[] = [];
    const result = await runStudy(config, { outDir: out, onEvent: (e) => events.push(e) });
    expect(result).toMatchObject({ complete: true, generated: 0, skipped: 8 });
    expect(events.some((e) => e.type === 'worker-ready' || e.type === 'model-loaded')).toBe(false);
    const study = readJson<StudyRecord>(join(out, STUDY_FILE));
    expect(study.variants.map((v) => [v.images_generated, v.images_skipped])).toEqual(
      names.map(() => [0, 2]),
    );
  });

  it('makes the images of variants with the same settings once', async () => {
    const dir = tempDir();
    const yaml = SWEEP_YAML.replace(
      /sweep:[\s\S]*$/,
      'sweep:\n  grid.min_cell: [64, 128]\n  runtime.max_batch: [1, 4]\n',
    );
    const config = await loadConfigFile(write(dir, 'same.yaml', yaml));
    const result = await runStudy(config, { outDir: join(dir, 'out') });
    expect(result).toMatchObject({ complete: true, generated: 2, skipped: 6 });
    const study = readJson<StudyRecord>(join(dir, 'out', STUDY_FILE));
    expect(study.variants.map((v) => [v.name, v.images_generated, v.images_shared, v.shared_from])).toEqual([
      ['min_cell-64_max_batch-1', 2, 0, []],
      ['min_cell-64_max_batch-4', 0, 2, ['min_cell-64_max_batch-1']],
      ['min_cell-128_max_batch-1', 0, 2, ['min_cell-64_max_batch-1']],
      ['min_cell-128_max_batch-4', 0, 2, ['min_cell-64_max_batch-1']],
    ]);
    // Each folder is whole: its own manifest, images (linked) and grid at its own cell size.
    const first = readJson<Manifest>(join(dir, 'out', 'min_cell-64_max_batch-1', 'manifest.json'));
    const last = readJson<Manifest>(join(dir, 'out', 'min_cell-128_max_batch-4', 'manifest.json'));
    expect(last.images).toEqual(first.images);
    const path = first.images[0]?.path as string;
    expect(statSync(join(dir, 'out', 'min_cell-128_max_batch-4', path)).ino).toBe(
      statSync(join(dir, 'out', 'min_cell-64_max_batch-1', path)).ino,
    );
    expect(last.grids).toHaveLength(1);
  });

  it('runs a sweep from the CLI, --json events tagged with the variant', async () => {
    const dir = tempDir();
    const yaml = SWEEP_YAML.replace(/sweep:[\s\S]*$/, 'sweep:\n  lens.noise: [shared, per-layer]\n');
    const file = write(dir, 'cli.yaml', yaml);
    const study = join(dir, 'out');
    const args = [join(root, 'dist', 'cli.js'), 'run', file, '--out', study, '--json'];
    const result = await execa('node', args, { reject: false });
    expect(result.exitCode, result.stderr).toBe(0);
    const events = result.stdout.split('\n').map((line) => JSON.parse(line) as StudyEvent);
    expect(events[0]).toMatchObject({ type: 'study-start', variants: 2 });
    expect(events.at(-1)).toMatchObject({ type: 'study-done', complete: true, images_generated: 4 });
    const done = events.filter((e) => e.type === 'done');
    expect(done.map((e) => 'variant' in e && e.variant)).toEqual(['noise-shared', 'noise-per-layer']);
    expect(existsSync(join(study, 'noise-per-layer', 'manifest.json'))).toBe(true);
    expect(existsSync(join(study, STUDY_FILE))).toBe(true);
  });

  it('plans a sweep variant by variant, with the total (offline)', async () => {
    const dir = tempDir();
    const file = write(dir, 'plan.yaml', SWEEP_YAML);
    const args = [join(root, 'dist', 'cli.js'), 'plan', file, '--out', join(dir, 'out')];
    const json = await execa('node', [...args, '--json'], { reject: false });
    expect(json.exitCode, json.stderr).toBe(0);
    const estimates = json.stdout
      .split('\n')
      .map((line) => JSON.parse(line) as { config: string; images: number });
    expect(estimates.map((e) => [e.config, e.images])).toEqual(names.map((name) => [`${file} [${name}]`, 2]));
    const text = await execa('node', args, { reject: false });
    expect(text.exitCode, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/total[^\n]*8 images/i);
  });
});
