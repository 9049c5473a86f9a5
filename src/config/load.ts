// Config validation (parseConfig) and YAML loading (loadConfigFile), with errors that name the field
// and, for files, the line.
import { readFile } from 'node:fs/promises';
import { basename, dirname, extname, resolve } from 'node:path';
import { type Document, isMap, isScalar, isSeq, LineCounter, type Node, parseDocument, visit } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigIssue, type FieldPath, formatPath, nearest } from './errors.js';
import { type ExperimentConfig, ExperimentConfigSchema } from './schema.js';
import { decodeUtf8 } from './text.js';

/** Maps a config field to where it was written. */
export type Locator = (path: FieldPath, key?: boolean) => Pick<ConfigIssue, 'file' | 'line' | 'column'>;

export interface ConfigSource {
  /** The config file (absolute), when the config came from one. */
  file?: string;
  /** Folder for relative paths in the config (prompt files, local models). */
  dir?: string;
  locate?: Locator;
  /** Display names for fields (CLI options), as given to parseConfig. */
  labels?: Record<string, string>;
}

export { nearest };

const sources = new WeakMap<object, ConfigSource>();

/** Where a config object came from (set by loadConfigFile / parseConfig); undefined for other objects. */
export function configSource(config: object): ConfigSource | undefined {
  return sources.get(config);
}

/** The file/line of a config field, when the config came from a file. */
export function locateField(config: object, path: FieldPath): Pick<ConfigIssue, 'file' | 'line' | 'column'> {
  return sources.get(config)?.locate?.(path) ?? {};
}

/**
 * An issue with a field of a parsed config found later (e.g. against what the worker reports), named as
 * parseConfig would name it: by its file and line, or by the CLI option that set it.
 */
export function issueAt(config: object, path: FieldPath, message: string): ConfigIssue {
  const source = sources.get(config);
  const label = source?.labels ? labelFor(source.labels, formatPath(path)) : undefined;
  return { path, message, ...(source?.locate?.(path) ?? {}), ...(label ? { label } : {}) };
}

export interface ParseConfigOptions {
  /** Where the input came from (for error locations and relative paths). */
  source?: ConfigSource;
  /** Display names for fields (e.g. `{'sampler.steps': '--steps'}` for CLI options). */
  labels?: Record<string, string>;
}

type ZodIssue = z.core.$ZodIssue;

function valueAt(input: unknown, path: FieldPath): unknown {
  let value = input;
  for (const part of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string | number, unknown>)[part];
  }
  return value;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `"${value.length > 40 ? `${value.slice(0, 40)}...` : value}"`;
  return String(value);
}

const EXPECTED: Record<string, string> = {
  int: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping',
  tuple: 'a list',
};

type AnySchema = z.core.$ZodType;

// The schemas a value at `path` may have to match (union branches apart, wrappers removed).
function schemasAt(path: FieldPath): AnySchema[] {
  let schemas: AnySchema[] = [ExperimentConfigSchema];
  const unwrap = (s: AnySchema): AnySchema[] => {
    const def = s._zod.def as unknown as Record<string, unknown>;
    if (def.innerType) return unwrap(def.innerType as AnySchema);
    if (def.type === 'pipe') return unwrap(def.in as AnySchema);
    if (def.type === 'union') return (def.options as AnySchema[]).flatMap(unwrap);
    return [s];
  };
  for (const part of [...path, null]) {
    schemas = schemas.flatMap(unwrap);
    if (part === null) break;
    schemas = schemas.flatMap((s) => {
      const def = s._zod.def as unknown as {
        shape?: Record<string, AnySchema>;
        element?: AnySchema;
        items?: AnySchema[];
      };
      // Own keys only: a key such as "constructor" or "__proto__" is no field.
      const child =
        typeof part === 'string'
          ? def.shape && Object.hasOwn(def.shape, part)
            ? def.shape[part]
            : undefined
          : (def.element ?? (def.items ? def.items[part] : undefined));
      return child ? [child] : [];
    });
  }
  return schemas;
}

