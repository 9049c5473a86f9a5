// Where the worker's images go: each written atomically at its job's path, then recorded in the journal
// with the hash of its bytes and its settings id, then reported. The set of done keys is the run's
// record of what the folder holds for its plan.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { RunEvent } from './events.js';
import { manifestImage } from './manifest.js';
import type { Job, Plan } from './plan.js';
import { settingsId } from './settings.js';
import { type Journal, sha256Hex, writeFileAtomic } from './store.js';

export class ImageSink {
  /** Images written by this run. */
  generated = 0;
  /** Milliseconds spent writing and journaling them. */
  writeMs = 0;
  private readonly settingsIds: Record<1 | 2, string>;
  private readonly writing = new Map<string, Promise<void>>();

  constructor(
    private readonly outDir: string,
    private readonly journal: Journal,
    private readonly plan: Plan,
    /** Keys on disk with their recorded bytes: those found at the start, then each one written. */
    readonly done: Set<string>,
    private readonly emit: (event: RunEvent) => void,
  ) {
    this.settingsIds = { 1: settingsId(plan.settings, 1), 2: settingsId(plan.settings, 2) };
    this.todo = plan.jobs.length - done.size;
  }

  /** How many images the run has to make. */
  readonly todo: number;

  isDone = (job: Job): boolean => this.done.has(job.key);

  /**
   * Writes a job's image, unless it is on disk already (e.g. the stage I image of a missing stage II one)
   * or being written (two workers made it: a pool copies a slow batch): each image once.
   */
  write(job: Job, png: Buffer, elapsedMs: number): Promise<void> {
    if (this.done.has(job.key)) return Promise.resolve();
    const pending = this.writing.get(job.key);
    if (pending) return pending;
    const writing = this.store(job, png, elapsedMs).finally(() => this.writing.delete(job.key));
    this.writing.set(job.key, writing);
    return writing;
  }

  private async store(job: Job, png: Buffer, elapsedMs: number): Promise<void> {
    const started = performance.now();
    await writeFileAtomic(join(this.outDir, job.path), png);
    await this.journal.append({
      key: job.key,
      path: job.path,
      sha256: sha256Hex(png),
      bytes: png.length,
      settings: this.settingsIds[job.stage],
    });
    this.writeMs += performance.now() - started;
    this.done.add(job.key);
    this.generated++;
    this.emit({
      type: 'image',
      ...manifestImage(job, this.plan),
      elapsed_ms: elapsedMs,
      images_done: this.generated,
      images_total: this.todo,
    });
  }
}
