// One streaming request in flight (generate, score): routes its streamed messages to the caller's
// handlers, in order, and settles only once the worker has ended the request (its final reply or an
// error) and every handler call has settled. A handler that throws cancels the request and the call
// rejects with what it threw; an aborted call always rejects, even if the request finished first.
import { type Exchange, errorFromMessage, unexpectedReply } from './connection.js';
import { WorkerError } from './errors.js';
import type { IncomingMessage } from './protocol.js';

export type StreamingRequest = 'generate' | 'score';

export function abortedError(request: StreamingRequest): WorkerError {
  return new WorkerError('cancelled', `the ${request} request was aborted`);
}

export abstract class StreamingCall<Final extends IncomingMessage> implements Exchange {
  readonly result: Promise<Final>;
  private resolve: (final: Final) => void = () => {};
  private reject: (error: unknown) => void = () => {};
  private handlerFailure: { error: unknown } | null = null;
  private handlersSettled: Promise<void> = Promise.resolve();
  private cancelRequested = false;
  private readonly onAbort = (): void => this.cancel();

  /**
   * `finalType` is the reply that ends the request; `sendCancel` asks the worker to cancel it; `onEnded`
   * runs once the worker has ended it (or the connection failed).
   */
  constructor(
    private readonly request: StreamingRequest,
    private readonly finalType: Final['type'],
    private readonly sendCancel: () => void,
    private readonly onEnded: () => void,
    private readonly signal?: AbortSignal,
  ) {
    this.result = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Hands a streamed message of the request to its handler; false when it is not one of its kinds. */
  protected abstract stream(message: IncomingMessage): boolean;

  deliver(message: IncomingMessage): boolean {
    if (message.type === this.finalType) {
      this.end(message as Final);
      return true;
    }
    if (message.type === 'error') {
      this.end(errorFromMessage(message));
      return true;
    }
    if (this.stream(message)) return false;
    // The request may still be running on the worker; stop it before reporting the bad reply.
    this.cancel();
    this.end(unexpectedReply(message.type, this.request));
    return true;
  }

  fail(error: WorkerError): void {
    this.end(error);
  }

  /** Calls a synchronous handler now, unless one has failed. */
  protected callNow(call: () => void): void {
    if (this.handlerFailure) return;
    try {
      call();
    } catch (error) {
      this.handlerFailed(error);
    }
  }

  /** Chains a (possibly async) handler call after the previous ones; none runs after one has failed. */
  protected runInOrder(call: () => void | Promise<void>): void {
    this.handlersSettled = this.handlersSettled
      .then(async () => {
        if (!this.handlerFailure) await call();
      })
      .catch((error: unknown) => this.handlerFailed(error));
  }

  private cancel(): void {
    if (this.cancelRequested) return;
    this.cancelRequested = true;
    this.sendCancel();
  }

  private handlerFailed(error: unknown): void {
    if (this.handlerFailure) return;
    this.handlerFailure = { error };
    this.cancel();
  }

  private end(outcome: Final | WorkerError): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.onEnded();
    void this.handlersSettled.then(() => {
      if (this.handlerFailure) this.reject(this.handlerFailure.error);
      else if (outcome instanceof WorkerError) this.reject(outcome);
      else if (this.signal?.aborted) this.reject(abortedError(this.request));
      else this.resolve(outcome);
    });
  }
}
