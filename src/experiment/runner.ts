// runExperiment: config → images, grids, a manifest and images.csv in an output folder, resumable. It
// composes one-concern modules: inputs (resolved and checked before anything starts), outdir (checked,
// locked folders), resolution (reruns without Python), pool (the workers: start or attach, load, restart),
// family (the config against what the worker reports of the model's family), folder (one set of
// settings per folder: refuse, variant or overwrite; what is reused), generation (asking the worker for
// what is missing; request: what to ask for, pure), sink (images written and journaled), grids and
// manifest.
//
// A fully cached rerun finishes without a worker. Otherwise ONE generate asks for every (prompt, layer,
// seed) with an image missing (its stage I image and, when stage II is asked for, its stage II image);
// a worker that dies or hangs is replaced and the run asks again for what is missing; an abort stops
// cleanly and leaves a resumable folder.
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { LensWorker, LoadedMessage } from '../bridge/index.js';
import { WorkerError } from '../bridge/index.js';
import { ConfigError, type ExperimentConfig, locateField, type RemoteWorker } from '../config/index.js';
import { planBatchSize } from './batches.js';
import type { RunEvent } from './events.js';
import { checkNamedFamily, familyOptionsFor } from './family.js';
import { claimFolder, FolderConflictError } from './folder.js';
import { generateMissing } from './generation.js';
import { writeGrids } from './grids.js';
import { writeImagesCsv } from './images-csv.js';
import { resolveInputs } from './inputs.js';
import { FolderBusyError } from './lock.js';
import {
  buildManifest,
  type LensedTokens,
  type Manifest,
  type Truncation,
  type VariantTag,
  writeManifest,
} from './manifest.js';
import { type OutputFolder, OutputFolderError, openOutputFolder } from './outdir.js';
import { canonicalJson, imageSettings, type Plan, planExperiment } from './plan.js';
import { WorkerPool } from './pool.js';
import { type Resolution, readResolution, type WorkerInfo, writeResolution } from './resolution.js';
import { recordSettings } from './settings.js';
import {
  checkShard,
  configDirOf,
  type ShardRecord,
  type ShardSpec,
  selectShard,
  writeShardState,
} from './shard.js';
import { ImageSink } from './sink.js';
import { Aborted } from './supervisor.js';
import { noTimings, type RunTimings } from './timings.js';

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
  /** Running workers to attach to (`--worker`), besides the config's runtime.remote; `keys`: the
   *  folder of this client's CURVE keys. */
  remote?: RemoteWorker[];
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
  /** The study variant this run is (runStudy sets it): recorded in its manifest. */
  variant?: VariantTag;
  /**
   * Make only shard `index` (0-based) of `count`: the plan's batches (planBatchSize items) b with
   * b mod count = index, with the same keys and (for an integer max_batch) bytes as an unsharded run; no
   * grids (see shard.ts and mergeShards).
   */
  shard?: ShardSpec;
  /** What a worker resolved for this run's load, to plan with instead of the folder's record
   *  (mergeShards passes the shards'): a run whose images are all on disk then starts no worker. */
  resolution?: Resolution;
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

/** What a run has planned and found, once it has. */
interface Planned {
  plan: Plan;
  loaded: LoadedMessage;
  worker: WorkerInfo;
  sink: ImageSink;
  skipped: number;
  /** Set when the run is a shard (the plan is then its share). */
  shard: ShardRecord | null;
}

