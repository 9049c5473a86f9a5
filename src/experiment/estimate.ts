// Planning a run without running it (`diffusion-lens plan`): how many images (prompts × layers × seeds ×
// stages), how many denoiser (UNet or transformer) evaluations, how many of the images the output folder
// holds already, and estimates of the time and the disk the run takes. Nothing is generated or written.
//
// What is known comes, best first, from the worker (`load`: it loads the model, as `run` does), from the
// resolution the last run recorded in the output folder (exact and without Python: the runner's own
// fully-cached path), or offline from the config and the checkpoint's config files, filled in from the
// tables in estimate-tables.ts. Every number taken from a table is an estimate, named in `estimated`.
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import type { LensWorker, LoadedMessage } from '../bridge/index.js';
import {
  ConfigError,
  type ExperimentConfig,
  loadConfigFile,
  readModelDepth,
  type Stage,
} from '../config/index.js';
import { checkpointFolder, encoderDepth, readJsonObject } from '../config/model-info.js';
import { ablationNotes } from './ablation.js';
import { planBatchSize } from './batches.js';
import { inspectCache } from './cache.js';
import {
  DENOISER_SECONDS,
  FAMILY_FACTS,
  GPU_SPEED,
  gpuKey,
  KNOWN_CHECKPOINTS,
  PNG_BYTES_PER_PIXEL,
  tableSeconds,
} from './estimate-tables.js';
import type { RunEvent } from './events.js';
import { checkNamedFamily, familyOptionsFor } from './family.js';
import { type RunInputs, resolveInputs } from './inputs.js';
import { imageSettings, type Plan, planExperiment } from './plan.js';
import { buildWork, requestItems } from './request.js';
import { readResolution } from './resolution.js';
import { Journal, MANIFEST_FILE, slugify } from './store.js';
import { WorkerSupervisor } from './supervisor.js';

// ---------------------------------------------------------------------------------------------------------
// Counting (pure)

/**
 * Denoiser evaluations per step of one image: 2 where the family uses classifier-free guidance and the
 * scale is above 1 (the stock pipelines' own rule), else 1.
 */
export function passesPerStep(guidance: 'cfg' | 'distilled', scale: number): 1 | 2 {
  return guidance === 'cfg' && scale > 1 ? 2 : 1;
}

/** A scheduler that evaluates the denoiser twice per step but the first (Heun's: 2·steps - 1). */
const SECOND_ORDER = /heun/i;

/** Denoiser evaluations of one image's sampling loop. */
export function evaluationsPerImage(steps: number, scheduler: string, passes: 1 | 2): number {
  const calls = SECOND_ORDER.test(scheduler) ? 2 * steps - 1 : steps;
  return calls * passes;
}

const round = (value: number, digits: number): number => {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};

/** A grid's cells are upscaled (nearest neighbour, integer factor) until the shorter side reaches this. */
function gridUpscale(height: number, width: number, minCell: number): number {
  const side = Math.min(height, width);
  return side >= minCell || minCell <= 1 ? 1 : Math.ceil(minCell / side);
}

// ---------------------------------------------------------------------------------------------------------
// The result

const StageSchema = z.union([z.literal(1), z.literal(2)]);

export const StageEstimateSchema = z.object({
  stage: StageSchema,
  steps: z.int(),
  guidance: z.number(),
  height: z.int(),
  width: z.int(),
  /** The scheduler's name, or the checkpoint's scheduler class for 'default' when known. */
  scheduler: z.string(),
  /** Whether each step evaluates the denoiser twice (classifier-free guidance). */
  cfg: z.boolean(),
  evaluations_per_image: z.int(),
  images: z.int(),
  evaluations: z.int(),
  /** Of this stage, still to make; null when the folder's images cannot be checked offline. */
  todo_images: z.int().nullable(),
  /** Evaluations a run still does for this stage (a missing stage II image reruns its stage I). */
  todo_evaluations: z.int().nullable(),
  /** From the table (time.basis 'table'); null otherwise. */
  seconds_per_evaluation: z.number().nullable(),
});

