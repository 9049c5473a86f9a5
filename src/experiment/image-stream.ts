// A run as an async iterator of its images, for scripted studies: `for await (const image of
// experimentImages(config, options))` yields each image as the worker makes it, then the ones that were
// already on disk, and returns the run's result. Breaking out of the loop aborts the run (resumable).
import { join } from 'node:path';
import type { ExperimentConfig } from '../config/index.js';
import type { ManifestImage } from './manifest.js';
import { type RunOptions, type RunResult, runExperiment } from './runner.js';

/** An image of the run: its manifest record, where the file is, and whether this run made it. */
export type ImageRecord = ManifestImage & {
  /** The PNG's absolute path. */
  file: string;
  /** True when the image was on disk already (a rerun, or settings shared with another run). */
  cached: boolean;
};

/**
 * Runs `config` (as runExperiment does, with the same options; `onEvent` still sees every event) and
 * yields every image of its plan: made ones as they arrive, cached ones once the run is done. Returns the
 * run's result; a failed run throws after the images made so far.
 */
export async function* experimentImages(
  config: ExperimentConfig,
  options: RunOptions,
): AsyncGenerator<ImageRecord, RunResult, undefined> {
  const queue: ImageRecord[] = [];
  const made = new Set<string>();
  let outDir = options.outDir;
  let wake: (() => void) | null = null;
  let settled = false;
  let result: RunResult | undefined;
  let failure: unknown;
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;

  const running = runExperiment(config, {
    ...options,
    signal,
    onEvent: (event) => {
      options.onEvent?.(event);
      if (event.type === 'plan') outDir = event.out_dir;
      if (event.type !== 'image') return;
      const { type: _, elapsed_ms: __, images_done: ___, images_total: ____, ...image } = event;
      queue.push({ ...image, file: join(outDir, image.path), cached: false });
      wake?.();
    },
  }).then(
    (value) => {
      result = value;
    },
    (error: unknown) => {
      failure = error;
    },
  );
  void running.finally(() => {
    settled = true;
    wake?.();
  });

  try {
    for (;;) {
      const image = queue.shift();
      if (image) {
        made.add(image.key);
        yield image;
        continue;
      }
      if (settled) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = null;
    }
  } finally {
    // The loop was left early (break, return, an exception in its body): stop the run, keep what it made.
    if (!settled) stop.abort();
    await running;
  }
  if (failure !== undefined) throw failure;
  const done = result as RunResult;
  for (const image of done.manifest?.images ?? []) {
    if (made.has(image.key)) continue;
    yield { ...image, file: join(done.outDir, image.path), cached: true };
  }
  return done;
}
