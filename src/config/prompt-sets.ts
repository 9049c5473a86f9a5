// The index of the prompt sets in the paper's categories (configs/prompts/sets.yaml): per set its CSV file,
// category, description, row count, columns and per-image questions. loadPromptSets reads the index and
// every set's file and checks them against each other; renderQuestion fills a question in for one prompt.
import { readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { packageRoot } from '../paths.js';
import { CsvSyntaxError, parseCsv } from './csv.js';
import { ConfigError, type ConfigIssue, type FieldPath, repeats, timesListed } from './errors.js';
import { type Locator, parseYaml } from './load.js';
import { decodeUtf8 } from './text.js';

/** The index shipped with the package: configs/prompts/sets.yaml. */
export const PROMPT_SETS_FILE = join(packageRoot, 'configs', 'prompts', 'sets.yaml');

/** The column of every set's file that holds the prompts (a run's default `prompts.column`). */
export const PROMPT_COLUMN = 'prompt';

const SNAKE_CASE = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;
const snakeCase = (what: string) =>
  z.string().regex(SNAKE_CASE, `${what} must be snake_case (lower-case letters, digits and _)`);

export const PromptSetColumnSchema = z
  .strictObject({
    name: snakeCase('a column name'),
    description: z.string().min(1),
    /** `number`: every value parses as a finite number. */
    type: z.enum(['text', 'number']).default('text'),
    /** A categorical column: the values it may take. */
    values: z.array(z.string().min(1)).min(1).optional(),
  })
  .refine((column) => !(column.type === 'number' && column.values), {
    message: 'a column has either `values` (categorical) or `type: number`, not both',
  });

/**
 * A contrast of a question's CLIP texts: a template filled in for the row, or `{vary: column}`: the `right`
 * template with that column set to each other value it takes (its `values`, else those of the set's rows),
 * skipping the values this row has in the `except` columns (what the image rightly shows too).
 */
export const ClipContrastSchema = z.union([
  z.string().min(1),
  z.strictObject({
    vary: snakeCase('a column name'),
    except: z.array(snakeCase('a column name')).optional(),
  }),
]);

/** How the clip scorer answers a question: is the image closer to `right` than to every contrast text? */
export const ClipTextsSpecSchema = z.strictObject({
  /** What an image for which the answer is yes shows: a template, e.g. `a photo of {a object}`. */
  right: z.string().min(1),
  contrast: z.array(ClipContrastSchema).min(1),
});

export const PromptSetQuestionSchema = z.strictObject({
  id: snakeCase('a question id'),
  /** A template: `{column}` is the row's value, `{a column}` the value with its indefinite article. */
  text: z.string().min(1),
  /** The answer an image that is correct for its prompt gives. */
  expected: z.enum(['yes', 'no']).default('yes'),
  /** The texts the clip scorer compares the image with (the scorer refuses questions without). */
  clip: ClipTextsSpecSchema.optional(),
});

export const PromptSetSpecSchema = z.strictObject({
  id: snakeCase('a set id'),
  /** The set's CSV file, in the index's folder. */
  file: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*\.csv$/, 'must be the name of a .csv file in the same folder'),
  category: z.string().min(1),
  description: z.string().min(1),
  /** How many prompts (rows) the file has. */
  count: z.number().int().positive(),
  /** The file's columns besides `prompt`: all of them, each exactly once. */
  columns: z.array(PromptSetColumnSchema),
  questions: z.array(PromptSetQuestionSchema).min(1),
});

export const PromptSetIndexSchema = z.strictObject({
  version: z.literal(1),
  sets: z.array(PromptSetSpecSchema).min(1),
});

export type PromptSetColumn = z.infer<typeof PromptSetColumnSchema>;
export type PromptSetQuestion = z.infer<typeof PromptSetQuestionSchema>;
export type ClipContrast = z.infer<typeof ClipContrastSchema>;
export type ClipTextsSpec = z.infer<typeof ClipTextsSpecSchema>;
export type PromptSetSpec = z.infer<typeof PromptSetSpecSchema>;
export type PromptSetIndex = z.infer<typeof PromptSetIndexSchema>;

