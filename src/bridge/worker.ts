// LensWorker: the orchestrator's handle on one Python worker (spawned and managed, or attached to).
import { existsSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { TOOL_NAME, TOOL_VERSION } from '../version.js';
import { Connection, type Fields, type HandshakeProblem } from './connection.js';
import { WorkerError } from './errors.js';
import { GenerateCall, type GenerateHandlers } from './generate-call.js';
import { type CurveKeys, KeysError, resolveClientKeys } from './keys.js';
import { describeExit, type ExitInfo, spawnWorkerProcess, type WorkerProcess } from './process.js';
import {
  type DoneMessage,
  describeIssues,
  type GenerateRequest,
  generateRequestSchema,
  type IncomingMessage,
  type LoadedMessage,
  type LoadRequest,
  loadRequestSchema,
  PROTOCOL_VERSION,
  type ReadyMessage,
  type ScoreDoneMessage,
  type ScoreRequest,
  scoreRequestSchema,
} from './protocol.js';
import { ScoreCall, type ScoreHandlers } from './score-call.js';
import { abortedError, type StreamingCall, type StreamingRequest } from './streaming-call.js';

export interface WorkerOptions {
  /** Interpreter to run the worker with (default: findPython()). */
  python?: string;
  /** Environment of the worker process (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Silence after which the worker counts as hung (default: max(5 s, 5 heartbeats)). */
  heartbeatTimeoutMs?: number;
  /** Time allowed from spawn to `ready` (default 60 s). */
  startTimeoutMs?: number;
  /** Receives the worker's stderr lines and the bridge's own diagnostics. */
  onLog?: (line: string) => void;
  /** Extra arguments for lens_server.py, e.g. ['--heartbeat', '0.5']. */
  extraArgs?: string[];
}

export interface ConnectOptions extends Pick<WorkerOptions, 'heartbeatTimeoutMs' | 'onLog'> {
  /**
   * CURVE keys for a worker started with `--keys`: a keys folder (its client.key_secret and worker.key,
   * see `diffusion-lens keys`) or the keys themselves. Default: none (an ipc socket, or an `--insecure`
   * worker).
   */
  keys?: string | CurveKeys;
  /** Time allowed for the worker to answer hello (default 10 s: it is running already). */
  startTimeoutMs?: number;
}

const DEFAULT_START_TIMEOUT_MS = 60_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** What a worker that refuses a client does: nothing. */
const KEYS_HINT =
  'A worker started with --keys DIR answers only clients whose public key is in its DIR/authorized/, ' +
  'and only clients that hold its worker.key.';
const SHUTDOWN_GRACE_MS = 3_000;
const TERM_GRACE_MS = 3_000;

export class LensWorker {
  /** How the process ended; for an attached worker, resolves when close() is done. */
  readonly exited: Promise<ExitInfo>;
  private readonly activeCalls = new Set<string>();
  private closing: Promise<void> | null = null;
  private resolveDetached: (info: ExitInfo) => void = () => {};

  private constructor(
    private readonly connection: Connection,
    /** The worker's `ready` reply: versions, device, and each family's capabilities. */
    readonly info: ReadyMessage,
    private readonly workerProcess: WorkerProcess | null,
    heartbeatTimeoutMs: number | undefined,
    private readonly onLog: (line: string) => void,
  ) {
    if (workerProcess) {
      this.exited = workerProcess.exited;
      void workerProcess.exited.then((exit) => this.onProcessExit(exit));
      workerProcess.release();
    } else {
      this.exited = new Promise((resolve) => {
        this.resolveDetached = resolve;
      });
    }
    const timeoutMs = heartbeatTimeoutMs ?? Math.max(5_000, 5 * info.heartbeat_s * 1_000);
    connection.watchHeartbeat(timeoutMs, (silentMs) => this.onHung(silentMs, timeoutMs));
  }

  /** Spawns python/lens_server.py, connects, and completes the hello/ready handshake. */
  static async start(opts: WorkerOptions = {}): Promise<LensWorker> {
    const onLog = opts.onLog ?? (() => {});
    const startTimeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    const startedAt = performance.now();
    const workerProcess = await spawnWorkerProcess({
      python: opts.python,
      env: opts.env,
      startTimeoutMs,
      onLog,
      extraArgs: opts.extraArgs ?? [],
    });
    const { endpoint, protocol } = workerProcess.listening;
    let connection: Connection | undefined;
    try {
      if (protocol !== PROTOCOL_VERSION) throw versionMismatch(protocol, 'its listening line says so');
      connection = new Connection(endpoint, { onLog });
      const remainingMs = Math.max(1_000, startTimeoutMs - (performance.now() - startedAt));
      const info = await handshake(connection, remainingMs, protocol, workerProcess);
      return new LensWorker(connection, info, workerProcess, opts.heartbeatTimeoutMs, onLog);
    } catch (error) {
      connection?.close(new WorkerError('closed', 'the worker failed to start'));
      workerProcess.signal('SIGKILL');
      await workerProcess.exited;
      throw error;
    }
  }

  /**
   * Attaches to a worker that is already running at `endpoint` (`diffusion-lens worker`, e.g. on a GPU
   * host), with CURVE keys when it has them. No process management: close() only disconnects. A worker
   * that refuses our key answers nothing; the error then says to check the keys.
   */
  static async connect(endpoint: string, opts: ConnectOptions = {}): Promise<LensWorker> {
    const onLog = opts.onLog ?? (() => {});
    let keys: CurveKeys | undefined;
    try {
      keys = opts.keys === undefined ? undefined : resolveClientKeys(opts.keys);
    } catch (error) {
      if (!(error instanceof KeysError)) throw error;
      throw new WorkerError('start_failed', `cannot connect to the worker at ${endpoint}: ${error.message}`, {
        cause: error,
      });
    }
    const socketFile = endpoint.startsWith('ipc://') ? endpoint.slice('ipc://'.length) : null;
    if (socketFile !== null && process.platform !== 'win32') {
      const why = !existsSync(socketFile)
        ? `there is no socket file ${socketFile}`
        : (await unixSocketAnswers(socketFile))
          ? null
          : `${socketFile} is left from a worker that has stopped`;
      if (why !== null) {
        throw new WorkerError(
          'start_failed',
          `no worker listens on ${endpoint} (${why}): start one with \`diffusion-lens worker\` (its first ` +
            'line names its endpoint)',
        );
      }
    }
    const timeoutMs = opts.startTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    let refuse: (error: WorkerError) => void = () => {};
    const refused = new Promise<never>((_, reject) => {
      refuse = reject;
    });
    let lastProblem: HandshakeProblem | null = null;
    const connection = new Connection(endpoint, {
      onLog,
      keys,
      onHandshakeProblem: (problem) => {
        if (lastProblem?.message !== problem.message) {
          onLog(`bridge: the security handshake with ${endpoint} failed: ${problem.message}`);
        }
        lastProblem = problem;
        // A refused key and a mismatch of mechanisms are final; anything else may be a worker starting.
        if (problem.kind !== 'other') refuse(handshakeRefused(endpoint, problem, keys !== undefined));
      },
    });
    try {
      const info = await handshake(connection, timeoutMs, null, null, {
        refused,
        noAnswer: () => noAnswer(endpoint, timeoutMs, keys !== undefined, lastProblem),
      });
      return new LensWorker(connection, info, null, opts.heartbeatTimeoutMs, onLog);
    } catch (error) {
      connection.close(new WorkerError('closed', 'the handshake failed'));
      throw error;
    } finally {
      refused.catch(() => undefined);
      connection.stopWatchingHandshake();
    }
  }

  /** The worker's process id (undefined for an attached worker). */
  get pid(): number | undefined {
    return this.workerProcess?.pid;
  }

  /** The ZeroMQ endpoint of the worker's ROUTER socket. */
  get endpoint(): string {
    return this.connection.endpoint;
  }

  load(req: LoadRequest): Promise<LoadedMessage> {
    const parsed = loadRequestSchema.safeParse(req);
    if (!parsed.success) return Promise.reject(invalidRequest('load', describeIssues(parsed.error)));
    return this.unlessClosing() ?? this.connection.call('load', parsed.data, 'loaded');
  }

  /**
   * Runs one generate request. Streams progress and images to `handlers`; resolves with `done` once every
   * onImage call has settled. Aborting `signal` cancels the request: the promise rejects with 'cancelled'.
   * If a handler throws, the request is cancelled and the promise rejects with that error.
   */
  generate(
    req: GenerateRequest,
    handlers: GenerateHandlers = {},
    signal?: AbortSignal,
  ): Promise<DoneMessage> {
    const parsed = generateRequestSchema.safeParse(req);
    if (!parsed.success) return Promise.reject(invalidRequest('generate', describeIssues(parsed.error)));
    return this.stream('generate', parsed.data, signal, (sendCancel, onEnded) => {
      return new GenerateCall(handlers, sendCancel, onEnded, signal);
    });
  }

  /**
   * Runs one score request: each item's answers go to `handlers.onScored` as they arrive; resolves with
   * `score_done` (which names the scorer as loaded). Aborting `signal` cancels it (rejects 'cancelled').
   * Needs no diffusion model loaded, and leaves a loaded one loaded.
   */
  score(req: ScoreRequest, handlers: ScoreHandlers = {}, signal?: AbortSignal): Promise<ScoreDoneMessage> {
    const parsed = scoreRequestSchema.safeParse(req);
    if (!parsed.success) return Promise.reject(invalidRequest('score', describeIssues(parsed.error)));
    return this.stream('score', parsed.data, signal, (sendCancel, onEnded) => {
      return new ScoreCall(handlers, sendCancel, onEnded, signal);
    });
  }

  /** Sends a streaming request, its call made by `create` with how to cancel it and what ends it. */
  private stream<T extends StreamingRequest, Final extends IncomingMessage>(
    request: T,
    data: Fields<T>,
    signal: AbortSignal | undefined,
    create: (sendCancel: () => void, onEnded: () => void) => StreamingCall<Final>,
  ): Promise<Final> {
    if (signal?.aborted) return Promise.reject(abortedError(request));
    const refused = this.unlessClosing();
    if (refused) return refused;
    const id = this.connection.newId();
    const call = create(
      () => {
        this.connection.call('cancel', { target: id }, 'ack').catch((error: unknown) => {
          this.onLog(`bridge: cancel of ${id} failed: ${(error as Error).message}`);
        });
      },
      () => this.activeCalls.delete(id),
    );
    this.activeCalls.add(id);
    this.connection.begin(id, request, data, call);
    return call.result;
  }

  /** Round trip of a ping, in milliseconds. */
  async ping(): Promise<number> {
    const sentAt = performance.now();
    await (this.unlessClosing() ?? this.connection.call('ping', {}, 'pong'));
    return performance.now() - sentAt;
  }

  /**
   * Stops the worker: cancels running requests, sends `shutdown`, waits for the exit, then SIGTERMs and
   * finally SIGKILLs the process group. Idempotent. For an attached worker it only disconnects.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const closed = new WorkerError('closed', 'the worker was closed');
    const workerProcess = this.workerProcess;
    if (!workerProcess) {
      this.connection.close(closed);
      this.resolveDetached({ code: null, signal: null });
      return;
    }
    if (!workerProcess.hasExited && !this.connection.failed) {
      // Cancel running requests so the worker is free to exit, and end their calls now with 'closed'.
      for (const id of this.activeCalls) {
        this.connection.call('cancel', { target: id }, 'ack').catch(() => undefined);
      }
      this.connection.abandonPending(closed);
      this.connection.call('shutdown', {}, 'bye').catch(() => undefined);
    }
    if (!(await settlesWithin(workerProcess.exited, SHUTDOWN_GRACE_MS))) {
      this.onLog(`bridge: worker ${workerProcess.pid} did not exit after shutdown; sending SIGTERM`);
      workerProcess.signal('SIGTERM');
      if (!(await settlesWithin(workerProcess.exited, TERM_GRACE_MS))) {
        this.onLog(`bridge: worker ${workerProcess.pid} ignored SIGTERM; sending SIGKILL`);
        workerProcess.signal('SIGKILL');
        await workerProcess.exited;
      }
    }
    this.connection.close(closed);
  }

  private unlessClosing(): Promise<never> | null {
    if (this.closing) return Promise.reject(new WorkerError('closed', 'the worker was closed'));
    return null;
  }

  private onProcessExit(exit: ExitInfo): void {
    if (this.closing) {
      this.connection.close(new WorkerError('closed', 'the worker was closed'));
      return;
    }
    const hint =
      exit.signal === 'SIGKILL'
        ? ' SIGKILL often comes from the out-of-memory killer: try a smaller max_batch or dtype fp16.'
        : '';
    this.connection.close(
      new WorkerError(
        'worker_exited',
        `The diffusion-lens worker (pid ${this.pid}) ${describeExit(exit)} unexpectedly.${hint}\n` +
          `Last stderr lines:\n${this.workerProcess?.stderrTail()}`,
      ),
    );
  }

  private onHung(silentMs: number, timeoutMs: number): void {
    const seconds = (ms: number): string => `${(ms / 1_000).toFixed(1)} s`;
    const tail = this.workerProcess ? `\nLast stderr lines:\n${this.workerProcess.stderrTail()}` : '';
    const error = new WorkerError(
      'worker_hung',
      `The diffusion-lens worker${this.pid ? ` (pid ${this.pid})` : ''} sent nothing for ${seconds(silentMs)} ` +
        `(heartbeat every ${this.info.heartbeat_s} s, limit ${seconds(timeoutMs)}); treating it as hung` +
        `${this.workerProcess ? ' and killing it' : ''}.${tail}`,
    );
    if (this.workerProcess) {
      this.connection.fail(error);
      this.workerProcess.signal('SIGKILL');
    } else {
      this.connection.close(error);
    }
  }
}

/** Attaches to an already-running worker; see LensWorker.connect. */
export function connectWorker(endpoint: string, opts: ConnectOptions = {}): Promise<LensWorker> {
  return LensWorker.connect(endpoint, opts);
}

/** How an attached worker's handshake fails besides a reply: refused, or no answer in time. */
interface RemoteHandshake {
  /** Rejects when the security handshake is refused. */
  refused: Promise<never>;
  /** The error for no answer in time. */
  noAnswer: () => WorkerError;
}

/** hello → ready, bounded by `timeoutMs` and by the process exiting (or, attached, by a refusal). */
async function handshake(
  connection: Connection,
  timeoutMs: number,
  announcedProtocol: number | null,
  workerProcess: WorkerProcess | null,
  remote?: RemoteHandshake,
): Promise<ReadyMessage> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          remote?.noAnswer() ??
            new WorkerError(
              'start_failed',
              `The diffusion-lens worker at ${connection.endpoint} did not answer hello within ` +
                `${Math.round(timeoutMs / 1_000)} s.${workerProcess ? `\nLast stderr lines:\n${workerProcess.stderrTail()}` : ''}`,
            ),
        ),
      timeoutMs,
    );
  });
  const exited = workerProcess?.exited.then((exit): never => {
    throw new WorkerError(
      'start_failed',
      `The diffusion-lens worker ${describeExit(exit)} during the handshake.\n` +
        `Last stderr lines:\n${workerProcess.stderrTail()}`,
    );
  });
  const hello = connection.call('hello', { protocol: PROTOCOL_VERSION, client: clientName() }, 'ready');
  try {
    const ready = await Promise.race([
      hello,
      timedOut,
      ...(exited ? [exited] : []),
      ...(remote ? [remote.refused] : []),
    ]).catch((error: unknown) => {
      if (error instanceof WorkerError && error.code === 'version_mismatch') {
        throw versionMismatch(announcedProtocol, `it refused our hello: ${error.message}`);
      }
      throw error;
    });
    if (ready.protocol !== PROTOCOL_VERSION) throw versionMismatch(ready.protocol, 'its ready reply says so');
    return ready;
  } finally {
    clearTimeout(timer);
    hello.catch(() => undefined);
    exited?.catch(() => undefined);
  }
}

