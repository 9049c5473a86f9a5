// RUN_DIR/scores.csv: the automatic scorers' answers, one row per image, question and scorer (with the
// model and version that answered). Written only by replacing the whole file atomically; a row is the
// cached answer of (image key, question, scorer, scorer model), so a rerun scores only what is missing.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CsvError } from 'csv-parse';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import { z } from 'zod';
import { writeFileAtomic } from '../experiment/store.js';

export const SCORES_FILE = 'scores.csv';

export const ScoreRowSchema = z.strictObject({
  /** The image's content key (manifest `images[].key`). */
  key: z.string().min(1),
  prompt: z.string(),
  layer: z.int().nonnegative(),
  seed: z.int().nonnegative(),
  stage: z.literal([1, 2]),
  /** A question id: the prompt's (manifest `prompts[].questions[].id`), or the shapes scorer's own. */
  question: z.string().min(1),
  /** How sure the scorer is of yes, 0..1 (clip: the right text's softmax probability; vqa: P(yes) /
   *  (P(yes) + P(no)); shapes: the answer). */
  score: z.number().min(0).max(1),
  /** 1 = yes, 0 = no (compare with the question's `expected` for correctness). */
  answer: z.literal([0, 1]),
  /** The scorer kind: clip, vqa, shapes. */
  scorer: z.string().min(1),
  /** The model that answered: a hub id or an absolute folder; for shapes, SHAPES_SCORER_MODEL. */
  scorer_model: z.string().min(1),
  /** The scorer's rule version, the libraries' versions and the model's hub commit. */
  scorer_version: z.string(),
  /** What to know about the answer (vqa: an answer that was neither yes nor no); absent when nothing. */
  note: z.string().min(1).optional(),
});

export type ScoreRow = z.infer<typeof ScoreRowSchema>;

/** The file's columns, in order. */
export const SCORE_COLUMNS = Object.keys(ScoreRowSchema.shape) as (keyof ScoreRow)[];

/** A scores.csv that cannot be read: edited by hand into something else. */
export class ScoresFileError extends Error {
  override readonly name = 'ScoresFileError';
}

/** What a row caches: the answer of one scorer model to one question about one image. */
export function scoreId(row: Pick<ScoreRow, 'key' | 'question' | 'scorer' | 'scorer_model'>): string {
  return [row.key, row.question, row.scorer, row.scorer_model].join('\u0000');
}

const NUMBERS = ['layer', 'seed', 'stage', 'score', 'answer'] as const;

/** The rows of RUN_DIR/scores.csv, in file order; [] when there is none. Throws ScoresFileError naming the
 *  line and field of a row that is not a ScoreRow. */
export async function readScores(runDir: string): Promise<ScoreRow[]> {
  const file = join(runDir, SCORES_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  let records: Record<string, string>[];
  try {
    records = parse(text, { columns: true, skip_empty_lines: true });
  } catch (error) {
    if (error instanceof CsvError) throw new ScoresFileError(`${file}: ${error.message}`);
    throw error;
  }
  return records.map((record, index) => {
    const fields: Record<string, unknown> = { ...record };
    for (const name of NUMBERS) {
      const value = record[name];
      fields[name] = value === undefined || value.trim() === '' ? value : Number(value);
    }
    if (record.note === '') delete fields.note;
    const parsed = ScoreRowSchema.safeParse(fields);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue?.path.join('.') || '(row)';
      throw new ScoresFileError(`${file}:${index + 2}: ${field}: ${issue?.message ?? 'invalid'}`);
    }
    return parsed.data;
  });
}

/** The file's text for `rows`: a header, then one line per row (an absent note is an empty cell). */
export function scoresCsv(rows: readonly ScoreRow[]): string {
  return stringify(
    rows.map((row) => SCORE_COLUMNS.map((column) => row[column] ?? '')),
    { header: true, columns: SCORE_COLUMNS },
  );
}

/**
 * A run's scores.csv held in memory: read once, added to, saved (atomically, the whole file) when told.
 * A row added replaces the one it caches the same answer as (scoreId), in place; the others are appended.
 */
export class ScoresFile {
  private readonly byId: Map<string, ScoreRow>;
  private changed = false;

  private constructor(
    readonly runDir: string,
    rows: readonly ScoreRow[],
  ) {
    this.byId = new Map(rows.map((row) => [scoreId(row), row]));
  }

  /** Reads RUN_DIR/scores.csv (none yet: empty); see readScores for its errors. */
  static async open(runDir: string): Promise<ScoresFile> {
    return new ScoresFile(runDir, await readScores(runDir));
  }

  get rows(): ScoreRow[] {
    return [...this.byId.values()];
  }

  /** Whether rows were added since the last save. */
  get dirty(): boolean {
    return this.changed;
  }

  add(rows: readonly ScoreRow[]): { added: number; replaced: number } {
    let replaced = 0;
    for (const row of rows) {
      const id = scoreId(row);
      if (this.byId.has(id)) replaced++;
      this.byId.set(id, ScoreRowSchema.parse(row));
      this.changed = true;
    }
    return { added: rows.length - replaced, replaced };
  }

  async save(): Promise<void> {
    await writeFileAtomic(join(this.runDir, SCORES_FILE), scoresCsv(this.rows));
    this.changed = false;
  }
}

/** Merges `rows` into RUN_DIR/scores.csv at once (ScoresFile: open, add, save). */
export async function mergeScores(
  runDir: string,
  rows: readonly ScoreRow[],
): Promise<{ added: number; replaced: number }> {
  const file = await ScoresFile.open(runDir);
  const counts = file.add(rows);
  await file.save();
  return counts;
}