export const RunEstimateSchema = z.object({
  type: z.literal('estimate'),
  name: z.string(),
  /** The config file; null for a config built in code. */
  config: z.string().nullable(),
  out_dir: z.string(),
  model: z.object({
    id: z.string(),
    family: z.string().nullable(),
    stage2: z.string().nullable(),
    denoiser: z.string(),
  }),
  /**
   * Where the model's facts come from: `worker` (loaded now), `recorded` (what the worker resolved for
   * the last run in this folder: exact), `offline` (the config, the checkpoint's config files, tables).
   */
  source: z.enum(['worker', 'recorded', 'offline']),
  /** L (hidden states 0..L) and the stock layer. */
  num_layers: z.int(),
  stock_layer: z.int(),
  prompts: z.int(),
  layers: z.array(z.int()),
  seeds: z.array(z.int()),
  stages: z.array(StageSchema),
  images: z.int(),
  cached: z.object({
    /** Images of this plan on disk with the bytes their keys produced; null when not checkable offline. */
    verified: z.int().nullable(),
    /** Images in the folder's journal whose file is there (any settings). */
    on_disk: z.int(),
    /** Images of the plan recorded but since changed or deleted (made again). */
    changed_by_hand: z.int(),
    /** Images made with other settings (`run` refuses them unless --new-variant or --overwrite). */
    other_settings: z.int(),
  }),
  /** Images a run makes; null when the folder's images cannot be checked offline. */
  todo: z.int().nullable(),
  stage_estimates: z.array(StageEstimateSchema),
  evaluations: z.int(),
  todo_evaluations: z.int().nullable(),
  time: z.object({
    /** Of the whole plan, and of what is left to make; null when there is no basis. */
    seconds: z.number().nullable(),
    todo_seconds: z.number().nullable(),
    basis: z.enum(['measured', 'table', 'none']),
    /** The device the time is for, in words. */
    device: z.string(),
    source: z.string(),
  }),
  disk: z.object({
    image_bytes: z.int(),
    grid_bytes: z.int(),
    /** Bytes of the images still to make (grids are rewritten by every run). */
    todo_bytes: z.int().nullable(),
    bytes_per_pixel: z.number(),
    basis: z.enum(['measured', 'estimate']),
    source: z.string(),
  }),
  /** Each number that is an estimate, with what it rests on. */
  estimated: z.array(z.string()),
  notes: z.array(z.string()),
});

export type StageEstimate = z.infer<typeof StageEstimateSchema>;
export type RunEstimate = z.infer<typeof RunEstimateSchema>;

// ---------------------------------------------------------------------------------------------------------
// Offline facts

const intOf = (value: unknown): number | null =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;

/** What the offline plan knows of the model, and from where. */
interface OfflineFacts {
  family: string | null;
  numLayers: number;
  stockLayer: number;
  /** Set when L is the table's, not the checkpoint's. */
  depthEstimate: string | null;
  familyNote: string;
  /** [height, width] of stage I; `sizeEstimate` set when from a table. */
  size: [number, number];
  sizeEstimate: string | null;
  /** The checkpoint's scheduler class, when its config files tell. */
  scheduler: string | null;
}

