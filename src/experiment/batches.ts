// The plan's items cut into the batches the worker would sample: a request's items are sampled
// `max_batch` at a time, in request order, so a request made of whole batches of the plan samples exactly
// the batches one request for the whole plan would. Pools hand out these batches and shards split them,
// and both make the same bytes as a single worker. With `max_batch: auto` the worker sizes its batches
// itself: the plan's batches are then AUTO_PLAN_BATCH items, which a CPU worker cuts into powers of two
// up to 16 (python/diffusion_lens/batching.py), so exactly as one request for the whole plan; a GPU
// worker cuts them by its free memory (images are then a single worker's within float rounding: an image
// does not depend on its batch-mates beyond that).
import type { ExperimentConfig } from '../config/index.js';
import type { Job, Plan } from './plan.js';
import { type RequestItem, requestItems } from './request.js';

/** Items in a plan batch (a pool's unit of work, a shard's share) under `runtime.max_batch: auto`: a
 *  multiple of every batch size a CPU worker's auto chooses (powers of two up to 16). */
export const AUTO_PLAN_BATCH = 16;

/** The size of the plan's batches: `runtime.max_batch`, or AUTO_PLAN_BATCH for `auto`. */
export function planBatchSize(config: Pick<ExperimentConfig, 'runtime'>): number {
  const { max_batch } = config.runtime;
  return max_batch === 'auto' ? AUTO_PLAN_BATCH : max_batch;
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