/**
 * Whether something accepts connections on the unix socket `path`: false for a file left by a worker
 * that stopped (ZeroMQ would retry it quietly until the timeout).
 */
export function unixSocketAnswers(path: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = netConnect({ path });
    socket.once('connect', () => {
      socket.destroy();
      resolvePromise(true);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      socket.destroy();
      // Refused or gone: nobody listens. Anything else (no permission, ...): let ZeroMQ try and say.
      resolvePromise(error.code !== 'ECONNREFUSED' && error.code !== 'ENOENT');
    });
  });
}

/** No hello answered by an attached worker within `timeoutMs`. */
function noAnswer(
  endpoint: string,
  timeoutMs: number,
  withKeys: boolean,
  lastProblem: HandshakeProblem | null,
): WorkerError {
  const seen = lastProblem
    ? ` The secure handshake kept failing (${lastProblem.message})${withKeys ? ": a worker.key that is not the worker's does that" : ''}.`
    : '';
  const ours = withKeys
    ? ''
    : ' We connected without keys: give --keys DIR (or set DIFFUSION_LENS_KEYS) for a worker that has them.';
  return new WorkerError(
    'start_failed',
    `no answer from ${endpoint} within ${formatSeconds(timeoutMs)}: is a worker running there, and do the ` +
      `keys match? ${KEYS_HINT}${ours}${seen}`,
  );
}

