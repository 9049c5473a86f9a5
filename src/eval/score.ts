// Scoring a run folder: every image of its manifest, each of its prompt's questions, answered by one
// automatic scorer in the worker (the bridge's `score` request), into RUN_DIR/scores.csv. Answers already
// there for the same scorer and model are kept and not asked again; the answers are saved every few seconds
// and when the scoring ends, however it ends, so a stopped or failed scoring resumes where it stopped.
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import {
  LensWorker,
  type ScoreItem,
  type ScoreQuestion,
  type ScorerKind,
  type ScorerSpec,
  WorkerError,
} from '../bridge/index.js';
import { looksLikePath } from '../config/model-path.js';
import { lockFolder } from '../experiment/lock.js';
import { MANIFEST_FILE, STATE_DIR } from '../experiment/store.js';
import { Aborted, untilAborted } from '../experiment/supervisor.js';
import { type ClipTexts, ClipTextsError, runClipTexts } from './clip-texts.js';
import { manifestQuestions, type Question } from './questions.js';
import { SCORES_FILE, type ScoreRow, ScoresFile, scoreId } from './scores.js';

/** The model each scorer uses unless told otherwise (hub ids: downloaded once, then cached). */
export const DEFAULT_SCORER_MODELS: Record<Exclude<ScorerKind, 'shapes'>, string> = {
  clip: 'openai/clip-vit-large-patch14',
  vqa: 'Salesforce/blip-vqa-base',
};

/** `scorer_model` of the shapes scorer's rows: it has no model, its rules are this module's. */
export const SHAPES_SCORER_MODEL = 'diffusion_lens.shapes.scorer';

/** Images per score request. */
export const DEFAULT_SCORE_BATCH = 16;

/** scores.csv is saved after a batch when this long has passed since it last was (and at the end). */
const SAVE_EVERY_MS = 5_000;

export interface ScoreOptions {
  scorer: ScorerKind;
  /** clip / vqa: a hub id or local folder (default DEFAULT_SCORER_MODELS); shapes: none. */
  model?: string;
  /** The model's hub revision (default: its main branch). */
  revision?: string;
  device?: ScorerSpec['device'];
  dtype?: ScorerSpec['dtype'];
  /** Images per request (default DEFAULT_SCORE_BATCH). */
  batch?: number;
  /** Ask again what scores.csv already answers for this scorer and model (default: only what is missing). */
  rescore?: boolean;
  /** The prompt-set index the run's prompt set is in (clip; default: the package's sets.yaml). */
  promptSets?: string;
  /** A running worker to use (not closed at the end); else one is started, and only if there is work. */
  worker?: LensWorker;
  python?: string;
  env?: NodeJS.ProcessEnv;
  onLog?: (line: string) => void;
  signal?: AbortSignal;
  onEvent?: (event: ScoreEvent) => void;
}

export type ScoreEvent =
  | {
      type: 'score-start';
      run_dir: string;
      scorer: ScorerKind;
      scorer_model: string;
      /** Images in the manifest. */
      images: number;
      /** Of which every question is answered in scores.csv already. */
      images_cached: number;
      /** Images to ask, and how many questions in all (shapes: its own, counted once answered). */
      images_to_score: number;
      questions_to_ask: number;
    }
  | { type: 'score-progress'; images_done: number; images_total: number }
  | {
      type: 'scorer-loaded';
      kind: ScorerKind;
      model: string | null;
      revision: string | null;
      version: string;
      device: string;
      dtype: string;
    }
  /** Images the scorer could not answer about (shapes: a prompt not of the shapes world), per reason. */
  | { type: 'score-skipped'; prompt: string; images: number; reason: string }
  | {
      type: 'score-done';
      file: string;
      images_scored: number;
      images_cached: number;
      images_skipped: number;
      rows_written: number;
      aborted: boolean;
    };

export interface ScoreResult {
  file: string;
  imagesScored: number;
  imagesCached: number;
  imagesSkipped: number;
  rowsWritten: number;
  aborted: boolean;
}

/** A run folder that cannot be scored (no manifest, a missing image, bad options). */
export class ScoreError extends Error {
  override readonly name = 'ScoreError';
}

const RunManifestSchema = z.object({
  prompt_set: z.object({ id: z.string() }).nullable().optional(),
  prompts: z.array(
    z.object({
      prompt: z.string(),
      columns: z.record(z.string(), z.string()).optional(),
      questions: z
        .array(z.object({ id: z.string().min(1), text: z.string(), expected: z.enum(['yes', 'no']) }))
        .optional(),
    }),
  ),
  images: z.array(
    z.object({
      prompt: z.string(),
      prompt_index: z.int().nonnegative().optional(),
      layer: z.int().nonnegative(),
      seed: z.int().nonnegative(),
      stage: z.literal([1, 2]),
      path: z.string().min(1),
      key: z.string().min(1),
    }),
  ),
});
type RunManifest = z.infer<typeof RunManifestSchema>;
type ManifestImage = RunManifest['images'][number];

