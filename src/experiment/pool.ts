// The workers of a run: `runtime.workers` local ones (one GPU each, in turn, through CUDA_VISIBLE_DEVICES,
// or CPU workers sharing the cores), the `runtime.remote` ones (attached to, with CURVE keys), or one
// given worker. Each is a WorkerSupervisor slot; generation.ts hands them batches.
import { availableParallelism } from 'node:os';
import { execa } from 'execa';
import type { LensWorker, LoadedMessage } from '../bridge/index.js';
import { WorkerError } from '../bridge/index.js';
import type { RemoteWorker, RuntimeConfig } from '../config/index.js';
import { isLostWorker, type SupervisorOptions, sameModel, WorkerSupervisor } from './supervisor.js';

export interface PoolOptions extends Omit<SupervisorOptions, 'remote' | 'slot' | 'worker'> {
  runtime: RuntimeConfig;
  /** runtime.remote, resolved, then any given by the caller (`--worker`). */
  remote: RemoteWorker[];
  /** A running worker to use as the only one (not closed at the end). */
  worker?: LensWorker;
}

/** The GPUs `gpus: auto` means: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list, else none. */
export async function detectGpus(env: NodeJS.ProcessEnv): Promise<string[]> {
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined) {
    return visible
      .split(',')
      .map((id) => id.trim())
      .filter((id) => id !== '' && id !== '-1');
  }
  const listed = await execa('nvidia-smi', ['--query-gpu=index', '--format=csv,noheader'], {
    reject: false,
    timeout: 10_000,
    env,
  });
  if (listed.exitCode !== 0 || typeof listed.stdout !== 'string') return [];
  return listed.stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^\d+$/.test(line));
}

/**
 * The environment of local worker `index` of `count`: its GPU when there are GPUs; else, for several CPU
 * workers, an equal share of the cores (torch would otherwise give every worker all of them).
 */
export function localWorkerEnv(
  env: NodeJS.ProcessEnv,
  index: number,
  count: number,
  gpus: readonly string[],
  cores = availableParallelism(),
): NodeJS.ProcessEnv {
  if (count === 1) return env;
  if (gpus.length > 0) return { ...env, CUDA_VISIBLE_DEVICES: gpus[index % gpus.length] };
  if (env.OMP_NUM_THREADS !== undefined) return env;
  return { ...env, OMP_NUM_THREADS: String(Math.max(1, Math.floor(cores / count))) };
}

export class WorkerPool {
  private reference: LoadedMessage | null = null;
  /** Slots that could not start or load; generation skips them. */
  readonly failed = new Map<WorkerSupervisor, unknown>();

  private constructor(
    readonly slots: WorkerSupervisor[],
    private readonly options: PoolOptions,
  ) {}

  static async create(options: PoolOptions): Promise<WorkerPool> {
    const { runtime, remote, worker, ...common } = options;
    if (worker) return new WorkerPool([new WorkerSupervisor({ ...common, worker })], options);
    const local = runtime.workers ?? (remote.length > 0 ? 0 : 1);
    const count = local + remote.length;
    if (count === 0) {
      throw new WorkerError('start_failed', 'no worker: set runtime.workers, or give a remote worker');
    }
    const env = options.env ?? process.env;
    const gpus = local > 1 ? (runtime.gpus === 'auto' ? await detectGpus(env) : runtime.gpus) : [];
    const slot = (index: number): number | undefined => (count > 1 ? index : undefined);
    const slots = [
      ...Array.from(
        { length: local },
        (_, index) =>
          new WorkerSupervisor({
            ...common,
            env: localWorkerEnv(env, index, local, gpus),
            slot: slot(index),
          }),
      ),
      ...remote.map(
        (target, index) => new WorkerSupervisor({ ...common, remote: target, slot: slot(local + index) }),
      ),
    ];
    return new WorkerPool(slots, options);
  }

  get size(): number {
    return this.slots.length;
  }

  /**
   * The first worker ready with its model (the others go on starting); every worker must load the same
   * model. With one worker its failure is thrown; with several, those that fail are reported and left
   * out, and only when all fail is the first failure thrown.
   */
  async first(): Promise<{ worker: LensWorker; loaded: LoadedMessage }> {
    const attempts = this.slots.map((slot) => this.ready(slot));
    try {
      return await Promise.any(attempts);
    } catch {
      // Every slot failed: say why the first one did.
      throw (
        this.failed.get(this.slots[0] as WorkerSupervisor) ?? new WorkerError('start_failed', 'no worker')
      );
    }
  }

  /** The slot's worker and model, or a rejection (recorded in `failed`, reported for a pool). */
  async ready(slot: WorkerSupervisor): Promise<{ worker: LensWorker; loaded: LoadedMessage }> {
    try {
      const ready = await slot.ready();
      this.reference ??= ready.loaded;
      if (!sameModel(this.reference, ready.loaded)) {
        throw new WorkerError(
          'load_failed',
          `the ${slot.describe()} loaded ${ready.loaded.model} differently from the first worker ` +
            `(${ready.loaded.num_layers} encoder layers, revision ${ready.loaded.revision ?? 'none'})`,
        );
      }
      return ready;
    } catch (error) {
      // A worker that died while starting or loading is the caller's to replace.
      if (isLostWorker(error)) throw error;
      if (!this.failed.has(slot)) {
        this.failed.set(slot, error);
        if (this.size > 1 && !this.options.signal?.aborted) {
          this.options.notice(
            `the ${slot.describe()} is left out: ${(error as Error).message.split('\n')[0]}`,
          );
        }
      }
      throw error;
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((slot) => slot.close()));
  }
}