// Schema keys at a path, for "did you mean" hints.
function knownKeys(path: FieldPath): string[] {
  return schemasAt(path).flatMap((s) =>
    Object.keys((s._zod.def as unknown as { shape?: object }).shape ?? {}),
  );
}

// True when a number at `path` must be an integer (every number the schema allows there is one).
function integerField(path: FieldPath): boolean {
  const numeric = schemasAt(path).flatMap((s) => {
    const def = s._zod.def as unknown as { type: string; checks?: AnySchema[]; values?: unknown[] };
    if (def.type === 'number') {
      const formats = (def.checks ?? []).map((c) => (c._zod.def as { format?: string }).format);
      return [formats.some((f) => f === 'safeint' || f === 'int32' || f === 'uint32')];
    }
    if (def.type === 'literal') {
      const numbers = (def.values ?? []).filter((v) => typeof v === 'number');
      return numbers.length > 0 ? [numbers.every((v) => Number.isInteger(v))] : [];
    }
    return [];
  });
  return numeric.length > 0 && numeric.every(Boolean);
}

function suggestion(key: string, path: FieldPath): string {
  const keys = knownKeys(path);
  const best = nearest(key, keys);
  if (best) return ` (did you mean "${best}"?)`;
  return keys.length > 0 ? ` (allowed: ${keys.join(', ')})` : '';
}

const DEFAULT_MESSAGE = /^(Invalid|Too small|Too big|Unrecognized)/;

interface RawIssue {
  path: FieldPath;
  message: string;
  /** Locate the key itself rather than its value (unknown keys). */
  key?: boolean;
  /** Where to locate the issue instead of `path` (e.g. the second of two equal seeds). */
  at?: FieldPath;
  /** Left out when the same field has another issue (the safe-integer range, beside a field's own bound). */
  weak?: boolean;
}

function convertIssue(issue: ZodIssue, input: unknown, base: FieldPath = []): RawIssue[] {
  const path = [...base, ...(issue.path as (string | number)[])];
  const value = valueAt(input, path);
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => ({
        path: [...path, key],
        key: true,
        message: `unexpected key "${key}"${suggestion(key, path)}`,
      }));
    case 'invalid_union': {
      // Report the branch that matched the value's type (e.g. the list branch for a list of prompts).
      const matching = issue.errors.filter(
        (branch) => !branch.some((i) => i.code === 'invalid_type' && i.path.length === 0),
      );
      const [only] = matching;
      if (matching.length === 1 && only) return only.flatMap((i) => convertIssue(i, input, path));
      return [
        { path, message: value === undefined ? 'is required' : `${issue.message} (got ${describe(value)})` },
      ];
    }
    case 'invalid_type': {
      if (value === undefined) return [{ path, message: 'is required' }];
      if (typeof value === 'number' && issue.expected === 'number') {
        return [{ path, message: `must be a finite number (got ${describe(value)})` }];
      }
      const expected = EXPECTED[issue.expected] ?? issue.expected;
      return [{ path, message: `must be ${expected} (got ${describe(value)})` }];
    }
    case 'invalid_value':
      // A schema's own message (e.g. for a value that may also be a boolean) says more than the list.
      if (!DEFAULT_MESSAGE.test(issue.message)) {
        return [{ path, message: `${issue.message} (got ${describe(value)})` }];
      }
      return [
        {
          path,
          message: `must be one of ${issue.values.map((v) => String(v)).join(', ')} (got ${describe(value)})`,
        },
      ];
    case 'too_small': {
      if (!DEFAULT_MESSAGE.test(issue.message)) return [{ path, message: issue.message }];
      if (issue.origin === 'int' && issue.minimum === Number.MIN_SAFE_INTEGER) {
        return [
          {
            path,
            weak: true,
            message: `is too small for an integer (at least -(2^53 - 1); got ${describe(value)})`,
          },
        ];
      }
      if (issue.origin === 'array' || issue.origin === 'string') {
        return [{ path, message: Number(issue.minimum) <= 1 ? 'must not be empty' : issue.message }];
      }
      return [
        {
          path,
          message: `must be ${issue.inclusive ? '>=' : '>'} ${issue.minimum} (got ${describe(value)})`,
        },
      ];
    }
    case 'too_big':
      if (issue.origin === 'int' && issue.maximum === Number.MAX_SAFE_INTEGER) {
        return [
          {
            path,
            weak: true,
            message: `is too large for an integer (at most 2^53 - 1; got ${describe(value)})`,
          },
        ];
      }
      if (issue.origin === 'number' || issue.origin === 'int') {
        return [
          {
            path,
            message: `must be ${issue.inclusive ? '<=' : '<'} ${issue.maximum} (got ${describe(value)})`,
          },
        ];
      }
      return [{ path, message: issue.message }];
    case 'custom': {
      const at = (issue.params as { at?: FieldPath } | undefined)?.at;
      return [{ path, message: issue.message, ...(at ? { at: [...path, ...at] } : {}) }];
    }
    case 'not_multiple_of':
      return [{ path, message: `must be a multiple of ${issue.divisor} (got ${describe(value)})` }];
    default:
      return [{ path, message: issue.message }];
  }
}