/** One prompt of a set: its line in the CSV file and its values of the declared columns. */
export interface PromptSetRow {
  line: number;
  prompt: string;
  values: Record<string, string>;
}

/** A set with its prompts, as loadPromptSets returns it. */
export interface LoadedPromptSet extends PromptSetSpec {
  /** The CSV file's path (absolute). */
  path: string;
  rows: PromptSetRow[];
}

/** A question filled in for one prompt. */
export interface RenderedQuestion {
  id: string;
  text: string;
  expected: 'yes' | 'no';
}

// ---------------------------------------------------------------------------------------------------------
// Templates

/** A template's placeholder: `{column}`, or `{a column}` (with an indefinite article). */
export interface Placeholder {
  column: string;
  article: boolean;
}

const PLACEHOLDER = /^(?:(a) )?([a-z][a-z0-9_]*)$/;

/**
 * The placeholders of a question template, in order, and what is wrong with its braces: a brace without
 * its partner, or braces around something that is not `column` or `a column`.
 */
export function parseTemplate(text: string): { placeholders: Placeholder[]; errors: string[] } {
  const placeholders: Placeholder[] = [];
  const errors: string[] = [];
  for (const match of text.matchAll(/\{([^{}]*)\}|[{}]/g)) {
    const inner = match[1];
    if (inner === undefined) {
      errors.push(`unmatched "${match[0]}" at character ${match.index + 1}`);
      continue;
    }
    const parts = PLACEHOLDER.exec(inner);
    if (parts?.[2]) placeholders.push({ column: parts[2], article: parts[1] !== undefined });
    else errors.push(`{${inner}} is not a placeholder (write {column} or {a column})`);
  }
  return { placeholders, errors };
}

/** Vowel-letter words said with a consonant sound, and h-words with a silent h. */
const A_BEFORE_VOWEL = /^(?:uni|use|usu|uti|ure|uro|eu|ewe|one|once)/;
const AN_BEFORE_H = /^(?:hour|honest|honou?r|heir)/;

/** The indefinite article of a word or phrase ("a" lamp, "an" owl, "a" unicorn, "an" hour), by spelling. */
export function indefiniteArticle(phrase: string): 'a' | 'an' {
  const word = phrase.trim().toLowerCase();
  if (AN_BEFORE_H.test(word)) return 'an';
  if (A_BEFORE_VOWEL.test(word)) return 'a';
  return /^[aeiou]/.test(word) ? 'an' : 'a';
}

/**
 * Fills a question template in for one row: `{column}` becomes the value, `{a column}` the value with its
 * article. `values` holds the row's columns (and `prompt`). Throws for a bad template or a missing column.
 */
export function renderQuestion(text: string, values: Readonly<Record<string, string>>): string {
  const { errors } = parseTemplate(text);
  if (errors.length > 0) throw new Error(`bad question template ${JSON.stringify(text)}: ${errors[0]}`);
  return text.replace(/\{(?:(a) )?([a-z][a-z0-9_]*)\}/g, (_, article: string | undefined, column: string) => {
    const value = values[column];
    if (value === undefined) throw new Error(`question ${JSON.stringify(text)}: no column "${column}"`);
    return article ? `${indefiniteArticle(value)} ${value}` : value;
  });
}

/** A set's questions filled in for one of its rows. */
export function renderQuestions(
  set: Pick<PromptSetSpec, 'questions'>,
  row: Pick<PromptSetRow, 'prompt' | 'values'>,
): RenderedQuestion[] {
  const values = { ...row.values, [PROMPT_COLUMN]: row.prompt };
  return set.questions.map((q) => ({ id: q.id, text: renderQuestion(q.text, values), expected: q.expected }));
}

/** The question of a prompt that belongs to no set: does the image show what the prompt says? */
export const GENERIC_QUESTION: PromptSetQuestion = {
  id: 'matches_prompt',
  text: 'Does the image show "{prompt}"?',
  expected: 'yes',
};

