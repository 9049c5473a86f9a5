// DIR/manifest.json: what was run, with what, and which files it made. Written atomically at the end of
// a run and when a run stops early (then `complete: false`).
import { join } from 'node:path';
import { z } from 'zod';
import type { FamilyOptions, LoadedMessage } from '../bridge/index.js';
import {
  type ExperimentConfig,
  type LensTokens,
  layerDepth,
  type ModelConfig,
  type NoiseMode,
  type PooledMode,
  type PromptFileSpec,
  type PromptSet,
  promptQuestions,
  type RenderedQuestion,
  type RuntimeConfig,
  type Stage,
  type UncondMode,
} from '../config/index.js';
import { LENS_ALGORITHM_VERSION, TOOL_NAME, TOOL_VERSION } from '../version.js';
import type { ResolvedMix } from './ablation.js';
import type { Job, Plan } from './plan.js';
import { type ImageReadout, imageReadout } from './readout.js';
import type { WorkerInfo } from './resolution.js';
import type { ShardRecord } from './shard.js';
import { MANIFEST_FILE, writeFileAtomic } from './store.js';

export const MANIFEST_VERSION = 1;

/** The sweep variant a run is, when it ran as part of a study (runStudy): its name and swept values. */
export const VariantTagSchema = z.object({
  /** The variant's folder name in the study, e.g. `uncond-same-layer_noise-per-layer`. */
  name: z.string().min(1),
  /** Each swept field (dotted path) with this variant's value. */
  values: z.record(z.string(), z.unknown()),
});
export type VariantTag = z.infer<typeof VariantTagSchema>;

/** Stage II as run: the config's settings with the checkpoint's defaults filled in. */
export interface ResolvedStage2 {
  /** Resolved stage II model id (local folders absolute). */
  model: string;
  revision: string | null;
  steps: number;
  guidance: number;
  /** [height, width] */
  size: [number, number];
  height: number;
  width: number;
  scheduler: string;
  /** The scheduler class that ran ('default' = the stage II checkpoint's own). */
  scheduler_class: string | null;
  seed: 'same' | number;
  /** The family's stage II options, defaults filled in (IF: noise_level). */
  family_options: FamilyOptions;
}

/** The config as run: defaults filled in (the model's steps and guidance too), layers as numbers, size resolved. */
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
    scheduler: string;
    /** The scheduler class that ran ('default' = the checkpoint's own). */
    scheduler_class: string | null;
    negative: string;
    /** The family's sampling options, defaults filled in. */
    family_options: FamilyOptions;
  };
  lens: {
    layers: number[];
    layer_spec: string | number | number[];
    uncond: UncondMode;
    noise: NoiseMode;
    encoders: 'all' | string[];
    pooled: PooledMode;
    /** Which positions followed the layer (`all`: every one). */
    tokens: LensTokens;
    /** lens.mix with its layers as hidden-state indices; null without one. */
    mix: ResolvedMix | null;
    /** The lens.embeds file (absolute) and the sha256 of its bytes; null without one. */
    embeds: { path: string; sha256: string } | null;
  };
  seeds: number[];
  prompts: string[];
  prompts_file?: PromptFileSpec;
  /** runtime.max_batch as configured (a number, or 'auto'). */
  runtime: { max_batch: RuntimeConfig['max_batch'] };
  stages: Stage[];
  /** Null when the run has no stage II. */
  stage2: ResolvedStage2 | null;
}

export interface ManifestImage {
  prompt: string;
  prompt_index: number;
  layer: number;
  /** How deep the layer is, in percent of L (0 = the embeddings, 100 = the final layer). */
  depth: number;
  seed: number;
  /** 1 = the base image; 2 = its stage II upscale. */
  stage: Stage;
  /** Relative to the output folder, with '/'. */
  path: string;
  key: string;
  /** Which hidden state of which encoder, through which norm, and which pooled vector it was made from. */
  readout: ImageReadout;
}

