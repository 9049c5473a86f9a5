// What to ask the worker for, as pure functions of the plan and what is done (testable without Python):
// one generate request for every (prompt, layer, seed) with an image missing (or those of a batch), and
// the job each image the worker sends belongs to.
import type { GenerateRequest, ImageMessage, ProgressMessage, Stage2Generate } from '../bridge/index.js';
import { WorkerError } from '../bridge/index.js';
import type { ExperimentConfig, Stage } from '../config/index.js';
import { ablationRequest } from './ablation.js';
import type { Job, Plan } from './plan.js';
import { readoutRequest } from './readout.js';

/** One (prompt, layer, seed) of a generate request, with its planned job per stage. */
export interface RequestItem {
  promptIndex: number;
  layer: number;
  seed: number;
  jobs: Partial<Record<Stage, Job>>;
}

/** A generate request and what it stands for. */
export interface Work {
  request: GenerateRequest;
  items: RequestItem[];
  /** The images the request is for (an item's stage I image may be on disk already). */
  missing: Job[];
  /** Denoising steps of one item in either stage, times the items: the request's units. */
  units: number;
}

/** Whether every image of the item (each stage's) is made. */
export function itemDone(item: RequestItem, isDone: (job: Job) => boolean): boolean {
  return Object.values(item.jobs).every(isDone);
}

/** The distinct (prompt, layer, seed) of the jobs, in plan order, for those with any job not done. */
export function requestItems(jobs: readonly Job[], isDone: (job: Job) => boolean): RequestItem[] {
  const items = new Map<string, RequestItem>();
  for (const job of jobs) {
    const id = `${job.promptIndex}/${job.layer}/${job.seed}`;
    let item = items.get(id);
    if (!item) {
      item = { promptIndex: job.promptIndex, layer: job.layer, seed: job.seed, jobs: {} };
      items.set(id, item);
    }
    item.jobs[job.stage] = job;
  }
  return [...items.values()].filter((item) => !itemDone(item, isDone));
}

/** Stage II of a generate request, from the plan's settings; scheduler null = the checkpoint's own. */
export function stage2Request(config: ExperimentConfig, plan: Plan): Stage2Generate | null {
  const stage2 = plan.settings.stage2;
  if (!stage2) return null;
  return {
    steps: stage2.steps,
    guidance: stage2.guidance,
    height: stage2.height,
    width: stage2.width,
    scheduler: config.stage2.scheduler === 'default' ? null : config.stage2.scheduler,
    seed: stage2.seed === 'same' ? null : stage2.seed,
    family_options: plan.familyOptions.stage2,
  };
}

/**
 * The request for every image of the plan not done yet (or of `among` those items: a batch of a pool's);
 * null when there is none.
 */
export function buildWork(
  config: ExperimentConfig,
  plan: Plan,
  isDone: (job: Job) => boolean,
  among?: readonly RequestItem[],
): Work | null {
  const items = among ? among.filter((item) => !itemDone(item, isDone)) : requestItems(plan.jobs, isDone);
  if (items.length === 0) return null;
  const { settings } = plan;
  const missing = items.flatMap((item) => Object.values(item.jobs).filter((job) => !isDone(job)));
  // Stage II only when an image of it is missing (stage I alone is cheaper).
  const stage2 = missing.some((job) => job.stage === 2) ? stage2Request(config, plan) : null;
  const request: GenerateRequest = {
    prompts: plan.prompts,
    items: items.map((item) => ({ prompt: item.promptIndex, layer: item.layer, seed: item.seed })),
    negative: settings.sampler.negative,
    steps: settings.sampler.steps,
    guidance: settings.sampler.guidance,
    height: settings.sampler.height,
    width: settings.sampler.width,
    scheduler: config.sampler.scheduler === 'default' ? null : config.sampler.scheduler,
    uncond: settings.lens.uncond,
    noise: settings.lens.noise,
    ...readoutRequest(settings.lens),
    ...ablationRequest(settings.lens, plan.embeds),
    max_batch: config.runtime.max_batch,
    stage2,
    family_options: plan.familyOptions.sample,
  };
  return { request, items, missing, units: items.length * (settings.sampler.steps + (stage2?.steps ?? 0)) };
}

/** The job an image of the worker's belongs to; a WorkerError when it matches nothing that was asked. */
export function jobOfImage(work: Work, image: ImageMessage): Job {
  const item = work.items[image.item];
  const job = item?.jobs[image.stage];
  if (
    !item ||
    !job ||
    (image.stage === 2 && work.request.stage2 === null) ||
    item.layer !== image.layer ||
    item.seed !== image.seed ||
    item.promptIndex !== image.prompt
  ) {
    throw new WorkerError(
      'internal',
      `the worker sent a stage ${image.stage} image for item ${image.item} (prompt ${image.prompt}, ` +
        `layer ${image.layer}, seed ${image.seed}) that does not match the request`,
    );
  }
  return job;
}

/** The layers of the batch a progress message is about. */
export function layersInFlight(work: Work, progress: Pick<ProgressMessage, 'images_done' | 'batch_items'>) {
  const batch = work.items.slice(
    progress.images_done,
    progress.images_done + Math.max(1, progress.batch_items),
  );
  return [...new Set(batch.map((item) => item.layer))];
}
