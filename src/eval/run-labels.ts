// The labels of run folders and of paper-layout CSV files: a run's annotation store
// (RUN_DIR/annotations/<annotator>.jsonl), the CSVs imported into it (RUN_DIR/annotations/imported/), its
// automatic scores, and CSV files given on their own (no run folder, no images needed). Also importing
// CSVs into a run and exporting its annotations as CSVs.
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { loadPromptSets } from '../config/index.js';
import { MANIFEST_FILE } from '../experiment/store.js';
import { ANNOTATIONS_DIR, readAllAnnotations } from './annotations.js';
import {
  annotationLabels,
  type CategoryOptions,
  importedLabels,
  importSource,
  type Label,
  type LabelsResult,
  manifestCatalog,
  mergeCatalogs,
  type PromptCatalog,
  promptSetCatalog,
  runLabelContext,
  scoreLabels,
  setsExpectedOf,
} from './labels.js';
import {
  modelSlug,
  type PaperCsvFile,
  type PaperCsvOptions,
  type PaperTable,
  paperCsvName,
  paperCsvText,
  readPaperCsvs,
  writePaperCsvs,
} from './paper-csv.js';
import { manifestQuestions } from './questions.js';
import { readScores } from './scores.js';

/** Where a run's imported CSVs are kept: RUN_DIR/annotations/imported/. */
export const IMPORTED_DIR = join(ANNOTATIONS_DIR, 'imported');

const QuestionSchema = z.object({ id: z.string().min(1), text: z.string(), expected: z.enum(['yes', 'no']) });

/** The part of a run's manifest.json (CLI or Python API) that evaluation reads. */
export const RunManifestSchema = z.object({
  model: z.object({ id: z.string() }),
  prompt_set: z.object({ id: z.string(), category: z.string() }).nullable().optional(),
  prompts: z.array(
    z.object({
      prompt: z.string(),
      columns: z.record(z.string(), z.string()).optional(),
      questions: z.array(QuestionSchema).optional(),
    }),
  ),
  images: z.array(
    z.object({
      key: z.string(),
      prompt: z.string(),
      layer: z.int().nonnegative(),
      seed: z.int().nonnegative(),
      stage: z.literal([1, 2]).default(1),
      path: z.string(),
    }),
  ),
});

export type RunManifest = z.infer<typeof RunManifestSchema>;

/** A run folder that cannot be read: the message names the folder or file and the field. */
export class RunFolderError extends Error {
  override name = 'RunFolderError';
}

