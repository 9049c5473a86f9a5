// The plan: one job per (prompt, layer, seed, stage), each with a content key that changes exactly when
// the image would (model, sampler, lens settings, prompt, layer, seed, stage II settings for stage II,
// code version) and not otherwise (device, offload, batch size, output folder).
import { createHash } from 'node:crypto';
import type { EncoderInfo, FamilyOptions, LoadedMessage } from '../bridge/index.js';
import {
  type ExperimentConfig,
  type NoiseMode,
  resolveStages,
  type Stage,
  type UncondMode,
} from '../config/index.js';
import { LENS_ALGORITHM_VERSION, TOOL_VERSION } from '../version.js';
import { type AblationSettings, ablationSettings } from './ablation.js';
import type { EmbedsFile } from './embeds.js';
import { familyOptionsFor, NO_FAMILY_OPTIONS, type ResolvedFamilyOptions } from './family.js';
import { type ReadoutSettings, readoutFor } from './readout.js';
import type { Fingerprints } from './resolution.js';
import { imagePath } from './store.js';

/**
 * A family's options sit beside the settings of their stage (IF's `clean_caption` in `model`,
 * `noise_level` in `stage2`), so a family with none adds nothing to a key. Their names never shadow a
 * setting's (imageSettings checks).
 */
type WithFamilyOptions<T> = T & FamilyOptions;

/** How stage II (super-resolution) runs, resolved against the loaded stage II checkpoint; with the
 *  family's stage II options (IF: noise_level). */
export type Stage2Settings = WithFamilyOptions<{
  /** `files`: a local checkpoint folder's fingerprint (see resolution.ts); absent for hub ids. */
  model: { id: string; revision: string | null; files?: string };
  steps: number;
  guidance: number;
  height: number;
  width: number;
  /** The scheduler name, or for 'default' the stage II checkpoint's own scheduler class. */
  scheduler: string;
  /** 'same' = each image's own stage I seed; else one seed for every stage II run. */
  seed: 'same' | number;
}>;

/** Everything besides (prompt, layer, seed, stage) that determines an image. */
export interface ImageSettings {
  /** With the family's load options as the worker resolved them (IF: clean_caption). */
  model: WithFamilyOptions<{
    id: string;
    revision: string | null;
    family: string;
    dtype: string;
    /** Present only when set: other weight files may hold (slightly) other weights. */
    variant?: string;
    /**
     * A local checkpoint folder's fingerprint (its files' names, sizes and times; a single-file
     * checkpoint's name, size and time): a model retrained in place makes new images. Absent for hub
     * ids, whose revision says it.
     */
    files?: string;
    /**
     * Present only for a single file with `model.config`: the local config folder's fingerprint, or the
     * hub id (whose commit is `revision`). Without it the config is the inferred hub repo's, at `revision`.
     */
    config?: { files: string } | { id: string };
    /** Present only with LoRA weights: each one's fingerprint and scale, in order. */
    lora?: { files: string; scale: number }[];
  }>;
  /** With the family's sampling options. */
  sampler: WithFamilyOptions<{
    /** Resolved: the config's value, else the model's default. */
    steps: number;
    guidance: number;
    height: number;
    width: number;
    /** The scheduler name, or for 'default' the checkpoint's own scheduler class. */
    scheduler: string;
    negative: string;
  }>;
  /** With which encoders follow the layer and where the pooled vector comes from, where not stock, and
   *  the ablations in use (lens.tokens, lens.mix, lens.embeds). */
  lens: { uncond: UncondMode; noise: NoiseMode } & ReadoutSettings & AblationSettings;
  /** Present when the plan has stage II; it enters the keys of stage II images only. */
  stage2?: Stage2Settings;
}

type Size = ExperimentConfig['sampler']['size'];

/** [height, width]: the configured size, else the model's native one. */
export function resolveSize(
  size: Size,
  loaded: { defaults: Pick<LoadedMessage['defaults'], 'height' | 'width'> },
): [number, number] {
  if (size === undefined) return [loaded.defaults.height, loaded.defaults.width];
  if (typeof size === 'number') return [size, size];
  return [size[0], size[1]];
}

/** What imageSettings reads of the worker's `loaded` reply; the depth only with lens.mix. */
export type LoadedForSettings = Pick<
  LoadedMessage,
  'revision' | 'family' | 'dtype' | 'defaults' | 'stage2' | 'capabilities' | 'family_options' | 'encoders'
