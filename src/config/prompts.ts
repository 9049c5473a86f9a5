// Prompt lists: inline, or from a .csv (a named column) or .txt (one per line) file next to the config.
import { readFile } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import { CsvSyntaxError, parseCsv } from './csv.js';
import { ConfigError, type ConfigIssue, listIndexes, repeats, timesListed } from './errors.js';
import { type PromptSetSpec, promptSetOfFile } from './prompt-sets.js';
import type { ExperimentConfig, PromptFileSpec } from './schema.js';
import { decodeUtf8 } from './text.js';

export interface LoadPromptsOptions {
  /** Folder that relative prompt files are resolved against (the config file's folder); default cwd. */
  configDir?: string;
  /** Where `prompts` was written (for error locations). */
  locate?: (path: ReadonlyArray<string | number>) => Pick<ConfigIssue, 'file' | 'line'>;
}

function fail(issue: ConfigIssue): never {
  throw new ConfigError(issue);
}

/** Reads the prompts of a `.txt` file: one per line; blank lines and `#` comments skipped. */
export function parsePromptText(text: string): { line: number; prompt: string }[] {
  const out: { line: number; prompt: string }[] = [];
  const src = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  src.split(/\r\n|\n|\r/).forEach((raw, i) => {
    const prompt = raw.trim();
    if (prompt !== '' && !prompt.startsWith('#')) out.push({ line: i + 1, prompt });
  });
  return out;
}

/** A prompt list with the other columns of its CSV file, row by row (see loadPromptSet). */
export interface PromptSet {
  prompts: string[];
  /** The CSV's other columns in header order (not the prompt column); [] for .txt files and inline lists. */
  columns: string[];
  /** rows[i]: prompt i's values of `columns`. */
  rows: Record<string, string>[];
  /** The prompt set the file is (the `sets.yaml` beside it lists it: its category and questions); null
   *  for other files and inline lists. */
  set: PromptSetSpec | null;
}

/** One prompt of a file, with its line and (CSV) its other columns' values. */
interface PromptEntry {
  line: number;
  prompt: string;
  values: Record<string, string>;
}

/** At most this many issues of one kind are listed; the rest are counted. */
const MAX_LISTED = 10;

function failAll(issues: ConfigIssue[], more: (count: number) => string): void {
  if (issues.length === 0) return;
  const listed = issues.slice(0, MAX_LISTED);
  const [first] = issues;
  if (issues.length > MAX_LISTED && first) {
    listed.push({ ...first, message: more(issues.length - MAX_LISTED) });
  }
  throw new ConfigError(listed);
}

/** `lines 3 and 7`, `lines 3, 7 and 9`. */
function listLines(lines: readonly number[]): string {
  return lines.length === 1
    ? `line ${lines[0]}`
    : `lines ${lines.slice(0, -1).join(', ')} and ${lines.at(-1)}`;
}

/** Refuses a prompt that a file lists more than once: `"a cat" is listed twice (lines 3 and 7 of p.csv)`. */
function refuseRepeats(
  entries: readonly PromptEntry[],
  file: string,
  where: Pick<ConfigIssue, 'file' | 'line'>,
) {
  const issues = repeats(entries.map((entry) => entry.prompt)).map(([prompt, at]): ConfigIssue => {
    const lines = at.map((i) => entries[i]?.line ?? 0);
    return {
      path: ['prompts'],
      ...where,
      message: `${JSON.stringify(prompt)} is listed ${timesListed(at.length)} (${listLines(lines)} of ${file})`,
    };
  });
  failAll(issues, (n) => `and ${n} more prompts listed more than once in ${file}`);
}

/**
 * Reads a CSV prompt table: the prompts of its `column` (header row first) and the other columns' values.
 * `where` locates the `column` setting (for a missing column), `rowWhere` the file setting (for rows of
 * the wrong width); other row errors name the file and the row's line.
 */
function parsePromptTable(
  text: string,
  column: string,
  file: string,
  where: Pick<ConfigIssue, 'file' | 'line'> = {},
  rowWhere: Pick<ConfigIssue, 'file' | 'line'> = where,
): { columns: string[]; entries: PromptEntry[] } {
  let rows: ReturnType<typeof parseCsv>;
  try {
    rows = parseCsv(text);
  } catch (error) {
    if (error instanceof CsvSyntaxError)
      fail({ path: ['prompts'], file, line: error.line, message: error.message });
    throw error;
  }
  const header = rows[0];
  if (!header) {
    fail({ path: ['prompts', 'file'], ...rowWhere, message: `${file} is empty (expected a header row)` });
  }
  const columns = header.fields.map((c) => c.trim());
  const index = columns.indexOf(column);
  if (index < 0) {
    fail({
      path: ['prompts', 'column'],
      ...where,
      message: `column "${column}" not found in ${file}; columns found: ${columns.map((c) => `"${c}"`).join(', ')}`,
    });
  }
  const repeated = columns.find((c, i) => columns.indexOf(c) !== i);
  if (repeated !== undefined) {
    fail({
      path: ['prompts'],
      ...rowWhere,
      message: `${file} line ${header.line}: column "${repeated}" is in the header twice`,
    });
  }
  const data = rows.slice(1);
  failAll(
    data
      .filter((row) => row.fields.length !== columns.length)
      .map((row) => ({
        path: ['prompts'],
        ...rowWhere,
        message: `${file} line ${row.line}: ${row.fields.length} field${row.fields.length === 1 ? '' : 's'}, the header has ${columns.length}`,
      })),
    (n) => `and ${n} more rows of ${file} whose number of fields is not the header's`,
  );
  const others = columns.map((name, i) => ({ name, i })).filter(({ i }) => i !== index);
  const entries = data.map((row) => {
    const prompt = (row.fields[index] ?? '').trim();
    if (prompt === '')
      fail({ path: ['prompts'], file, line: row.line, message: `empty prompt in column "${column}"` });
    const values: Record<string, string> = {};
    for (const { name, i } of others) values[name] = (row.fields[i] ?? '').trim();
    return { line: row.line, prompt, values };
  });
  return { columns: others.map(({ name }) => name), entries };
}

