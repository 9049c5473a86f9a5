// Per-image judgments in the paper's CSV layout: one file per question and model, header
// `prompt,<one column per layer: the layer number>,seed`, one row per (prompt, seed), a cell per layer with
// the answer (0/1, or a graded score such as 0-10; empty = not judged).
//
// The file name carries the model and the question: `<model-slug>__<question>[__<tag>][__stage2].csv`,
// e.g. `stabilityai--stable-diffusion-2-1__animal_correct__alice.csv`. The model slug is a hub id with `/`
// written `--` (a local folder: its name); the tag (an annotator, a scorer) is free text and only tells
// files apart; a last part `stage2` marks stage II images (DeepFloyd IF). Question ids are snake_case, so
// `__` never occurs inside one. Files named otherwise are read with an explicit question (and model).
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { CsvError } from 'csv-parse';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import { looksLikePath } from '../config/index.js';
import type { Label } from './labels.js';

const PART_SEPARATOR = '__';
const STAGE2_PART = 'stage2';

/** A bad paper-layout file: the message names the file and, where there is one, the line. */
export class PaperCsvError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | null,
    detail: string,
  ) {
    super(`${file}${line === null ? '' : `:${line}`}: ${detail}`);
    this.name = 'PaperCsvError';
  }
}

/** Letters, digits, `.`, `_` and `-`; runs of anything else become `-`, and `__` (the separator) `_`. */
function safePart(text: string): string {
  return text
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/_{2,}/g, '_')
    .replace(/^[-_.]+|[-_]+$/g, '');
}