async function offlineFacts(
  config: ExperimentConfig,
  inputs: RunInputs,
  env: NodeJS.ProcessEnv,
): Promise<OfflineFacts> {
  const id = inputs.load.config ?? inputs.modelId;
  const revision = config.model.revision ?? null;
  const dir = await checkpointFolder(id, revision, env);
  const index = dir === null ? null : await readJsonObject(join(dir, 'model_index.json'));
  const known = KNOWN_CHECKPOINTS[inputs.modelId];
  const className = typeof index?._class_name === 'string' ? index._class_name : null;
  let family: string | null = config.model.family === 'auto' ? null : config.model.family;
  let familyNote = family === null ? '' : 'named in the config';
  if (family === null && className !== null) {
    family = Object.entries(FAMILY_FACTS).find(([, f]) => f.pipelineClasses.includes(className))?.[0] ?? null;
    familyNote = family === null ? '' : `${className} in model_index.json`;
  }
  if (family === null && known) {
    family = known.family;
    familyNote = 'a known checkpoint';
  }
  const facts = family === null ? undefined : FAMILY_FACTS[family];

  // L: the config files, else the known checkpoint, else the family's usual encoder.
  let numLayers: number | null = await readModelDepth(id, revision, env);
  let stockOffset = facts?.stockOffset ?? 0;
  if (numLayers === null && dir !== null && index !== null) {
    const present = (name: string) => Array.isArray(index[name]) && typeof index[name][1] === 'string';
    if (family === 'sdxl') numLayers = await encoderDepth(dir, 'text_encoder_2');
    else if (family === 'flux') numLayers = await encoderDepth(dir, 'text_encoder_2');
    else if (family === 'sd3') {
      if (present('text_encoder_3')) numLayers = await encoderDepth(dir, 'text_encoder_3');
      else {
        numLayers = await encoderDepth(dir, 'text_encoder_2');
        stockOffset = 1;
      }
    }
  }
  let depthEstimate: string | null = null;
  if (numLayers === null && known) {
    numLayers = known.numLayers;
    depthEstimate = `the table's depth of ${inputs.modelId}`;
  }
  if (numLayers === null && facts) {
    numLayers = facts.numLayers;
    depthEstimate = `the ${family} family's usual encoder: ${facts.encoder}`;
  }
  if (numLayers === null || family === null) {
    throw new ConfigError({
      path: ['model', 'id'],
      message:
        `cannot tell the family and encoder depth of ${inputs.modelId} offline (no config files in a local ` +
        'folder or the Hugging Face cache, not a checkpoint the table knows): set model.family, or plan ' +
        'with --load to ask the worker',
    });
  }
  if (depthEstimate !== null) {
    depthEstimate += dir === null ? ' (its config files are not in the local Hugging Face cache)' : '';
  }

  // The native size (sampler.size unset): a UNet's sample size in its config files, else the tables.
  let size: [number, number] | null = null;
  let sizeEstimate: string | null = null;
  if (config.sampler.size !== undefined) {
    size =
      typeof config.sampler.size === 'number'
        ? [config.sampler.size, config.sampler.size]
        : config.sampler.size;
  } else if (dir !== null && facts?.denoiser === 'UNet') {
    size = await unetSize(dir, family === 'if');
  }
  if (size === null) {
    const side = known?.size ?? facts?.size ?? 512;
    size = [side, side];
    sizeEstimate = `${side}×${side}: ${known ? `the table's native size of ${inputs.modelId}` : `the ${family} family's usual native size`}`;
  }
  const scheduler = dir === null ? null : await schedulerClass(dir);
  const stockLayer = Math.max(0, numLayers - stockOffset);
  return { family, numLayers, stockLayer, depthEstimate, familyNote, size, sizeEstimate, scheduler };
}

/** A UNet checkpoint's native size: the UNet's sample size, times the VAE's downscaling (none in pixel space). */
async function unetSize(dir: string, pixelSpace: boolean): Promise<[number, number] | null> {
  const unet = await readJsonObject(join(dir, 'unet', 'config.json'));
  const sample = unet?.sample_size;
  const [h, w] = Array.isArray(sample)
    ? [intOf(sample[0]), intOf(sample[1])]
    : [intOf(sample), intOf(sample)];
  if (h === null || w === null) return null;
  if (pixelSpace) return [h, w];
  const vae = await readJsonObject(join(dir, 'vae', 'config.json'));
  const blocks = Array.isArray(vae?.block_out_channels) ? vae.block_out_channels.length : null;
  if (blocks === null || blocks < 1) return null;
  const factor = 2 ** (blocks - 1);
  return [h * factor, w * factor];
}

async function schedulerClass(dir: string): Promise<string | null> {
  const config = await readJsonObject(join(dir, 'scheduler', 'scheduler_config.json'));
  return typeof config?._class_name === 'string' ? config._class_name : null;
}

// ---------------------------------------------------------------------------------------------------------
// Estimating

export interface EstimateOptions {
  /** The output folder whose images count as cached. */
  outDir: string;
  /** Folder for relative paths in the config; default: the config file's, else the current directory. */
  configDir?: string;
  /** Start the worker and load the model for exact numbers (default: offline). */
  load?: boolean;
  /** Also time one batch of the run's own items on the device (implies `load`); the images are dropped. */
  measure?: boolean;
  /** The GPU the table estimate is for (GPU_SPEED's keys, or names like `A100`); default the A100. */
  gpu?: string;
  python?: string;
  env?: NodeJS.ProcessEnv;
  /** The worker's start and load (`load`): worker-ready, model-loaded, notice. */
  onEvent?: (event: RunEvent) => void;
  onLog?: (line: string) => void;
  signal?: AbortSignal;
}

