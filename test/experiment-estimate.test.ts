// `plan` without Python: counting images and denoiser evaluations (the stock pipelines' CFG rule, Heun's
// double steps, IF's stage II), the speed and disk tables, what is known offline (the config, a
// checkpoint's config files in a folder or the Hugging Face cache, the tables), and the exact plan from
// the resolution a run recorded in its folder, with the images there checked as the runner checks them.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LoadedMessage } from '../src/bridge/index.js';
import { ConfigError, type ExperimentConfigInput, parseConfig } from '../src/config/index.js';
import { familyOptionsFor } from '../src/experiment/family.js';
import {
  DENOISER_SECONDS,
  type EstimateOptions,
  estimateRun,
  evaluationsPerImage,
  FAMILY_FACTS,
  GPU_SPEED,
  gpuKey,
  imageSettings,
  JOURNAL_FILE,
  Journal,
  KNOWN_CHECKPOINTS,
  PNG_BYTES_PER_PIXEL,
  passesPerStep,
  planExperiment,
  RunEstimateSchema,
  tableSeconds,
} from '../src/experiment/index.js';
import { resolveInputs } from '../src/experiment/inputs.js';
import { writeResolution } from '../src/experiment/resolution.js';
import { settingsId } from '../src/experiment/settings.js';
import { oneEncoder, sdCapabilities } from './capabilities.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-estimate-');

/** An environment whose Hugging Face cache is an empty (or given) folder: nothing is downloaded. */
function offlineEnv(cache = tempDir()): NodeJS.ProcessEnv {
  return { ...process.env, HF_HUB_CACHE: cache, HF_HOME: cache, HF_HUB_OFFLINE: '1' };
}

function estimate(input: Record<string, unknown>, options: Partial<EstimateOptions> = {}) {
  const config = parseConfig({ prompts: ['a red cube', 'a blue ball'], seeds: [0, 1], ...input });
  return estimateRun(config, { outDir: join(tempDir(), 'out'), env: offlineEnv(), ...options });
}

const writeJson = (path: string, value: unknown) => {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(value));
};

/** A checkpoint's config files (no weights) in a folder: what `plan` reads offline. */
function checkpointFiles(dir: string, files: Record<string, unknown>): string {
  for (const [path, value] of Object.entries(files)) writeJson(join(dir, path), value);
  return dir;
}

const sdFiles = (layers: number, scheduler = 'DPMSolverMultistepScheduler') => ({
  'model_index.json': {
    _class_name: 'StableDiffusionPipeline',
    text_encoder: ['transformers', 'CLIPTextModel'],
    unet: ['diffusers', 'UNet2DConditionModel'],
  },
  'text_encoder/config.json': { model_type: 'clip_text_model', num_hidden_layers: layers },
  'unet/config.json': { sample_size: 16 },
  'vae/config.json': { block_out_channels: [32, 64] },
  'scheduler/scheduler_config.json': { _class_name: scheduler },
});

/** `org/name` in a Hugging Face cache folder, at a commit that `main` names. */
function cachedHubModel(cache: string, id: string, files: Record<string, unknown>): void {
  const commit = 'c'.repeat(40);
  const repo = join(cache, `models--${id.split('/').join('--')}`);
  mkdirSync(join(repo, 'refs'), { recursive: true });
  writeFileSync(join(repo, 'refs', 'main'), commit);
  checkpointFiles(join(repo, 'snapshots', commit), files);
}

describe('counting', () => {
  it('evaluates the denoiser twice a step exactly where the stock pipeline runs CFG (guidance > 1)', () => {
    expect(passesPerStep('cfg', 7.5)).toBe(2);
    expect(passesPerStep('cfg', 1.01)).toBe(2);
    expect(passesPerStep('cfg', 1)).toBe(1);
    expect(passesPerStep('cfg', 0)).toBe(1);
    expect(passesPerStep('distilled', 3.5)).toBe(1);
  });

  it("counts Heun's second-order steps twice but the first", () => {
    expect(evaluationsPerImage(50, 'dpm-multistep', 2)).toBe(100);
    expect(evaluationsPerImage(28, 'FlowMatchEulerDiscreteScheduler', 1)).toBe(28);
    expect(evaluationsPerImage(10, 'heun', 1)).toBe(19);
    expect(evaluationsPerImage(10, 'HeunDiscreteScheduler', 2)).toBe(38);
  });
});

