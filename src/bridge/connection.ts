// The DEALER side of the protocol: sends requests, matches every incoming message to its request by
// `id`, validates what arrives, and watches the worker's heartbeat.
import { performance } from 'node:perf_hooks';
import { Dealer, Observer } from 'zeromq';
import { decodeFrame, encodeMessage } from './codec.js';
import { WorkerError } from './errors.js';
import type { CurveKeys } from './keys.js';
import {
  describeIssues,
  type IncomingMessage,
  type IncomingType,
  incomingMessageSchema,
  type OutgoingMessage,
  PROTOCOL_VERSION,
  type RequestType,
} from './protocol.js';

/** What a request does with the messages that carry its id. */
export interface Exchange {
  /** Handles one message; returns true when it was the request's last one. */
  deliver(message: IncomingMessage): boolean;
  /** Ends the request with an error (bad reply, dead worker, closed connection). */
  fail(error: WorkerError): void;
}

export type Fields<T extends RequestType> = Omit<Extract<OutgoingMessage, { type: T }>, 'v' | 'id' | 'type'>;
export type Reply<T extends IncomingType> = Extract<IncomingMessage, { type: T }>;

export interface ConnectionOptions {
  onLog: (line: string) => void;
  /** CURVE keys, for a worker started with `--keys` (see keys.ts); without them, no security. */
  keys?: CurveKeys;
  /**
   * Called for each failed security handshake, until stopWatchingHandshake(): a worker that refuses our
   * key (or wants one) otherwise looks like silence.
   */
  onHandshakeProblem?: (problem: HandshakeProblem) => void;
}

/**
 * A failed ZMTP security handshake: `auth` when the worker refused our key (its ZAP handler said no),
 * `mechanism` when one side uses CURVE and the other does not, `other` for the rest (a worker that cannot
 * read our hello, e.g. because we hold the wrong worker.key, drops the connection).
 */
export interface HandshakeProblem {
  kind: 'auth' | 'mechanism' | 'other';
  message: string;
}

/** Maps a worker `error` message to a WorkerError. */
export function errorFromMessage(message: Reply<'error'>): WorkerError {
  return new WorkerError(message.code, message.message, { traceback: message.traceback });
}

export class Connection {
  private readonly socket: Dealer;
  private readonly pending = new Map<string, Exchange>();
  private readonly abandoned = new Set<string>();
  private sendQueue: Promise<void> = Promise.resolve();
  private nextId = 1;
  private failure: WorkerError | null = null;
  private receiving = false;
  private lastHeardAt = performance.now();
  private watchdog: NodeJS.Timeout | null = null;
  private observer: Observer | null = null;

