// Human annotations of a run folder: one append-only file per annotator,
// RUN_DIR/annotations/<annotator>.jsonl, one line per answer, written (and synced) the moment it is given
// so that closing the tab or killing the server loses nothing. A later line for the same image and
// question replaces an earlier one; `answer: null` takes an answer back (undo). A torn last line (a crash
// mid-append) is ignored and cut off before the next append; unreadable lines are skipped and counted.
import { mkdir, open, readdir, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { readJsonLines } from '../experiment/store.js';

export const ANNOTATIONS_DIR = 'annotations';

/** An annotator's name: it names their file, so letters, digits, `.`, `_` and `-`, at most 64. */
export const ANNOTATOR_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const AnnotationSchema = z.strictObject({
  v: z.literal(1),
  /** When the answer was given (ISO 8601). */
  at: z.string(),
  /** The image's content key (manifest `images[].key`). */
  key: z.string().min(1),
  prompt: z.string(),
  layer: z.int().nonnegative(),
  seed: z.int().nonnegative(),
  stage: z.literal([1, 2]),
  /** A question id of the prompt (manifest `prompts[].questions[].id`). */
  question: z.string().min(1),
  /** 1 = yes, 0 = no, null = the earlier answer taken back. */
  answer: z.literal([0, 1]).nullable(),
});

export type Annotation = z.infer<typeof AnnotationSchema>;

export class AnnotatorNameError extends Error {}

/** The annotator's file, after checking the name. */
export function annotationFile(runDir: string, annotator: string): string {
  if (!ANNOTATOR_NAME.test(annotator)) {
    throw new AnnotatorNameError(
      `annotator name ${JSON.stringify(annotator)} must be 1-64 letters, digits, ".", "_" or "-" ` +
        '(starting with a letter or digit)',
    );
  }
  return join(runDir, ANNOTATIONS_DIR, `${annotator}.jsonl`);
}

/** The annotators who have a file in the run folder, sorted. */
export async function listAnnotators(runDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(join(runDir, ANNOTATIONS_DIR));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return names
    .filter((name) => name.endsWith('.jsonl'))
    .map((name) => name.slice(0, -'.jsonl'.length))
    .filter((name) => ANNOTATOR_NAME.test(name))
    .sort();
}

/** One annotator's current answers: the last line of each (image key, question), takings-back removed. */
export interface AnnotatorAnswers {
  annotator: string;
  /** In the order they were first given. */
  answers: Annotation[];
  /** Every line, takings-back included, in file order (what undo walks back through). */
  history: Annotation[];
  /** Lines skipped as unreadable. */
  skipped: number;
}

const answerId = (entry: Pick<Annotation, 'key' | 'question'>) => `${entry.key}\u0000${entry.question}`;

export async function readAnnotations(runDir: string, annotator: string): Promise<AnnotatorAnswers> {
  const { entries, skipped } = await readJsonLines(annotationFile(runDir, annotator), AnnotationSchema);
  const current = new Map<string, Annotation>();
  for (const entry of entries) {
    const id = answerId(entry);
    if (entry.answer === null) current.delete(id);
    else {
      current.delete(id); // a changed answer moves to where it was last given
      current.set(id, entry);
    }
  }
  return { annotator, answers: [...current.values()], history: entries, skipped };
}

/** Every annotator's current answers. */
export async function readAllAnnotations(runDir: string): Promise<AnnotatorAnswers[]> {
  return Promise.all((await listAnnotators(runDir)).map((name) => readAnnotations(runDir, name)));
}

/**
 * Appends one answer (or, with `answer: null`, takes one back) to the annotator's file and syncs it to
 * disk before returning. Appends to one annotator's file must not run concurrently (the server queues
 * them).
 */
export async function appendAnnotation(
  runDir: string,
  annotator: string,
  entry: Omit<Annotation, 'v' | 'at'> & { at?: string },
): Promise<Annotation> {
  const file = annotationFile(runDir, annotator);
  const line = AnnotationSchema.parse({ v: 1, at: entry.at ?? new Date().toISOString(), ...entry });
  await mkdir(join(runDir, ANNOTATIONS_DIR), { recursive: true });
  const { tornBytes } = await readJsonLines(file, AnnotationSchema);
  if (tornBytes !== null) await truncate(file, tornBytes);
  const handle = await open(file, 'a');
  try {
    await handle.write(`${JSON.stringify(line)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return line;
}
