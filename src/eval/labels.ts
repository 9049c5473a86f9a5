// One record for every judgment of an image, whoever made it: an annotator in the annotation mode, an
// automatic scorer, or a paper-layout CSV imported from elsewhere. The statistics read only these, so they
// run the same on a run folder, on imported CSVs alone, and on the shapes benchmark.
import { z } from 'zod';
import { type LoadedPromptSet, type PromptSetSpec, promptQuestions } from '../config/index.js';
import type { AnnotatorAnswers } from './annotations.js';
import {
  GENERIC_QUESTION,
  manifestQuestions,
  type PromptsWithQuestions,
  type Question,
} from './questions.js';
import type { ScoreRow } from './scores.js';

export const LabelSchema = z.strictObject({
  /** The model the image is from (the manifest's `model.id`, or the model named by an imported file). */
  model: z.string(),
  prompt: z.string(),
  /** The prompt's category (see promptCategory); '' when it has none. */
  category: z.string(),
  /** A question id (manifest `prompts[].questions[].id`). */
  question: z.string().min(1),
  layer: z.int().nonnegative(),
  seed: z.int().nonnegative(),
  stage: z.literal([1, 2]),
  /** The answer, 0..1: 1 = yes. Graded answers scaled to 0..1 (a 0-10 score over 10); scorers' scores. */
  value: z.number().min(0).max(1),
  /** Whether the answer is the one an image correct for its prompt gives (the question's `expected`). */
  correct: z.boolean(),
  /** Who judged: `annotator:<name>`, `scorer:<scorer>:<model>`, `import:<file>`. */
  source: z.string().min(1),
});

export type Label = z.infer<typeof LabelSchema>;

export const annotatorSource = (annotator: string) => `annotator:${annotator}`;
export const scorerSource = (scorer: string, model: string) => `scorer:${scorer}:${model}`;
export const importSource = (file: string) => `import:${file}`;

/** A graded answer counts as yes from 0.5 up. */
export const YES_THRESHOLD = 0.5;

/** Whether an answer (0..1) is correct for a question expecting `expected`. */
export function isCorrect(value: number, expected: Question['expected']): boolean {
  return value >= YES_THRESHOLD === (expected === 'yes');
}

/** Where each prompt's category and questions come from, by prompt text. */
export interface PromptInfo {
  category: string;
  questions: readonly Question[];
}

export type PromptCatalog = ReadonlyMap<string, PromptInfo>;

export interface CategoryOptions {
  /**
   * The prompt column whose value is the category (e.g. `class`, for coarse-to-fine comparisons). Default:
   * the `category` column when the prompt has one, else its prompt set's category.
   */
  categoryColumn?: string;
}

/** A prompt's category: the chosen column, else its `category` column, else its set's category, else ''. */
export function promptCategory(
  columns: Readonly<Record<string, string>>,
  setCategory: string | null,
  options: CategoryOptions = {},
): string {
  if (options.categoryColumn !== undefined) return columns[options.categoryColumn] ?? '';
  return columns.category ?? setCategory ?? '';
}

/** The manifest fields the catalog reads (old manifests lack `questions`, `prompt_set` and `columns`). */
export interface ManifestPrompts extends PromptsWithQuestions {
  prompt_set?: { category: string } | null;
}

/** The catalog of a run's prompts: each prompt's category and questions as its manifest records them. */
export function manifestCatalog(
  manifest: ManifestPrompts,
  options: CategoryOptions = {},
): Map<string, PromptInfo> {
  const questions = manifestQuestions(manifest);
  const catalog = new Map<string, PromptInfo>();
  manifest.prompts.forEach((prompt, index) => {
    catalog.set(prompt.prompt.trim(), {
      category: promptCategory(prompt.columns ?? {}, manifest.prompt_set?.category ?? null, options),
      questions: questions[index] ?? [],
    });
  });
  return catalog;
}

