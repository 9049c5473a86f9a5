// Config errors: each issue names the field (and, for files, the file and line).

export type FieldPath = ReadonlyArray<string | number>;

export interface ConfigIssue {
  /** Path of the bad field in the config, e.g. ['prompts', 2]; [] for the whole config. */
  path: FieldPath;
  /** What is wrong, e.g. 'unexpected key "modle"'. */
  message: string;
  /** The file the field came from (config or prompt file), when known. */
  file?: string;
  /** 1-based line (and column) in that file, when known. */
  line?: number;
  column?: number;
  /** How to name the field instead of its path (e.g. a CLI option, `--steps`). */
  label?: string;
}

/** Formats a field path the way users write it: `model.id`, `prompts[2]`, `sampler.size[1]`. */
export function formatPath(path: FieldPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${part}` : part;
  }
  return out;
}

/** One issue as one line: `exp.yaml:7: prompts[2]: must not be empty`. */
export function formatIssue(issue: ConfigIssue): string {
  let where = '';
  if (issue.file) {
    where = issue.file;
    if (issue.line !== undefined) where += `:${issue.line}`;
    where += ': ';
  }
  const field = issue.label ?? formatPath(issue.path);
  return `${where}${field ? `${field}: ` : ''}${issue.message}`;
}

/** Each value a list holds more than once, with its positions, in order of first appearance. */
export function repeats<T>(values: readonly T[]): [T, number[]][] {
  const positions = new Map<T, number[]>();
  values.forEach((value, i) => {
    const seen = positions.get(value);
    if (seen) seen.push(i);
    else positions.set(value, [i]);
  });
  return [...positions].filter(([, at]) => at.length > 1);
}

/** How often a value is listed: "twice", "3 times". */
export function timesListed(count: number): string {
  return count === 2 ? 'twice' : `${count} times`;
}

/** `prompts[0] and prompts[3]`, `prompts[0], prompts[3] and prompts[5]`. */
export function listIndexes(name: string, indexes: readonly number[]): string {
  const items = indexes.map((i) => `${name}[${i}]`);
  return items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] ?? 0;
      row[j] = Math.min(cur + 1, (row[j - 1] ?? 0) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length] ?? 0;
}

/** The candidate `word` is most likely a typo of, when one is near enough. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  const best = candidates
    .map((k) => ({ k, d: editDistance(word.toLowerCase(), k) }))
    .sort((a, b) => a.d - b.d)[0];
  return best && best.d <= Math.max(2, Math.floor(word.length / 3)) ? best.k : undefined;
}

/** A bad config, prompt file or option; `message` has one line per issue. */
export class ConfigError extends Error {
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[] | ConfigIssue) {
    const list = Array.isArray(issues) ? issues : [issues];
    super(list.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = list;
  }

  /** The first bad field, formatted (`lens.layers`). */
  get field(): string {
    return formatPath(this.issues[0]?.path ?? []);
  }
}
