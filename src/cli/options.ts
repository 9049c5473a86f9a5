// `diffusion-lens lens PROMPT ...`: the command-line options become a config object, validated by the
// same schema as a config file (errors name the option).
import { type ExperimentConfig, parseConfig } from '../config/index.js';

export interface LensOptions {
  model?: string;
  out: string;
  layers?: string;
  seeds?: string;
  steps?: string;
  guidance?: string;
  size?: string;
  scheduler?: string;
  negative?: string;
  uncond?: string;
  noise?: string;
  maxBatch?: string;
  dtype?: string;
  device?: string;
  family?: string;
  revision?: string;
  variant?: string;
  /** `--offload` alone is `true` (= model CPU offload); `--offload MODE` a mode name. */
  offload?: boolean | string;
  /** `--clean-caption` / `--no-clean-caption`; unset = auto. */
  cleanCaption?: boolean;
  allowPickle?: boolean;
  name?: string;
  stages?: string;
  stage2Model?: string;
  stage2Revision?: string;
  stage2Steps?: string;
  stage2Guidance?: string;
  stage2Size?: string;
  stage2Scheduler?: string;
  noiseLevel?: string;
  stage2Seed?: string;
}

/** Field → option, so that errors say `--steps` rather than `sampler.steps`. */
export const OPTION_LABELS: Record<string, string> = {
  name: '--name',
  'model.id': '--model',
  'model.family': '--family',
  'model.revision': '--revision',
  'model.variant': '--variant',
  'model.dtype': '--dtype',
  'model.device': '--device',
  'model.offload': '--offload',
  'model.clean_caption': '--clean-caption',
  'sampler.steps': '--steps',
  'sampler.guidance': '--guidance',
  'sampler.size': '--size',
  'sampler.scheduler': '--scheduler',
  'sampler.negative': '--negative',
  'lens.layers': '--layers',
  'lens.uncond': '--uncond',
  'lens.noise': '--noise',
  seeds: '--seeds',
  prompts: 'PROMPT',
  'runtime.max_batch': '--max-batch',
  stages: '--stages',
  'stage2.model': '--stage2-model',
  'stage2.revision': '--stage2-revision',
  'stage2.steps': '--stage2-steps',
  'stage2.guidance': '--stage2-guidance',
  'stage2.size': '--stage2-size',
  'stage2.scheduler': '--stage2-scheduler',
  'stage2.noise_level': '--noise-level',
  'stage2.seed': '--stage2-seed',
};

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

/** A number when the text is one; else the text, so that validation reports what was given. */
export function numberOrText(text: string): number | string {
  const trimmed = text.trim();
  return NUMBER.test(trimmed) ? Number(trimmed) : text;
}

/** `512` → 512; `512x768` (height x width) → [512, 768]. */
export function parseSize(text: string): number | string | (number | string)[] {
  const parts = text.toLowerCase().split('x').map(numberOrText);
  if (parts.length === 2 && parts.every((p) => typeof p === 'number')) return parts;
  return numberOrText(text);
}

/** `0,1,2,3` → [0, 1, 2, 3] (`--seeds`, `--stages`). */
export function parseNumberList(text: string): (number | string)[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(numberOrText);
}

function defined<T extends Record<string, unknown>>(object: T): Partial<T> {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The raw config object for `lens` (before validation). */
export function lensConfigInput(prompt: string, options: LensOptions): Record<string, unknown> {
  return defined({
    name: options.name,
    model: defined({
      id: options.model,
      family: options.family,
      revision: options.revision,
      variant: options.variant,
      dtype: options.dtype,
      device: options.device,
      // A bare `--offload` is model CPU offload, as it was when the option was a switch.
      offload: options.offload === true ? 'model' : options.offload,
      clean_caption: options.cleanCaption,
      allow_pickle: options.allowPickle,
    }),
    sampler: defined({
      steps: options.steps === undefined ? undefined : numberOrText(options.steps),
      guidance: options.guidance === undefined ? undefined : numberOrText(options.guidance),
      size: options.size === undefined ? undefined : parseSize(options.size),
      scheduler: options.scheduler,
      negative: options.negative,
    }),
    lens: defined({ layers: options.layers, uncond: options.uncond, noise: options.noise }),
    seeds: options.seeds === undefined ? undefined : parseNumberList(options.seeds),
    prompts: [prompt],
    runtime: defined({
      max_batch: options.maxBatch === undefined ? undefined : numberOrText(options.maxBatch),
    }),
    stages: options.stages === undefined ? undefined : parseNumberList(options.stages),
    stage2: defined({
      model: options.stage2Model,
      revision: options.stage2Revision,
      steps: options.stage2Steps === undefined ? undefined : numberOrText(options.stage2Steps),
      guidance: options.stage2Guidance === undefined ? undefined : numberOrText(options.stage2Guidance),
      size: options.stage2Size === undefined ? undefined : parseSize(options.stage2Size),
      scheduler: options.stage2Scheduler,
      noise_level: options.noiseLevel === undefined ? undefined : numberOrText(options.noiseLevel),
      seed: options.stage2Seed === undefined ? undefined : numberOrText(options.stage2Seed),
    }),
  });
}

/** Validates `lens` options as a config; throws ConfigError naming the option. */
export function lensConfig(prompt: string, options: LensOptions): ExperimentConfig {
  return parseConfig(lensConfigInput(prompt, options), { labels: OPTION_LABELS });
}