/** A model id as a file-name part: a hub id's `/` becomes `--`; a local path gives its last name. */
export function modelSlug(modelId: string): string {
  const name = looksLikePath(modelId) ? basename(modelId.replace(/[\\/]+$/, ''), extname(modelId)) : modelId;
  return safePart(name.replace(/\//g, '--')) || 'model';
}

/** The model id a slug stands for: `--` back to `/` (a local folder's name stays as it is). */
export function modelFromSlug(slug: string): string {
  return slug.replace(/--/g, '/');
}

/** What a paper-layout file's name says. */
export interface PaperCsvName {
  model: string;
  question: string;
  tag: string | null;
  stage: 1 | 2;
}

/** The file name for a model, question, tag and stage (see the top of this file). */
export function paperCsvName(name: Omit<PaperCsvName, 'tag' | 'stage'> & Partial<PaperCsvName>): string {
  const parts = [modelSlug(name.model), safePart(name.question)];
  const tag = name.tag ? safePart(name.tag) : '';
  if (tag) parts.push(tag);
  if (name.stage === 2) parts.push(STAGE2_PART);
  return `${parts.join(PART_SEPARATOR)}.csv`;
}

/** Reads a file name written as paperCsvName writes it; null when it has no `__`. */
export function parsePaperCsvName(file: string): PaperCsvName | null {
  const parts = basename(file)
    .replace(/\.csv$/i, '')
    .split(PART_SEPARATOR);
  const [model, question, ...rest] = parts;
  if (model === undefined || question === undefined || model === '' || question === '') return null;
  const stage = rest.at(-1) === STAGE2_PART ? 2 : 1;
  if (stage === 2) rest.pop();
  return { model: modelFromSlug(model), question, tag: rest.join(PART_SEPARATOR) || null, stage };
}

// ---------------------------------------------------------------------------------------------------------
// Reading

export interface PaperCsvOptions {
  /** The model of the file's images (default: from the file name). */
  model?: string;
  /** The question the file answers (default: from the file name). */
  question?: string;
  /** The value meaning "fully yes": cells are divided by it. Default: see readScale. */
  scale?: number;
  /** The stage of the file's images (default: from the file name, else 1). */
  stage?: 1 | 2;
}

/** One judged image of a file: the cell's value scaled to 0..1. */
export interface PaperCell {
  prompt: string;
  seed: number;
  layer: number;
  value: number;
  /** The line of its row in the file. */
  line: number;
}

/** How a file's scale was chosen: given, 0/1 cells only, 0..1 fractions, or guessed from the largest cell. */
export type ScaleFrom = 'given' | 'binary' | 'fractions' | 'guessed';

export interface PaperTable {
  /** The file as it was named to the reader. */
  file: string;
  model: string;
  question: string;
  tag: string | null;
  stage: 1 | 2;
  scale: number;
  scaleFrom: ScaleFrom;
  layers: number[];
  cells: PaperCell[];
}

const LAYER_HEADER = /^[Ll]?(\d+)$/;
const MISSING_CELL = /^(?:|nan|NaN|NA|na)$/;

interface RawCell extends Omit<PaperCell, 'value'> {
  raw: number;
  column: string;
}

/**
 * The scale when none is given: 1 when every cell is within 0..1 (0/1 answers or fractions); else 10 when
 * the largest is at most 10 (a 0-10 score), 100 when at most 100 (a percentage). Larger: pass a scale.
 */
function readScale(file: string, cells: readonly RawCell[]): { scale: number; scaleFrom: ScaleFrom } {
  const max = cells.reduce((largest, cell) => Math.max(largest, cell.raw), 0);
  if (cells.every((cell) => cell.raw === 0 || cell.raw === 1)) return { scale: 1, scaleFrom: 'binary' };
  if (max <= 1) return { scale: 1, scaleFrom: 'fractions' };
  if (max <= 10) return { scale: 10, scaleFrom: 'guessed' };
  if (max <= 100) return { scale: 100, scaleFrom: 'guessed' };
  throw new PaperCsvError(file, null, `values go up to ${max}: give the scale (the value meaning yes)`);
}

/** Where the file's model and question come from: the options, else its name. */
function fileIdentity(
  file: string,
  options: PaperCsvOptions,
): Pick<PaperTable, 'model' | 'question' | 'tag' | 'stage'> {
  const named = parsePaperCsvName(file);
  const question = options.question ?? named?.question;
  if (question === undefined) {
    throw new PaperCsvError(
      file,
      null,
      'cannot tell the question from the file name: name it <model>__<question>.csv or give the question',
    );
  }
  return {
    model: options.model ?? named?.model ?? '',
    question,
    tag: named?.tag ?? null,
    stage: options.stage ?? named?.stage ?? 1,
  };
}

function csvRecords(text: string, file: string): { fields: string[]; line: number }[] {
  try {
    // With `info`, each record comes with the line it ends on.
    const records = parse(text, {
      bom: true,
      info: true,
      relax_column_count: true,
      skip_empty_lines: true,
    }) as unknown as { record: string[]; info: { lines: number } }[];
    return records.map(({ record, info }) => ({
      fields: record.map((field) => field.trim()),
      line: info.lines,
    }));
  } catch (error) {
    if (error instanceof CsvError) {
      const line = typeof error.lines === 'number' ? error.lines : null;
      throw new PaperCsvError(file, line, error.message);
    }
    throw error;
  }
}

/** The header's columns: prompt, seed and the layers (an empty name, a pandas index, is ignored). */
function headerColumns(header: string[], file: string, line: number) {
  const fail = (detail: string) => new PaperCsvError(file, line, detail);
  const lower = header.map((name) => name.toLowerCase());
  const prompt = lower.indexOf('prompt');
  const seed = lower.indexOf('seed');
  const expected = 'expected prompt,<one column per layer>,seed';
  if (prompt < 0) throw fail(`no "prompt" column (${expected})`);
  if (seed < 0) throw fail(`no "seed" column (${expected})`);
  const layers: { index: number; layer: number; name: string }[] = [];
  header.forEach((name, index) => {
    if (index === prompt || index === seed || name === '') return;
    const match = LAYER_HEADER.exec(name);
    if (!match) throw fail(`column "${name}" is not a layer number, "prompt" or "seed" (${expected})`);
    const layer = Number(match[1]);
    if (layers.some((known) => known.layer === layer)) throw fail(`layer ${layer} has two columns`);
    layers.push({ index, layer, name });
  });
  for (const name of ['prompt', 'seed']) {
    if (lower.filter((n) => n === name).length > 1) throw fail(`"${name}" is in the header twice`);
  }
  if (layers.length === 0) throw fail(`no layer columns (${expected})`);
  return { prompt, seed, layers };
}

/**
 * Parses one paper-layout file. `file` names it in errors and in the result. Throws PaperCsvError naming
 * the file and line for a missing column, a row of the wrong width, an empty prompt, a seed that is not a
 * whole number, a (prompt, seed) listed twice, and a cell that is not a number within the scale.
 */
export function parsePaperCsv(text: string, file: string, options: PaperCsvOptions = {}): PaperTable {
  const identity = fileIdentity(file, options);
  const [header, ...rows] = csvRecords(text, file);
  if (header === undefined) throw new PaperCsvError(file, null, 'the file is empty (expected a header row)');
  const columns = headerColumns(header.fields, file, header.line);
  const raw: RawCell[] = [];
  const seen = new Map<string, number>();
  for (const { fields, line } of rows) {
    const fail = (detail: string) => new PaperCsvError(file, line, detail);
    if (fields.length !== header.fields.length) {
      throw fail(`${fields.length} fields, the header has ${header.fields.length}`);
    }
    const prompt = fields[columns.prompt] ?? '';
    if (prompt === '') throw fail('empty prompt');
    const seedText = fields[columns.seed] ?? '';
    if (!/^\d+$/.test(seedText)) throw fail(`seed "${seedText}" is not a whole number`);
    const seed = Number(seedText);
    const id = JSON.stringify([prompt, seed]);
    const earlier = seen.get(id);
    if (earlier !== undefined)
      throw fail(`${JSON.stringify(prompt)} seed ${seed} is also on line ${earlier}`);
    seen.set(id, line);
    for (const { index, layer, name } of columns.layers) {
      const cell = fields[index] ?? '';
      if (MISSING_CELL.test(cell)) continue;
      const value = Number(cell);
      if (!Number.isFinite(value)) throw fail(`column ${name}: "${cell}" is not a number`);
      if (value < 0) throw fail(`column ${name}: ${cell} is negative`);
      raw.push({ prompt, seed, layer, raw: value, line, column: name });
    }
  }
  const { scale, scaleFrom } =
    options.scale === undefined
      ? readScale(file, raw)
      : { scale: options.scale, scaleFrom: 'given' as const };
  if (!(scale > 0)) throw new PaperCsvError(file, null, `the scale must be positive, not ${scale}`);
  const cells = raw.map(({ raw: value, column, ...cell }) => {
    if (value > scale) {
      throw new PaperCsvError(file, cell.line, `column ${column}: ${value} is above the scale (${scale})`);
    }
    return { ...cell, value: value / scale };
  });
  const layers = columns.layers.map((column) => column.layer).sort((a, b) => a - b);
  return { file, ...identity, scale, scaleFrom, layers, cells };
}

/**
 * The paper-layout files at `paths`: a file is read as it is; a folder gives its `.csv` files (sorted; not
 * its subfolders). A file named twice is read once.
 */
export async function readPaperCsvs(
  paths: readonly string[],
  options: PaperCsvOptions = {},
): Promise<PaperTable[]> {
  const files: string[] = [];
  for (const path of paths) {
    let isDir: boolean;
    try {
      isDir = (await stat(path)).isDirectory();
    } catch {
      throw new PaperCsvError(path, null, 'no such file or folder');
    }
    if (!isDir) {
      files.push(path);
      continue;
    }
    const names = (await readdir(path)).filter((name) => name.toLowerCase().endsWith('.csv')).sort();
    if (names.length === 0) throw new PaperCsvError(path, null, 'the folder has no .csv files');
    files.push(...names.map((name) => join(path, name)));
  }
  const unique = [...new Set(files)];
  return Promise.all(unique.map(async (file) => parsePaperCsv(await readFile(file, 'utf8'), file, options)));
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/** One judged image to write. */
export interface PaperValue {
  prompt: string;
  seed: number;
  layer: number;
  /** 0..1 */
  value: number;
}

/** A value as written: 0 and 1 as they are, a graded value to 4 decimals. */
const formatValue = (value: number) => String(Math.round(value * 10_000) / 10_000);

/**
 * One file's text: a column per layer judged (ascending), a row per (prompt, seed) (prompts in the order
 * first given, seeds ascending), an empty cell where an image was not judged.
 */
export function paperCsvText(values: readonly PaperValue[]): string {
  const layers = [...new Set(values.map((v) => v.layer))].sort((a, b) => a - b);
  const rows = new Map<string, { prompt: string; seed: number; cells: Map<number, number> }>();
  for (const v of values) {
    const id = JSON.stringify([v.prompt, v.seed]);
    let row = rows.get(id);
    if (row === undefined) {
      row = { prompt: v.prompt, seed: v.seed, cells: new Map() };
      rows.set(id, row);
    }
    row.cells.set(v.layer, v.value);
  }
  const prompts = [...new Set(values.map((v) => v.prompt))];
  const ordered = [...rows.values()].sort(
    (a, b) => prompts.indexOf(a.prompt) - prompts.indexOf(b.prompt) || a.seed - b.seed,
  );
  return stringify([
    ['prompt', ...layers.map(String), 'seed'],
    ...ordered.map((row) => [
      row.prompt,
      ...layers.map((layer) => {
        const value = row.cells.get(layer);
        return value === undefined ? '' : formatValue(value);
      }),
      String(row.seed),
    ]),
  ]);
}

/** The tag of a label source in a file name: an annotator's name, else the source made file-safe. */
export function sourceTag(source: string): string {
  const annotator = /^annotator:(.+)$/.exec(source);
  if (annotator?.[1]) return annotator[1];
  const imported = /^import:(.+)$/.exec(source);
  if (imported?.[1]) return basename(imported[1]).replace(/\.csv$/i, '');
  return source;
}

export interface PaperCsvFile {
  name: string;
  text: string;
  model: string;
  question: string;
  source: string;
  stage: 1 | 2;
  /** Judged images in the file. */
  images: number;
}

/** The paper-layout files of labels: one per model, question, source and stage. */
export function paperCsvFiles(labels: readonly Label[]): PaperCsvFile[] {
  const groups = new Map<string, Label[]>();
  for (const label of labels) {
    const id = JSON.stringify([label.model, label.question, label.source, label.stage]);
    const group = groups.get(id);
    if (group) group.push(label);
    else groups.set(id, [label]);
  }
  const names = new Set<string>();
  return [...groups.values()].map((group) => {
    const [first] = group as [Label];
    const { model, question, source, stage } = first;
    let name = paperCsvName({ model, question, tag: sourceTag(source), stage });
    // Two sources with the same tag: number the later files.
    for (let n = 2; names.has(name); n++) {
      name = paperCsvName({ model, question, tag: `${sourceTag(source)}-${n}`, stage });
    }
    names.add(name);
    return { name, text: paperCsvText(group), model, question, source, stage, images: group.length };
  });
}

/** Writes paperCsvFiles(labels) into `outDir` (which must exist); returns them with their paths. */
export async function writePaperCsvs(
  labels: readonly Label[],
  outDir: string,
): Promise<(PaperCsvFile & { path: string })[]> {
  const files = paperCsvFiles(labels);
  return Promise.all(
    files.map(async (file) => {
      const path = join(outDir, file.name);
      await writeFile(path, file.text);
      return { ...file, path };
    }),
  );
}
