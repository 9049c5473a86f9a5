// One score request in flight: hands each `scored` message to the caller, in order, and settles with the
// request's `score_done` (or its error). A handler that throws cancels the request and rejects with it.
import { type Exchange, errorFromMessage, unexpectedReply } from './connection.js';
import { WorkerError } from './errors.js';
import type { IncomingMessage, ScoreDoneMessage, ScoredMessage } from './protocol.js';

export interface ScoreHandlers {
  onScored?(scored: ScoredMessage): void;
}

export class ScoreCall implements Exchange {
  readonly result: Promise<ScoreDoneMessage>;
  private resolve: (done: ScoreDoneMessage) => void = () => {};
  private reject: (error: unknown) => void = () => {};
  private handlerFailure: { error: unknown } | null = null;
  private cancelRequested = false;
  private readonly onAbort = (): void => this.cancel();

  /** `sendCancel` asks the worker to cancel the request; `onEnded` runs once it has ended. */
  constructor(
    private readonly handlers: ScoreHandlers,
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
      case 'scored':
        if (!this.handlerFailure) {
          try {
            this.handlers.onScored?.(message);
          } catch (error) {
            this.handlerFailure = { error };
            this.cancel();
          }
        }
        return false;
      case 'score_done':
        this.end(message);
        return true;
      case 'error':
        this.end(errorFromMessage(message));
        return true;
      default:
        this.cancel();
        this.end(unexpectedReply(message.type, 'score'));
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

  private end(outcome: ScoreDoneMessage | WorkerError): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.onEnded();
    if (this.handlerFailure) this.reject(this.handlerFailure.error);
    else if (outcome instanceof WorkerError) this.reject(outcome);
    else if (this.signal?.aborted) this.reject(new WorkerError('cancelled', 'the score request was aborted'));
    else this.resolve(outcome);
  }
}