/** Runs an experiment; see the module comment. Rejects on errors (ConfigError, WorkerError, I/O). */
export async function runExperiment(config: ExperimentConfig, options: RunOptions): Promise<RunResult> {
  if (config.sweep !== undefined) {
    throw new ConfigError({
      path: ['sweep'],
      ...locateField(config, ['sweep']),
      message: 'makes the config a study of several variants: run it with runStudy (or expandSweep it)',
    });
  }
  const startedAt = new Date();
  const t0 = performance.now();
  const seconds = (): number => Math.round(performance.now() - t0) / 1000;
  const emit = (event: RunEvent): void => options.onEvent?.(event);
  const { signal } = options;
  if (options.shard) checkShard(options.shard);
  const inputs = await resolveInputs(config, options);
  const { promptSet, fingerprints } = inputs;
  let outDir = resolve(options.outDir);
  const baseDir = outDir;
  const folders: OutputFolder[] = [await openOutputFolder(outDir)];
  emit({ type: 'start', name: inputs.name, out_dir: outDir, prompts: promptSet.prompts.length });

  const shown = new Set<string>();
  const notice = (message: string): void => {
    if (shown.has(message)) return;
    shown.add(message);
    emit({ type: 'notice', message });
  };
  const pool = await WorkerPool.create({
    ...options,
    runtime: config.runtime,
    remote: [...inputs.remote, ...(options.remote ?? [])],
    load: inputs.load,
    loading: inputs.loading,
    maxRestarts: options.maxRestarts ?? 2,
    emit,
    notice,
    // The worker says what each family can do: a config is checked against that, not our constants
    // (here before loading a named family; settingsFor checks against what loaded).
    beforeLoad: (info) => checkNamedFamily(config, info.families),
  });
  const truncated = new Map<number, Truncation>();
  const lensedTokens = new Map<number, LensedTokens>();
  let planned: Planned | null = null;
  const timings = noTimings();
  const runTimings = (): RunTimings => ({ ...timings, write_ms: planned?.sink.writeMs ?? 0 });

  const settingsFor = (loaded: LoadedMessage) =>
    imageSettings(config, loaded, inputs.modelId, inputs.stage2ModelId, fingerprints, inputs.embeds);

  /** Plans against what the worker resolved, and claims the folder (or its variant) for the plan. */
  const planFor = async (loaded: LoadedMessage, worker: WorkerInfo): Promise<Planned> => {
    const settings = settingsFor(loaded);
    const familyOptions = familyOptionsFor(config, loaded);
    const numLayers = loaded.num_layers;
    const layers = inputs.layersFor(numLayers, loaded.stock_layer);
    const prompts = promptSet.prompts;
    const { stages } = inputs;
    const seeds = config.seeds;
    const stockLayer = loaded.stock_layer;
    const { plan, record: shard } = selectShard(
      planExperiment({
        settings,
        familyOptions,
        prompts,
        layers,
        seeds,
        stages,
        numLayers,
        stockLayer,
        encoders: loaded.encoders,
        embeds: inputs.embeds,
      }),
      planBatchSize(config),
      options.shard,
    );
    const claimed = await claimFolder({
      outDir,
      plan,
      overwrite: options.overwrite,
      newVariant: options.newVariant,
      openVariant: async (dir) => {
        folders.push(await openOutputFolder(dir));
      },
      notice,
    });
    outDir = claimed.outDir;
    const sink = new ImageSink(outDir, claimed.journal, plan, claimed.done, emit);
    return { plan, loaded, worker, sink, skipped: claimed.done.size, shard };
  };

  const writeRecords = async (complete: boolean, grids: Manifest['grids']) => {
    if (!planned) return null;
    const { plan, loaded, worker, sink, skipped, shard } = planned;
    if (shard && options.shard) {
      const configDir = configDirOf(config, options.configDir);
      await writeShardState(outDir, {
        shard: options.shard,
        config,
        configDir,
        resolution: { loaded, worker },
      });
    }
    const manifest = buildManifest({
      config,
      name: inputs.name,
      promptSet,
      truncated,
      lensedTokens,
      plan,
      loaded,
      modelId: inputs.modelId,
      worker,
      done: sink.done,
      grids,
      complete,
      startedAt,
      seconds: seconds(),
      generated: sink.generated,
      skipped,
      variant: options.variant,
      shard: shard ?? undefined,
    });
    const manifestPath = await writeManifest(outDir, manifest);
    await writeImagesCsv(outDir, manifest);
    return { manifest, manifestPath };
  };

  const finish = async (
    complete: boolean,
    aborted: boolean,
    grids: Manifest['grids'],
  ): Promise<RunResult> => {
    const written = await writeRecords(complete, grids);
    const generated = planned?.sink.generated ?? 0;
    const skipped = planned?.skipped ?? 0;
    emit({
      type: 'done',
      complete,
      aborted,
      manifest: written?.manifestPath ?? null,
      images_generated: generated,
      images_skipped: skipped,
      seconds: written?.manifest.timings.seconds ?? seconds(),
      timings: runTimings(),
    });
    return {
      outDir,
      manifestPath: written?.manifestPath ?? null,
      manifest: written?.manifest ?? null,
      complete,
      aborted,
      generated,
      skipped,
    };
  };

  let failed = true;
  try {
    // A rerun whose images are all on disk needs no worker: plan it with what the worker resolved last time.
    const recorded = options.resolution ?? (await readResolution(baseDir, inputs.load, fingerprints));
    const candidate = recorded ? await planFor(recorded.loaded, recorded.worker) : null;
    if (candidate?.sink.todo === 0) planned = candidate;
    if (!planned) {
      const { worker, loaded } = await pool.first();
      await writeResolution(baseDir, inputs.load, fingerprints, { loaded, worker: worker.info });
      // The worker resolved as recorded: the folder has been looked at for this plan already.
      const same =
        candidate !== null &&
        candidate.loaded.num_layers === loaded.num_layers &&
        candidate.loaded.stock_layer === loaded.stock_layer &&
        canonicalJson(candidate.plan.settings) === canonicalJson(settingsFor(loaded));
      planned = same ? { ...candidate, loaded, worker: worker.info } : await planFor(loaded, worker.info);
    }
    const { plan, sink } = planned;
    const { settings } = plan;
    await recordSettings(outDir, settings, plan.stages);
    emit({
      type: 'plan',
      out_dir: outDir,
      total: plan.jobs.length,
      skipped: planned.skipped,
      todo: sink.todo,
      prompts: plan.prompts.length,
      layers: plan.layers,
      seeds: plan.seeds,
      stages: plan.stages,
      height: settings.sampler.height,
      width: settings.sampler.width,
      stage2: settings.stage2
        ? { height: settings.stage2.height, width: settings.stage2.width, steps: settings.stage2.steps }
        : null,
    });

    await generateMissing({
      config,
      plan,
      sink,
      pool,
      truncated,
      lensedTokens,
      emit,
      notice,
      signal,
      timings,
    });

    // A shard writes no grids: a grid shows a prompt's images of every shard (the merge writes them).
    const grids = planned.shard
      ? []
      : await writeGrids({
          outDir,
          plan,
          prompts: plan.prompts,
          layers: plan.layers,
          seeds: plan.seeds,
          minCell: config.grid.min_cell,
          isDone: sink.isDone,
          onGrid: (grid) => emit({ type: 'grid', ...grid }),
        });
    failed = false;
    return await finish(true, false, grids);
  } catch (error) {
    if (error instanceof Aborted || signal?.aborted) {
      // Stopped on request: a planned run keeps its folder (resumable), an unplanned one leaves none.
      failed = planned === null;
      return await finish(false, true, []);
    }
    // Whatever was made stays usable: record it, marked incomplete.
    const generated = planned?.sink.generated ?? 0;
    const written = generated > 0 ? await writeRecords(false, []).catch(() => null) : null;
    emit({
      type: 'error',
      code: errorCode(error),
      message: (error as Error).message,
      resumable: generated + (planned?.skipped ?? 0) > 0,
    });
    emit({
      type: 'done',
      complete: false,
      aborted: false,
      manifest: written?.manifestPath ?? null,
      images_generated: generated,
      images_skipped: planned?.skipped ?? 0,
      seconds: seconds(),
      timings: runTimings(),
    });
    throw error;
  } finally {
    await pool.close();
    // A run that made nothing leaves no folder behind that it created.
    const discard = failed && (planned?.sink.generated ?? 0) === 0;
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
