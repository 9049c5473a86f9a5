// runExperiment: config → images, grids and a manifest in an output folder, resumable.
//
// Start (or reuse) a worker, load the model, resolve layers and size against it, plan, skip the images
// already on disk, send ONE generate for the rest, write each image as it arrives, then grids and the
// manifest. A worker that dies or hangs is restarted (at most `maxRestarts` times) and the run goes on
// with what is missing; an abort stops cleanly and leaves a resumable folder.
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  type GenerateRequest,
  type ImageMessage,
  LensWorker,
  type LoadedMessage,
  type LoadRequest,
  WorkerError,
} from '../bridge/index.js';
import {
  ConfigError,
  configSource,
  type ExperimentConfig,
  type FieldPath,
  loadPrompts,
  resolveLayers,
  resolveModelId,
} from '../config/index.js';
import type { RunEvent } from './events.js';
import { writeGrids } from './grids.js';
import { buildManifest, type Manifest, manifestImage, writeManifest } from './manifest.js';
import { imageSettings, type Job, type Plan, planExperiment } from './plan.js';
import { Journal, slugify, writeFileAtomic } from './store.js';

export interface RunOptions {
  /** The output folder (created when the first file is written). */
  outDir: string;
  /** Folder for relative paths in the config (prompt file, local model). Default: the config file's
   *  folder when the config came from loadConfigFile, else the current directory. */
  configDir?: string;
  onEvent?: (event: RunEvent) => void;
  /** Aborting stops the run cleanly: `complete: false` manifest, resumable; the result has `aborted`. */
  signal?: AbortSignal;
  /** Reuse a running worker (it is not closed at the end). Default: start one. */
  worker?: LensWorker;
  /** Python interpreter for workers this run starts (default: findPython()). */
  python?: string;
  /** Environment for workers this run starts. */
  env?: NodeJS.ProcessEnv;
  /** Worker log lines (stderr). */
  onLog?: (line: string) => void;
  /** How many times a crashed or hung worker is replaced (default 2). */
  maxRestarts?: number;
}

export interface RunResult {
  outDir: string;
  /** Path of manifest.json; null when the run stopped before anything was planned. */
  manifestPath: string | null;
  manifest: Manifest | null;
  complete: boolean;
  aborted: boolean;
  generated: number;
  skipped: number;
}