/** The worker's end of the security handshake said no. */
function handshakeRefused(endpoint: string, problem: HandshakeProblem, withKeys: boolean): WorkerError {
  let why: string;
  if (problem.kind === 'auth') {
    why =
      `the worker at ${endpoint} refused our key (${problem.message}): do the keys match? ${KEYS_HINT} ` +
      "Copy this client's client.key into the worker's DIR/authorized/ (or make a pair for this client " +
      'with `diffusion-lens keys DIR --add-client NAME` where the keys were made).';
  } else if (withKeys) {
    why =
      `the worker at ${endpoint} uses no CURVE keys, but we connected with keys (${problem.message}): do the ` +
      'keys match? Connect without --keys to a worker started with --insecure (or an ipc socket), or ' +
      'restart the worker with --keys DIR.';
  } else {
    why =
      `the worker at ${endpoint} wants CURVE keys, and we connected without (${problem.message}): do the ` +
      `keys match? Give --keys DIR (or set DIFFUSION_LENS_KEYS): a folder with this client's ` +
      `client.key_secret and the worker's worker.key. ${KEYS_HINT}`;
  }
  return new WorkerError('start_failed', why);
}

function formatSeconds(ms: number): string {
  const seconds = ms / 1_000;
  return `${Number.isInteger(seconds) ? seconds : seconds.toFixed(1)} s`;
}

function versionMismatch(workerProtocol: number | null, detail: string): WorkerError {
  const theirs = workerProtocol === null ? 'a different protocol version' : `protocol ${workerProtocol}`;
  return new WorkerError(
    'version_mismatch',
    `The diffusion-lens worker speaks ${theirs}, but this diffusion-lens speaks protocol ${PROTOCOL_VERSION} ` +
      `(${detail}). Install matching versions: the worker in python/ comes with the npm package.`,
  );
}

function invalidRequest(type: string, issues: string): WorkerError {
  return new WorkerError('bad_request', `invalid ${type} request: ${issues}`);
}

function clientName(): string {
  return `${TOOL_NAME}/${TOOL_VERSION} node/${process.versions.node}`;
}

function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  return Promise.race([promise.then(() => true), timeout]).finally(() => clearTimeout(timer));
}
