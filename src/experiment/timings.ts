// Where a run's time went: the workers' own timings of their generate requests (each `done` reply's
// `timings`), summed, with the orchestrator's writing of the images. `npm run bench` splits a run's wall
// time with them (docs/benchmarks.md).
import type { Timings } from '../bridge/index.js';

export type RunTimings = Timings & {
  /** Writing the PNGs atomically and journaling them (the sink). */
  write_ms: number;
};

export function noTimings(): RunTimings {
  return { encode_ms: 0, denoise_ms: 0, decode_ms: 0, png_ms: 0, compile_ms: 0, write_ms: 0 };
}

/** Adds a request's timings into the run's `total`. */
export function addTimings(total: RunTimings, request: Timings): void {
  for (const name of Object.keys(request) as (keyof Timings)[]) total[name] += request[name];
}
