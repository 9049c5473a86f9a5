// The worker a run uses (one slot of its pool): started, attached to (a remote or persistent worker) or
// given, the model loaded, replaced when it dies or hangs (at most `maxRestarts` times, checking that the
// new one loaded the same model), and closed at the end. Reports worker-ready, model-loaded, the worker's
// notices and worker-lost.
import {
  LensWorker,
  type LoadedMessage,
  type LoadRequest,
  type ReadyMessage,
  WorkerError,
} from '../bridge/index.js';
import type { RemoteWorker } from '../config/index.js';
import type { RunEvent } from './events.js';
import type { Job } from './plan.js';

/** Thrown when the signal aborts a start or load. */
export class Aborted extends Error {}

/** `promise`, or an Aborted rejection as soon as the signal aborts. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
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

/** A worker that died or stopped answering (as opposed to one that refused a request). */
export function isLostWorker(error: unknown): error is WorkerError {
  return error instanceof WorkerError && (error.code === 'worker_exited' || error.code === 'worker_hung');
}

export interface SupervisorOptions {
  load: LoadRequest;
  /** What is being loaded, for messages: `model` or `model with stage II model2`. */
  loading: string;
  /** A running worker to use (not closed at the end); else one is started. */
  worker?: LensWorker;
  /** A running worker to attach to instead of starting one; a lost one is attached to again. */
  remote?: RemoteWorker;
  /** This slot's number in a pool of several (events then carry it); absent for a lone worker. */
  slot?: number;
  python?: string;
  env?: NodeJS.ProcessEnv;
  onLog?: (line: string) => void;
  signal?: AbortSignal;
  maxRestarts: number;
  emit: (event: RunEvent) => void;
  /** Something for the user, once per run. */
  notice: (message: string) => void;
  /** Checks before each load, against what the worker says it can do (throws to refuse). */
  beforeLoad?: (info: ReadyMessage) => void;
}

/** Whether two workers loaded the same model (checked for restarts and for a pool's workers). */
export function sameModel(a: LoadedMessage, b: LoadedMessage): boolean {
  return (
    a.num_layers === b.num_layers &&
    a.stock_layer === b.stock_layer &&
    a.revision === b.revision &&
    JSON.stringify(a.family_options) === JSON.stringify(b.family_options) &&
    a.stage2?.revision === b.stage2?.revision
  );
}

/** A load failure, with what was being loaded in front (the worker's message says why). */
function loadFailure(error: unknown, what: string): unknown {
  if (!(error instanceof WorkerError) || error.code !== 'load_failed') return error;
  return new WorkerError('load_failed', `cannot load ${what}: ${error.message}`, {
    traceback: error.traceback,
    cause: error,
  });
}

export class WorkerSupervisor {
  private current: LensWorker | null;
  private model: LoadedMessage | null = null;
  private restarts = 0;
  private readonly owned: LensWorker[] = [];
  private closed = false;
  private bringingUp: Promise<{ worker: LensWorker; loaded: LoadedMessage }> | null = null;

  constructor(private readonly options: SupervisorOptions) {
    this.current = options.worker ?? null;
  }

  /** The worker and what it loaded, starting and loading as needed. */
  ready(): Promise<{ worker: LensWorker; loaded: LoadedMessage }> {
    // Callers at the same time share one start.
    this.bringingUp ??= this.bringUp().finally(() => {
      this.bringingUp = null;
    });
    return this.bringingUp;
  }

  private async bringUp(): Promise<{ worker: LensWorker; loaded: LoadedMessage }> {
    this.current ??= await this.start();
    this.model ??= await this.load(this.current);
    return { worker: this.current, loaded: this.model };
  }

  /**
   * After a worker was lost with `lost` images not received: reports it, then starts and loads a new one,
   * or rethrows `error` when the restarts are used up.
   */
  async replace(error: WorkerError, lost: readonly Job[]): Promise<void> {
    const restarting = this.restarts < this.options.maxRestarts;
    this.options.emit({
      type: 'worker-lost',
      ...this.slotField(),
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
      restarts: this.restarts,
    });
    if (!restarting) throw error;
    this.restarts++;
    await this.current?.close().catch(() => undefined);
    this.current = null;
    this.current = await this.start();
    const before = this.model;
    const after = await this.load(this.current);
    if (before && !sameModel(before, after)) {
      throw new WorkerError('load_failed', `the ${this.describe()} loaded a different model`);
    }
    this.model = after;
  }

  /** "worker", "worker 2", or "worker 2 (tcp://host:port)", for messages. */
  describe(): string {
    const { slot, remote } = this.options;
    return `worker${slot === undefined ? '' : ` ${slot + 1}`}${remote ? ` (${remote.endpoint})` : ''}`;
  }

  private slotField(): { worker?: number } {
    return this.options.slot === undefined ? {} : { worker: this.options.slot };
  }

  /** Closes the workers this supervisor started (a given worker keeps running). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.owned.map((w) => w.close().catch(() => undefined)));
  }

  private async start(): Promise<LensWorker> {
    const { python, env, onLog, signal, remote } = this.options;
    const started = remote
      ? LensWorker.connect(remote.endpoint, { onLog, keys: remote.keys })
      : LensWorker.start({ python, env, onLog });
    // An abort during start still owns the process: close it once it is up, even after the run ended.
    started
      .then((w) => {
        this.owned.push(w);
        if (this.closed) void w.close().catch(() => undefined);
      })
      .catch(() => undefined);
    const worker = await untilAborted(started, signal);
    const { info } = worker;
    this.options.emit({
      type: 'worker-ready',
      ...this.slotField(),
      pid: worker.pid ?? null,
      ...(remote ? { endpoint: remote.endpoint } : {}),
      python: info.python,
      torch: info.torch,
      diffusers: info.diffusers,
      transformers: info.transformers,
      device: info.device,
      restart: this.restarts,
    });
    return worker;
  }

  private async load(worker: LensWorker): Promise<LoadedMessage> {
    const { load, loading, signal } = this.options;
    this.options.beforeLoad?.(worker.info);
    const result = await untilAborted(worker.load(load), signal).catch((error: unknown) => {
      throw loadFailure(error, loading);
    });
    if (load.stage2 !== null && result.stage2 === null) {
      throw new WorkerError(
        'load_failed',
        `cannot load ${loading}: the worker loaded ${result.model} (family ${result.family}) without a stage II`,
      );
    }
    this.options.emit({
      type: 'model-loaded',
      ...this.slotField(),
      model: result.model,
      family: result.family,
      pipeline_class: result.pipeline_class,
      revision: result.revision,
      num_layers: result.num_layers,
      device: result.device,
      dtype: result.dtype,
      family_options: result.family_options,
      stage2:
        result.stage2 === null
          ? null
          : {
              model: result.stage2.model,
              pipeline_class: result.stage2.pipeline_class,
              revision: result.stage2.revision,
            },
    });
    for (const message of result.notices) this.options.notice(message);
    return result;
  }
}
