// runExperiment: config → images, grids and a manifest in an output folder, resumable.
//
// Start (or reuse) a worker, load the model (and the stage II model, for IF), resolve layers, size,
// steps and guidance against it, plan, skip the images already on disk, send ONE generate for the rest,
// write each image as it arrives, then grids and the manifest. A request item is a (prompt, layer, seed)
// with any image missing; the worker answers each with its stage I image and, when stage II is asked
// for, its stage II image; only images not already on disk are written. A worker that dies or hangs is
// restarted (at most `maxRestarts` times) and the run goes on with what is missing; an abort stops
// cleanly and leaves a resumable folder.
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  type GenerateRequest,
  type ImageMessage,
  LensWorker,
  type LoadedMessage,
  type LoadRequest,
  type Stage2Generate,
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
  resolveStages,
  type Stage,
} from '../config/index.js';
import type { RunEvent } from './events.js';
import { writeGrids } from './grids.js';
import { buildManifest, type Manifest, manifestImage, writeManifest } from './manifest.js';
import { type ImageSettings, imageSettings, type Job, type Plan, planExperiment } from './plan.js';
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

/** One (prompt, layer, seed) of a generate request, with its planned job per stage. */
interface RequestItem {
  promptIndex: number;
  layer: number;
  seed: number;
  jobs: Partial<Record<Stage, Job>>;
}

/** The distinct (prompt, layer, seed) of the jobs, in plan order, for those with any job not done. */
function requestItems(jobs: readonly Job[], isDone: (job: Job) => boolean): RequestItem[] {
  const items = new Map<string, RequestItem>();
  for (const job of jobs) {
    const id = `${job.promptIndex}/${job.layer}/${job.seed}`;
    let item = items.get(id);
    if (!item) {
      item = { promptIndex: job.promptIndex, layer: job.layer, seed: job.seed, jobs: {} };
      items.set(id, item);
    }
    item.jobs[job.stage] = job;
  }
  return [...items.values()].filter((item) => Object.values(item.jobs).some((job) => !isDone(job)));
}

/** Stage II of a generate request, from the resolved settings; scheduler null = the checkpoint's own. */
function stage2Request(config: ExperimentConfig, settings: ImageSettings): Stage2Generate | null {
  const stage2 = settings.stage2;
  if (!stage2) return null;
  return {
    steps: stage2.steps,
    guidance: stage2.guidance,
    height: stage2.height,
    width: stage2.width,
    noise_level: stage2.noise_level,
    scheduler: config.stage2.scheduler === 'default' ? null : config.stage2.scheduler,
    seed: stage2.seed === 'same' ? null : stage2.seed,
  };
}