/** A prompt's questions: its set's, filled in for its row, else the generic one. */
export function promptQuestions(
  set: Pick<PromptSetSpec, 'questions'> | null,
  prompt: string,
  values: Record<string, string>,
): RenderedQuestion[] {
  return renderQuestions(set ?? { questions: [GENERIC_QUESTION] }, { prompt, values });
}

/**
 * The set a prompt file is: the entry of the `sets.yaml` beside it whose `file` is the file's name, when
 * the file has exactly the entry's columns; null otherwise (no index there, an index that does not parse,
 * no entry, other columns), so that any CSV can still be a run's prompts.
 */
export async function promptSetOfFile(
  path: string,
  columns: readonly string[],
): Promise<PromptSetSpec | null> {
  let text: string;
  try {
    text = await readFile(join(dirname(path), 'sets.yaml'), 'utf8');
  } catch {
    return null;
  }
  let index: PromptSetIndex;
  try {
    index = parsePromptSetIndex(text);
  } catch {
    return null;
  }
  const spec = index.sets.find((set) => set.file === basename(path));
  if (spec === undefined) return null;
  const declared = spec.columns.map((column) => column.name);
  const same = declared.length === columns.length && declared.every((name) => columns.includes(name));
  return same ? spec : null;
}

// ---------------------------------------------------------------------------------------------------------
// The index

/** The issues of an index that its schema cannot see: repeated ids, files and columns, bad templates. */
export function indexIssues(index: PromptSetIndex): { path: FieldPath; message: string }[] {
  const issues: { path: FieldPath; message: string }[] = [];
  const repeated = (values: string[], what: string, path: (i: number) => FieldPath) => {
    for (const [value, at] of repeats(values)) {
      issues.push({
        path: path(at[1] ?? 0),
        message: `${what} "${value}" is listed ${timesListed(at.length)}`,
      });
    }
  };
  repeated(
    index.sets.map((s) => s.id),
    'set id',
    (i) => ['sets', i, 'id'],
  );
  repeated(
    index.sets.map((s) => s.file),
    'file',
    (i) => ['sets', i, 'file'],
  );
  index.sets.forEach((set, s) => {
    const names = set.columns.map((c) => c.name);
    repeated(names, 'column', (i) => ['sets', s, 'columns', i, 'name']);
    set.columns.forEach((column, c) => {
      if (column.name === PROMPT_COLUMN) {
        issues.push({
          path: ['sets', s, 'columns', c, 'name'],
          message: `"${PROMPT_COLUMN}" is every set's prompt column; list only the others`,
        });
      }
      repeated(column.values ?? [], 'value', (i) => ['sets', s, 'columns', c, 'values', i]);
    });
    repeated(
      set.questions.map((q) => q.id),
      'question id',
      (i) => ['sets', s, 'questions', i, 'id'],
    );
    const known = new Set([PROMPT_COLUMN, ...names]);
    const template = (text: string, path: FieldPath): Placeholder[] => {
      const { placeholders, errors } = parseTemplate(text);
      for (const error of errors) issues.push({ path, message: error });
      for (const { column, article } of placeholders) {
        if (!known.has(column)) {
          issues.push({
            path,
            message: `{${article ? 'a ' : ''}${column}} names no column of ${set.file}; its columns: ${[...known].join(', ')}`,
          });
        }
      }
      return placeholders;
    };
    set.questions.forEach((question, q) => {
      const at: FieldPath = ['sets', s, 'questions', q];
      template(question.text, [...at, 'text']);
      if (question.clip)
        issues.push(...clipIssues(question.clip, names, set.file, [...at, 'clip'], template));
    });
  });
  return issues;
}

/** What is wrong with a question's CLIP texts: their templates (checked by `template`), a `vary` column
 *  that is no column of the set or not in the right text (varying it would change nothing), an `except`
 *  column that is no column or the varied one. */