/** A job's record in its plan (whose L the depth is relative to). */
export function manifestImage(
  job: Job,
  plan: Pick<Plan, 'numLayers' | 'encoders' | 'settings'>,
): ManifestImage {
  const { prompt, promptIndex, layer, seed, stage, path, key } = job;
  return {
    prompt,
    prompt_index: promptIndex,
    layer,
    depth: layerDepth(layer, plan.numLayers),
    seed,
    stage,
    path,
    key,
    readout: imageReadout(layer, plan.encoders, plan.settings.lens),
  };
}

/** A prompt cut by the encoder's token limit: its token count and the limit. */
export interface Truncation {
  tokens: number;
  max_tokens: number;
}

/**
 * With lens.tokens other than all: the positions of a prompt's sequence embedding that followed the
 * layer, and their tokens as the tokenizer writes them (null for a position past the end-of-sequence
 * token), as the worker reported them.
 */
export interface LensedTokens {
  positions: number[];
  tokens: (string | null)[];
}

/** One prompt of the run, with its prompt file's other columns (category, class, object1, ...). */
export interface ManifestPrompt {
  prompt: string;
  columns: Record<string, string>;
  /** Set when the text encoder's token limit cut the prompt (the rest of it had no effect). */
  truncated: Truncation | null;
  /** Set when lens.tokens is not all and this run's worker encoded the prompt: which positions followed
   *  the layer. */
  lensed_tokens: LensedTokens | null;
  /** The per-image questions of the prompt (its prompt set's, filled in; else the generic one), which the
   *  annotation mode asks and the scorers answer. */
  questions: RenderedQuestion[];
}

/** One layer × seed grid: of one prompt's images of one stage. */
export interface ManifestGrid {
  prompt: string;
  stage: Stage;
  path: string;
}

export interface Manifest {
  version: typeof MANIFEST_VERSION;
  tool: { name: string; version: string; lens_algorithm: number };
  complete: boolean;
  /** Set only when the run is a variant of a study (runStudy). */
  variant?: VariantTag;
  /** Set only when the run is a shard (`--shard I/N`): which share of the plan it made. Its images,
   *  images.csv and journal are that share's; it has no grids. */
  shard?: ShardRecord;
  /** Set only when the run was merged from shards (`merge`): their folders, by shard index. */
  merged_from?: string[];
  config: ResolvedConfig;
  model: {
    id: string;
    family: string;
    num_layers: number;
    revision: string | null;
    pipeline_class: string;
    dtype: string;
    device: string;
    /** The family's load options as the worker resolved them (IF: clean_caption); {} for none. */
    family_options: FamilyOptions;
    /** The stage II checkpoint; null when the run has no stage II. */
    stage2: { id: string; revision: string | null; pipeline_class: string } | null;
    /** The folder a single-file model's configuration was read from (a hub repo's cached snapshot); else null. */
    config: LoadedMessage['config'];
    /** The LoRA weights loaded, with their scales and the components each changed. */
    lora: LoadedMessage['lora'];
  };
  lens: LoadedMessage['lens'];
  worker: Pick<WorkerInfo, 'python' | 'torch' | 'diffusers' | 'transformers'> & { version: string };
  /** The prompt file's extra column names (none for inline prompts and .txt files). */
  prompt_columns: string[];
  /** The prompt set the run's prompts file is (configs/prompts/sets.yaml and the like); null otherwise. */
  prompt_set: { id: string; category: string } | null;
  prompts: ManifestPrompt[];
  images: ManifestImage[];
  grids: ManifestGrid[];
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
  promptSet: PromptSet;
  /** By prompt index. */
  truncated: ReadonlyMap<number, Truncation>;
  /** By prompt index (lens.tokens other than all); default: none. */
  lensedTokens?: ReadonlyMap<number, LensedTokens>;
  plan: Plan;
  loaded: LoadedMessage;
  modelId: string;
  worker: WorkerInfo;
  done: Set<string>;
  grids: Manifest['grids'];
  complete: boolean;
  startedAt: Date;
  seconds: number;
  generated: number;
  skipped: number;
  /** The study variant the run is (recorded only when given). */
  variant?: VariantTag;
  /** The shard the run is (recorded only when given). */
  shard?: ShardRecord;
}