describe('tables', () => {
  it('covers every family the worker has, and says where each figure comes from', () => {
    for (const family of ['sd', 'if', 'sdxl', 'flux', 'sd3', 'pixart', 'sana']) {
      expect(FAMILY_FACTS[family], family).toBeDefined();
      expect(DENOISER_SECONDS[family]?.[1]?.source, family).toMatch(/\w{10}/);
    }
    expect(DENOISER_SECONDS.if?.[2]?.source).toMatch(/IF-II/);
    expect(FAMILY_FACTS.flux?.guidance).toBe('distilled');
    for (const [id, known] of Object.entries(KNOWN_CHECKPOINTS)) {
      expect(FAMILY_FACTS[known.family], id).toBeDefined();
    }
    for (const gpu of Object.values(GPU_SPEED)) expect(gpu.source.length).toBeGreaterThan(20);
  });

  it('scales seconds per evaluation by pixel count and GPU, within the measured range only', () => {
    const base = tableSeconds('sd', 1, 512, 512);
    expect(base?.seconds).toBeCloseTo(0.0108, 6);
    expect(tableSeconds('sd', 1, 768, 768)?.seconds).toBeCloseTo(0.0108 * 2.25, 6);
    expect(tableSeconds('sd', 1, 768, 768)?.source).toMatch(/scaled x2\.25 by pixel count to 768x768/);
    expect(tableSeconds('sd', 1, 512, 512, 'h100')?.seconds).toBeCloseTo(0.0108 * 0.454, 6);
    expect(tableSeconds('sd', 1, 512, 512, 'h100')?.source).toMatch(/H100/);
    // A 32x32 test model is not a full-size checkpoint; families or stages without an entry have none.
    expect(tableSeconds('sd', 1, 32, 32)).toBeNull();
    expect(tableSeconds('sd', 2, 512, 512)).toBeNull();
    expect(tableSeconds('nope', 1, 512, 512)).toBeNull();
    expect(tableSeconds(null, 1, 512, 512)).toBeNull();
  });

  it('reads GPU names as users write them', () => {
    expect(gpuKey(undefined)).toBe('a100');
    expect(gpuKey('A100')).toBe('a100');
    expect(gpuKey('RTX-4090')).toBe('rtx4090');
    expect(gpuKey('NVIDIA H100')).toBe('h100');
    expect(() => gpuKey('abacus')).toThrow(/unknown GPU "abacus".*a100, h100/);
  });
});