function clipIssues(
  clip: ClipTextsSpec,
  columns: readonly string[],
  file: string,
  at: FieldPath,
  template: (text: string, path: FieldPath) => Placeholder[],
): { path: FieldPath; message: string }[] {
  const issues: { path: FieldPath; message: string }[] = [];
  const inRight = new Set(template(clip.right, [...at, 'right']).map((p) => p.column));
  clip.contrast.forEach((contrast, c) => {
    const path: FieldPath = [...at, 'contrast', c];
    if (typeof contrast === 'string') {
      template(contrast, path);
      return;
    }
    const { vary, except = [] } = contrast;
    if (!columns.includes(vary)) {
      issues.push({
        path: [...path, 'vary'],
        message: `"${vary}" is no column of ${file}; its columns: ${columns.join(', ')}`,
      });
    } else if (!inRight.has(vary)) {
      issues.push({
        path: [...path, 'vary'],
        message: `{${vary}} is not in the right text ${JSON.stringify(clip.right)}, so varying it changes nothing`,
      });
    }
    except.forEach((column, e) => {
      if (!columns.includes(column) || column === vary) {
        issues.push({
          path: [...path, 'except', e],
          message: `"${column}" must be another column of ${file} than "${vary}"; its columns: ${columns.join(', ')}`,
        });
      }
    });
  });
  return issues;
}

function zodMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) return 'is required';
  return issue.message;
}

/**
 * Parses and checks the index's YAML (not the CSV files: see loadPromptSets). Throws ConfigError naming
 * each bad field and its line: `sets.yaml:40: sets[3].questions[1].text: {a colour} names no column ...`.
 */
export function parsePromptSetIndex(text: string, file = 'sets.yaml'): PromptSetIndex {
  return parseIndex(text, file).index;
}

function parseIndex(text: string, file: string): { index: PromptSetIndex; locate: Locator } {
  const { value, locate } = parseYaml(text, file);
  const result = PromptSetIndexSchema.safeParse(value);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
        return { path, message: zodMessage(issue), ...locate(path) };
      }),
    );
  }
  const issues = indexIssues(result.data);
  if (issues.length > 0) throw new ConfigError(issues.map((issue) => ({ ...issue, ...locate(issue.path) })));
  return { index: result.data, locate };
}

// ---------------------------------------------------------------------------------------------------------
// A set's file

/** The same prompt for duplicate purposes: case and runs of white space do not matter. */
const promptKey = (prompt: string) => prompt.trim().replace(/\s+/g, ' ').toLowerCase();

const listLines = (lines: number[]) =>
  lines.length === 1 ? `line ${lines[0]}` : `lines ${lines.slice(0, -1).join(', ')} and ${lines.at(-1)}`;

/**
 * The issues of a set's CSV text against its spec: a missing or undeclared column, a row whose width is not
 * the header's, an empty cell, a value a categorical or number column does not allow, a prompt listed twice
 * (ignoring case and spacing), a row count other than `count`. `file` names the file in the issues.
 */
