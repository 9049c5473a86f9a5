// DIR/manifest.json: what was run, with what, and which files it made. Written atomically at the end of
// a run and when a run stops early (then `complete: false`).
import { join } from 'node:path';
import type { LensWorker, LoadedMessage, ReadyMessage } from '../bridge/index.js';
import type {
  ExperimentConfig,
  ModelConfig,
  NoiseMode,
  PromptFileSpec,
  SchedulerName,
  UncondMode,
} from '../config/index.js';
import { LENS_ALGORITHM_VERSION, TOOL_NAME, TOOL_VERSION } from '../version.js';
import type { Job, Plan } from './plan.js';
import { MANIFEST_FILE, writeFileAtomic } from './store.js';

export const MANIFEST_VERSION = 1;

/** The config as run: defaults filled in, layers as numbers, size resolved. */
export interface ResolvedConfig {
  name: string;
  model: ModelConfig;
  sampler: {
    steps: number;
    guidance: number;
    /** [height, width] */
    size: [number, number];
    height: number;
    width: number;
    scheduler: SchedulerName;
    /** The scheduler class that ran ('default' = the checkpoint's own). */
    scheduler_class: string | null;
    negative: string;
  };
  lens: { layers: number[]; layer_spec: string | number | number[]; uncond: UncondMode; noise: NoiseMode };
  seeds: number[];
  prompts: string[];
  prompts_file?: PromptFileSpec;
  runtime: { max_batch: number };
}

export interface ManifestImage {
  prompt: string;
  prompt_index: number;
  layer: number;
  seed: number;
  /** Relative to the output folder, with '/'. */
  path: string;
  key: string;
}

export function manifestImage(job: Job): ManifestImage {
  const { prompt, promptIndex, layer, seed, path, key } = job;
  return { prompt, prompt_index: promptIndex, layer, seed, path, key };
}

export interface Manifest {
  version: typeof MANIFEST_VERSION;
  tool: { name: string; version: string; lens_algorithm: number };
  complete: boolean;
  config: ResolvedConfig;
  model: {
    id: string;
    family: string;
    num_layers: number;
    revision: string | null;
    pipeline_class: string;
    dtype: string;
    device: string;
  };
  lens: LoadedMessage['lens'];
  worker: Pick<ReadyMessage, 'python' | 'torch' | 'diffusers' | 'transformers'> & { version: string };
  images: ManifestImage[];
  grids: { prompt: string; path: string }[];
  timings: {
    started: string;
    finished: string;
    seconds: number;
    images_generated: number;
    images_skipped: number;
    images_per_second: number;
  };
}

export async function writeManifest(outDir: string, manifest: Manifest): Promise<string> {
  const path = join(outDir, MANIFEST_FILE);
  await writeFileAtomic(path, `${JSON.stringify(manifest, null, 2)}\n`);
  return path;
}

export interface ManifestInput {
  config: ExperimentConfig;
  name: string;
  prompts: string[];
  plan: Plan;
  loaded: LoadedMessage;
  modelId: string;
  worker: LensWorker;
  done: Set<string>;
  grids: Manifest['grids'];
  complete: boolean;
  startedAt: Date;
  seconds: number;
  generated: number;
  skipped: number;
}

export function buildManifest(input: ManifestInput): Manifest {
  const { config, plan, loaded, worker } = input;
  const { height, width } = plan.settings.sampler;
  const resolved: ResolvedConfig = {
    name: input.name,
    model: { ...config.model, id: input.modelId },
    sampler: {
      steps: config.sampler.steps,
      guidance: config.sampler.guidance,
      size: [height, width],
      height,
      width,
      scheduler: config.sampler.scheduler,
      scheduler_class: config.sampler.scheduler === 'default' ? loaded.defaults.scheduler : null,
      negative: config.sampler.negative,
    },
    lens: {
      layers: plan.layers,
      layer_spec: config.lens.layers,
      uncond: config.lens.uncond,
      noise: config.lens.noise,
    },
    seeds: [...config.seeds],
    prompts: input.prompts,
    ...(Array.isArray(config.prompts) ? {} : { prompts_file: config.prompts }),
    runtime: { max_batch: config.runtime.max_batch },
  };
  return {
    version: MANIFEST_VERSION,
    tool: { name: TOOL_NAME, version: TOOL_VERSION, lens_algorithm: LENS_ALGORITHM_VERSION },
    complete: input.complete,
    config: resolved,
    model: {
      id: input.modelId,
      family: loaded.family,
      num_layers: loaded.num_layers,
      revision: loaded.revision,
      pipeline_class: loaded.pipeline_class,
      dtype: loaded.dtype,
      device: loaded.device,
    },
    lens: loaded.lens,
    worker: {
      version: worker.info.worker,
      python: worker.info.python,
      torch: worker.info.torch,
      diffusers: worker.info.diffusers,
      transformers: worker.info.transformers,
    },
    images: plan.jobs.filter((job) => input.done.has(job.key)).map(manifestImage),
    grids: input.grids,
    timings: {
      started: input.startedAt.toISOString(),
      finished: new Date().toISOString(),
      seconds: input.seconds,
      images_generated: input.generated,
      images_skipped: input.skipped,
      images_per_second: input.seconds > 0 ? Math.round((input.generated / input.seconds) * 1000) / 1000 : 0,
    },
  };
}
