// One generate request in flight: routes its streamed messages to the caller's handlers, in order,
// and settles only once the worker has ended the request and every handler call has settled.
import { type Exchange, errorFromMessage, unexpectedReply } from './connection.js';
import { WorkerError } from './errors.js';
import type { DoneMessage, ImageMessage, IncomingMessage, ProgressMessage } from './protocol.js';

export interface GenerateHandlers {
  onProgress?(progress: ProgressMessage): void;
  /** May be async: calls happen strictly in order, and generate() settles only after the last. */
  onImage?(image: ImageMessage): void | Promise<void>;
}

export function abortedError(): WorkerError {
  return new WorkerError('cancelled', 'the generate request was aborted');
}

export class GenerateCall implements Exchange {
  readonly result: Promise<DoneMessage>;
  private resolve: (done: DoneMessage) => void = () => {};
  private reject: (error: unknown) => void = () => {};
  private handlerFailure: { error: unknown } | null = null;
  private handlersSettled: Promise<void> = Promise.resolve();
  private cancelRequested = false;
  private readonly onAbort = (): void => this.cancel();

  /**
   * `sendCancel` asks the worker to cancel the request; `onEnded` runs once the worker has ended it (or
   * the connection failed).
   */
  constructor(
    private readonly handlers: GenerateHandlers,
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

  deliver(message: IncomingMessage): boolean {
    switch (message.type) {
      case 'progress':
        if (!this.handlerFailure && this.handlers.onProgress) {
          try {
            this.handlers.onProgress(message);
          } catch (error) {
            this.handlerFailed(error);
          }
        }
        return false;
      case 'image':
        this.runInOrder(() => this.handlers.onImage?.(message));
        return false;
      case 'done':
        this.end(message);
        return true;
      case 'error':
        this.end(errorFromMessage(message));
        return true;
      default:
        // The request may still be running on the worker; stop it before reporting the bad reply.
        this.cancel();
        this.end(unexpectedReply(message.type, 'generate'));
        return true;
    }
  }

  fail(error: WorkerError): void {
    this.end(error);
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

  /** Chains a handler call after the previous ones; none runs after one has failed. */
  private runInOrder(call: () => void | Promise<void>): void {
    this.handlersSettled = this.handlersSettled
      .then(async () => {
        if (!this.handlerFailure) await call();
      })
      .catch((error: unknown) => this.handlerFailed(error));
  }

  private end(outcome: DoneMessage | WorkerError): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.onEnded();
    void this.handlersSettled.then(() => {
      if (this.handlerFailure) this.reject(this.handlerFailure.error);
      else if (outcome instanceof WorkerError) this.reject(outcome);
      // An aborted call always rejects, even if the request finished before the cancel landed.
      else if (this.signal?.aborted) this.reject(abortedError());
      else this.resolve(outcome);
    });
  }
}
