// The plan's items cut into the batches the worker would sample: a request's items are sampled
// `max_batch` at a time, in request order, so a request made of whole batches of the plan samples exactly
// the batches one request for the whole plan would. Pools hand out these batches and shards split them,
// and both make the same bytes as a single worker.
import type { Job, Plan } from './plan.js';
import { type RequestItem, requestItems } from './request.js';

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