/** The plan's numbers before time and disk: from an exact plan or the offline facts. */
interface Counted {
  source: RunEstimate['source'];
  family: string | null;
  guidance: 'cfg' | 'distilled';
  numLayers: number;
  stockLayer: number;
  layers: number[];
  /** Device the worker runs on (`cuda`, `cpu`, `mps`), or what the config asks for (`auto`: a GPU). */
  device: string;
  stages: {
    stage: Stage;
    steps: number;
    guidance: number;
    height: number;
    width: number;
    scheduler: string;
  }[];
  /** With an exact plan: what is done, and the journal's byte counts of it. */
  exact: { plan: Plan; done: Set<string>; journal: Journal; changedByHand: number; foreign: number } | null;
}

/** A time measured on the device: seconds per (prompt, layer, seed) item, all stages. */
interface Measured {
  perItem: number;
  source: string;
}

/** How many images of the journal have their file on disk (offline: any settings). */
async function journaledOnDisk(outDir: string, journal: Journal): Promise<number> {
  let count = 0;
  for (const entry of journal.entries()) {
    try {
      if ((await stat(join(outDir, entry.path))).isFile()) count++;
    } catch {
      // gone
    }
  }
  return count;
}

/** The exact plan for what the worker loaded: as the runner makes it. */
export function exactPlan(config: ExperimentConfig, inputs: RunInputs, loaded: LoadedMessage): Plan {
  const settings = imageSettings(
    config,
    loaded,
    inputs.modelId,
    inputs.stage2ModelId,
    inputs.fingerprints,
    inputs.embeds,
  );
  return planExperiment({
    settings,
    familyOptions: familyOptionsFor(config, loaded),
    prompts: inputs.promptSet.prompts,
    layers: inputs.layersFor(loaded.num_layers, loaded.stock_layer),
    seeds: config.seeds,
    stages: inputs.stages,
    numLayers: loaded.num_layers,
    stockLayer: loaded.stock_layer,
    encoders: loaded.encoders,
    embeds: inputs.embeds,
  });
}

async function countExact(
  source: 'worker' | 'recorded',
  config: ExperimentConfig,
  inputs: RunInputs,
  loaded: LoadedMessage,
  outDir: string,
): Promise<Counted> {
  const plan = exactPlan(config, inputs, loaded);
  const journal = await Journal.open(outDir);
  const state = await inspectCache(outDir, journal, plan);
  const { sampler, stage2 } = plan.settings;
  const stages: Counted['stages'] = [
    {
      stage: 1,
      steps: sampler.steps,
      guidance: sampler.guidance,
      height: sampler.height,
      width: sampler.width,
      scheduler: sampler.scheduler,
    },
  ];
  if (stage2 && plan.stages.includes(2)) {
    stages.push({
      stage: 2,
      steps: stage2.steps,
      guidance: stage2.guidance,
      height: stage2.height,
      width: stage2.width,
      scheduler: stage2.scheduler,
    });
  }
  return {
    source,
    family: loaded.family,
    guidance: loaded.capabilities.guidance,
    numLayers: plan.numLayers,
    stockLayer: plan.stockLayer,
    layers: plan.layers,
    device: loaded.device,
    stages,
    exact: {
      plan,
      done: state.done,
      journal,
      changedByHand: state.changedByHand,
      foreign: state.foreign?.entries.length ?? 0,
    },
  };
}

function countOffline(config: ExperimentConfig, inputs: RunInputs, facts: OfflineFacts): Counted {
  const familyFacts = facts.family === null ? undefined : FAMILY_FACTS[facts.family];
  const stages: Counted['stages'] = [
    {
      stage: 1,
      steps: config.sampler.steps ?? familyFacts?.steps ?? 50,
      guidance: config.sampler.guidance ?? familyFacts?.guidanceScale ?? 7.5,
      height: facts.size[0],
      width: facts.size[1],
      scheduler:
        config.sampler.scheduler === 'default' ? (facts.scheduler ?? 'default') : config.sampler.scheduler,
    },
  ];
  if (inputs.stages.includes(2)) {
    const defaults = familyFacts?.stage2;
    const size = config.stage2.size ?? defaults?.size ?? facts.size[0] * 4;
    const [height, width] = typeof size === 'number' ? [size, size] : size;
    stages.push({
      stage: 2,
      steps: config.stage2.steps ?? defaults?.steps ?? 50,
      guidance: config.stage2.guidance ?? defaults?.guidance ?? 4,
      height,
      width,
      scheduler: config.stage2.scheduler,
    });
  }
  let layers: number[];
  try {
    layers = inputs.layersFor(facts.numLayers, facts.stockLayer);
  } catch (error) {
    if (error instanceof ConfigError && facts.depthEstimate !== null) {
      throw new ConfigError(
        error.issues.map((issue) => ({
          ...issue,
          message: `${issue.message} (L = ${facts.numLayers} is ${facts.depthEstimate}; plan with --load for the real depth)`,
        })),
      );
    }
    throw error;
  }
  return {
    source: 'offline',
    family: facts.family,
    guidance: familyFacts?.guidance ?? 'cfg',
    numLayers: facts.numLayers,
    stockLayer: facts.stockLayer,
    layers,
    device: config.model.device,
    stages,
    exact: null,
  };
}