// The label of the longest labelled field that `field` is in (`seeds[2]` → the label of `seeds`).
function labelFor(labels: Record<string, string>, field: string): string | undefined {
  let best: string | undefined;
  for (const key of Object.keys(labels)) {
    const inside = field === key || field.startsWith(`${key}.`) || field.startsWith(`${key}[`);
    if (inside && (best === undefined || key.length > best.length)) best = key;
  }
  return best === undefined ? undefined : labels[best];
}

/**
 * The first value that holds itself (a YAML alias inside its own anchor: `a: &x [*x]`), which no config
 * field may (the run would recurse forever writing it out), or the first key named `__proto__` (which a
 * mapping of names such as `sweep` or `family_options` would otherwise drop without a word); undefined
 * when there is none. Values met twice elsewhere (an anchor used twice) are fine. Iterative: no depth is
 * too deep.
 */
function structureIssue(input: unknown): { path: FieldPath; message: string; key?: FieldPath } | undefined {
  const done = new Set<object>();
  const open = new Set<object>();
  type Frame = { value: object; path: FieldPath; keys: (string | number)[]; next: number };
  const enter = (value: object, path: FieldPath): Frame => {
    open.add(value);
    const keys = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
    return { value, path, keys, next: 0 };
  };
  if (input === null || typeof input !== 'object') return undefined;
  const stack: Frame[] = [enter(input, [])];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1] as Frame;
    if (frame.next >= frame.keys.length) {
      stack.pop();
      open.delete(frame.value);
      done.add(frame.value);
      continue;
    }
    const key = frame.keys[frame.next++] as string | number;
    if (key === '__proto__') {
      return { path: frame.path, key: [...frame.path, key], message: 'unexpected key "__proto__"' };
    }
    const child = (frame.value as Record<string | number, unknown>)[key];
    if (child === null || typeof child !== 'object' || done.has(child)) continue;
    if (open.has(child)) {
      return {
        path: [...frame.path, key],
        message: 'holds itself (a YAML alias inside its own anchor); write the value out',
      };
    }
    stack.push(enter(child, [...frame.path, key]));
  }
  return undefined;
}

/**
 * Validates a config object (parsed YAML/JSON, or built by the CLI) and fills in defaults. Throws
 * ConfigError with one issue per bad field.
 */