  constructor(
    readonly endpoint: string,
    private readonly opts: ConnectionOptions,
  ) {
    const { keys } = opts;
    try {
      this.socket = new Dealer({
        linger: 0,
        ...(keys
          ? {
              curveServerKey: keys.serverPublicKey,
              curvePublicKey: keys.publicKey,
              curveSecretKey: keys.secretKey,
            }
          : {}),
      });
    } catch (error) {
      throw new WorkerError(
        'start_failed',
        `cannot set up the ZeroMQ socket for ${endpoint}${keys ? ' with these CURVE keys' : ''}: ` +
          `${(error as Error).message}`,
        { cause: error },
      );
    }
    if (opts.onHandshakeProblem) this.watchHandshake(opts.onHandshakeProblem);
    try {
      this.socket.connect(endpoint);
    } catch (error) {
      this.stopWatchingHandshake();
      this.socket.close();
      throw new WorkerError(
        'start_failed',
        `cannot connect to the worker at ${endpoint}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  /** Whether the connection uses CURVE keys. */
  get secure(): boolean {
    return this.opts.keys !== undefined;
  }

  /** Stops reporting handshake problems (see ConnectionOptions.onHandshakeProblem). Idempotent. */
  stopWatchingHandshake(): void {
    if (this.observer && !this.observer.closed) this.observer.close();
    this.observer = null;
  }

  /**
   * Reports each failed security handshake to `onProblem` until stopWatchingHandshake(). Started before
   * the socket connects, so that the first attempt's failure is not missed.
   */
  private watchHandshake(onProblem: (problem: HandshakeProblem) => void): void {
    let observer: Observer;
    try {
      observer = new Observer(this.socket);
    } catch (error) {
      this.opts.onLog(`bridge: cannot watch the ZeroMQ handshake: ${(error as Error).message}`);
      return;
    }
    this.observer = observer;
    const read = async (): Promise<void> => {
      while (!observer.closed) {
        const event = await observer.receive();
        switch (event.type) {
          case 'handshake:error:auth':
            onProblem({ kind: 'auth', message: event.error.message });
            break;
          case 'handshake:error:protocol':
            onProblem({
              kind: event.error.code === 'ERR_ZMTP_MECHANISM_MISMATCH' ? 'mechanism' : 'other',
              message: `${event.error.message}${event.error.code ? ` (${event.error.code})` : ''}`,
            });
            break;
          case 'handshake:error:other':
            onProblem({ kind: 'other', message: event.error.message });
            break;
        }
      }
    };
    // The read ends with an error once the observer or the socket is closed.
    read().catch(() => undefined);
  }

  /** Why the connection is unusable, or null while it works. */
  get failed(): WorkerError | null {
    return this.failure;
  }

  newId(): string {
    return `r${this.nextId++}`;
  }

  /** Registers `exchange` under `id` and sends the request; a failed send fails the exchange. */
  begin<T extends RequestType>(id: string, type: T, fields: Fields<T>, exchange: Exchange): void {
    if (this.failure) {
      exchange.fail(this.failure);
      return;
    }
    this.pending.set(id, exchange);
    this.receive();
    this.send({ v: PROTOCOL_VERSION, id, type, ...fields } as OutgoingMessage).catch((error: unknown) => {
      if (this.pending.delete(id)) exchange.fail(this.sendError(error));
    });
  }

  /** Sends a request and resolves with its one reply of type `replyType`. */
  call<T extends RequestType, R extends IncomingType>(
    type: T,
    fields: Fields<T>,
    replyType: R,
  ): Promise<Reply<R>> {
    return new Promise((resolve, reject) => {
      this.begin(this.newId(), type, fields, {
        deliver: (message) => {
          if (message.type === replyType) resolve(message as Reply<R>);
          else if (message.type === 'error') reject(errorFromMessage(message));
          else reject(unexpectedReply(message.type, type));
          return true;
        },
        fail: reject,
      });
    });
  }

  /**
   * Declares the worker hung after `timeoutMs` without any message while a request is outstanding.
   * Heartbeats keep a healthy worker's silence short even during long requests.
   */
  watchHeartbeat(timeoutMs: number, onSilence: (silentMs: number) => void): void {
    const tickMs = Math.max(50, Math.min(1000, timeoutMs / 4));
    let lastTickAt = performance.now();
    this.watchdog = setInterval(() => {
      const now = performance.now();
      // A late tick means our own event loop was blocked: frames may be waiting unread, so restart
      // the silence clock rather than blame the worker.
      if (now - lastTickAt > 2 * tickMs + 1000) this.lastHeardAt = now;
      lastTickAt = now;
      const silentMs = now - this.lastHeardAt;
      if (this.receiving && silentMs > timeoutMs) {
        this.stopWatchdog();
        onSilence(silentMs);
      }
    }, tickMs);
    // The watchdog alone must not keep a script alive.
    this.watchdog.unref();
  }

  /** Fails every outstanding request with `error`, and every later one too. Idempotent. */
  fail(error: WorkerError): void {
    this.failure ??= error;
    this.stopWatchdog();
    const exchanges = [...this.pending.values()];
    this.pending.clear();
    for (const exchange of exchanges) exchange.fail(error);
  }

  /**
   * Fails what is outstanding with `error` but keeps the connection usable; late replies to those
   * requests are dropped quietly.
   */
  abandonPending(error: WorkerError): void {
    const exchanges = [...this.pending];
    this.pending.clear();
    for (const [id, exchange] of exchanges) {
      this.abandoned.add(id);
      exchange.fail(error);
    }
  }

  /** Fails what is outstanding with `error` and closes the socket. */
  close(error: WorkerError): void {
    this.fail(error);
    this.stopWatchingHandshake();
    if (!this.socket.closed) this.socket.close();
  }

  // zeromq.js allows one send in flight per socket, so sends go through one queue.
  private send(message: OutgoingMessage): Promise<void> {
    const frame = encodeMessage(message);
    const sent = this.sendQueue.then(() => this.socket.send(frame));
    this.sendQueue = sent.catch(() => undefined);
    return sent;
  }

  private sendError(error: unknown): WorkerError {
    if (this.failure) return this.failure;
    return new WorkerError('closed', `could not send to the worker: ${(error as Error).message}`, {
      cause: error,
    });
  }

  /**
   * Reads frames while any request is outstanding, and only then: a pending zeromq receive keeps the
   * event loop alive, so an idle worker must not hold it (heartbeats queue up meanwhile; the first
   * one after the last request lets the loop stop).
   */
  private receive(): void {
    if (this.receiving || this.failure) return;
    this.receiving = true;
    this.lastHeardAt = performance.now();
    void this.receiveWhilePending();
  }

  private async receiveWhilePending(): Promise<void> {
    try {
      while (this.pending.size > 0 && !this.socket.closed) {
        const frames = await this.socket.receive();
        this.lastHeardAt = performance.now();
        this.handleFrames(frames);
      }
    } catch (error) {
      if (!this.socket.closed && !this.failure) {
        this.fail(
          new WorkerError('closed', `the ZeroMQ socket failed: ${(error as Error).message}`, {
            cause: error,
          }),
        );
      }
    } finally {
      this.receiving = false;
    }
    // A request may have arrived between the last receive and the loop's end.
    if (this.pending.size > 0) this.receive();
  }

  private handleFrames(frames: Buffer[]): void {
    const frame = frames[frames.length - 1];
    if (frames.length !== 1 || frame === undefined) {
      this.invalid(frame && tryDecode(frame), `expected one frame per message, got ${frames.length}`);
      return;
    }
    let raw: unknown;
    try {
      raw = decodeFrame(frame);
    } catch (error) {
      this.invalid(undefined, `not msgpack (${(error as Error).message})`);
      return;
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      this.invalid(undefined, `not a msgpack map (got ${Array.isArray(raw) ? 'an array' : typeof raw})`);
      return;
    }
    const parsed = incomingMessageSchema.safeParse(raw);
    if (!parsed.success) {
      this.invalid(raw, describeIssues(parsed.error));
      return;
    }
    this.dispatch(parsed.data);
  }

  private dispatch(message: IncomingMessage): void {
    if (message.type === 'heartbeat') return;
    const exchange = this.pending.get(message.id);
    if (!exchange && this.abandoned.has(message.id)) return;
    if (!exchange) {
      const detail = message.type === 'error' ? `: ${message.code}: ${message.message}` : '';
      this.opts.onLog(
        `bridge: ignored a ${message.type} message for no pending request (id ${JSON.stringify(message.id)})${detail}`,
      );
      return;
    }
    let finished: boolean;
    try {
      finished = exchange.deliver(message);
    } catch (error) {
      // A throwing handler must not take the receive loop down with it.
      this.opts.onLog(`bridge: handler for request ${message.id} threw: ${(error as Error).message}`);
      finished = true;
      exchange.fail(new WorkerError('internal', (error as Error).message, { cause: error }));
    }
    if (finished) this.pending.delete(message.id);
  }

  /** Logs an invalid frame; fails its request (bad_message) when it names a pending one. */
  private invalid(raw: unknown, reason: string): void {
    const id = idOf(raw);
    this.opts.onLog(
      `bridge: invalid message from the worker${id ? ` (id ${JSON.stringify(id)})` : ''}: ${reason}`,
    );
    const exchange = id === undefined ? undefined : this.pending.get(id);
    if (id === undefined || !exchange) return;
    this.pending.delete(id);
    exchange.fail(new WorkerError('bad_message', `invalid message from the worker: ${reason}`));
  }

  private stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }
}

export function unexpectedReply(got: string, request: string): WorkerError {
  return new WorkerError(
    'bad_message',
    `the worker answered a ${request} request with an unexpected ${got} message`,
  );
}

function tryDecode(frame: Buffer): unknown {
  try {
    return decodeFrame(frame);
  } catch {
    return undefined;
  }
}

function idOf(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const id = (raw as { id?: unknown }).id;
  return typeof id === 'string' && id !== '' ? id : undefined;
}