describe('offline', () => {
  it('plans a known hub checkpoint from the tables, saying what is estimated', async () => {
    const result = await estimate({
      model: { id: 'stabilityai/stable-diffusion-2-1', family: 'sd' },
      sampler: { steps: 50, guidance: 7.5, size: 768, scheduler: 'dpm-multistep' },
      lens: { layers: '3:23:4' },
    });
    expect(RunEstimateSchema.parse(result)).toEqual(result);
    expect(result).toMatchObject({
      source: 'offline',
      num_layers: 23,
      stock_layer: 23,
      prompts: 2,
      layers: [3, 7, 11, 15, 19, 23],
      seeds: [0, 1],
      stages: [1],
      images: 24,
      cached: { verified: null, on_disk: 0 },
      todo: 24,
      evaluations: 24 * 100,
      todo_evaluations: 24 * 100,
      model: { family: 'sd', denoiser: 'UNet' },
    });
    expect(result.stage_estimates[0]).toMatchObject({ cfg: true, evaluations_per_image: 100 });
    expect(result.estimated.join('\n')).toMatch(
      /L = 23: the table's depth of stabilityai\/stable-diffusion-2-1/,
    );
    expect(result.time.basis).toBe('table');
    expect(result.time.seconds).toBeCloseTo(2400 * 0.0108 * 2.25, 6);
    expect(result.disk).toMatchObject({
      basis: 'estimate',
      bytes_per_pixel: PNG_BYTES_PER_PIXEL,
      image_bytes: Math.round(24 * 768 * 768 * PNG_BYTES_PER_PIXEL),
    });
  });

  it("falls back on the family's usual encoder depth and defaults for an unknown checkpoint", async () => {
    const result = await estimate({
      model: { id: 'someone/custom-sd', family: 'sd' },
      lens: { layers: 'all' },
    });
    expect(result.num_layers).toBe(12);
    expect(result.layers).toHaveLength(13);
    expect(result.stage_estimates[0]).toMatchObject({ steps: 50, guidance: 7.5, height: 512, width: 512 });
    const estimated = result.estimated.join('\n');
    expect(estimated).toMatch(/L = 12: the sd family's usual encoder/);
    expect(estimated).toMatch(/image size 512×512/);
    expect(estimated).toMatch(/usual 50 steps and guidance 7\.5/);
  });

  it("reads family, depth, native size and scheduler from a cached hub checkpoint's config files", async () => {
    const cache = tempDir();
    cachedHubModel(cache, 'someone/small-sd', sdFiles(7, 'HeunDiscreteScheduler'));
    const result = await estimate(
      { model: { id: 'someone/small-sd' }, sampler: { steps: 10, guidance: 5 } },
      { env: offlineEnv(cache) },
    );
    expect(result).toMatchObject({ num_layers: 7, model: { family: 'sd' }, images: 2 * 8 * 2 });
    expect(result.stage_estimates[0]).toMatchObject({
      height: 32,
      width: 32,
      scheduler: 'HeunDiscreteScheduler',
      evaluations_per_image: 19 * 2,
    });
    expect(result.estimated.join('\n')).not.toMatch(/L = |image size/);
    expect(result.notes.join('\n')).toMatch(/family sd: StableDiffusionPipeline in model_index\.json/);
    // A 32x32 model is outside the speed table.
    expect(result.time).toMatchObject({ basis: 'none', seconds: null });
    expect(result.time.source).toMatch(/--measure/);
  });

  it("takes SDXL's depth from its second encoder, the stock layer the penultimate", async () => {
    const dir = checkpointFiles(join(tempDir(), 'xl'), {
      'model_index.json': {
        _class_name: 'StableDiffusionXLPipeline',
        text_encoder: ['transformers', 'CLIPTextModel'],
        text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
      },
      'text_encoder/config.json': { model_type: 'clip_text_model', num_hidden_layers: 3 },
      'text_encoder_2/config.json': { model_type: 'clip_text_model', num_hidden_layers: 5 },
      'unet/config.json': { sample_size: 4 },
      'vae/config.json': { block_out_channels: [8, 8, 8, 8] },
    });
    const result = await estimate({ model: { id: dir }, lens: { layers: 'stock' } });
    expect(result).toMatchObject({ num_layers: 5, stock_layer: 4, layers: [4], model: { family: 'sdxl' } });
    expect(result.stage_estimates[0]).toMatchObject({ height: 32, width: 32, steps: 50, guidance: 5 });
  });

  it("counts IF's stage II, both stages with CFG", async () => {
    const result = await estimate({
      model: { id: 'DeepFloyd/IF-I-XL-v1.0', family: 'if' },
      sampler: { steps: 100, guidance: 7, size: 64 },
      stage2: { model: 'DeepFloyd/IF-II-L-v1.0', steps: 50, guidance: 4, size: 256 },
      lens: { layers: '0:24:4' },
    });
    expect(result).toMatchObject({ stages: [1, 2], images: 2 * 7 * 2 * 2, num_layers: 24 });
    const [one, two] = result.stage_estimates;
    expect(one).toMatchObject({ images: 28, evaluations_per_image: 200, evaluations: 5600, height: 64 });
    expect(two).toMatchObject({ images: 28, evaluations_per_image: 100, evaluations: 2800, height: 256 });
    expect(result.evaluations).toBe(8400);
    expect(result.time.seconds).toBeCloseTo(5600 * 0.054 + 2800 * 0.096, 6);
    expect(result.disk.image_bytes).toBe(Math.round(28 * (64 * 64 + 256 * 256) * PNG_BYTES_PER_PIXEL));
  });

  it('evaluates Flux once a step (guidance-distilled), and SD once at guidance 1', async () => {
    const flux = await estimate({ model: { id: 'black-forest-labs/FLUX.1-dev', family: 'flux' } });
    expect(flux.stage_estimates[0]).toMatchObject({
      cfg: false,
      steps: 28,
      evaluations_per_image: 28,
      height: 1024,
    });
    expect(flux.model.denoiser).toBe('transformer');
    const sd = await estimate({
      model: { id: 'someone/x', family: 'sd' },
      sampler: { guidance: 1, steps: 20 },
    });
    expect(sd.stage_estimates[0]).toMatchObject({ cfg: false, evaluations_per_image: 20 });
  });

  it('has no GPU time for a run on the CPU, and times another GPU when asked', async () => {
    const input = { model: { id: 'stabilityai/stable-diffusion-xl-base-1.0', family: 'sdxl' } };
    const cpu = await estimate({ ...input, model: { ...input.model, device: 'cpu' } });
    expect(cpu.time).toMatchObject({ basis: 'none', seconds: null });
    expect(cpu.time.source).toMatch(/for GPUs, and this run is on cpu/);
    const a100 = await estimate(input);
    const h100 = await estimate(input, { gpu: 'H100' });
    expect(h100.time.device).toBe('an H100');
    expect(h100.time.seconds ?? 0).toBeCloseTo((a100.time.seconds ?? 0) * 0.454, 3);
  });

  it('counts images already in the folder, unchecked, when nothing tells their settings', async () => {
    const out = tempDir();
    mkdirSync(join(out, 'images', 'x'), { recursive: true });
    writeFileSync(join(out, 'images', 'x', 'L0-s0.png'), 'png');
    mkdirSync(dirname(join(out, JOURNAL_FILE)), { recursive: true });
    writeFileSync(
      join(out, JOURNAL_FILE),
      `${JSON.stringify({ key: 'k', path: 'images/x/L0-s0.png', sha256: 'a'.repeat(64), bytes: 3, settings: 's' })}\n`,
    );
    const result = await estimate({ model: { id: 'someone/x', family: 'sd' } }, { outDir: out });
    expect(result.cached).toMatchObject({ verified: null, on_disk: 1 });
    expect(result.todo).toBeNull();
    expect(result.todo_evaluations).toBeNull();
    expect(result.notes.join('\n')).toMatch(/1 image in the folder, not checked.*--load/);
  });

  it('refuses what it cannot know, and layers beyond an estimated depth, pointing at --load', async () => {
    await expect(estimate({ model: { id: 'someone/mystery' } })).rejects.toThrow(
      /cannot tell the family and encoder depth of someone\/mystery offline.*--load/,
    );
    const bad = estimate({ model: { id: 'someone/custom-sd', family: 'sd' }, lens: { layers: '0:20' } });
    await expect(bad).rejects.toThrow(ConfigError);
    await expect(bad).rejects.toThrow(
      /out of range 0\.\.12.*L = 12 is the sd family's usual encoder.*--load/,
    );
  });

  it('reads prompts from a file relative to the config folder', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'p.csv'), 'prompt,kind\na cat,animal\na dog,animal\na car,thing\n');
    const config = parseConfig({
      model: { id: 'someone/x', family: 'sd' },
      prompts: { file: 'p.csv' },
      seeds: [0],
      lens: { layers: '0,12' },
    });
    const result = await estimateRun(config, { outDir: join(dir, 'out'), configDir: dir, env: offlineEnv() });
    expect(result).toMatchObject({ prompts: 3, images: 6 });
  });
});

