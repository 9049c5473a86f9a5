// Making what the plan is missing, on every worker of the pool, until nothing is missing. A lone worker
// gets one generate request for everything; a pool's workers take the plan's batches (batches.ts) as
// they free up. A worker that dies or hangs is replaced and its unfinished images go back in the queue;
// when the queue is empty, an idle worker also takes a copy of a batch that runs much longer than
// batches usually take (a slow worker), and whichever copy finishes first cancels the other. The sink
// writes each image once. Prompts the encoder cut are reported once each.
import { performance } from 'node:perf_hooks';
import { type LensWorker, WorkerError } from '../bridge/index.js';
import type { ExperimentConfig } from '../config/index.js';
import { planBatches, planBatchSize } from './batches.js';
import type { RunEvent } from './events.js';
import { plural } from './folder.js';
import type { LensedTokens, Truncation } from './manifest.js';
import type { Job, Plan } from './plan.js';
import type { WorkerPool } from './pool.js';
import { buildWork, itemDone, jobOfImage, layersInFlight, type RequestItem, type Work } from './request.js';
import type { ImageSink } from './sink.js';
import { Aborted, isLostWorker, type WorkerSupervisor } from './supervisor.js';
import { addTimings, type RunTimings } from './timings.js';

export interface GenerationInput {
  config: ExperimentConfig;
  plan: Plan;
  sink: ImageSink;
  pool: WorkerPool;
  /** The prompts the encoder cut, by prompt index; filled in as the worker reports them. */
  truncated: Map<number, Truncation>;
  /** With lens.tokens other than all: the positions that followed the layer, by prompt index; filled in
   *  as the worker reports them. */
  lensedTokens: Map<number, LensedTokens>;
  emit: (event: RunEvent) => void;
  notice: (message: string) => void;
  signal?: AbortSignal;
  /** The workers' timings of the requests that finished, summed as they come. */
  timings: RunTimings;
}

/** A batch whose request runs this many times longer than the median batch is given to an idle worker too. */
const SLOW_FACTOR = 3;
/**
 * ... but never before it has run this long: twice the heartbeat limit (5 s), so a worker gone silent is
 * caught by the heartbeat, reported and replaced, and a copy is made only of a batch still being worked on.
 */
const MIN_SLOW_MS = 10_000;
/** How often an idle worker looks for a slow batch. */
const IDLE_CHECK_MS = 500;

/** Work handed to one worker: a batch of the plan (a pool), or null for everything missing (a lone worker). */
interface Unit {
  items: RequestItem[] | null;
  /** An idle worker has taken a copy of it. */
  copied: boolean;
}

interface Running {
  unit: Unit;
  slot: WorkerSupervisor;
  work: Work;
  startedAt: number;
  unitsDone: number;
  layers: number[];
  /** Cancels the request when another copy of the unit has made its images. */
  superseded: AbortController;
}

/** Generates every image of the plan not done yet; rejects with Aborted when the signal aborts. */
export async function generateMissing(input: GenerationInput): Promise<void> {
  await new Dispatch(input).run();
}

class Dispatch {
  private readonly queue: Unit[];
  private readonly running = new Set<Running>();
  private readonly durations: number[] = [];
  private readonly live: Set<WorkerSupervisor>;
  private readonly totalUnits: number;
  private finishedUnits = 0;
  private fatal: { error: unknown } | null = null;
  private readonly waiting = new Set<() => void>();

  constructor(private readonly input: GenerationInput) {
    const { config, plan, sink, pool } = input;
    this.live = new Set(pool.slots.filter((slot) => !pool.failed.has(slot)));
    this.queue =
      pool.size === 1
        ? [{ items: null, copied: false }]
        : planBatches(plan, planBatchSize(config)).map((batch) => ({ items: batch.items, copied: false }));
    this.totalUnits = buildWork(config, plan, sink.isDone)?.units ?? 0;
  }

  async run(): Promise<void> {
    const { signal } = this.input;
    const loops = [...this.live].map((slot) =>
      this.serve(slot).catch((error: unknown) => {
        this.fatal ??= { error };
        for (const running of this.running) running.superseded.abort();
        this.notify();
      }),
    );
    await Promise.all(loops);
    if (signal?.aborted) throw new Aborted('aborted');
    if (this.fatal) throw this.fatal.error;
    const left = buildWork(this.input.config, this.input.plan, this.input.sink.isDone);
    if (left) {
      throw new WorkerError(
        'internal',
        `the workers finished without making ${plural(left.missing.length, 'image')}`,
      );
    }
  }

  /** One worker's loop: take work, make it, until there is none or the worker is gone for good. */
  private async serve(slot: WorkerSupervisor): Promise<void> {
    const { config, plan, sink, pool, signal } = this.input;
    for (;;) {
      if (signal?.aborted) throw new Aborted('aborted');
      if (this.fatal) return;
      const unit = this.take(slot);
      if (!unit) {
        if (this.running.size === 0 && this.queue.length === 0) return;
        await this.changeOrTimeout(IDLE_CHECK_MS);
        continue;
      }
      const work = buildWork(config, plan, sink.isDone, unit.items ?? undefined);
      if (!work) continue;
      let worker: LensWorker;
      try {
        ({ worker } = await pool.ready(slot));
      } catch (error) {
        this.putBack(unit);
        if (error instanceof Aborted || signal?.aborted) throw new Aborted('aborted');
        // Died while loading: replaced like a worker lost mid-request. Cannot start or load: the others
        // go on without it.
        if (isLostWorker(error) && (await this.replaced(slot, error, []))) continue;
        return this.leave(slot, error);
      }
      const running: Running = {
        unit,
        slot,
        work,
        startedAt: performance.now(),
        unitsDone: 0,
        layers: [],
        superseded: new AbortController(),
      };
      this.running.add(running);
      try {
        await this.request(worker, running);
        this.durations.push(performance.now() - running.startedAt);
        this.finishedUnits += work.units;
        this.cancelSuperseded();
      } catch (error) {
        if (signal?.aborted) throw new Aborted('aborted');
        if (running.superseded.signal.aborted) continue; // another copy made its images (or the run failed)
        this.finishedUnits += this.receivedUnits(work);
        if (!isLostWorker(error)) throw error;
        this.putBack(unit);
        if (
          !(await this.replaced(
            slot,
            error,
            work.missing.filter((job) => !sink.isDone(job)),
          ))
        )
          return;
      } finally {
        this.running.delete(running);
        this.notify();
      }
    }
  }