/** The catalog of prompt sets (configs/prompts/sets.yaml): each row's category and its questions. */
export function promptSetCatalog(
  sets: readonly LoadedPromptSet[],
  options: CategoryOptions = {},
): Map<string, PromptInfo> {
  const catalog = new Map<string, PromptInfo>();
  for (const set of sets) {
    for (const row of set.rows) {
      const prompt = row.prompt.trim();
      if (catalog.has(prompt)) continue;
      catalog.set(prompt, {
        category: promptCategory(row.values, set.category, options),
        questions: promptQuestions(set, row.prompt, row.values),
      });
    }
  }
  return catalog;
}

/** A question id's expected answer in the prompt sets, where every set that asks it agrees. */
export function setsExpectedOf(
  sets: readonly Pick<PromptSetSpec, 'questions'>[],
): (question: string) => Question['expected'] | undefined {
  const expected = new Map<string, Question['expected'] | null>();
  for (const set of sets) {
    for (const q of set.questions) {
      const known = expected.get(q.id);
      expected.set(q.id, known === undefined || known === q.expected ? q.expected : null);
    }
  }
  return (question) => expected.get(question) ?? undefined;
}

/** Catalogs merged: the first that knows a prompt wins. */
export function mergeCatalogs(...catalogs: PromptCatalog[]): Map<string, PromptInfo> {
  const merged = new Map<string, PromptInfo>();
  for (const catalog of catalogs) {
    for (const [prompt, info] of catalog) if (!merged.has(prompt)) merged.set(prompt, info);
  }
  return merged;
}

/** Labels and what was left out, said once per kind of problem. */
export interface LabelsResult {
  labels: Label[];
  warnings: string[];
}

/** Counts left-out items by reason, for one warning per reason. */
class LeftOut {
  private readonly counts = new Map<string, number>();
  add(reason: string): void {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
  }
  warnings(what: string): string[] {
    return [...this.counts].map(([reason, n]) => `${what}: ${n} left out: ${reason}`);
  }
}

/** The question's expected answer, from the prompt's questions. */
function expectedAnswer(info: PromptInfo | undefined, question: string): Question['expected'] | undefined {
  return info?.questions.find((q) => q.id === question)?.expected;
}

/** The fields of a manifest's images the adapters read. */
interface ManifestImageRef {
  key: string;
  prompt: string;
}

/** The run-folder view the annotation and score adapters need. */
export interface RunLabelContext {
  model: string;
  catalog: PromptCatalog;
  /** The run's images by key: a judgment of an image the run does not have is left out. */
  images: ReadonlyMap<string, ManifestImageRef>;
}

/** The context of a run from its manifest. */
export function runLabelContext(
  manifest: ManifestPrompts & { model: { id: string }; images: readonly ManifestImageRef[] },
  options: CategoryOptions = {},
): RunLabelContext {
  return {
    model: manifest.model.id,
    catalog: manifestCatalog(manifest, options),
    images: new Map(manifest.images.map((image) => [image.key, image])),
  };
}

/** One judged image of a run: its coordinates, as the annotation store and scorers record them. */
interface ImageJudgment {
  key: string;
  prompt: string;
  layer: number;
  seed: number;
  stage: 1 | 2;
  question: string;
}

function runLabel(
  context: RunLabelContext,
  judgment: ImageJudgment,
  value: number,
  answer: number,
  source: string,
  leftOut: LeftOut,
  /** The expected answer of a question the prompt does not ask; without it, such answers are left out. */
  ownQuestions?: Question['expected'],
): Label | null {
  const image = context.images.get(judgment.key);
  if (image === undefined) {
    leftOut.add('images the run does not have (a key not in the manifest)');
    return null;
  }
  const info = context.catalog.get(image.prompt.trim());
  const expected = expectedAnswer(info, judgment.question) ?? ownQuestions;
  if (expected === undefined) {
    leftOut.add(`answers to a question the prompt does not ask ("${judgment.question}")`);
    return null;
  }
  return {
    model: context.model,
    prompt: image.prompt,
    category: info?.category ?? '',
    question: judgment.question,
    layer: judgment.layer,
    seed: judgment.seed,
    stage: judgment.stage,
    value,
    correct: isCorrect(answer, expected),
    source,
  };
}

