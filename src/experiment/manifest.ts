// DIR/manifest.json: what was run, with what, and which files it made. Written atomically at the end of
// a run and when a run stops early (then `complete: false`).
import { join } from 'node:path';
import type { LoadedMessage, ReadyMessage } from '../bridge/index.js';
import type { ModelConfig, NoiseMode, PromptFileSpec, SchedulerName, UncondMode } from '../config/index.js';
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