/** Times one batch of the plan's first items, after a one-step warm-up; nothing is kept. */
async function measureOnDevice(
  worker: LensWorker,
  config: ExperimentConfig,
  plan: Plan,
  signal: AbortSignal | undefined,
): Promise<Measured | null> {
  const work = buildWork(config, plan, () => false);
  if (!work) return null;
  const count = Math.min(planBatchSize(config), work.request.items.length, 4);
  const items = work.request.items.slice(0, count);
  // Only the prompts of these items, so that encoding the rest is not timed.
  const used = [...new Set(items.map((item) => item.prompt))];
  const request = {
    ...work.request,
    prompts: used.map((index) => plan.prompts[index] ?? ''),
    items: items.map((item) => ({ ...item, prompt: used.indexOf(item.prompt) })),
    max_batch: count,
  };
  const warmUp = {
    ...request,
    items: request.items.slice(0, 1),
    steps: 1,
    stage2: request.stage2 ? { ...request.stage2, steps: 1 } : null,
  };
  await worker.generate(warmUp, {}, signal);
  const started = performance.now();
  await worker.generate(request, {}, signal);
  const seconds = (performance.now() - started) / 1000;
  const stages = request.stage2 ? 'both stages, ' : '';
  return {
    perItem: seconds / count,
    source:
      `measured: ${count} item${count === 1 ? '' : 's'} of this run (${stages}a batch of ${count}, after a ` +
      `one-step warm-up) in ${round(seconds, 2)} s on ${worker.info.device}, scaled to the run's items`,
  };
}

/** Seconds per image measured by the last run in this folder, when it made images of this plan. */
async function lastRunSpeed(outDir: string, plan: Plan): Promise<Measured | null> {
  const manifest = await readJsonObject(join(outDir, MANIFEST_FILE));
  const timings = manifest?.timings as { seconds?: unknown; images_generated?: unknown } | undefined;
  const images = Array.isArray(manifest?.images) ? (manifest.images as { key?: unknown }[]) : [];
  const generated = intOf(timings?.images_generated);
  const seconds = typeof timings?.seconds === 'number' ? timings.seconds : null;
  if (!generated || !seconds) return null;
  const keys = new Set(plan.jobs.map((job) => job.key));
  if (!images.some((image) => typeof image.key === 'string' && keys.has(image.key))) return null;
  const perImage = seconds / generated;
  return {
    perItem: perImage * plan.stages.length,
    source:
      `measured: the last run in this folder made ${generated} image${generated === 1 ? '' : 's'} in ` +
      `${round(seconds, 1)} s (${round(perImage, 3)} s each, start-up included)`,
  };
}

/** What a run has left to do: by stage, and in (prompt, layer, seed) items; null where unknown. */
interface Todo {
  byStage: Map<Stage, number> | null;
  items: number | null;
  /** Whether a run would sample stage II (only when a stage II image is missing). */
  stage2: boolean;
}

function todoOf(counted: Counted, items: number, onDisk: number): Todo {
  const planned = counted.stages.map((s) => s.stage);
  const { exact } = counted;
  if (exact) {
    const isDone = (job: Plan['jobs'][number]) => exact.done.has(job.key);
    const missing = exact.plan.jobs.filter((job) => !isDone(job));
    return {
      byStage: new Map(planned.map((stage) => [stage, missing.filter((job) => job.stage === stage).length])),
      // A run asks for every item with an image missing (its stage I image is made again if needed).
      items: requestItems(exact.plan.jobs, isDone).length,
      stage2: missing.some((job) => job.stage === 2),
    };
  }
  // Offline, only an empty folder is certain.
  if (onDisk === 0) return { byStage: new Map(planned.map((stage) => [stage, items])), items, stage2: true };
  return { byStage: null, items: null, stage2: true };
}

