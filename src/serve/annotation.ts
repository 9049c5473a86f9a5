// The annotation service behind `serve`'s API: which image an annotator gets next, their progress, and
// their answers and takings-back, appended to the run folder's annotations/<annotator>.jsonl (synced
// before the reply). Appends to one annotator's file are queued, so answers sent quickly never
// interleave and land in the order given.
//
// The annotation order: the images of the run's last stage (IF: the stage II upscales), prompt by prompt
// as the manifest lists them, and within a prompt its layers and seeds shuffled (by a hash of each image's
// key, the same for everyone), so that the layer is not given away by the order.
import {
  type Annotation,
  AnnotatorNameError,
  annotationFile,
  appendAnnotation,
  readAnnotations,
} from '../eval/index.js';
import type {
  AnswerRequest,
  NextImage,
  Progress,
  ReportImage,
  ReportRun,
  UndoRequest,
  UndoResponse,
} from '../render/report/model.js';
import { HttpError } from './errors.js';

/** FNV-1a of a string: a stable shuffle key. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** A run's images in annotation order, with where each is. */
export interface AnnotationOrder {
  images: ReportImage[];
  position: Map<string, number>;
}

export function annotationOrder(run: ReportRun): AnnotationOrder {
  const last = Math.max(...run.stages, 1);
  const stage = run.images.some((image) => image.st === last) ? last : 1;
  const images = run.images
    .filter((image) => image.st === stage)
    .map((image) => ({ image, hash: fnv1a(image.k) }))
    .sort((a, b) => a.image.p - b.image.p || a.hash - b.hash || (a.image.k < b.image.k ? -1 : 1))
    .map(({ image }) => image);
  return { images, position: new Map(images.map((image, i) => [image.k, i])) };
}

/** What the service needs of a run: its folder and its page data. */
export interface AnnotatedRun {
  dir: string;
  run: ReportRun;
}

type Answers = Map<string, Map<string, 0 | 1>>;

export class AnnotationService {
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly orders = new WeakMap<ReportRun, AnnotationOrder>();

  /** `runs()` gives the runs as they are now (the server re-reads them when the page is loaded). */
  constructor(private readonly runs: () => readonly AnnotatedRun[]) {}

  private target(
    runIndex: number,
    annotator: string,
  ): { dir: string; run: ReportRun; order: AnnotationOrder } {
    const entry = this.runs()[runIndex];
    if (!entry) throw new HttpError(400, `run ${runIndex} is not in this report`);
    try {
      annotationFile(entry.dir, annotator);
    } catch (error) {
      if (error instanceof AnnotatorNameError) throw new HttpError(400, error.message);
      throw error;
    }
    let order = this.orders.get(entry.run);
    if (!order) {
      order = annotationOrder(entry.run);
      this.orders.set(entry.run, order);
    }
    return { ...entry, order };
  }

  /** Runs `work` after every earlier queued action on the same annotator's file. */
  private queued<T>(dir: string, annotator: string, work: () => Promise<T>): Promise<T> {
    const id = `${dir}\u0000${annotator}`;
    const result = (this.queues.get(id) ?? Promise.resolve()).then(work, work);
    const tail = result.catch(() => undefined);
    this.queues.set(id, tail);
    void tail.then(() => {
      if (this.queues.get(id) === tail) this.queues.delete(id);
    });
    return result;
  }

  private async answers(dir: string, annotator: string): Promise<{ byKey: Answers; current: Annotation[] }> {
    const { answers } = await readAnnotations(dir, annotator);
    const byKey: Answers = new Map();
    for (const answer of answers) {
      if (answer.answer === null) continue;
      const map = byKey.get(answer.key) ?? new Map<string, 0 | 1>();
      byKey.set(answer.key, map);
      map.set(answer.question, answer.answer);
    }
    return { byKey, current: answers };
  }

  private static progressOf(
    annotator: string,
    run: ReportRun,
    order: AnnotationOrder,
    byKey: Answers,
  ): Progress {
    let questions = 0;
    let answered = 0;
    let done = 0;
    for (const image of order.images) {
      const asked = run.prompts[image.p]?.questions ?? [];
      const given = byKey.get(image.k);
      const n = asked.filter((q) => given?.has(q.id)).length;
      questions += asked.length;
      answered += n;
      if (n === asked.length) done++;
    }
    return { annotator, images: order.images.length, images_done: done, questions, answered };
  }

