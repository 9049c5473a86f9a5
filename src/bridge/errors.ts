import { PROTOCOL_ERROR_CODES } from './protocol.js';

/** Codes raised by the bridge itself, on top of the worker's protocol error codes. */
export const BRIDGE_ERROR_CODES = ['worker_exited', 'worker_hung', 'start_failed', 'closed'] as const;

export const WORKER_ERROR_CODES = [...PROTOCOL_ERROR_CODES, ...BRIDGE_ERROR_CODES] as const;
export type WorkerErrorCode = (typeof WORKER_ERROR_CODES)[number];

/**
 * Any failure talking to the worker. `code` is one of WORKER_ERROR_CODES (an error reply with a code
 * the protocol does not list is an invalid message: `bad_message`). `traceback` is the Python traceback
 * when the worker sent one.
 */
export class WorkerError extends Error {
  override readonly name = 'WorkerError';
  readonly code: string;
  readonly traceback: string | null;

  constructor(code: string, message: string, options: { traceback?: string | null; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.traceback = options.traceback ?? null;
  }
}