const sum = (values: readonly (number | null)[]): number | null =>
  values.some((v) => v === null) ? null : values.reduce<number>((a, b) => a + (b ?? 0), 0);

function timeEstimate(
  counted: Counted,
  stages: readonly StageEstimate[],
  tables: readonly ({ seconds: number; source: string } | null)[],
  items: number,
  todo: Todo,
  measured: Measured | null,
  gpu: { key: string; named: boolean },
  estimated: string[],
): RunEstimate['time'] {
  if (measured) {
    return {
      seconds: measured.perItem * items,
      todo_seconds: todo.items === null ? null : measured.perItem * todo.items,
      basis: 'measured',
      device: counted.device,
      source: measured.source,
    };
  }
  const missing = counted.stages.find((_, i) => !tables[i]);
  if (missing) {
    const entry = counted.family === null ? undefined : DENOISER_SECONDS[counted.family]?.[missing.stage];
    const why =
      counted.device !== 'cuda' && counted.device !== 'auto'
        ? `the speed table is for GPUs, and this run is on ${counted.device}`
        : entry
          ? `the speed table's ${counted.family} entry is for ${entry.size[1]}x${entry.size[0]} images of a ` +
            `full-size checkpoint, too far from ${missing.width}x${missing.height} to scale`
          : `the speed table has no entry for the ${counted.family ?? 'unknown'} family`;
    return {
      seconds: null,
      todo_seconds: null,
      basis: 'none',
      device: counted.device,
      source: `${why}: plan with --measure to time it on the device`,
    };
  }
  const label = GPU_SPEED[gpu.key]?.label ?? gpu.key;
  const cost = (evaluations: number | null, s: StageEstimate) =>
    evaluations === null ? null : evaluations * (s.seconds_per_evaluation ?? 0);
  const perEvaluation = stages.map(
    (s) => `${round(s.seconds_per_evaluation ?? 0, 4)} s per stage ${s.stage === 1 ? 'I' : 'II'} evaluation`,
  );
  const assumed = counted.device === 'auto' && !gpu.named ? ' (assumed; --gpu names another)' : '';
  estimated.push(
    `time: ${perEvaluation.join(', ')} on ${label}${assumed}, from the speed table of published ` +
      'benchmarks; loading the model not included; --measure times this device',
  );
  return {
    seconds: sum(stages.map((s) => cost(s.evaluations, s))),
    todo_seconds: sum(stages.map((s) => cost(s.todo_evaluations, s))),
    basis: 'table',
    device: label,
    source: tables.map((t, i) => `stage ${counted.stages[i]?.stage}: ${t?.source}`).join('; '),
  };
}

/** PNG bytes: measured over the plan's images on disk where there are some, else the rule of thumb. */
function diskEstimate(
  config: ExperimentConfig,
  counted: Counted,
  items: number,
  todo: Todo,
  estimated: string[],
): RunEstimate['disk'] {
  let bytes = 0;
  let pixels = 0;
  const { exact } = counted;
  for (const job of exact?.plan.jobs ?? []) {
    const entry = exact?.done.has(job.key) ? exact.journal.get(job.key) : undefined;
    const stage = counted.stages.find((s) => s.stage === job.stage);
    if (!entry || !stage) continue;
    bytes += entry.bytes;
    pixels += stage.height * stage.width;
  }
  const measured = pixels > 0 ? bytes / pixels : null;
  const bpp = measured ?? PNG_BYTES_PER_PIXEL;
  const imageBytes = (s: { height: number; width: number }) => s.height * s.width * bpp;
  const minCell = config.grid.min_cell;
  const images = counted.stages.reduce((a, s) => a + items * imageBytes(s), 0);
  // A grid holds its images (upscaled cells repeat each pixel); its labels are small beside them.
  const grids = counted.stages.reduce(
    (a, s) => a + items * imageBytes(s) * gridUpscale(s.height, s.width, minCell),
    0,
  );
  const { byStage } = todo;
  const left =
    byStage === null
      ? null
      : counted.stages.reduce((a, s) => a + (byStage.get(s.stage) ?? 0) * imageBytes(s), 0);
  const grid = 'a grid about the sum of its images, its upscaled cells counted';
  const disk: RunEstimate['disk'] = {
    image_bytes: Math.round(images),
    grid_bytes: Math.round(grids),
    todo_bytes: left === null ? null : Math.round(left),
    bytes_per_pixel: round(bpp, 3),
    basis: measured === null ? 'estimate' : 'measured',
    source:
      measured === null
        ? `${PNG_BYTES_PER_PIXEL} bytes per pixel (PNG of detailed RGB images, a rule of thumb); ${grid}`
        : `${round(measured, 3)} bytes per pixel, measured over the plan's images on disk; ${grid}`,
  };
  if (measured === null) estimated.push(`disk: ${disk.source}`);
  return disk;
}

