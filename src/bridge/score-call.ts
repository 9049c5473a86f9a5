// One score request in flight: hands each `scored` message to `onScored`, in order, and settles with the
// request's `score_done` (or its error).
import type { IncomingMessage, ScoreDoneMessage, ScoredMessage } from './protocol.js';
import { StreamingCall } from './streaming-call.js';

export interface ScoreHandlers {
  onScored?(scored: ScoredMessage): void;
}

export class ScoreCall extends StreamingCall<ScoreDoneMessage> {
  constructor(
    private readonly handlers: ScoreHandlers,
    sendCancel: () => void,
    onEnded: () => void,
    signal?: AbortSignal,
  ) {
    super('score', 'score_done', sendCancel, onEnded, signal);
  }

  protected stream(message: IncomingMessage): boolean {
    if (message.type !== 'scored') return false;
    this.callNow(() => this.handlers.onScored?.(message));
    return true;
  }
}
