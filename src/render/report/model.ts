// The data model of report.html: what the generator embeds in the page as JSON (one
// <script type="application/json"> element) and the client app (src/render/report-client/) reads. Defined
// once here, as zod schemas; the client imports the types only. Everything in it that comes from a run
// folder (prompts, columns, questions, paths) is untrusted text: the client puts it in the page with
// textContent and builds image URLs from checked relative paths.
import { z } from 'zod';

export const REPORT_DATA_VERSION = 1;

/** A question of a prompt, filled in for it (manifest `prompts[].questions[]`). */
export const ReportQuestionSchema = z.object({
  id: z.string(),
  text: z.string(),
  expected: z.enum(['yes', 'no']),
});

/** A prompt of a run, by its index in the run's manifest. */
export const ReportPromptSchema = z.object({
  /** Index in the manifest's `prompts`. */
  index: z.int().nonnegative(),
  prompt: z.string(),
  /** The prompt file's other columns (category, class, object1, ...). */
  columns: z.record(z.string(), z.string()),
  questions: z.array(ReportQuestionSchema),
  /** Set when the encoder's token limit cut the prompt. */
  truncated: z.object({ tokens: z.int(), max_tokens: z.int() }).nullable(),
});

/** One image: compact keys, as a 10,000-image run lists 10,000 of them. */
export const ReportImageSchema = z.object({
  /** Content key (manifest `images[].key`): also what annotations refer to. */
  k: z.string(),
  /** Prompt index (ReportPrompt.index). */
  p: z.int().nonnegative(),
  /** Layer. */
  l: z.int().nonnegative(),
  /** Seed. */
  s: z.int().nonnegative(),
  /** Stage (1, or 2 for IF's stage II upscale). */
  st: z.literal([1, 2]),
  /** The image, relative to the run folder, '/'-separated (checked: no '..', not absolute). */
  src: z.string(),
  /** A small copy for grids (relative to the run folder), or null: the image itself is small. */
  th: z.string().nullable(),
});

export const ReportLayerSchema = z.object({
  layer: z.int().nonnegative(),
  /** Depth in percent of L (0 = the embeddings, 100 = the final layer). */
  depth: z.number(),
  /** `L3 · 37.5%`, `L8 (final)`. */
  label: z.string(),
});

/** Per image key, per question id: how many annotators answered yes and no. */
export const AnswerCountsSchema = z.record(z.string(), z.record(z.string(), z.tuple([z.int(), z.int()])));

/** One run folder (a study's variant, or a run compared with another). */
export const ReportRunSchema = z.object({
  /** Unique in the report: `run-0`, `run-1`, ... */
  id: z.string(),
  /** The run's name, or its variant's name in a study. */
  label: z.string(),
  /** URL prefix of the run folder from the page ('' when the page is in it; else ends with '/'). */
  base: z.string(),
  /** The run folder's path as given (for display). */
  dir: z.string(),
  complete: z.boolean(),
  model: z.object({ id: z.string(), short: z.string(), family: z.string(), num_layers: z.int() }),
  prompt_set: z.object({ id: z.string(), category: z.string() }).nullable(),
  variant: z.object({ name: z.string(), values: z.record(z.string(), z.unknown()) }).nullable(),
  /** The settings, as short items (`20 steps`, `guidance 5`, `uncond final`, ...). */
  settings: z.array(z.string()),
  layers: z.array(ReportLayerSchema),
  seeds: z.array(z.int()),
  stages: z.array(z.literal([1, 2])),
  /** The images' size per stage ([height, width]); null where unknown. */
  sizes: z.record(z.string(), z.tuple([z.int(), z.int()])),
  /** Upscale without smoothing (the images are small). */
  pixelated: z.boolean(),
  /** The prompt file's extra columns. */
  columns: z.array(z.string()),
  prompts: z.array(ReportPromptSchema),
  images: z.array(ReportImageSchema),
  /** Images of the manifest left out (paths outside the run folder), with why. */
  skipped: z.array(z.string()),
  annotations: z.object({ annotators: z.array(z.string()), counts: AnswerCountsSchema }),
});

