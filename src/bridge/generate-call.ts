// One generate request in flight: progress to `onProgress` as it comes, images to `onImage` strictly in
// order (it may be async); settles with `done` once the last image handler has settled.
import type { DoneMessage, ImageMessage, IncomingMessage, ProgressMessage } from './protocol.js';
import { StreamingCall } from './streaming-call.js';

export interface GenerateHandlers {
  onProgress?(progress: ProgressMessage): void;
  /** May be async: calls happen strictly in order, and generate() settles only after the last. */
  onImage?(image: ImageMessage): void | Promise<void>;
}

export class GenerateCall extends StreamingCall<DoneMessage> {
  constructor(
    private readonly handlers: GenerateHandlers,
    sendCancel: () => void,
    onEnded: () => void,
    signal?: AbortSignal,
  ) {
    super('generate', 'done', sendCancel, onEnded, signal);
  }

  protected stream(message: IncomingMessage): boolean {
    if (message.type === 'progress') this.callNow(() => this.handlers.onProgress?.(message));
    else if (message.type === 'image') this.runInOrder(() => this.handlers.onImage?.(message));
    else return false;
    return true;
  }
}
