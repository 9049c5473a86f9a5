// What a run reports while it goes (runExperiment's onEvent; `--json` prints one per line).
import type { Stage } from '../config/index.js';
import type { ManifestGrid, ManifestImage } from './manifest.js';
import type { RunTimings } from './timings.js';

export interface ImageRef {
  prompt_index: number;
  layer: number;
  seed: number;
  stage: Stage;
}

export type RunEvent =
  | { type: 'start'; name: string; out_dir: string; prompts: number }
  | {
      type: 'worker-ready';
      /** Which worker of a pool (0-based); absent when the run has one worker. */
      worker?: number;
      pid: number | null;
      /** Where an attached (remote or persistent) worker listens. */
      endpoint?: string;
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
      worker?: number;
      model: string;
      family: string;
      pipeline_class: string;
      revision: string | null;
      num_layers: number;
      device: string;
      dtype: string;
      /** The family's load options as resolved (IF: whether captions are cleaned); {} for none. */
      family_options: Record<string, unknown>;
      /** The stage II checkpoint, when one was loaded. */
      stage2: { model: string; pipeline_class: string; revision: string | null } | null;
    }
  /**
   * Something the user must be told: from the worker (caption cleaning is off), a prompt cut to the
   * encoder's token limit, images changed by hand and made again, a run moved to a variant folder.
   */
  | { type: 'notice'; message: string }
  | {
      type: 'plan';
      /** The folder the run writes to: the output folder, or its variant folder (`newVariant`). */
      out_dir: string;
      total: number;
      skipped: number;
      todo: number;
      prompts: number;
      layers: number[];
      seeds: number[];
      /** [1] or [1, 2]; `total` counts the images of every stage. */
      stages: Stage[];
      height: number;
      width: number;
      /** Stage II image size and steps, when the plan has stage II. */
      stage2: { height: number; width: number; steps: number } | null;
    }
  | {
      type: 'progress';
      /** Images of this run written so far / to make (skipped ones not counted). */
      images_done: number;
      images_total: number;
      /** Denoising steps done / to do (one unit = one step of one image), across restarts. */
      units_done: number;
      units_total: number;
      /** The layers of the batch being denoised. */
      layers: number[];
    }
  | (ManifestImage & {
      type: 'image';
      elapsed_ms: number;
      images_done: number;
      images_total: number;
    })
  | {
      type: 'worker-lost';
      worker?: number;
      code: string;
      message: string;
      /** How many requested images were not received. */
      lost: number;
      lost_images: ImageRef[];
      restarting: boolean;
      restarts: number;
    }
  | ({ type: 'grid' } & ManifestGrid)
  | {
      type: 'done';
      complete: boolean;
      aborted: boolean;
      manifest: string | null;
      images_generated: number;
      images_skipped: number;
      seconds: number;
      /** Where the time went: the workers' own timings, summed over their requests (a request that a
       *  lost worker did not finish is not counted), and the writing of the images. */
      timings: RunTimings;
    }
  /** A run that failed; `done` follows. `resumable`: images are kept, and a rerun goes on from them. */
  | { type: 'error'; code: string; message: string; resumable: boolean };

export type RunEventType = RunEvent['type'];
