// The plan's items cut into the batches the worker would sample: a request's items are sampled
// `max_batch` at a time, in request order, so a request made of whole batches of the plan samples exactly
// the batches one request for the whole plan would. Pools hand out these batches and shards split them,
// and both make the same bytes as a single worker. With `max_batch: auto` the worker sizes its batches
// itself: the plan's batches are then at least AUTO_PLAN_BATCH items, a whole number of the batches a
// CPU worker's auto samples (a (prompt, layer)'s seeds, at most 8), so that on the CPU they too are cut
// as one request for the whole plan would be. A GPU worker cuts them by its free memory (images are then
// a single worker's within float rounding: an image does not depend on its batch-mates beyond that).
import type { ExperimentConfig } from '../config/index.js';
import type { Job, Plan } from './plan.js';
import { type RequestItem, requestItems } from './request.js';

/** The fewest items in a plan batch (a pool's unit of work, a shard's share) under `runtime.max_batch: auto`. */
export const AUTO_PLAN_BATCH = 16;
/** The most items `auto` samples at once on a CPU worker (python/diffusion_lens/batching.py CPU_AUTO_MAX). */
const CPU_AUTO_MAX = 8;

/** The size of the plan's batches: `runtime.max_batch`, or for `auto` the smallest multiple of a CPU
 *  worker's auto batch (the seeds of a (prompt, layer), at most 8) that is at least AUTO_PLAN_BATCH. */
export function planBatchSize(config: Pick<ExperimentConfig, 'runtime' | 'seeds'>): number {
  const { max_batch } = config.runtime;
  if (max_batch !== 'auto') return max_batch;
  const cpuBatch = Math.min(config.seeds.length, CPU_AUTO_MAX);
  return cpuBatch * Math.ceil(AUTO_PLAN_BATCH / cpuBatch);
}

/** One batch of the plan: its index among the plan's batches and its items (every job, done or not). */
export interface PlanBatch {
  index: number;
  items: RequestItem[];
}

/** The plan's (prompt, layer, seed) items, in plan order, in batches of `maxBatch`. */
export function planBatches(plan: Pick<Plan, 'jobs'>, maxBatch: number): PlanBatch[] {
  const items = requestItems(plan.jobs, () => false);
  const batches: PlanBatch[] = [];
  for (let start = 0; start < items.length; start += maxBatch) {
    batches.push({ index: batches.length, items: items.slice(start, start + maxBatch) });
  }
  return batches;
}

/** The jobs of the batches (flattened, in plan order). */
export function jobsOf(batches: readonly PlanBatch[]): Job[] {
  return batches.flatMap((batch) => batch.items.flatMap((item) => Object.values(item.jobs)));
}