/** Thrown internally when the signal aborts a start or load. */
class Aborted extends Error {}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolvePromise, reject) => {
    const onAbort = (): void => reject(new Aborted('aborted'));
    if (signal.aborted) {
      promise.catch(() => undefined);
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolvePromise(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function isLostWorker(error: unknown): error is WorkerError {
  return error instanceof WorkerError && (error.code === 'worker_exited' || error.code === 'worker_hung');
}

/** Runs an experiment; see the module comment. Rejects on errors (ConfigError, WorkerError, I/O). */
export async function runExperiment(config: ExperimentConfig, options: RunOptions): Promise<RunResult> {
  const startedAt = new Date();
  const t0 = performance.now();
  const emit = (event: RunEvent): void => options.onEvent?.(event);
  const { signal } = options;
  const source = configSource(config);
  const configDir = options.configDir ?? source?.dir ?? process.cwd();
  const locate = (path: FieldPath) => source?.locate?.(path) ?? {};
  const outDir = resolve(options.outDir);
  const maxRestarts = options.maxRestarts ?? 2;

  // Inputs first: a bad prompt file or model path fails before any process starts or file is written.
  const prompts = await loadPrompts(config.prompts, { configDir, locate });
  const modelId = resolveModelId(config.model.id, configDir, locate(['model', 'id']));
  const name = config.name ?? slugify(prompts[0] ?? 'run');
  const loadRequest: LoadRequest = {
    model: modelId,
    family: config.model.family === 'auto' ? null : config.model.family,
    dtype: config.model.dtype,
    device: config.model.device,
    revision: config.model.revision ?? null,
    offload: config.model.offload,
    allow_pickle: config.model.allow_pickle,
  };
  emit({ type: 'start', name, out_dir: outDir, prompts: prompts.length });

  const owned: LensWorker[] = [];
  let ended = false;
  let worker: LensWorker | null = options.worker ?? null;
  let generated = 0;
  let skipped = 0;
  let plan: Plan | null = null;
  let loaded: LoadedMessage | null = null;
  const done = new Set<string>();
  const seconds = (): number => Math.round(performance.now() - t0) / 1000;

  const startWorker = async (restart: number): Promise<LensWorker> => {
    const started = LensWorker.start({ python: options.python, env: options.env, onLog: options.onLog });
    // An abort during start still owns the process: close it once it is up, even after the run ended.
    started
      .then((w) => {
        owned.push(w);
        if (ended) void w.close().catch(() => undefined);
      })
      .catch(() => undefined);
    const w = await untilAborted(started, signal);
    const { info } = w;
    emit({
      type: 'worker-ready',
      pid: w.pid ?? null,
      python: info.python,
      torch: info.torch,
      diffusers: info.diffusers,
      transformers: info.transformers,
      device: info.device,
      restart,
    });
    return w;
  };

  const loadModel = async (w: LensWorker): Promise<LoadedMessage> => {
    const result = await untilAborted(w.load(loadRequest), signal);
    emit({
      type: 'model-loaded',
      model: result.model,
      family: result.family,
      pipeline_class: result.pipeline_class,
      revision: result.revision,
      num_layers: result.num_layers,
      device: result.device,
      dtype: result.dtype,
    });
    return result;
  };

  const finish = async (
    complete: boolean,
    aborted: boolean,
    grids: Manifest['grids'],
  ): Promise<RunResult> => {
    if (!plan || !loaded || !worker) {
      const time = seconds();
      emit({
        type: 'done',
        complete: false,
        aborted,
        manifest: null,
        images_generated: 0,
        images_skipped: 0,
        seconds: time,
      });
      return { outDir, manifestPath: null, manifest: null, complete: false, aborted, generated, skipped };
    }
    const manifest = manifestOf(complete, grids);
    const manifestPath = await writeManifest(outDir, manifest);
    emit({
      type: 'done',
      complete,
      aborted,
      manifest: manifestPath,
      images_generated: generated,
      images_skipped: skipped,
      seconds: manifest.timings.seconds,
    });
    return { outDir, manifestPath, manifest, complete, aborted, generated, skipped };
  };

  const manifestOf = (complete: boolean, grids: Manifest['grids']): Manifest => {
    if (!plan || !loaded || !worker) throw new Error('no plan yet');
    return buildManifest({
      config,
      name,
      prompts,
      plan,
      loaded,
      modelId,
      worker,
      done,
      grids,
      complete,
      startedAt,
      seconds: seconds(),
      generated,
      skipped,
    });
  };

  try {
    worker ??= await startWorker(0);
    loaded = await loadModel(worker);
    const numLayers = loaded.num_layers;

    let layers: number[];
    try {
      layers = resolveLayers(config.lens.layers, numLayers);
    } catch (error) {
      if (error instanceof ConfigError) {
        throw new ConfigError(error.issues.map((issue) => ({ ...issue, ...locate(['lens', 'layers']) })));
      }
      throw error;
    }
    const settings = imageSettings(config, loaded, modelId);
    const { height, width } = settings.sampler;
    const thePlan = planExperiment({ settings, prompts, layers, seeds: config.seeds, numLayers });
    plan = thePlan;
    const journal = await Journal.open(outDir);
    for (const job of thePlan.jobs) if (journal.isDone(job.key, outDir, job.path)) done.add(job.key);
    skipped = done.size;
    const todoTotal = thePlan.jobs.length - skipped;
    emit({
      type: 'plan',
      total: thePlan.jobs.length,
      skipped,
      todo: todoTotal,
      prompts: prompts.length,
      layers,
      seeds: [...config.seeds],
      height,
      width,
    });

    const unitsTotal = todoTotal * config.sampler.steps;
    let restarts = 0;
    for (;;) {
      if (signal?.aborted) return await finish(false, true, []);
      const batch: Job[] = thePlan.jobs.filter((job) => !done.has(job.key));
      if (batch.length === 0) break;
      const received = new Set<number>();
      const unitsBase = generated * config.sampler.steps;
      const request: GenerateRequest = {
        prompts,
        items: batch.map((job) => ({ prompt: job.promptIndex, layer: job.layer, seed: job.seed })),
        negative: config.sampler.negative,
        steps: config.sampler.steps,
        guidance: config.sampler.guidance,
        height,
        width,
        scheduler: config.sampler.scheduler === 'default' ? null : config.sampler.scheduler,
        uncond: config.lens.uncond,
        noise: config.lens.noise,
        max_batch: config.runtime.max_batch,
      };
      const onImage = async (image: ImageMessage): Promise<void> => {
        const job = batch[image.item];
        if (
          !job ||
          job.layer !== image.layer ||
          job.seed !== image.seed ||
          job.promptIndex !== image.prompt
        ) {
          throw new WorkerError(
            'internal',
            `the worker sent an image for item ${image.item} (prompt ${image.prompt}, layer ${image.layer}, ` +
              `seed ${image.seed}) that does not match the request`,
          );
        }
        if (received.has(image.item)) return;
        await writeFileAtomic(join(outDir, job.path), image.png);
        await journal.append({ key: job.key, path: job.path });
        received.add(image.item);
        done.add(job.key);
        generated++;
        emit({
          type: 'image',
          ...manifestImage(job),
          elapsed_ms: image.elapsed_ms,
          images_done: generated,
          images_total: todoTotal,
        });
      };
      try {
        await worker.generate(
          request,
          {
            onProgress: (p) =>
              emit({
                type: 'progress',
                images_done: generated,
                images_total: todoTotal,
                units_done: Math.min(unitsTotal, unitsBase + p.done_units),
                units_total: unitsTotal,
              }),
            onImage,
          },
          signal,
        );
        const missing = batch.length - received.size;
        if (missing > 0) {
          throw new WorkerError('internal', `the worker finished without sending ${missing} of the images`);
        }
        break;
      } catch (error) {
        if (signal?.aborted) return await finish(false, true, []);
        if (!isLostWorker(error)) throw error;
        const lost = batch.filter((_, i) => !received.has(i));
        const restarting = restarts < maxRestarts;
        emit({
          type: 'worker-lost',
          code: error.code,
          message: error.message,
          lost: lost.length,
          lost_images: lost.map((job) => ({
            prompt_index: job.promptIndex,
            layer: job.layer,
            seed: job.seed,
          })),
          restarting,
          restarts,
        });
        if (!restarting) throw error;
        restarts++;
        await worker.close().catch(() => undefined);
        worker = await startWorker(restarts);
        const reloaded = await loadModel(worker);
        if (reloaded.num_layers !== numLayers || reloaded.revision !== loaded.revision) {
          throw new WorkerError('load_failed', 'the restarted worker loaded a different model');
        }
      }
    }

    const grids = await writeGrids({
      outDir,
      plan: thePlan,
      prompts,
      layers,
      seeds: config.seeds,
      onGrid: (grid) => emit({ type: 'grid', ...grid }),
    });
    return await finish(true, false, grids);
  } catch (error) {
    if (error instanceof Aborted) return await finish(false, true, []);
    // Whatever was made stays usable: record it, marked incomplete.
    if (plan && loaded && worker && generated > 0) {
      await writeManifest(outDir, manifestOf(false, [])).catch(() => undefined);
    }
    emit({
      type: 'error',
      code: error instanceof WorkerError ? error.code : error instanceof ConfigError ? 'config' : 'internal',
      message: (error as Error).message,
    });
    throw error;
  } finally {
    ended = true;
    await Promise.all(owned.map((w) => w.close().catch(() => undefined)));
  }
}
