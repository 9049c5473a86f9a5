// What a run reports while it goes (runExperiment's onEvent; `--json` prints one per line).
import type { ManifestImage } from './manifest.js';

export interface ImageRef {
  prompt_index: number;
  layer: number;
  seed: number;
}

export type RunEvent =
  | { type: 'start'; name: string; out_dir: string; prompts: number }
  | {
      type: 'worker-ready';
      pid: number | null;
      python: string;
      torch: string;
      diffusers: string;
      transformers: string;
      device: string;
      /** 0 for the first worker, n for the n-th restart. */
      restart: number;
    }
  | {
      type: 'model-loaded';
      model: string;
      family: string;
      pipeline_class: string;
      revision: string | null;
      num_layers: number;
      device: string;
      dtype: string;
    }
  | {
      type: 'plan';
      total: number;
      skipped: number;
      todo: number;
      prompts: number;
      layers: number[];
      seeds: number[];
      height: number;
      width: number;
    }
  | {
      type: 'progress';
      /** Images of this run written so far / to make (skipped ones not counted). */
      images_done: number;
      images_total: number;
      /** Denoising steps done / to do (one unit = one step of one image), across restarts. */
      units_done: number;
      units_total: number;
    }
  | (ManifestImage & {
      type: 'image';
      elapsed_ms: number;
      images_done: number;
      images_total: number;
    })
  | {
      type: 'worker-lost';
      code: string;
      message: string;
      /** How many requested images were not received. */
      lost: number;
      lost_images: ImageRef[];
      restarting: boolean;
      restarts: number;
    }
  | { type: 'grid'; prompt: string; path: string }
  | {
      type: 'done';
      complete: boolean;
      aborted: boolean;
      manifest: string | null;
      images_generated: number;
      images_skipped: number;
      seconds: number;
    }
  | { type: 'error'; code: string; message: string };

export type RunEventType = RunEvent['type'];