  /** Sends one request and streams its images into the sink. */
  private async request(worker: LensWorker, running: Running) {
    const { plan, sink, truncated, lensedTokens, emit, notice, signal } = this.input;
    const { work } = running;
    const stop = signal ? AbortSignal.any([signal, running.superseded.signal]) : running.superseded.signal;
    const reply = await worker.generate(
      work.request,
      {
        onProgress: (p) => {
          running.unitsDone = p.done_units;
          running.layers = layersInFlight(work, p);
          emit({
            type: 'progress',
            images_done: sink.generated,
            images_total: sink.todo,
            ...this.units(),
            layers: [...new Set([...this.running].flatMap((r) => r.layers))].sort((a, b) => a - b),
          });
        },
        onImage: (image) => sink.write(jobOfImage(work, image), image.png, image.elapsed_ms),
      },
      stop,
    );
    addTimings(this.input.timings, reply.timings);
    for (const cut of reply.truncated) {
      if (truncated.has(cut.prompt)) continue;
      truncated.set(cut.prompt, { tokens: cut.tokens, max_tokens: cut.max_tokens });
      notice(
        `prompt ${cut.prompt + 1} has ${cut.tokens} tokens; the text encoder reads ${cut.max_tokens}, ` +
          `so the rest is cut: "${plan.prompts[cut.prompt]}"`,
      );
    }
    for (const { prompt, positions, tokens } of reply.lensed_tokens) {
      lensedTokens.set(prompt, { positions, tokens });
    }
    const notSent = work.missing.filter((job) => !sink.isDone(job)).length;
    if (notSent > 0) {
      throw new WorkerError('internal', `the worker finished without sending ${plural(notSent, 'image')}`);
    }
  }

  /** Replaces a lost worker; false when it cannot be (the slot has left the run). */
  private async replaced(slot: WorkerSupervisor, error: WorkerError, lost: Job[]): Promise<boolean> {
    try {
      await slot.replace(error, lost);
      return true;
    } catch (failure) {
      if (failure instanceof Aborted || this.input.signal?.aborted) throw new Aborted('aborted');
      this.leave(slot, failure);
      return false;
    }
  }

  /** The next unit from the queue, or a copy of a slow one running elsewhere when the queue is empty. */
  private take(slot: WorkerSupervisor): Unit | null {
    const next = this.queue.shift();
    if (next) return next;
    if (this.durations.length === 0) return null;
    const sorted = [...this.durations].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)] as number;
    const slowAfter = Math.max(MIN_SLOW_MS, SLOW_FACTOR * median);
    const now = performance.now();
    for (const running of this.running) {
      if (running.slot === slot || running.unit.copied || running.unit.items === null) continue;
      if (now - running.startedAt < slowAfter) continue;
      running.unit.copied = true;
      this.input.notice(
        `a batch on the ${running.slot.describe()} has run ${((now - running.startedAt) / 1000).toFixed(0)} s ` +
          `(batches take ${(median / 1000).toFixed(1)} s); the ${slot.describe()} makes it too`,
      );
      return { items: running.unit.items, copied: true };
    }
    return null;
  }

  /** Cancels requests whose images have all been made by another copy. */
  private cancelSuperseded(): void {
    const { isDone } = this.input.sink;
    for (const running of this.running) {
      if (running.unit.items?.every((item) => itemDone(item, isDone))) running.superseded.abort();
    }
  }

  private putBack(unit: Unit): void {
    this.queue.unshift({ items: unit.items, copied: false });
  }

  /** A worker gone for good: the run goes on with the others, or fails with `error` if it was the last. */
  private leave(slot: WorkerSupervisor, error: unknown): void {
    this.live.delete(slot);
    if (this.live.size === 0) throw error;
    if (!this.input.pool.failed.has(slot)) {
      this.input.notice(
        `the ${slot.describe()} is gone (${(error as Error).message.split('\n')[0]}); the other workers go on`,
      );
    }
  }

  /** Units (denoising steps of one item) of the run done and to do, fixed by the first count. */
  private units(): { units_done: number; units_total: number } {
    const inFlight = [...this.running].reduce((sum, running) => sum + running.unitsDone, 0);
    return {
      units_done: Math.min(this.totalUnits, this.finishedUnits + inFlight),
      units_total: this.totalUnits,
    };
  }

  /** Units of a failed request's items whose images all arrived. */
  private receivedUnits(work: Work): number {
    const complete = work.items.filter((item) => itemDone(item, this.input.sink.isDone));
    return work.items.length === 0 ? 0 : Math.round((work.units * complete.length) / work.items.length);
  }

  /** Wakes the idle workers: work came back, or a request ended. */
  private notify(): void {
    for (const wake of [...this.waiting]) wake();
  }

  private changeOrTimeout(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.waiting.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.waiting.add(wake);
    });
  }
}