export function parseConfig(input: unknown, options: ParseConfigOptions = {}): ExperimentConfig {
  const { source, labels } = options;
  if (input === null || input === undefined) {
    throw new ConfigError({ path: [], file: source?.file, message: 'the config is empty' });
  }
  const bad = structureIssue(input);
  if (bad !== undefined) {
    const where = bad.key ? source?.locate?.(bad.key, true) : source?.locate?.(bad.path);
    throw new ConfigError({
      path: bad.path,
      message: bad.message,
      ...(where ?? (source?.file ? { file: source.file } : {})),
    });
  }
  const result = ExperimentConfigSchema.safeParse(input);
  if (!result.success) {
    const raws = result.error.issues.flatMap((issue) => convertIssue(issue, input));
    const strong = new Set(raws.filter((raw) => !raw.weak).map((raw) => formatPath(raw.path)));
    const issues: ConfigIssue[] = raws
      .filter((raw) => !(raw.weak && strong.has(formatPath(raw.path))))
      .map((raw) => {
        // Unknown keys are reported on their parent ("model: unexpected key ...").
        const fieldPath = raw.key ? raw.path.slice(0, -1) : raw.path;
        const label = labels ? labelFor(labels, formatPath(fieldPath)) : undefined;
        const issue: ConfigIssue = {
          path: fieldPath,
          message: raw.message,
          ...(source?.locate?.(raw.at ?? raw.path, raw.key) ?? (source?.file ? { file: source.file } : {})),
        };
        if (label) issue.label = label;
        return issue;
      });
    issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    throw new ConfigError(issues);
  }
  if (source || labels) sources.set(result.data, { ...source, ...(labels ? { labels } : {}) });
  return result.data;
}

/**
 * A YAML text as a document, its value and a locator of its fields (file and line of a path); a
 * ConfigError naming the line of each syntax error, or of an alias that names no anchor or expands the
 * document too far (see yamlValue).
 */
export function parseYaml(text: string, file: string): { doc: Document; locate: Locator; value: unknown } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((error) => ({
        path: [],
        file,
        line: error.linePos?.[0]?.line,
        column: error.linePos?.[0]?.col,
        message: `invalid YAML: ${yamlErrorText(error.message)}`,
      })),
    );
  }
  return { doc, locate: yamlLocator(doc, lines, file), value: yamlValue(doc, lines, file) };
}

function yamlErrorText(message: string): string {
  const text = (message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
  // The parser recurses once per level of nesting; JavaScript's stack ends somewhere under a thousand.
  if (/Maximum call stack size exceeded/.test(text)) return 'nested too deeply';
  if (/multiple documents/.test(text)) return 'the file holds more than one document (a second "---")';
  return text;
}

/** How far aliases may expand a document: the yaml package's count (alias uses x the aliases they name). */
const MAX_ALIAS_COUNT = 100;

/**
 * A parsed YAML document's value. Refuses, as a ConfigError naming the file and the alias's line, an alias
 * that names no anchor before it (`model: *base` without `&base`), and a document whose aliases would
 * expand it beyond MAX_ALIAS_COUNT (a "billion laughs" bomb of nested aliases), rather than letting the
 * yaml package's ReferenceError (or an exhausted stack) through.
 */
function yamlValue(doc: Document, lines: LineCounter, file: string): unknown {
  try {
    return doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    if (!(error instanceof ReferenceError || error instanceof RangeError)) throw error;
    // "Unresolved alias (the anchor must be set before the alias): NAME"
    const unresolved = /^Unresolved alias[^:]*: ?(.*)$/s.exec(error.message);
    let where: Pick<ConfigIssue, 'file' | 'line' | 'column'> = { file };
    visit(doc, {
      Alias(_key, node) {
        if (unresolved && node.source !== unresolved[1]) return undefined;
        const offset = node.range?.[0];
        if (offset !== undefined) {
          const pos = lines.linePos(offset);
          where = { file, line: pos.line, column: pos.col };
        }
        return visit.BREAK;
      },
    });
    let message: string;
    if (error instanceof RangeError) message = 'invalid YAML: nested too deeply';
    else if (unresolved) {
      const name = JSON.stringify(unresolved[1]);
      message = `invalid YAML: the alias *${name.slice(1, -1)} names no anchor (&${name.slice(1, -1)}) before it`;
    } else if (/Excessive alias count/.test(error.message)) {
      message = 'invalid YAML: its aliases expand it too far (an alias bomb?); write the values out';
    } else message = `invalid YAML: ${error.message}`;
    throw new ConfigError({ path: [], ...where, message });
  }
}

function yamlLocator(doc: Document, lines: LineCounter, file: string): Locator {
  return (path, key) => {
    // Walk down as far as the document goes; point at the deepest node found.
    let node: unknown = doc.contents;
    let offset: number | undefined = (node as Node | null)?.range?.[0];
    for (let i = 0; i < path.length; i++) {
      const part = path[i];
      const last = i === path.length - 1;
      if (!node || typeof node !== 'object') break;
      const items = (node as { items?: unknown[] }).items;
      if (!items) break;
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === part);
        if (!pair) break;
        const keyNode = pair.key as Node | null;
        if (last && key) {
          offset = keyNode?.range?.[0] ?? offset;
          break;
        }
        node = pair.value;
        offset = (pair.value as Node | null)?.range?.[0] ?? keyNode?.range?.[0] ?? offset;
      } else if (typeof part === 'number') {
        node = items[part];
        if (!node) break;
        offset = (node as Node).range?.[0] ?? offset;
      } else {
        break;
      }
    }
    if (offset === undefined) return { file };
    const pos = lines.linePos(offset);
    return { file, line: pos.line, column: pos.col };
  };
}

