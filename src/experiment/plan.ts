// The plan: one job per (prompt, layer, seed), each with a content key that changes exactly when the
// image would (model, sampler, lens settings, prompt, layer, seed, code version) and not otherwise
// (device, batch size, output folder).
import { createHash } from 'node:crypto';
import type { LoadedMessage } from '../bridge/index.js';
import type { ExperimentConfig, NoiseMode, UncondMode } from '../config/index.js';
import { LENS_ALGORITHM_VERSION, TOOL_VERSION } from '../version.js';
import { imagePath } from './store.js';

/** Everything besides (prompt, layer, seed) that determines an image. */
export interface ImageSettings {
  model: { id: string; revision: string | null; family: string; dtype: string };
  sampler: {
    steps: number;
    guidance: number;
    height: number;
    width: number;
    /** The scheduler name, or for 'default' the checkpoint's own scheduler class. */
    scheduler: string;
    negative: string;
  };
  lens: { uncond: UncondMode; noise: NoiseMode };
}

/** [height, width]: the configured size, else the model's native one. */
export function resolveSize(
  size: ExperimentConfig['sampler']['size'],
  loaded: Pick<LoadedMessage, 'defaults'>,
): [number, number] {
  if (size === undefined) return [loaded.defaults.height, loaded.defaults.width];
  if (typeof size === 'number') return [size, size];
  return [size[0], size[1]];
}

/**
 * The settings that determine an image, from the config and what the worker loaded (resolved family,
 * dtype, revision, native size, scheduler class). Not included: device, offload, max_batch.
 */
export function imageSettings(
  config: ExperimentConfig,
  loaded: Pick<LoadedMessage, 'revision' | 'family' | 'dtype' | 'defaults'>,
  modelId: string,
): ImageSettings {
  const [height, width] = resolveSize(config.sampler.size, loaded);
  return {
    model: { id: modelId, revision: loaded.revision, family: loaded.family, dtype: loaded.dtype },
    sampler: {
      steps: config.sampler.steps,
      guidance: config.sampler.guidance,
      height,
      width,
      scheduler:
        config.sampler.scheduler === 'default' ? loaded.defaults.scheduler : config.sampler.scheduler,
      negative: config.sampler.negative,
    },
    lens: { uncond: config.lens.uncond, noise: config.lens.noise },
  };
}

export interface Job {
  /** Index in plan order (prompt-major, then layer, then seed). */
  index: number;
  prompt: string;
  promptIndex: number;
  layer: number;
  seed: number;
  key: string;
  /** Path of the image relative to the output folder. */
  path: string;
}

export interface Plan {
  settings: ImageSettings;
  prompts: string[];
  layers: number[];
  seeds: number[];
  /** L: the model's encoder layer count (hidden-state indices 0..L). */
  numLayers: number;
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

/** The content key of one image: sha256 (hex) of the canonical JSON of everything that determines it. */
export function contentKey(
  settings: ImageSettings,
  prompt: string,
  layer: number,
  seed: number,
  code: KeyVersion = CODE_VERSION,
): string {
  const record = {
    code: { tool: code.tool, algorithm: code.algorithm },
    model: settings.model,
    sampler: settings.sampler,
    lens: settings.lens,
    prompt,
    layer,
    seed,
  };
  return createHash('sha256').update(canonicalJson(record)).digest('hex');
}

/** Plans prompts × layers × seeds (in that nesting order). */
export function planExperiment(input: {
  settings: ImageSettings;
  prompts: readonly string[];
  layers: readonly number[];
  seeds: readonly number[];
  numLayers: number;
  code?: KeyVersion;
}): Plan {
  const jobs: Job[] = [];
  input.prompts.forEach((prompt, promptIndex) => {
    for (const layer of input.layers) {
      for (const seed of input.seeds) {
        jobs.push({
          index: jobs.length,
          prompt,
          promptIndex,
          layer,
          seed,
          key: contentKey(input.settings, prompt, layer, seed, input.code),
          path: imagePath(prompt, layer, seed, input.numLayers),
        });
      }
    }
  });
  return {
    settings: input.settings,
    prompts: [...input.prompts],
    layers: [...input.layers],
    seeds: [...input.seeds],
    numLayers: input.numLayers,
    jobs,
  };
}