async function readRunManifest(runDir: string): Promise<RunManifest> {
  const file = join(runDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ScoreError(`${runDir} has no ${MANIFEST_FILE}: not a run folder (lens and run write one)`);
    }
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ScoreError(`${file} is not JSON: ${(error as Error).message}`);
  }
  const parsed = RunManifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ScoreError(`${file}: ${issue?.path.join('.') || '(manifest)'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

/** The model the scorer runs, as scores.csv names it: a hub id, or a local folder made absolute. */
function scorerModel(options: ScoreOptions): { sent: string | null; recorded: string } {
  if (options.scorer === 'shapes') {
    if (options.model !== undefined) {
      throw new ScoreError('--model: the shapes scorer has no model (it reads the pixels); leave it out');
    }
    return { sent: null, recorded: SHAPES_SCORER_MODEL };
  }
  const model = options.model ?? DEFAULT_SCORER_MODELS[options.scorer];
  if (looksLikePath(model) || existsSync(model)) {
    const local = resolve(model);
    if (!existsSync(local)) throw new ScoreError(`--model: the folder ${local} does not exist`);
    return { sent: local, recorded: local };
  }
  return { sent: model, recorded: model };
}

/** One image to ask about, with the questions still to ask (shapes: none, it asks its own). */
interface Work {
  image: ManifestImage;
  prompt: string;
  questions: ScoreQuestion[];
}

function questionFor(question: Question, texts: ClipTexts | undefined): ScoreQuestion {
  return {
    id: question.id,
    text: question.text,
    right: texts?.right ?? null,
    contrast: texts?.contrast ?? [],
  };
}

/**
 * Scores the run in `runDir` with one scorer: reads its manifest, its images' bytes and each prompt's
 * questions, asks the worker what scores.csv does not answer yet, and merges the answers into it batch
 * by batch. Takes the folder's lock (no run or scoring may write to it meanwhile). Starts no worker when
 * nothing is missing.
 */
export async function scoreRun(runDir: string, options: ScoreOptions): Promise<ScoreResult> {
  const dir = resolve(runDir);
  const emit = options.onEvent ?? (() => {});
  const batch = options.batch ?? DEFAULT_SCORE_BATCH;
  if (!Number.isInteger(batch) || batch < 1)
    throw new ScoreError(`--batch: must be a positive integer (got ${batch})`);
  const { sent, recorded } = scorerModel(options);
  const manifest = await readRunManifest(dir);
  const questions = manifestQuestions(manifest);
  const clipTexts =
    options.scorer === 'clip' ? await runClipTexts(manifest, options.promptSets).catch(rethrowAs) : null;

  await mkdir(join(dir, STATE_DIR), { recursive: true });
  const lock = await lockFolder(dir);
  try {
    const scores = await ScoresFile.open(dir);
    const cached = new Set(
      options.rescore
        ? []
        : scores.rows
            .filter((row) => row.scorer === options.scorer && row.scorer_model === recorded)
            .map((row) => (options.scorer === 'shapes' ? row.key : scoreId(row))),
    );
    const work: Work[] = [];
    for (const image of manifest.images) {
      const index = image.prompt_index ?? manifest.prompts.findIndex((p) => p.prompt === image.prompt);
      if (options.scorer === 'shapes') {
        if (!cached.has(image.key)) work.push({ image, prompt: image.prompt, questions: [] });
        continue;
      }
      const ask = (questions[index] ?? [])
        .filter(
          (q) =>
            !cached.has(
              scoreId({ key: image.key, question: q.id, scorer: options.scorer, scorer_model: recorded }),
            ),
        )
        .map((q) => questionFor(q, clipTexts?.[index]?.get(q.id)));
      if (ask.length > 0) work.push({ image, prompt: image.prompt, questions: ask });
    }
    const missing = work.filter((w) => !existsSync(imageFile(dir, w.image)));
    if (missing.length > 0) {
      const listed = missing.slice(0, 3).map((w) => w.image.path);
      throw new ScoreError(
        `${missing.length} image${missing.length === 1 ? '' : 's'} of ${join(dir, MANIFEST_FILE)} ` +
          `${missing.length === 1 ? 'is' : 'are'} missing (${listed.join(', ')}${missing.length > 3 ? ', ...' : ''}): ` +
          'rerun the run to make them again',
      );
    }
    emit({
      type: 'score-start',
      run_dir: dir,
      scorer: options.scorer,
      scorer_model: recorded,
      images: manifest.images.length,
      images_cached: manifest.images.length - work.length,
      images_to_score: work.length,
      questions_to_ask: work.reduce((sum, w) => sum + w.questions.length, 0),
    });
    const outcome =
      work.length === 0
        ? { scored: 0, skipped: 0, rows: 0, aborted: false }
        : await ask(dir, scores, work, sent, recorded, options, emit);
    const result: ScoreResult = {
      file: join(dir, SCORES_FILE),
      imagesScored: outcome.scored,
      imagesCached: manifest.images.length - work.length,
      imagesSkipped: outcome.skipped,
      rowsWritten: outcome.rows,
      aborted: outcome.aborted,
    };
    emit({
      type: 'score-done',
      file: result.file,
      images_scored: result.imagesScored,
      images_cached: result.imagesCached,
      images_skipped: result.imagesSkipped,
      rows_written: result.rowsWritten,
      aborted: result.aborted,
    });
    return result;
  } finally {
    await lock.release();
  }
}

function rethrowAs(error: unknown): never {
  if (error instanceof ClipTextsError) throw new ScoreError(error.message);
  throw error;
}

/** An image's file, refusing a manifest path that leads out of the run folder. */
function imageFile(dir: string, image: ManifestImage): string {
  const file = resolve(dir, image.path);
  const inside = relative(dir, file);
  if (inside.startsWith('..') || isAbsolute(inside)) {
    throw new ScoreError(`manifest image path ${JSON.stringify(image.path)} leads out of the run folder`);
  }
  return file;
}

/** Asks the worker about `work`, batch by batch, adding each batch's rows to `scores` and saving it every
 *  few seconds, and at the end whatever happened. */
async function ask(
  dir: string,
  scores: ScoresFile,
  work: Work[],
  model: string | null,
  recorded: string,
  options: ScoreOptions,
  emit: (event: ScoreEvent) => void,
): Promise<{ scored: number; skipped: number; rows: number; aborted: boolean }> {
  const { signal } = options;
  const spec: ScorerSpec = {
    kind: options.scorer,
    model,
    revision: options.revision ?? null,
    device: options.device ?? 'auto',
    dtype: options.dtype ?? 'auto',
  };
  const starting = options.worker
    ? null
    : LensWorker.start({ python: options.python, env: options.env, onLog: options.onLog });
  let worker = options.worker;
  const tally = { scored: 0, skipped: 0, rows: 0, aborted: false };
  const skipped = new Map<string, { prompt: string; images: number; reason: string }>();
  let savedAt = performance.now();
  try {
    worker ??= await untilAborted(starting as Promise<LensWorker>, signal);
    const batchSize = options.batch ?? DEFAULT_SCORE_BATCH;
    for (let start = 0; start < work.length; start += batchSize) {
      const chunk = work.slice(start, start + batchSize);
      const items: ScoreItem[] = await Promise.all(
        chunk.map(async (w) => ({
          png: await readFile(imageFile(dir, w.image)),
          prompt: w.prompt,
          questions: w.questions,
        })),
      );
      const answered: {
        image: ManifestImage;
        answers: { question: string; answer: 0 | 1; score: number; note: string | null }[];
      }[] = [];
      const done = await worker.score(
        { scorer: spec, items },
        {
          onScored: (scored) => {
            const w = chunk[scored.item];
            if (!w)
              throw new WorkerError(
                'bad_message',
                `the worker scored item ${scored.item} of ${chunk.length}`,
              );
            if (scored.skipped !== null) {
              const entry = skipped.get(w.prompt) ?? { prompt: w.prompt, images: 0, reason: scored.skipped };
              entry.images++;
              skipped.set(w.prompt, entry);
              tally.skipped++;
              return;
            }
            answered.push({ image: w.image, answers: scored.answers });
          },
        },
        signal,
      );
      if (start === 0) emit({ type: 'scorer-loaded', ...done.scorer });
      const version = done.scorer.revision
        ? `${done.scorer.version}; revision ${done.scorer.revision}`
        : done.scorer.version;
      const rows: ScoreRow[] = answered.flatMap(({ image, answers }) =>
        answers.map((answer) => ({
          key: image.key,
          prompt: image.prompt,
          layer: image.layer,
          seed: image.seed,
          stage: image.stage,
          question: answer.question,
          score: answer.score,
          answer: answer.answer,
          scorer: options.scorer,
          scorer_model: recorded,
          scorer_version: version,
          ...(answer.note ? { note: answer.note } : {}),
        })),
      );
      scores.add(rows);
      if (scores.dirty && performance.now() - savedAt >= SAVE_EVERY_MS) {
        await scores.save();
        savedAt = performance.now();
      }
      tally.rows += rows.length;
      tally.scored += answered.length;
      emit({ type: 'score-progress', images_done: start + chunk.length, images_total: work.length });
    }
  } catch (error) {
    const stopped = error instanceof Aborted || (error instanceof WorkerError && error.code === 'cancelled');
    if (!(stopped && signal?.aborted)) throw error;
    tally.aborted = true;
  } finally {
    if (scores.dirty) await scores.save(); // what was answered is kept, however the scoring ended
    for (const entry of skipped.values()) emit({ type: 'score-skipped', ...entry });
    // A worker still starting when the scoring was stopped is closed once it is up.
    if (starting) await starting.then((w) => w.close()).catch(() => undefined);
  }
  return tally;
}