/** Reads RUN_DIR/manifest.json (what evaluation needs of it). */
export async function readRunManifest(runDir: string): Promise<RunManifest> {
  const file = join(runDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new RunFolderError(
        `${runDir}: no ${MANIFEST_FILE} (not a run folder, or its run has written none yet)`,
      );
    }
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new RunFolderError(`${file}: not JSON (${(error as Error).message})`);
  }
  const parsed = RunManifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = (issue?.path ?? [])
      .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
      .join('');
    throw new RunFolderError(
      `${file}: ${path.replace(/^\./, '') || '(top)'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return parsed.data;
}

export type RunLabelsOptions = CategoryOptions;

export interface RunLabels extends LabelsResult {
  runDir: string;
  manifest: RunManifest;
}

/** The CSV files imported into a run (RUN_DIR/annotations/imported/*.csv), sorted; none without the folder. */
async function importedFiles(runDir: string): Promise<string[]> {
  const dir = join(runDir, IMPORTED_DIR);
  const names = await readdir(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [];
    throw error;
  });
  return names
    .filter((name) => name.toLowerCase().endsWith('.csv'))
    .sort()
    .map((name) => join(dir, name));
}

/** The model an imported file stands for: the run's, when it names none or the run's by its slug. */
function runModel(named: string, models: readonly string[]): string {
  if (named === '' && models.length === 1) return models[0] as string;
  return models.find((model) => modelSlug(model) === modelSlug(named)) ?? named;
}

/** `import:<file name>`, or the path as given where two files share a name. */
function tableSources(tables: readonly PaperTable[]): string[] {
  const names = tables.map((table) => basename(table.file));
  return tables.map((table, i) =>
    importSource(names.filter((name) => name === names[i]).length > 1 ? table.file : (names[i] as string)),
  );
}

/** The labels of paper-layout tables, their models matched to the runs' and their prompts to the catalog. */
function tableLabels(
  tables: readonly PaperTable[],
  catalog: PromptCatalog,
  models: readonly string[],
  options: CategoryOptions & {
    category?: string;
    expectedOf?: (question: string) => 'yes' | 'no' | undefined;
  },
): Label[] {
  const sources = tableSources(tables);
  return tables.flatMap((table, i) =>
    importedLabels(
      { ...table, model: runModel(table.model, models), source: sources[i] as string },
      catalog,
      { ...options, stage: table.stage },
    ),
  );
}

/** Every label of a run folder: its annotators', the CSVs imported into it, and its scores. */
export async function readRunLabels(runDir: string, options: RunLabelsOptions = {}): Promise<RunLabels> {
  const manifest = await readRunManifest(runDir);
  const context = runLabelContext(manifest, options);
  const annotated = annotationLabels(context, await readAllAnnotations(runDir));
  const labels = [...annotated.labels];
  const warnings = [...annotated.warnings];
  const imported = await importedFiles(runDir);
  if (imported.length > 0) {
    const tables = await readPaperCsvs(imported);
    labels.push(...tableLabels(tables, context.catalog, [manifest.model.id], options));
  }
  const scored = scoreLabels(context, await readScores(runDir));
  labels.push(...scored.labels);
  warnings.push(...scored.warnings);
  return { runDir, manifest, labels, warnings };
}

export interface LoadLabelsOptions extends RunLabelsOptions, PaperCsvOptions {
  /** Run folders. */
  runDirs?: readonly string[];
  /** Paper-layout CSV files, or folders of them. */
  csvPaths?: readonly string[];
  /** The category of every prompt of the CSV files. */
  category?: string;
}

export interface LoadedLabels extends LabelsResult {
  runs: RunLabels[];
  tables: PaperTable[];
}

/**
 * The labels of run folders and CSV files together. A CSV file's prompts take their category and
 * questions from the runs' manifests, else from the prompt sets (configs/prompts/sets.yaml); its model is
 * a run's when the file names that run's model (or none, with one run).
 */
export async function loadLabels(options: LoadLabelsOptions): Promise<LoadedLabels> {
  const runs = await Promise.all((options.runDirs ?? []).map((dir) => readRunLabels(dir, options)));
  const labels = runs.flatMap((run) => run.labels);
  const warnings = runs.flatMap((run) => run.warnings.map((warning) => `${run.runDir}: ${warning}`));
  let tables: PaperTable[] = [];
  if (options.csvPaths && options.csvPaths.length > 0) {
    tables = await readPaperCsvs(options.csvPaths, options);
    const sets = await loadPromptSets();
    const catalog = mergeCatalogs(
      ...runs.map((run) => manifestCatalog(run.manifest, options)),
      promptSetCatalog(sets, options),
    );
    const models = runs.map((run) => run.manifest.model.id);
    labels.push(...tableLabels(tables, catalog, models, { ...options, expectedOf: setsExpectedOf(sets) }));
  }
  return { labels, warnings, runs, tables };
}

// ---------------------------------------------------------------------------------------------------------
// Import and export

export interface ImportedFile {
  /** The file as given. */
  from: string;
  /** Where it was written in the run folder; null when the same file was there already. */
  to: string | null;
  table: PaperTable;
}

/**
 * Copies paper-layout CSV files into RUN_DIR/annotations/imported/ as `<model>__<question>__<name>.csv`
 * (their name without `.csv` as the tag), values scaled to 0..1, after checking them against the run:
 * the file's model must be the run's and its question one the run's prompts ask; prompts and layers the
 * run does not have are warned about (their rows are kept, and count in `stats`). Refuses to replace a
 * different file of the same name unless `overwrite`.
 */
export async function importAnnotationCsvs(
  files: readonly string[],
  runDir: string,
  options: PaperCsvOptions & { overwrite?: boolean } = {},
): Promise<{ files: ImportedFile[]; warnings: string[] }> {
  const manifest = await readRunManifest(runDir);
  const tables = await readPaperCsvs(files, options);
  const asked = new Set(manifestQuestions(manifest).flatMap((questions) => questions.map((q) => q.id)));
  const prompts = new Set(manifest.prompts.map((p) => p.prompt.trim()));
  const layers = new Set(manifest.images.map((image) => image.layer));
  const warnings: string[] = [];
  const planned = tables.map((table) => {
    if (table.model !== '' && modelSlug(table.model) !== modelSlug(manifest.model.id)) {
      throw new RunFolderError(
        `${table.file}: its model is ${table.model}, the run's is ${manifest.model.id} (give the model to import it anyway)`,
      );
    }
    if (!asked.has(table.question)) {
      throw new RunFolderError(
        `${table.file}: the run's prompts do not ask "${table.question}" (they ask: ${[...asked].join(', ')})`,
      );
    }
    const strangers = new Set(table.cells.filter((c) => !prompts.has(c.prompt.trim())).map((c) => c.prompt));
    if (strangers.size > 0) {
      warnings.push(
        `${table.file}: ${strangers.size} prompt(s) not in the run, e.g. ${JSON.stringify([...strangers][0])}`,
      );
    }
    const extra = table.layers.filter((layer) => !layers.has(layer));
    if (extra.length > 0) warnings.push(`${table.file}: layers not in the run: ${extra.join(', ')}`);
    const tag = basename(table.file).replace(/\.csv$/i, '');
    const name = paperCsvName({
      model: manifest.model.id,
      question: table.question,
      tag,
      stage: table.stage,
    });
    return { table, name, text: paperCsvText(table.cells) };
  });
  const names = planned.map((p) => p.name);
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice !== undefined) throw new RunFolderError(`two files would be imported as ${twice}: rename one`);
  const dir = join(runDir, IMPORTED_DIR);
  await mkdir(dir, { recursive: true });
  const imported: ImportedFile[] = [];
  for (const { table, name, text } of planned) {
    const path = join(dir, name);
    const existing = await readFile(path, 'utf8').catch(() => null);
    if (existing === text) {
      imported.push({ from: table.file, to: null, table });
      continue;
    }
    if (existing !== null && !options.overwrite) {
      throw new RunFolderError(
        `${path} exists with other values (imported before?): pass --overwrite to replace it`,
      );
    }
    await writeFile(path, text);
    imported.push({ from: table.file, to: path, table });
  }
  return { files: imported, warnings };
}

/** The default folder of `annotations export`: RUN_DIR/export/annotations/ (never read back as labels). */
export const EXPORT_DIR = join('export', 'annotations');

/**
 * Writes a run's annotations (the annotation store; not imported CSVs, which are CSVs already) as
 * paper-layout files, one per model, question, annotator and stage, into `outDir`.
 */
export async function exportAnnotationCsvs(
  runDir: string,
  outDir: string = join(runDir, EXPORT_DIR),
): Promise<{ files: (PaperCsvFile & { path: string })[]; warnings: string[] }> {
  const manifest = await readRunManifest(runDir);
  const { labels, warnings } = annotationLabels(runLabelContext(manifest), await readAllAnnotations(runDir));
  await mkdir(outDir, { recursive: true });
  return { files: await writePaperCsvs(labels, outDir), warnings };
}