const PLAIN_INTEGER = /^-?\d+$/;

/**
 * Numbers written other than in plain digits (`1e3`, `8.0`, `0x10`) where the schema wants an integer:
 * YAML reads `1e3` as the float 1000, which the schema cannot tell from `1000`.
 */
function integerLiteralIssues(doc: Document, locate: Locator): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const visit = (node: unknown, path: FieldPath): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? pair.key.value : undefined;
        if (typeof key === 'string') visit(pair.value, [...path, key]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => {
        visit(item, [...path, i]);
      });
    } else if (isScalar(node) && typeof node.value === 'number' && Number.isInteger(node.value)) {
      const source = (node.source ?? String(node.value)).trim();
      if (node.type === 'PLAIN' && !PLAIN_INTEGER.test(source) && integerField(path)) {
        issues.push({ path, message: `must be an integer in plain digits (got ${source})`, ...locate(path) });
      }
    }
  };
  visit(doc.contents, []);
  return issues;
}

/**
 * Reads and validates a YAML (or JSON) experiment file. `name` defaults to the file name; relative paths
 * in it (prompt file, local model) are resolved against the file's folder later, by the runner.
 */
export async function loadConfigFile(path: string): Promise<ExperimentConfig> {
  const file = resolve(path);
  const display = path;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : (error as Error).message;
    throw new ConfigError({ path: [], file: display, message: `cannot read the config: ${why}` });
  }
  const decoded = decodeUtf8(bytes);
  if ('error' in decoded) {
    throw new ConfigError({
      path: [],
      file: display,
      line: decoded.line,
      message: `the config ${decoded.error}`,
    });
  }
  const { text } = decoded;
  const { doc, locate, value: input } = parseYaml(text, display);
  const source: ConfigSource = { file: display, dir: dirname(file), locate };
  if (input === null || input === undefined) {
    throw new ConfigError({ path: [], file: display, message: 'the config is empty' });
  }
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new ConfigError({
      path: [],
      file: display,
      line: 1,
      message: 'the config must be a mapping of keys',
    });
  }
  const literalIssues = integerLiteralIssues(doc, source.locate as Locator);
  let config: ExperimentConfig;
  try {
    config = parseConfig(input, { source });
  } catch (error) {
    if (!(error instanceof ConfigError) || literalIssues.length === 0) throw error;
    // One issue per field: the literal's says more than the schema's about the same number.
    const taken = new Set(literalIssues.map((issue) => formatPath(issue.path)));
    const issues = [...literalIssues, ...error.issues.filter((issue) => !taken.has(formatPath(issue.path)))];
    issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    throw new ConfigError(issues);
  }
  if (literalIssues.length > 0) throw new ConfigError(literalIssues);
  if (config.name === undefined) {
    const named = { ...config, name: basename(file, extname(file)) };
    sources.set(named, source);
    return named;
  }
  return config;
}