/** A load failure, with what was being loaded in front (the worker's message says why). */
function loadFailure(error: unknown, what: string): unknown {
  if (!(error instanceof WorkerError) || error.code !== 'load_failed') return error;
  return new WorkerError('load_failed', `cannot load ${what}: ${error.message}`, {
    traceback: error.traceback,
    cause: error,
  });
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
  const stages = resolveStages(config);
  let stage2ModelId: string | undefined;
  if (stages.includes(2)) {
    // parseConfig guarantees it; a hand-built config might not have it.
    if (config.stage2.model === undefined) {
      throw new ConfigError({
        path: ['stage2', 'model'],
        ...locate(['stage2', 'model']),
        message: 'is required when stages include 2',
      });
    }
    const field = ['stage2', 'model'];
    stage2ModelId = resolveModelId(config.stage2.model, configDir, locate(field), field);
  }
  const name = config.name ?? slugify(prompts[0] ?? 'run');
  const loadRequest: LoadRequest = {
    model: modelId,
    family: config.model.family === 'auto' ? null : config.model.family,
    dtype: config.model.dtype,
    device: config.model.device,
    revision: config.model.revision ?? null,
    offload: config.model.offload,
    clean_caption: config.model.clean_caption === 'auto' ? null : config.model.clean_caption,
    stage2:
      stage2ModelId === undefined ? null : { model: stage2ModelId, revision: config.stage2.revision ?? null },
    allow_pickle: config.model.allow_pickle,
    variant: config.model.variant ?? null,
  };
  const loading = `${modelId}${stage2ModelId === undefined ? '' : ` with stage II ${stage2ModelId}`}`;
  emit({ type: 'start', name, out_dir: outDir, prompts: prompts.length });

  const owned: LensWorker[] = [];
  let ended = false;
  let worker: LensWorker | null = options.worker ?? null;
  let generated = 0;
  let skipped = 0;
  let plan: Plan | null = null;
  let loaded: LoadedMessage | null = null;
  const done = new Set<string>();
  const noticesShown = new Set<string>();
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
    const result = await untilAborted(w.load(loadRequest), signal).catch((error: unknown) => {
      throw loadFailure(error, loading);
    });
    if (stage2ModelId !== undefined && result.stage2 === null) {
      throw new WorkerError(
        'load_failed',
        `cannot load ${loading}: the worker loaded ${result.model} (family ${result.family}) without a stage II`,
      );
    }
    emit({
      type: 'model-loaded',
      model: result.model,
      family: result.family,
      pipeline_class: result.pipeline_class,
      revision: result.revision,
      num_layers: result.num_layers,
      device: result.device,
      dtype: result.dtype,
      clean_caption: result.clean_caption,
      stage2:
        result.stage2 === null
          ? null
          : {
              model: result.stage2.model,
              pipeline_class: result.stage2.pipeline_class,
              revision: result.stage2.revision,
            },
    });
    // Once per run, not again for a restarted worker.
    for (const message of result.notices) {
      if (noticesShown.has(message)) continue;
      noticesShown.add(message);
      emit({ type: 'notice', message });
    }
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
    const settings = imageSettings(config, loaded, modelId, stage2ModelId);
    const { steps, height, width } = settings.sampler;
    const thePlan = planExperiment({ settings, prompts, layers, seeds: config.seeds, stages, numLayers });
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
      stages,
      height,
      width,
      stage2: settings.stage2
        ? { height: settings.stage2.height, width: settings.stage2.width, steps: settings.stage2.steps }
        : null,
    });

    const isDone = (job: Job): boolean => done.has(job.key);
    // Units (denoising steps of one item, either stage) of the whole run: fixed by the first request.
    let unitsTotal: number | null = null;
    let restarts = 0;
    for (;;) {
      if (signal?.aborted) return await finish(false, true, []);
      const items = requestItems(thePlan.jobs, isDone);
      if (items.length === 0) break;
      const missing: Job[] = items.flatMap((item) => Object.values(item.jobs).filter((job) => !isDone(job)));
      // Stage II only when an image of it is missing (stage I alone is cheaper).
      const stage2 = missing.some((job) => job.stage === 2) ? stage2Request(config, settings) : null;
      const requestUnits = items.length * (steps + (stage2?.steps ?? 0));
      unitsTotal ??= requestUnits;
      const unitsBase = Math.max(0, unitsTotal - requestUnits);
      const total = unitsTotal;
      const request: GenerateRequest = {
        prompts,
        items: items.map((item) => ({ prompt: item.promptIndex, layer: item.layer, seed: item.seed })),
        negative: config.sampler.negative,
        steps,
        guidance: settings.sampler.guidance,
        height,
        width,
        scheduler: config.sampler.scheduler === 'default' ? null : config.sampler.scheduler,
        uncond: config.lens.uncond,
        noise: config.lens.noise,
        max_batch: config.runtime.max_batch,
        stage2,
      };
      const onImage = async (image: ImageMessage): Promise<void> => {
        const item = items[image.item];
        const job = item?.jobs[image.stage];
        if (
          !item ||
          !job ||
          (image.stage === 2 && stage2 === null) ||
          item.layer !== image.layer ||
          item.seed !== image.seed ||
          item.promptIndex !== image.prompt
        ) {
          throw new WorkerError(
            'internal',
            `the worker sent a stage ${image.stage} image for item ${image.item} (prompt ${image.prompt}, ` +
              `layer ${image.layer}, seed ${image.seed}) that does not match the request`,
          );
        }
        // Already on disk (e.g. the stage I image of a missing stage II one) or already received.
        if (done.has(job.key)) return;
        await writeFileAtomic(join(outDir, job.path), image.png);
        await journal.append({ key: job.key, path: job.path });
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
                units_done: Math.min(total, unitsBase + p.done_units),
                units_total: total,
              }),
            onImage,
          },
          signal,
        );
        const notSent = missing.filter((job) => !isDone(job)).length;
        if (notSent > 0) {
          throw new WorkerError('internal', `the worker finished without sending ${notSent} of the images`);
        }
        break;
      } catch (error) {
        if (signal?.aborted) return await finish(false, true, []);
        if (!isLostWorker(error)) throw error;
        const lost = missing.filter((job) => !isDone(job));
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
            stage: job.stage,
          })),
          restarting,
          restarts,
        });
        if (!restarting) throw error;
        restarts++;
        await worker.close().catch(() => undefined);
        worker = await startWorker(restarts);
        const reloaded = await loadModel(worker);
        if (
          reloaded.num_layers !== numLayers ||
          reloaded.revision !== loaded.revision ||
          reloaded.clean_caption !== loaded.clean_caption ||
          reloaded.stage2?.revision !== loaded.stage2?.revision
        ) {
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