describe('recorded resolution', () => {
  const info = {
    worker: '0.1.0',
    python: '3.12',
    torch: '2.13.0',
    diffusers: '0.42.1',
    transformers: '5.24.0',
    device: 'cuda',
  } as const;

  function loaded(model: string): LoadedMessage {
    return {
      v: 1,
      id: 'r1',
      type: 'loaded',
      model,
      family: 'sd',
      capabilities: sdCapabilities,
      encoders: oneEncoder('CLIPTextModel', 5, 'final_layer_norm'),
      num_layers: 5,
      stock_layer: 5,
      pipeline_class: 'StableDiffusionPipeline',
      revision: null,
      device: 'cuda',
      dtype: 'fp16',
      defaults: { steps: 30, guidance: 6, height: 512, width: 512, scheduler: 'PNDMScheduler' },
      lens: { norm: 'final_layer_norm', uncond: 'final layer of ""' },
      family_options: {},
      notices: [],
      config: null,
      lora: [],
      stage2: null,
    };
  }

  it('plans exactly as the last run resolved, and checks the images on disk as the runner does', async () => {
    const model = checkpointFiles(join(tempDir(), 'model'), sdFiles(9));
    const out = join(tempDir(), 'out');
    const input: ExperimentConfigInput = {
      model: { id: model },
      prompts: ['a red cube', 'a blue ball'],
      seeds: [0, 1],
      lens: { layers: '0,5' },
    };
    const config = parseConfig(input);
    const env = offlineEnv();
    const inputs = await resolveInputs(config, { env });
    const resolution = { loaded: loaded(model), worker: info };
    await writeResolution(out, inputs.load, inputs.fingerprints, resolution);

    const before = await estimateRun(config, { outDir: out, env });
    // The worker's L (5), defaults and scheduler, not the config files' (9).
    expect(before).toMatchObject({
      source: 'recorded',
      num_layers: 5,
      images: 8,
      cached: { verified: 0, on_disk: 0 },
      todo: 8,
      todo_evaluations: 8 * 60,
    });
    expect(before.stage_estimates[0]).toMatchObject({ steps: 30, guidance: 6, scheduler: 'PNDMScheduler' });
    expect(before.estimated.join('\n')).not.toMatch(/L = /);
    expect(before.time.basis).toBe('table');

    // One image on disk, journaled with its key and bytes; and the last run's timings.
    const settings = imageSettings(config, resolution.loaded, inputs.modelId, undefined, inputs.fingerprints);
    const plan = planExperiment({
      settings,
      familyOptions: familyOptionsFor(config, resolution.loaded),
      prompts: inputs.promptSet.prompts,
      layers: [0, 5],
      seeds: [0, 1],
      numLayers: 5,
    });
    const job = plan.jobs[0];
    if (!job) throw new Error('no job');
    const png = Buffer.alloc(512 * 512 * 2, 1);
    mkdirSync(dirname(join(out, job.path)), { recursive: true });
    writeFileSync(join(out, job.path), png);
    const journal = await Journal.open(out);
    const { createHash } = await import('node:crypto');
    await journal.append({
      key: job.key,
      path: job.path,
      sha256: createHash('sha256').update(png).digest('hex'),
      bytes: png.length,
      settings: settingsId(settings, 1),
    });
    writeJson(join(out, 'manifest.json'), {
      images: [{ key: job.key }],
      timings: { seconds: 12, images_generated: 1 },
    });

    const after = await estimateRun(config, { outDir: out, env });
    expect(after).toMatchObject({
      source: 'recorded',
      cached: { verified: 1, on_disk: 1, other_settings: 0 },
      todo: 7,
      todo_evaluations: 7 * 60,
      disk: { basis: 'measured', bytes_per_pixel: 2 },
      time: { basis: 'measured', seconds: 8 * 12, todo_seconds: 7 * 12 },
    });
    expect(after.time.source).toMatch(/last run in this folder made 1 image in 12 s/);

    // Other settings: the image belongs to another variant, and `run` would refuse the folder.
    const changed = parseConfig({ ...input, sampler: { steps: 31 } });
    const other = await estimateRun(changed, { outDir: out, env });
    expect(other).toMatchObject({ cached: { verified: 0, other_settings: 1 }, todo: 8 });
    expect(other.notes.join('\n')).toMatch(/1 image made with other settings.*--new-variant or --overwrite/);
  });
});