> &
  Partial<Pick<LoadedMessage, 'num_layers' | 'stock_layer'>>;

/** The fingerprint of LoRA `index` (inputs.ts takes one of each). */
function loraFiles(fingerprints: Fingerprints, index: number): string {
  const files = fingerprints.lora?.[index];
  if (files === undefined) throw new Error(`no fingerprint for model.lora[${index}]`);
  return files;
}

/** `settings` with `options` beside them; an option may not shadow a setting. */
function withOptions<T extends object>(
  settings: T,
  options: FamilyOptions,
  where: string,
): WithFamilyOptions<T> {
  for (const name of Object.keys(options)) {
    if (name in settings) throw new Error(`the family's ${where} option ${name} shadows the setting ${name}`);
  }
  return { ...settings, ...options };
}

/**
 * The settings that determine an image, from the config and what the worker loaded (resolved family,
 * dtype, revision, default steps/guidance, native size, scheduler class, stage II, and the family's
 * options, checked against its capabilities: see familyOptionsFor). Unset steps and guidance become the
 * model's defaults here, once; the runner, keys and manifest all use these values. Not included: device,
 * offload, max_batch. `stage2ModelId` is the resolved stage II id, needed when the config's stages
 * include 2; `embeds` the checked lens.embeds file (its sha256), needed when the config has one.
 */
export function imageSettings(
  config: ExperimentConfig,
  loaded: LoadedForSettings,
  modelId: string,
  stage2ModelId?: string,
  fingerprints: Fingerprints = { model: null, stage2: null },
  embeds?: Pick<EmbedsFile, 'sha256'> | null,
): ImageSettings {
  const options = familyOptionsFor(config, loaded);
  const files = (fingerprint: string | null | undefined) =>
    fingerprint?.startsWith('files:') ? { files: fingerprint } : {};
  const [height, width] = resolveSize(config.sampler.size, loaded);
  const modelConfig = config.model.config;
  const loras = config.model.lora ?? [];
  const model = {
    id: modelId,
    revision: loaded.revision,
    family: loaded.family,
    dtype: loaded.dtype,
    ...(config.model.variant === undefined ? {} : { variant: config.model.variant }),
    ...files(fingerprints.model),
    ...(modelConfig === undefined
      ? {}
      : {
          config: fingerprints.config?.startsWith('files:')
            ? { files: fingerprints.config }
            : { id: modelConfig },
        }),
    ...(loras.length === 0
      ? {}
      : { lora: loras.map(({ scale }, i) => ({ files: loraFiles(fingerprints, i), scale })) }),
  };
  const sampler = {
    steps: config.sampler.steps ?? loaded.defaults.steps,
    guidance: config.sampler.guidance ?? loaded.defaults.guidance,
    height,
    width,
    scheduler: config.sampler.scheduler === 'default' ? loaded.defaults.scheduler : config.sampler.scheduler,
    negative: config.sampler.negative,
  };
  const settings: ImageSettings = {
    model: withOptions(model, options.load, 'load'),
    sampler: withOptions(sampler, options.sample, 'sampling'),
    lens: {
      uncond: config.lens.uncond,
      noise: config.lens.noise,
      ...readoutFor(config, loaded.encoders),
      ...ablationSettings(config, { numLayers: loaded.num_layers, stockLayer: loaded.stock_layer }, embeds),
    },
  };
  if (!resolveStages(config).includes(2)) return settings;
  const stage2 = loaded.stage2;
  if (stage2 === null || stage2ModelId === undefined) {
    throw new Error('stages include 2 but no stage II model was loaded');
  }
  const [height2, width2] = resolveSize(config.stage2.size, stage2);
  const stage2Settings = {
    model: { id: stage2ModelId, revision: stage2.revision, ...files(fingerprints.stage2) },
    steps: config.stage2.steps ?? stage2.defaults.steps,
    guidance: config.stage2.guidance ?? stage2.defaults.guidance,
    height: height2,
    width: width2,
    scheduler: config.stage2.scheduler === 'default' ? stage2.defaults.scheduler : config.stage2.scheduler,
    seed: config.stage2.seed,
  };
  settings.stage2 = withOptions(stage2Settings, options.stage2, 'stage II');
  return settings;
}

export interface Job {
  /** Index in plan order (prompt-major, then layer, then seed, then stage). */
  index: number;
  prompt: string;
  promptIndex: number;
  layer: number;
  seed: number;
  /** 1 = the base image; 2 = its stage II upscale. */
  stage: Stage;
  key: string;
  /** Path of the image relative to the output folder. */
  path: string;
}

