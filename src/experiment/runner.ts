// runExperiment: config → images, grids, a manifest and images.csv in an output folder, resumable.
//
// Check the inputs and lock the folder; when the worker's last resolution of this model still holds and
// every image is on disk with its recorded bytes, finish without starting Python. Otherwise start (or
// reuse) a worker, load the model (and the stage II model, for IF), resolve layers, size, steps and
// guidance against it, plan, refuse a folder that holds images of other settings (unless overwrite or
// newVariant), skip the images already on disk, send ONE generate for the rest,
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
  loadPromptSet,
  readModelDepth,
  resolveLayers,
  resolveModelId,
  resolveStages,
  type Stage,
} from '../config/index.js';
import { inspectCache, removeForeign } from './cache.js';
import type { RunEvent } from './events.js';
import { writeGrids } from './grids.js';
import { writeImagesCsv } from './images-csv.js';
import { FolderBusyError } from './lock.js';
import { buildManifest, type Manifest, manifestImage, type Truncation, writeManifest } from './manifest.js';
import { type OutputFolder, OutputFolderError, openOutputFolder } from './outdir.js';
import { type ImageSettings, imageSettings, type Job, type Plan, planExperiment } from './plan.js';
import {
  type Fingerprints,
  modelFingerprint,
  readResolution,
  type WorkerInfo,
  writeResolution,
} from './resolution.js';
import { describeChanges, recordSettings, settingsId, variantName } from './settings.js';
import { Journal, sha256Hex, slugify, writeFileAtomic } from './store.js';

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
  /**
   * When the folder holds images made with other settings (a folder holds one set of settings), the run
   * is refused unless one of these says what to do: `overwrite` deletes those images; `newVariant`
   * writes this run to `DIR/variants/<what changed>/` instead.
   */
  overwrite?: boolean;
  newVariant?: boolean;
}

export interface RunResult {
  /** Where the run was written: the output folder, or its variant folder (`newVariant`). */
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

const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** A load failure, with what was being loaded in front (the worker's message says why). */
function loadFailure(error: unknown, what: string): unknown {
  if (!(error instanceof WorkerError) || error.code !== 'load_failed') return error;
  return new WorkerError('load_failed', `cannot load ${what}: ${error.message}`, {
    traceback: error.traceback,
    cause: error,
  });
}

/** A settings change in a used folder, refused: the message says how to go on. */
export class FolderConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FolderConflictError';
  }
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
  const maxRestarts = options.maxRestarts ?? 2;
  const env = options.env ?? process.env;
  let outDir = resolve(options.outDir);

  // Inputs first: a bad prompt file, model path or layer fails before any process starts or file is written.
  const promptSet = await loadPromptSet(config.prompts, { configDir, locate });
  const { prompts } = promptSet;
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
  const layersFor = (numLayers: number): number[] => {
    try {
      return resolveLayers(config.lens.layers, numLayers);
    } catch (error) {
      if (error instanceof ConfigError) {
        throw new ConfigError(error.issues.map((issue) => ({ ...issue, ...locate(['lens', 'layers']) })));
      }
      throw error;
    }
  };
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
  // The depth, when the config files tell it, catches a bad layer before anything starts.
  const knownDepth = await readModelDepth(modelId, loadRequest.revision, env);
  if (knownDepth !== null) layersFor(knownDepth);
  const loading = `${modelId}${stage2ModelId === undefined ? '' : ` with stage II ${stage2ModelId}`}`;
  const fingerprints: Fingerprints = {
    model: await modelFingerprint(modelId, loadRequest.revision, env),
    stage2:
      stage2ModelId === undefined
        ? null
        : await modelFingerprint(stage2ModelId, config.stage2.revision ?? null, env),
  };

  const folders: OutputFolder[] = [await openOutputFolder(outDir)];
  emit({ type: 'start', name, out_dir: outDir, prompts: prompts.length });

  const owned: LensWorker[] = [];
  let ended = false;
  let worker: LensWorker | null = options.worker ?? null;
  let workerInfo: WorkerInfo | null = worker?.info ?? null;
  let generated = 0;
  let skipped = 0;
  let plan: Plan | null = null;
  let loaded: LoadedMessage | null = null;
  let done = new Set<string>();
  const noticesShown = new Set<string>();
  const truncated = new Map<number, Truncation>();
  const seconds = (): number => Math.round(performance.now() - t0) / 1000;
  const notice = (message: string): void => {
    if (noticesShown.has(message)) return;
    noticesShown.add(message);
    emit({ type: 'notice', message });
  };

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