  private static answersOf(byKey: Answers, key: string | null): Record<string, 0 | 1> {
    return Object.fromEntries(key === null ? [] : (byKey.get(key) ?? []));
  }

  async progress(runIndex: number, annotator: string): Promise<Progress> {
    const { dir, run, order } = this.target(runIndex, annotator);
    const { byKey } = await this.answers(dir, annotator);
    return AnnotationService.progressOf(annotator, run, order, byKey);
  }

  /** The first image at or after `from` (going round) with a question the annotator has not answered. */
  async next(runIndex: number, annotator: string, from: number): Promise<NextImage> {
    const { dir, run, order } = this.target(runIndex, annotator);
    const { byKey } = await this.answers(dir, annotator);
    const n = order.images.length;
    const start = Number.isInteger(from) && n > 0 ? ((from % n) + n) % n : 0;
    let position: number | null = null;
    for (let step = 0; step < n; step++) {
      const i = (start + step) % n;
      const image = order.images[i] as ReportImage;
      const given = byKey.get(image.k);
      if ((run.prompts[image.p]?.questions ?? []).some((q) => !given?.has(q.id))) {
        position = i;
        break;
      }
    }
    const key = position === null ? null : (order.images[position]?.k ?? null);
    return {
      position,
      key,
      answers: AnnotationService.answersOf(byKey, key),
      progress: AnnotationService.progressOf(annotator, run, order, byKey),
    };
  }

  /** One image (by key) with the annotator's answers to it. */
  async image(runIndex: number, annotator: string, key: string): Promise<NextImage> {
    const { dir, run, order } = this.target(runIndex, annotator);
    const position = order.position.get(key);
    if (position === undefined) throw new HttpError(404, 'no such image to annotate in this run');
    const { byKey } = await this.answers(dir, annotator);
    return {
      position,
      key,
      answers: AnnotationService.answersOf(byKey, key),
      progress: AnnotationService.progressOf(annotator, run, order, byKey),
    };
  }

  /** Appends (and syncs) one answer. */
  async answer(request: AnswerRequest): Promise<{ progress: Progress }> {
    const { dir, run, order } = this.target(request.run, request.annotator);
    const position = order.position.get(request.key);
    const image = position === undefined ? undefined : order.images[position];
    if (!image) throw new HttpError(400, 'no such image to annotate in this run');
    const prompt = run.prompts[image.p];
    if (!prompt?.questions.some((q) => q.id === request.question)) {
      throw new HttpError(400, `the prompt of this image does not ask ${JSON.stringify(request.question)}`);
    }
    return this.queued(dir, request.annotator, async () => {
      await appendAnnotation(dir, request.annotator, {
        key: image.k,
        prompt: prompt.prompt,
        layer: image.l,
        seed: image.s,
        stage: image.st,
        question: request.question,
        answer: request.answer,
      });
      const { byKey } = await this.answers(dir, request.annotator);
      return { progress: AnnotationService.progressOf(request.annotator, run, order, byKey) };
    });
  }

  /** Takes back the annotator's last answer still standing (appends `answer: null` for it). */
  async undo(request: UndoRequest): Promise<UndoResponse> {
    const { dir, run, order } = this.target(request.run, request.annotator);
    return this.queued(dir, request.annotator, async () => {
      const { current } = await this.answers(dir, request.annotator);
      const last = current.at(-1);
      if (last) {
        await appendAnnotation(dir, request.annotator, {
          key: last.key,
          prompt: last.prompt,
          layer: last.layer,
          seed: last.seed,
          stage: last.stage,
          question: last.question,
          answer: null,
        });
      }
      const { byKey } = await this.answers(dir, request.annotator);
      const position = last ? order.position.get(last.key) : undefined;
      return {
        undone: last && position !== undefined ? { key: last.key, question: last.question, position } : null,
        progress: AnnotationService.progressOf(request.annotator, run, order, byKey),
      };
    });
  }
}