/** The labels of a run's annotators (their current answers). */
export function annotationLabels(
  context: RunLabelContext,
  annotators: readonly AnnotatorAnswers[],
): LabelsResult {
  const labels: Label[] = [];
  const warnings: string[] = [];
  for (const { annotator, answers } of annotators) {
    const leftOut = new LeftOut();
    for (const answer of answers) {
      if (answer.answer === null) continue; // taken back (readAnnotations leaves none)
      const label = runLabel(
        context,
        answer,
        answer.answer,
        answer.answer,
        annotatorSource(annotator),
        leftOut,
      );
      if (label) labels.push(label);
    }
    warnings.push(...leftOut.warnings(`annotator ${annotator}`));
  }
  return { labels, warnings };
}

/**
 * The labels of scorer rows: value = the score, correct from the scorer's own yes/no (its threshold, not
 * 0.5). Source `scorer:<scorer>:<scorer_model>`. A question the prompt does not ask is the scorer's own
 * (the shapes scorer's `colour_correct`, ...), asked so that yes is correct.
 */
export function scoreLabels(context: RunLabelContext, rows: readonly ScoreRow[]): LabelsResult {
  const labels: Label[] = [];
  const leftOut = new Map<string, LeftOut>();
  for (const row of rows) {
    const source = scorerSource(row.scorer, row.scorer_model);
    let counter = leftOut.get(source);
    if (counter === undefined) {
      counter = new LeftOut();
      leftOut.set(source, counter);
    }
    const value = Math.min(1, Math.max(0, row.score));
    const label = runLabel(context, row, value, row.answer, source, counter, 'yes');
    if (label) labels.push(label);
  }
  return { labels, warnings: [...leftOut].flatMap(([source, counter]) => counter.warnings(source)) };
}

/** One judged image of an imported table (paper-csv.ts `PaperTable`). */
export interface ImportedJudgment {
  prompt: string;
  layer: number;
  seed: number;
  /** 0..1 */
  value: number;
}

/** An imported table's judgments, with the model and question it is of and the source it counts as. */
export interface ImportedTable {
  model: string;
  question: string;
  source: string;
  cells: readonly ImportedJudgment[];
}

export interface ImportOptions extends CategoryOptions {
  /** The category of every prompt of the table, whatever the catalog says. */
  category?: string;
  /** Stage of the images judged (default 1). */
  stage?: 1 | 2;
  /** A question's expected answer where no catalogued prompt asks it (default: yes). */
  expectedOf?: (question: string) => Question['expected'] | undefined;
}

/**
 * The labels of an imported table. A prompt's category and the question's expected answer come from the
 * catalog (the run's manifest, the prompt sets); prompts it does not know get the category '' (or
 * `options.category`) and the expected answer `options.expectedOf(question)`, else yes.
 */
export function importedLabels(
  table: ImportedTable,
  catalog: PromptCatalog,
  options: ImportOptions = {},
): Label[] {
  return table.cells.map((cell) => {
    const info = catalog.get(cell.prompt.trim());
    const expected =
      expectedAnswer(info, table.question) ??
      options.expectedOf?.(table.question) ??
      GENERIC_QUESTION.expected;
    return {
      model: table.model,
      prompt: cell.prompt,
      category: options.category ?? info?.category ?? '',
      question: table.question,
      layer: cell.layer,
      seed: cell.seed,
      stage: options.stage ?? 1,
      value: cell.value,
      correct: isCorrect(cell.value, expected),
      source: table.source,
    };
  });
}