  const modelLoaded = (result: LoadedMessage): void => {
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
    for (const message of result.notices) notice(message);
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
    modelLoaded(result);
    return result;
  };

  const manifestOf = (complete: boolean, grids: Manifest['grids']): Manifest => {
    if (!plan || !loaded || !workerInfo) throw new Error('no plan yet');
    return buildManifest({
      config,
      name,
      promptSet,
      truncated,
      plan,
      loaded,
      modelId,
      worker: workerInfo,
      done,
      grids,
      complete,
      startedAt,
      seconds: seconds(),
      generated,
      skipped,
    });
  };

  /** Writes what the folder holds: manifest.json and images.csv. */
  const writeRecords = async (
    complete: boolean,
    grids: Manifest['grids'],
  ): Promise<{ manifest: Manifest; manifestPath: string }> => {
    const manifest = manifestOf(complete, grids);
    const manifestPath = await writeManifest(outDir, manifest);
    await writeImagesCsv(outDir, manifest);
    return { manifest, manifestPath };
  };

  const finish = async (
    complete: boolean,
    aborted: boolean,
    grids: Manifest['grids'],
  ): Promise<RunResult> => {
    if (!plan || !loaded || !workerInfo) {
      emit({
        type: 'done',
        complete: false,
        aborted,
        manifest: null,
        images_generated: 0,
        images_skipped: 0,
        seconds: seconds(),
      });
      return { outDir, manifestPath: null, manifest: null, complete: false, aborted, generated, skipped };
    }
    const { manifest, manifestPath } = await writeRecords(complete, grids);
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

  /**
   * Plans against a resolution and looks at the folder: which images are reusable, and whether it holds
   * images of other settings (refused, or removed with `overwrite`, or the run moves to a variant folder).
   */
  const planAndInspect = async (resolution: LoadedMessage): Promise<{ plan: Plan; journal: Journal }> => {
    const numLayers = resolution.num_layers;
    const layers = layersFor(numLayers);
    const settings = imageSettings(config, resolution, modelId, stage2ModelId, fingerprints);
    const thePlan = planExperiment({ settings, prompts, layers, seeds: config.seeds, stages, numLayers });
    let journal = await Journal.open(outDir);
    let state = await inspectCache(outDir, journal, thePlan);
    if (state.foreign && options.newVariant) {
      const variant = variantName(state.foreign.changes, settingsId(settings, 1));
      outDir = join(outDir, 'variants', variant);
      folders.push(await openOutputFolder(outDir));
      notice(
        `this run's settings differ from the folder's (${describeChanges(state.foreign.changes)}): writing it to ${outDir}`,
      );
      journal = await Journal.open(outDir);
      state = await inspectCache(outDir, journal, thePlan);
    }
    if (state.foreign && options.overwrite) {
      await removeForeign(outDir, journal, state.foreign.entries);
      notice(
        `removed ${plural(state.foreign.entries.length, 'image')} made with other settings ` +
          `(${describeChanges(state.foreign.changes)})`,
      );
    } else if (state.foreign) {
      const { entries, changes } = state.foreign;
      throw new FolderConflictError(
        `${outDir} holds ${plural(entries.length, 'image')} made with other settings` +
          (changes.length > 0 ? ` (${describeChanges(changes)})` : '') +
          `, e.g. ${entries[0]?.path}. A folder holds one set of settings; rerun with --new-variant to write ` +
          `this run to ${join(outDir, 'variants', variantName(changes, settingsId(settings, 1)))}, with ` +
          '--overwrite to delete those images and make these, or choose another output folder',
      );
    }
    if (state.changedByHand > 0) {
      notice(`${plural(state.changedByHand, 'image')} changed or deleted since made: making them again`);
    }
    if (journal.skippedLines > 0) {
      notice(
        `${plural(journal.skippedLines, 'unreadable journal line')} skipped: their images are made again`,
      );
    }
    done = state.done;
    skipped = done.size;
    return { plan: thePlan, journal };
  };

  let failed = true;
  try {
    // A rerun whose images are all on disk needs no worker: plan it with what the worker resolved last time.
    const recorded = await readResolution(outDir, loadRequest, fingerprints);
    let journal: Journal;
    if (recorded) {
      ({ plan, journal } = await planAndInspect(recorded.loaded));
      if (done.size === plan.jobs.length) {
        loaded = recorded.loaded;
        workerInfo = recorded.worker;
      } else {
        plan = null;
      }
    }
    if (!plan) {
      worker ??= await startWorker(0);
      workerInfo = worker.info;
      loaded = await loadModel(worker);
      await writeResolution(outDir, loadRequest, fingerprints, { loaded, worker: worker.info });
      ({ plan, journal } = await planAndInspect(loaded));
    }
    const thePlan: Plan = plan;
    const { settings, layers } = thePlan;
    const { steps, height, width } = settings.sampler;
    await recordSettings(outDir, settings, stages);
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
    const settingsIds = { 1: settingsId(settings, 1), 2: settingsId(settings, 2) } as const;
    // Units (denoising steps of one item, either stage) of the whole run: fixed by the first request.
    let unitsTotal: number | null = null;
    let restarts = 0;
    for (;;) {
      if (signal?.aborted) {
        failed = false;
        return await finish(false, true, []);
      }
      const items = requestItems(thePlan.jobs, isDone);
      if (items.length === 0) break;
      if (!worker || !loaded) throw new Error('no worker');
      const activeWorker: LensWorker = worker;
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
        await journal.append({
          key: job.key,
          path: job.path,
          sha256: sha256Hex(image.png),
          bytes: image.png.length,
          settings: settingsIds[job.stage],
        });
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
        const reply = await activeWorker.generate(
          request,
          {
            onProgress: (p) => {
              const inFlight = items.slice(p.images_done, p.images_done + Math.max(1, p.batch_items));
              emit({
                type: 'progress',
                images_done: generated,
                images_total: todoTotal,
                units_done: Math.min(total, unitsBase + p.done_units),
                units_total: total,
                layers: [...new Set(inFlight.map((item) => item.layer))],
              });
            },
            onImage,
          },
          signal,
        );
        for (const cut of reply.truncated) {
          if (truncated.has(cut.prompt)) continue;
          truncated.set(cut.prompt, { tokens: cut.tokens, max_tokens: cut.max_tokens });
          notice(
            `prompt ${cut.prompt + 1} has ${cut.tokens} tokens; the text encoder reads ${cut.max_tokens}, ` +
              `so the rest is cut: "${prompts[cut.prompt]}"`,
          );
        }
        const notSent = missing.filter((job) => !isDone(job)).length;
        if (notSent > 0) {
          throw new WorkerError(
            'internal',
            `the worker finished without sending ${plural(notSent, 'image')}`,
          );
        }
        break;
      } catch (error) {
        if (signal?.aborted) {
          failed = false;
          return await finish(false, true, []);
        }
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
        await activeWorker.close().catch(() => undefined);
        worker = await startWorker(restarts);
        const before = loaded;
        const reloaded = await loadModel(worker);
        if (
          reloaded.num_layers !== before.num_layers ||
          reloaded.revision !== before.revision ||
          reloaded.clean_caption !== before.clean_caption ||
          reloaded.stage2?.revision !== before.stage2?.revision
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
      minCell: config.grid.min_cell,
      isDone,
      onGrid: (grid) => emit({ type: 'grid', ...grid }),
    });
    failed = false;
    return await finish(true, false, grids);
  } catch (error) {
    if (error instanceof Aborted) {
      failed = plan === null;
      return await finish(false, true, []);
    }
    // Whatever was made stays usable: record it, marked incomplete.
    let manifestPath: string | null = null;
    if (plan && loaded && workerInfo && generated > 0) {
      manifestPath = await writeRecords(false, [])
        .then((written) => written.manifestPath)
        .catch(() => null);
    }
    const resumable = generated + skipped > 0;
    emit({
      type: 'error',
      code: errorCode(error),
      message: (error as Error).message,
      resumable,
    });
    emit({
      type: 'done',
      complete: false,
      aborted: false,
      manifest: manifestPath,
      images_generated: generated,
      images_skipped: skipped,
      seconds: seconds(),
    });
    throw error;
  } finally {
    ended = true;
    await Promise.all(owned.map((w) => w.close().catch(() => undefined)));
    // A run that made nothing leaves no folder behind that it created.
    const discard = failed && generated === 0;
    for (const folder of folders.reverse()) await folder.close(discard);
  }
}

function errorCode(error: unknown): string {
  if (error instanceof WorkerError) return error.code;
  if (error instanceof ConfigError) return 'config';
  if (error instanceof FolderConflictError) return 'folder_conflict';
  if (error instanceof FolderBusyError) return 'folder_busy';
  if (error instanceof OutputFolderError) return 'output_folder';
  return 'internal';
}
