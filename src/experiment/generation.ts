// Making what the plan is missing: one generate request for every image not done yet, streamed into the
// sink, again after a lost worker is replaced, until nothing is missing. Prompts the encoder cut are
// reported once each.
import { WorkerError } from '../bridge/index.js';
import type { ExperimentConfig } from '../config/index.js';
import type { RunEvent } from './events.js';
import { plural } from './folder.js';
import type { LensedTokens, Truncation } from './manifest.js';
import type { Plan } from './plan.js';
import { buildWork, jobOfImage, layersInFlight, RunProgress } from './request.js';
import type { ImageSink } from './sink.js';
import { Aborted, isLostWorker, type WorkerSupervisor } from './supervisor.js';

export interface GenerationInput {
  config: ExperimentConfig;
  plan: Plan;
  sink: ImageSink;
  supervisor: WorkerSupervisor;
  /** The prompts the encoder cut, by prompt index; filled in as the worker reports them. */
  truncated: Map<number, Truncation>;
  /** With lens.tokens other than all: the positions that followed the layer, by prompt index; filled in
   *  as the worker reports them. */
  lensedTokens: Map<number, LensedTokens>;
  emit: (event: RunEvent) => void;
  notice: (message: string) => void;
  signal?: AbortSignal;
}

/** Generates every image of the plan not done yet; rejects with Aborted when the signal aborts. */
export async function generateMissing(input: GenerationInput): Promise<void> {
  const { config, plan, sink, supervisor, truncated, lensedTokens, emit, notice, signal } = input;
  const progress = new RunProgress();
  for (let work = buildWork(config, plan, sink.isDone); work; work = buildWork(config, plan, sink.isDone)) {
    if (signal?.aborted) throw new Aborted('aborted');
    const current = work;
    const { worker } = await supervisor.ready();
    try {
      const reply = await worker.generate(
        current.request,
        {
          onProgress: (p) => {
            const units = progress.of(current, p.done_units);
            emit({
              type: 'progress',
              images_done: sink.generated,
              images_total: sink.todo,
              units_done: units.done,
              units_total: units.total,
              layers: layersInFlight(current, p),
            });
          },
          onImage: (image) => sink.write(jobOfImage(current, image), image.png, image.elapsed_ms),
        },
        signal,
      );
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
      const notSent = current.missing.filter((job) => !sink.isDone(job)).length;
      if (notSent > 0) {
        throw new WorkerError('internal', `the worker finished without sending ${plural(notSent, 'image')}`);
      }
    } catch (error) {
      if (signal?.aborted) throw new Aborted('aborted');
      if (!isLostWorker(error)) throw error;
      await supervisor.replace(
        error,
        current.missing.filter((job) => !sink.isDone(job)),
      );
    }
  }
}