export function buildManifest(input: ManifestInput): Manifest {
  const { config, plan, loaded, worker } = input;
  const { set } = input.promptSet;
  const { steps, guidance, height, width } = plan.settings.sampler;
  const stage2 = plan.settings.stage2;
  const resolved: ResolvedConfig = {
    name: input.name,
    model: { ...config.model, id: input.modelId },
    sampler: {
      steps,
      guidance,
      size: [height, width],
      height,
      width,
      scheduler: config.sampler.scheduler,
      scheduler_class: config.sampler.scheduler === 'default' ? loaded.defaults.scheduler : null,
      negative: config.sampler.negative,
      family_options: plan.familyOptions.sample,
    },
    lens: {
      layers: plan.layers,
      layer_spec: config.lens.layers,
      uncond: config.lens.uncond,
      noise: config.lens.noise,
      encoders: plan.settings.lens.encoders ?? 'all',
      pooled: plan.settings.lens.pooled ?? 'final',
      tokens: plan.settings.lens.tokens ?? 'all',
      mix: plan.settings.lens.mix ?? null,
      embeds: plan.embeds,
    },
    seeds: [...config.seeds],
    prompts: input.promptSet.prompts,
    ...(Array.isArray(config.prompts) ? {} : { prompts_file: config.prompts }),
    runtime: { max_batch: config.runtime.max_batch },
    stages: [...plan.stages],
    stage2: stage2
      ? {
          model: stage2.model.id,
          revision: config.stage2.revision ?? null,
          steps: stage2.steps,
          guidance: stage2.guidance,
          size: [stage2.height, stage2.width],
          height: stage2.height,
          width: stage2.width,
          scheduler: config.stage2.scheduler,
          scheduler_class: config.stage2.scheduler === 'default' ? stage2.scheduler : null,
          seed: stage2.seed,
          family_options: plan.familyOptions.stage2,
        }
      : null,
  };
  return {
    version: MANIFEST_VERSION,
    tool: { name: TOOL_NAME, version: TOOL_VERSION, lens_algorithm: LENS_ALGORITHM_VERSION },
    complete: input.complete,
    ...(input.variant ? { variant: input.variant } : {}),
    ...(input.shard ? { shard: input.shard } : {}),
    config: resolved,
    model: {
      id: input.modelId,
      family: loaded.family,
      num_layers: loaded.num_layers,
      revision: loaded.revision,
      pipeline_class: loaded.pipeline_class,
      dtype: loaded.dtype,
      device: loaded.device,
      family_options: loaded.family_options,
      stage2:
        stage2 && loaded.stage2
          ? {
              id: stage2.model.id,
              revision: loaded.stage2.revision,
              pipeline_class: loaded.stage2.pipeline_class,
            }
          : null,
      config: loaded.config,
      lora: loaded.lora,
    },
    lens: loaded.lens,
    worker: {
      version: worker.worker,
      python: worker.python,
      torch: worker.torch,
      diffusers: worker.diffusers,
      transformers: worker.transformers,
    },
    prompt_columns: [...input.promptSet.columns],
    prompt_set: set === null ? null : { id: set.id, category: set.category },
    prompts: input.promptSet.prompts.map((prompt, index) => ({
      prompt,
      columns: { ...input.promptSet.rows[index] },
      truncated: input.truncated.get(index) ?? null,
      lensed_tokens: input.lensedTokens?.get(index) ?? null,
      questions: promptQuestions(set, prompt, input.promptSet.rows[index] ?? {}),
    })),
    images: plan.jobs.filter((job) => input.done.has(job.key)).map((job) => manifestImage(job, plan)),
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