/** The estimate, from the counted plan: cache, evaluations, time, disk. */
async function summarize(
  config: ExperimentConfig,
  inputs: RunInputs,
  counted: Counted,
  outDir: string,
  gpu: { key: string; named: boolean },
  measured: Measured | null,
  estimated: string[],
  notes: string[],
): Promise<RunEstimate> {
  const prompts = inputs.promptSet.prompts.length;
  const { layers, exact } = counted;
  const seeds = [...config.seeds];
  const items = prompts * layers.length * seeds.length;
  const journal = exact?.journal ?? (await Journal.open(outDir));
  const onDisk = await journaledOnDisk(outDir, journal);
  const todo = todoOf(counted, items, onDisk);
  const onGpu = counted.device === 'cuda' || counted.device === 'auto';
  const tables = counted.stages.map((s) =>
    onGpu ? tableSeconds(counted.family, s.stage, s.height, s.width, gpu.key) : null,
  );
  const stages: StageEstimate[] = counted.stages.map((s, i) => {
    const passes = passesPerStep(counted.guidance, s.guidance);
    const perImage = evaluationsPerImage(s.steps, s.scheduler, passes);
    const runs = todo.items === null ? null : s.stage === 1 || todo.stage2 ? todo.items : 0;
    return {
      ...s,
      cfg: passes === 2,
      evaluations_per_image: perImage,
      images: items,
      evaluations: items * perImage,
      todo_images: todo.byStage?.get(s.stage) ?? null,
      todo_evaluations: runs === null ? null : runs * perImage,
      seconds_per_evaluation: measured ? null : (tables[i]?.seconds ?? null),
    };
  });

  if (exact && exact.foreign > 0) {
    notes.push(
      `the folder holds ${exact.foreign} image${exact.foreign === 1 ? '' : 's'} made with other settings: ` +
        '`run` refuses it unless given --new-variant or --overwrite',
    );
  }
  if (exact && exact.changedByHand > 0) {
    notes.push(`${exact.changedByHand} image(s) changed or deleted since made: a run makes them again`);
  }
  if (!exact && onDisk > 0) {
    notes.push(
      `${onDisk} image${onDisk === 1 ? '' : 's'} in the folder, not checked: which of them this run can ` +
        'reuse depends on what the worker resolves (no record of it here); plan with --load to check them',
    );
  }
  return {
    type: 'estimate',
    name: inputs.name,
    config: null,
    out_dir: outDir,
    model: {
      id: inputs.modelId,
      family: counted.family,
      stage2: inputs.stage2ModelId ?? null,
      denoiser: FAMILY_FACTS[counted.family ?? '']?.denoiser ?? 'denoiser',
    },
    source: counted.source,
    num_layers: counted.numLayers,
    stock_layer: counted.stockLayer,
    prompts,
    layers,
    seeds,
    stages: counted.stages.map((s) => s.stage),
    images: items * counted.stages.length,
    cached: {
      verified: exact ? exact.done.size : null,
      on_disk: onDisk,
      changed_by_hand: exact?.changedByHand ?? 0,
      other_settings: exact?.foreign ?? 0,
    },
    todo: todo.byStage === null ? null : [...todo.byStage.values()].reduce((a, n) => a + n, 0),
    stage_estimates: stages,
    evaluations: stages.reduce((a, s) => a + s.evaluations, 0),
    todo_evaluations: sum(stages.map((s) => s.todo_evaluations)),
    time: timeEstimate(counted, stages, tables, items, todo, measured, gpu, estimated),
    disk: diskEstimate(config, counted, items, todo, estimated),
    estimated,
    notes,
  };
}