export function promptSetFileIssues(
  set: PromptSetSpec,
  text: string,
  file = set.file,
): { rows: PromptSetRow[]; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const fail = (message: string, line?: number) =>
    issues.push({ path: [], label: set.id, file, ...(line === undefined ? {} : { line }), message });
  let records: ReturnType<typeof parseCsv>;
  try {
    records = parseCsv(text);
  } catch (error) {
    if (!(error instanceof CsvSyntaxError)) throw error;
    fail(error.message, error.line);
    return { rows: [], issues };
  }
  const [header, ...data] = records;
  if (!header) {
    fail('the file is empty (expected a header row)');
    return { rows: [], issues };
  }
  const names = header.fields.map((name) => name.trim());
  const declared = new Map(set.columns.map((column) => [column.name, column]));
  for (const [name] of repeats(names)) fail(`column "${name}" is in the header twice`, header.line);
  for (const name of [PROMPT_COLUMN, ...declared.keys()]) {
    if (!names.includes(name)) {
      fail(
        `column "${name}" is missing (the header has ${names.map((n) => `"${n}"`).join(', ')})`,
        header.line,
      );
    }
  }
  for (const name of names) {
    if (name !== PROMPT_COLUMN && !declared.has(name)) {
      fail(`column "${name}" is not declared in the index (declare it under columns)`, header.line);
    }
  }
  if (issues.length > 0) return { rows: [], issues };

  const rows: PromptSetRow[] = [];
  for (const record of data) {
    if (record.fields.length !== names.length) {
      fail(`${record.fields.length} fields, the header has ${names.length}`, record.line);
      continue;
    }
    const cells = new Map(names.map((name, i) => [name, (record.fields[i] ?? '').trim()]));
    const prompt = cells.get(PROMPT_COLUMN) ?? '';
    if (prompt === '') fail('empty prompt', record.line);
    const values: Record<string, string> = {};
    for (const column of set.columns) {
      const value = cells.get(column.name) ?? '';
      values[column.name] = value;
      if (value === '') fail(`${column.name} is empty`, record.line);
      else if (column.values && !column.values.includes(value)) {
        fail(`${column.name} "${value}" is not one of ${column.values.join(', ')}`, record.line);
      } else if (column.type === 'number' && !Number.isFinite(Number(value))) {
        fail(`${column.name} "${value}" is not a number`, record.line);
      }
    }
    rows.push({ line: record.line, prompt, values });
  }
  for (const [, at] of repeats(rows.map((row) => promptKey(row.prompt)))) {
    const first = rows[at[0] ?? 0];
    const lines = at.map((i) => rows[i]?.line ?? 0);
    fail(
      `${JSON.stringify(first?.prompt)} is listed ${timesListed(at.length)} (${listLines(lines)})`,
      lines[1],
    );
  }
  if (data.length !== set.count) {
    fail(`${data.length} prompt${data.length === 1 ? '' : 's'}, the index says count: ${set.count}`);
  }
  return { rows, issues };
}

/** At most this many issues are listed; the rest are counted. */
const MAX_LISTED = 20;

function throwAll(issues: ConfigIssue[]): void {
  if (issues.length === 0) return;
  const listed = issues.slice(0, MAX_LISTED);
  if (issues.length > MAX_LISTED) {
    listed.push({ path: [], message: `and ${issues.length - MAX_LISTED} more issues` });
  }
  throw new ConfigError(listed);
}

/**
 * Reads the index (default: the package's configs/prompts/sets.yaml) and every set's CSV file, next to
 * it, and checks each against the other (see promptSetFileIssues). Throws one ConfigError listing every
 * issue found, in the index and in all files.
 */
export async function loadPromptSets(indexFile: string = PROMPT_SETS_FILE): Promise<LoadedPromptSet[]> {
  const path = resolve(indexFile);
  let text: string;
  try {
    text = utf8Text(await readFile(path), indexFile);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError({ path: [], file: indexFile, message: `cannot read: ${readError(error)}` });
  }
  const { index, locate } = parseIndex(text, indexFile);
  const issues: ConfigIssue[] = [];
  const sets: LoadedPromptSet[] = [];
  for (const [s, set] of index.sets.entries()) {
    const csvPath = join(dirname(path), set.file);
    const display = join(dirname(indexFile), set.file);
    let csv: string;
    try {
      csv = utf8Text(await readFile(csvPath), display);
    } catch (error) {
      if (error instanceof ConfigError) {
        issues.push(...error.issues.map((issue) => ({ ...issue, label: set.id })));
        continue;
      }
      issues.push({
        path: ['sets', s, 'file'],
        message: `cannot read ${display}: ${readError(error)}`,
        ...locate(['sets', s, 'file']),
      });
      continue;
    }
    const checked = promptSetFileIssues(set, csv, display);
    issues.push(...checked.issues);
    sets.push({ ...set, path: csvPath, rows: checked.rows });
  }
  throwAll(issues);
  return sets;
}

/** A file's bytes as UTF-8 text; a ConfigError naming the file and line where they are not. */
function utf8Text(bytes: Uint8Array, file: string): string {
  const decoded = decodeUtf8(bytes);
  if ('error' in decoded)
    throw new ConfigError({ path: [], file, line: decoded.line, message: decoded.error });
  return decoded.text;
}

function readError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : (error as Error).message;
}