/**
 * Reads the prompts of a CSV file's `column` (header row first). Throws ConfigError for a missing column
 * or a row whose number of fields is not the header's (`p.csv line 5: 3 fields, the header has 4`).
 */
export function parsePromptCsv(
  text: string,
  column: string,
  file: string,
  where: Pick<ConfigIssue, 'file' | 'line'> = {},
): { line: number; prompt: string }[] {
  return parsePromptTable(text, column, file, where).entries.map(({ line, prompt }) => ({ line, prompt }));
}

async function readPromptTable(spec: PromptFileSpec, options: LoadPromptsOptions): Promise<PromptSet> {
  const where = options.locate?.(['prompts', 'file']) ?? {};
  const path = resolve(options.configDir ?? process.cwd(), spec.file);
  const ext = extname(path).toLowerCase();
  if (ext !== '.csv' && ext !== '.txt') {
    fail({ path: ['prompts', 'file'], ...where, message: `"${spec.file}" must be a .csv or .txt file` });
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : (error as Error).message;
    fail({ path: ['prompts', 'file'], ...where, message: `cannot read "${spec.file}" (${path}): ${why}` });
  }
  const name = basename(path);
  const decoded = decodeUtf8(bytes);
  if ('error' in decoded) {
    fail({ path: ['prompts'], file: name, line: decoded.line, message: `${name} ${decoded.error}` });
  }
  const { text } = decoded;
  const { columns, entries } =
    ext === '.csv'
      ? parsePromptTable(text, spec.column, name, options.locate?.(['prompts', 'column']) ?? where, where)
      : { columns: [], entries: parsePromptText(text).map((e) => ({ ...e, values: {} })) };
  if (entries.length === 0) fail({ path: ['prompts'], ...where, message: `${name} has no prompts` });
  refuseRepeats(entries, name, where);
  const set = ext === '.csv' ? await promptSetOfFile(path, columns) : null;
  return { prompts: entries.map((e) => e.prompt), columns, rows: entries.map((e) => e.values), set };
}

/**
 * Reads a prompt file (.csv or .txt), path relative to `configDir`. Throws ConfigError for a prompt listed
 * twice (`"a cat" is listed twice (lines 3 and 7 of p.csv)`), ragged CSV rows and empty files.
 */
export async function readPromptFile(
  spec: PromptFileSpec,
  options: LoadPromptsOptions = {},
): Promise<string[]> {
  return (await readPromptTable(spec, options)).prompts;
}

/**
 * The config's prompts with the other columns of their CSV file: inline ones, or those read from its file.
 * A prompt listed twice is an error (it would make the same images twice): for a file the message names
 * its lines, for an inline list its indexes (`"a cat" is listed twice (prompts[0] and prompts[3])`).
 */
export async function loadPromptSet(
  prompts: ExperimentConfig['prompts'],
  options: LoadPromptsOptions = {},
): Promise<PromptSet> {
  if (!Array.isArray(prompts)) return readPromptTable(prompts, options);
  if (prompts.length === 0)
    fail({ path: ['prompts'], ...options.locate?.(['prompts']), message: 'no prompts' });
  const issues = repeats(prompts).map(
    ([prompt, at]): ConfigIssue => ({
      path: ['prompts'],
      ...options.locate?.(['prompts', at[1] ?? 0]),
      message: `${JSON.stringify(prompt)} is listed ${timesListed(at.length)} (${listIndexes('prompts', at)})`,
    }),
  );
  failAll(issues, (n) => `and ${n} more prompts listed more than once`);
  return { prompts: [...prompts], columns: [], rows: prompts.map(() => ({})), set: null };
}

/** The config's prompts as a list (loadPromptSet without the other columns). */
export async function loadPrompts(
  prompts: ExperimentConfig['prompts'],
  options: LoadPromptsOptions = {},
): Promise<string[]> {
  return (await loadPromptSet(prompts, options)).prompts;
}