/** A plot for the results panel: an SVG document (shown as an image, so nothing in it runs). */
export const ReportPlotSchema = z.object({ title: z.string(), svg: z.string() });

export const ReportTableSchema = z.object({
  title: z.string(),
  columns: z.array(z.string()),
  rows: z.array(z.array(z.union([z.string(), z.number(), z.null()]))),
});

/** The results panel: per-layer accuracy curves, emergence histograms, tables (src/eval statistics). */
export const ReportResultsSchema = z.object({
  plots: z.array(ReportPlotSchema),
  tables: z.array(ReportTableSchema),
  /** Shown above them (e.g. where the numbers come from); null for none. */
  note: z.string().nullable(),
});

export const ReportDataSchema = z.object({
  version: z.literal(REPORT_DATA_VERSION),
  title: z.string(),
  /** When the page was written (ISO 8601). */
  generated: z.string(),
  tool: z.object({ name: z.string(), version: z.string() }),
  /** `static`: a file (file:// works); `serve`: from `diffusion-lens serve`, with annotation mode. */
  mode: z.enum(['static', 'serve']),
  runs: z.array(ReportRunSchema).min(1),
  results: ReportResultsSchema,
});

export type ReportQuestion = z.infer<typeof ReportQuestionSchema>;
export type ReportPrompt = z.infer<typeof ReportPromptSchema>;
export type ReportImage = z.infer<typeof ReportImageSchema>;
export type ReportLayer = z.infer<typeof ReportLayerSchema>;
export type AnswerCounts = z.infer<typeof AnswerCountsSchema>;
export type ReportRun = z.infer<typeof ReportRunSchema>;
export type ReportPlot = z.infer<typeof ReportPlotSchema>;
export type ReportTable = z.infer<typeof ReportTableSchema>;
export type ReportResults = z.infer<typeof ReportResultsSchema>;
export type ReportData = z.infer<typeof ReportDataSchema>;

/** An empty results panel (the page says: no annotations or scores yet). */
export const EMPTY_RESULTS: ReportResults = { plots: [], tables: [], note: null };

// ---------------------------------------------------------------------------------------------------------
// The annotation API of `diffusion-lens serve` (src/serve/): request and response bodies, shared with the
// client.

export const AnswerRequestSchema = z.strictObject({
  annotator: z.string(),
  /** Index in ReportData.runs. */
  run: z.int().nonnegative(),
  key: z.string().min(1),
  question: z.string().min(1),
  answer: z.literal([0, 1]),
});
export type AnswerRequest = z.infer<typeof AnswerRequestSchema>;

export const UndoRequestSchema = z.strictObject({ annotator: z.string(), run: z.int().nonnegative() });
export type UndoRequest = z.infer<typeof UndoRequestSchema>;

/** An annotator's progress in a run: images whose every question is answered, and answers given. */
export const ProgressSchema = z.object({
  annotator: z.string(),
  images: z.int(),
  images_done: z.int(),
  questions: z.int(),
  answered: z.int(),
});
export type Progress = z.infer<typeof ProgressSchema>;

/** The next image to annotate: its position in the annotation order, key, and answers given so far. */
export const NextImageSchema = z.object({
  /** null when every image has all its answers. */
  position: z.int().nullable(),
  key: z.string().nullable(),
  /** The annotator's current answers for that image, by question id. */
  answers: z.record(z.string(), z.literal([0, 1])),
  progress: ProgressSchema,
});
export type NextImage = z.infer<typeof NextImageSchema>;

export const UndoResponseSchema = z.object({
  /** The answer taken back (image key and question), or null when there was none. */
  undone: z.object({ key: z.string(), question: z.string(), position: z.int() }).nullable(),
  progress: ProgressSchema,
});
export type UndoResponse = z.infer<typeof UndoResponseSchema>;
