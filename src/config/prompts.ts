// Prompt lists: inline, or from a .csv (a named column) or .txt (one per line) file next to the config.
import { readFile } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import { CsvSyntaxError, parseCsv } from './csv.js';
import { ConfigError, type ConfigIssue } from './errors.js';
import type { ExperimentConfig, PromptFileSpec } from './schema.js';

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

/** Reads the prompts of a CSV file's `column` (header row first). */
export function parsePromptCsv(
  text: string,
  column: string,
  file: string,
  where: Pick<ConfigIssue, 'file' | 'line'> = {},
): { line: number; prompt: string }[] {
  let rows: ReturnType<typeof parseCsv>;
  try {
    rows = parseCsv(text);
  } catch (error) {
    if (error instanceof CsvSyntaxError)
      fail({ path: ['prompts'], file, line: error.line, message: error.message });
    throw error;
  }
  const header = rows[0];
  if (!header) fail({ path: ['prompts', 'file'], message: `${file} is empty (expected a header row)` });
  const columns = header.fields.map((c) => c.trim());
  const index = columns.indexOf(column);
  if (index < 0) {
    fail({
      path: ['prompts', 'column'],
      ...where,
      message: `column "${column}" not found in ${file}; columns found: ${columns.map((c) => `"${c}"`).join(', ')}`,
    });
  }
  return rows.slice(1).map((row) => {
    const prompt = row.fields[index]?.trim();
    if (prompt === undefined) {
      fail({
        path: ['prompts'],
        file,
        line: row.line,
        message: `row has ${row.fields.length} fields, no "${column}" (column ${index + 1})`,
      });
    }
    if (prompt === '')
      fail({ path: ['prompts'], file, line: row.line, message: `empty prompt in column "${column}"` });
    return { line: row.line, prompt };
  });
}

/** Reads a prompt file (.csv or .txt), path relative to `configDir`. */
export async function readPromptFile(
  spec: PromptFileSpec,
  options: LoadPromptsOptions = {},
): Promise<string[]> {
  const where = options.locate?.(['prompts', 'file']) ?? {};
  const path = resolve(options.configDir ?? process.cwd(), spec.file);
  const ext = extname(path).toLowerCase();
  if (ext !== '.csv' && ext !== '.txt') {
    fail({ path: ['prompts', 'file'], ...where, message: `"${spec.file}" must be a .csv or .txt file` });
  }
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : (error as Error).message;
    fail({ path: ['prompts', 'file'], ...where, message: `cannot read "${spec.file}" (${path}): ${why}` });
  }
  const name = basename(path);
  const entries =
    ext === '.csv'
      ? parsePromptCsv(text, spec.column, name, options.locate?.(['prompts', 'column']) ?? where)
      : parsePromptText(text);
  if (entries.length === 0) fail({ path: ['prompts'], ...where, message: `${name} has no prompts` });
  return entries.map((e) => e.prompt);
}

/**
 * The config's prompts as a list: inline ones, or those read from its file. Repeated prompts are kept
 * once (first occurrence), since they would make the same images.
 */
export async function loadPrompts(
  prompts: ExperimentConfig['prompts'],
  options: LoadPromptsOptions = {},
): Promise<string[]> {
  const list = Array.isArray(prompts) ? prompts : await readPromptFile(prompts, options);
  if (list.length === 0) fail({ path: ['prompts'], ...options.locate?.(['prompts']), message: 'no prompts' });
  return [...new Set(list)];
}