export interface Plan {
  settings: ImageSettings;
  /** The family's options in `settings`, by kind (the manifest, requests and grid labels show them). */
  familyOptions: ResolvedFamilyOptions;
  prompts: string[];
  layers: number[];
  seeds: number[];
  /** [1] or [1, 2]. */
  stages: Stage[];
  /** L: the model's encoder layer count (hidden-state indices 0..L). */
  numLayers: number;
  /** The layer the stock pipeline conditions on (L, or L - 1 for SDXL). */
  stockLayer: number;
  /** The model's text encoders as the worker reported them (which hidden state each layer takes). */
  encoders: EncoderInfo[];
  /** The lens.embeds file whose sha256 the settings name (the worker reads it); null without one. */
  embeds: Pick<EmbedsFile, 'path' | 'sha256'> | null;
  jobs: Job[];
}

/** JSON with object keys sorted at every level: the same value always gives the same text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new Error(`cannot hash ${value}`);
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

export interface KeyVersion {
  tool: string;
  algorithm: number;
}

export const CODE_VERSION: KeyVersion = { tool: TOOL_VERSION, algorithm: LENS_ALGORITHM_VERSION };

/** Which image of a plan: what varies between the jobs of one run. */
export interface ImageCoordinates {
  prompt: string;
  layer: number;
  seed: number;
  stage: Stage;
}

/** The content key of one image: sha256 (hex) of the canonical JSON of everything that determines it. */
export function contentKey(
  settings: ImageSettings,
  image: ImageCoordinates,
  code: KeyVersion = CODE_VERSION,
): string {
  const { prompt, layer, seed, stage } = image;
  // Stage I records hold exactly what they held before stage II existed, so cached SD images keep their keys.
  const record: Record<string, unknown> = {
    code: { tool: code.tool, algorithm: code.algorithm },
    model: settings.model,
    sampler: settings.sampler,
    lens: settings.lens,
    prompt,
    layer,
    seed,
  };
  if (stage === 2) {
    if (!settings.stage2) throw new Error('a stage II key needs stage II settings');
    record.stage = 2;
    record.stage2 = settings.stage2;
  }
  return createHash('sha256').update(canonicalJson(record)).digest('hex');
}

/** Plans prompts × layers × seeds × stages (in that nesting order). */
export function planExperiment(input: {
  settings: ImageSettings;
  /** Default: none. */
  familyOptions?: ResolvedFamilyOptions;
  prompts: readonly string[];
  layers: readonly number[];
  seeds: readonly number[];
  /** Default [1]. */
  stages?: readonly Stage[];
  numLayers: number;
  /** Default: numLayers. */
  stockLayer?: number;
  /** Default: none (the manifest then records no readout). */
  encoders?: readonly EncoderInfo[];
  /** The lens.embeds file of the settings (where it is); required when they name one. */
  embeds?: Pick<EmbedsFile, 'path' | 'sha256'> | null;
  code?: KeyVersion;
}): Plan {
  const named = input.settings.lens.embeds?.sha256;
  if (named !== input.embeds?.sha256) {
    throw new Error(
      named === undefined
        ? 'a lens.embeds file was given, and the settings name none'
        : 'the settings name a lens.embeds file, and the plan was given another (or none)',
    );
  }
  const stages: Stage[] = [...(input.stages ?? [1])];
  const jobs: Job[] = [];
  input.prompts.forEach((prompt, promptIndex) => {
    for (const layer of input.layers) {
      for (const seed of input.seeds) {
        for (const stage of stages) {
          jobs.push({
            index: jobs.length,
            prompt,
            promptIndex,
            layer,
            seed,
            stage,
            key: contentKey(input.settings, { prompt, layer, seed, stage }, input.code),
            path: imagePath(prompt, layer, seed, input.numLayers, stage),
          });
        }
      }
    }
  });
  return {
    settings: input.settings,
    familyOptions: input.familyOptions ?? NO_FAMILY_OPTIONS,
    prompts: [...input.prompts],
    layers: [...input.layers],
    seeds: [...input.seeds],
    stages,
    numLayers: input.numLayers,
    stockLayer: input.stockLayer ?? input.numLayers,
    encoders: [...(input.encoders ?? [])],
    embeds: input.embeds ? { path: input.embeds.path, sha256: input.embeds.sha256 } : null,
    jobs,
  };
}