/**
 * Plans a run of `config` into `options.outDir` without generating anything: counts, what is cached,
 * time and disk (see the module comment). Throws ConfigError for a config the run would refuse for
 * the same reason (bad layers, missing prompt file), WorkerError when `load` fails.
 */
export async function estimateRun(config: ExperimentConfig, options: EstimateOptions): Promise<RunEstimate> {
  const env = options.env ?? process.env;
  const gpu = { key: gpuKey(options.gpu), named: options.gpu !== undefined };
  const inputs = await resolveInputs(config, { configDir: options.configDir, env });
  const outDir = resolve(options.outDir);
  const estimated: string[] = [];
  const notes: string[] = [];
  let counted: Counted;
  let measured: Measured | null = null;

  if (options.load || options.measure) {
    const emit = (event: RunEvent) => options.onEvent?.(event);
    const supervisor = new WorkerSupervisor({
      load: inputs.load,
      loading: inputs.loading,
      python: options.python,
      env: options.env,
      onLog: options.onLog,
      signal: options.signal,
      maxRestarts: 0,
      emit,
      notice: (message) => {
        notes.push(message);
        emit({ type: 'notice', message });
      },
      beforeLoad: (info) => checkNamedFamily(config, info.families),
    });
    try {
      const { worker, loaded } = await supervisor.ready();
      counted = await countExact('worker', config, inputs, loaded, outDir);
      if (options.measure && counted.exact) {
        measured = await measureOnDevice(worker, config, counted.exact.plan, options.signal);
      }
    } finally {
      await supervisor.close();
    }
  } else {
    const recorded = await readResolution(outDir, inputs.load, inputs.fingerprints);
    if (recorded) {
      counted = await countExact('recorded', config, inputs, recorded.loaded, outDir);
    } else {
      const facts = await offlineFacts(config, inputs, env);
      counted = countOffline(config, inputs, facts);
      if (facts.depthEstimate !== null) estimated.push(`L = ${facts.numLayers}: ${facts.depthEstimate}`);
      if (facts.sizeEstimate !== null) estimated.push(`image size ${facts.sizeEstimate}`);
      const familyFacts = FAMILY_FACTS[facts.family ?? ''];
      if (config.sampler.steps === undefined || config.sampler.guidance === undefined) {
        estimated.push(
          `steps and guidance the config leaves to the model: the ${facts.family} family's usual ` +
            `${familyFacts?.steps} steps and guidance ${familyFacts?.guidanceScale}`,
        );
      }
      const stage2 = familyFacts?.stage2;
      const { steps, guidance, size } = config.stage2;
      if (
        inputs.stages.includes(2) &&
        (steps === undefined || guidance === undefined || size === undefined)
      ) {
        estimated.push(
          'stage II settings the config leaves to the checkpoint: ' +
            (stage2
              ? `the ${facts.family} family's usual ${stage2.steps} steps, guidance ${stage2.guidance}, ${stage2.size} px`
              : '50 steps, guidance 4, 4 times the stage I size'),
        );
      }
      if (config.model.family === 'auto')
        notes.push(`family ${facts.family}: ${facts.familyNote} (the worker decides)`);
    }
  }
  if (!measured && counted.exact) measured = await lastRunSpeed(outDir, counted.exact.plan);
  notes.push(...ablationNotes(config, { numLayers: counted.numLayers, stockLayer: counted.stockLayer }));
  return summarize(config, inputs, counted, outDir, gpu, measured, estimated, notes);
}

/** `runs/<name>` (relative to the current directory), where `run` writes a config without --out. */
export function defaultOutDir(config: ExperimentConfig): string {
  return resolve('runs', slugify(config.name ?? 'run'));
}

/** estimateRun on a config file; the output folder defaults to `run`'s (`runs/<name>`). */
export async function planRun(
  configPath: string,
  options: Omit<EstimateOptions, 'outDir'> & { outDir?: string } = {},
): Promise<RunEstimate> {
  const config = await loadConfigFile(configPath);
  const estimate = await estimateRun(config, { ...options, outDir: options.outDir ?? defaultOutDir(config) });
  return { ...estimate, config: configPath };
}
