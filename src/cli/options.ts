// `diffusion-lens lens PROMPT ...`: the command-line options become a config object, validated by the
// same schema as a config file (errors name the option).
import {
  ConfigError,
  type ConfigIssue,
  type ExperimentConfig,
  ExperimentConfigSchema,
  type FieldPath,
  formatPath,
  parseConfig,
} from '../config/index.js';
import {
  LENS_OPTIONS,
  type LensOptionSpec,
  type LensOptionValues,
  optionKey,
  optionLabel,
  type ParserName,
} from './lens-options.js';

/** The options of `lens`: the table's, and the output folder (`-o, --out`, not a config field). */
export type LensCommandOptions = LensOptionValues & { out: string };

/** Field → option, so that errors say `--steps` rather than `sampler.steps`. */
export const OPTION_LABELS: Record<string, string> = Object.fromEntries([
  ...LENS_OPTIONS.map((spec) => [formatPath(spec.path), optionLabel(spec)]),
  ['prompts', 'PROMPT'],
]);

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

/** A number when the text is one; else the text, so that validation reports what was given. */
export function numberOrText(text: string): number | string {
  const trimmed = text.trim();
  return NUMBER.test(trimmed) ? Number(trimmed) : text;
}

/** A plain decimal integer: digits with an optional leading '-' (no exponent, point, '+' or hex). */
const INTEGER = /^-?\d+$/;

/** The number of a plain decimal integer, else undefined. */
function plainInteger(text: string): number | undefined {
  const trimmed = text.trim();
  // + 0: "-0" is 0.
  return INTEGER.test(trimmed) ? Number(trimmed) + 0 : undefined;
}

/** Where a lens option's text cannot be read (not an integer, ...): one issue per bad value, gathered
 *  while building. */
class ValueIssues {
  readonly issues: ConfigIssue[] = [];

  private fail(text: string, path: FieldPath, expected: string): undefined {
    const label = OPTION_LABELS[formatPath(path)];
    this.issues.push({
      path,
      message: `${expected} (got ${JSON.stringify(text)})`,
      ...(label ? { label } : {}),
    });
    return undefined;
  }

  /** The number of a plain decimal integer; else records an issue on `path` and returns undefined. */
  read(text: string, path: FieldPath): number | undefined {
    return plainInteger(text) ?? this.fail(text, path, 'must be an integer in plain digits');
  }

  /** `auto`, or the number of a plain decimal integer; else records an issue and returns undefined. */
  autoOrInteger(text: string, path: FieldPath): number | 'auto' | undefined {
    if (text.trim() === 'auto') return 'auto';
    return plainInteger(text) ?? this.fail(text, path, 'must be auto or an integer in plain digits');
  }

  /** `0,1,2,3` → [0, 1, 2, 3]; undefined (and an issue per bad item) when an item is not an integer. */
  list(text: string, path: FieldPath): number[] | undefined {
    const items = text
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '')
      .map((s) => this.read(s, path));
    return items.every((n) => n !== undefined) ? (items as number[]) : undefined;
  }

  /** `512` → 512; `512x768` (height x width) → [512, 768]; undefined (and an issue) otherwise. */
  size(text: string, path: FieldPath): number | number[] | undefined {
    const sides = text.trim().toLowerCase().split('x').map(plainInteger);
    if (sides.length <= 2 && sides.every((side) => side !== undefined)) {
      return sides.length === 1 ? sides[0] : sides;
    }
    return this.fail(text, path, 'must be one side or HEIGHTxWIDTH in plain digits, like 512 or 512x768');
  }

  /**
   * `4,8,0.5` → {layers: [4, 8], alpha: 0.5} (a layer may be `stock`; the schema checks the values);
   * undefined (and an issue) when it is not two layers and a number.
   */
  mix(text: string, path: FieldPath): { layers: (number | 'stock')[]; alpha: number } | undefined {
    const parts = text.split(',').map((part) => part.trim());
    const layer = (part: string) => (part.toLowerCase() === 'stock' ? 'stock' : plainInteger(part));
    const layers = parts.slice(0, 2).map(layer);
    const alpha = parts[2] ?? '';
    if (parts.length === 3 && layers.every((l) => l !== undefined) && NUMBER.test(alpha)) {
      return { layers: layers as (number | 'stock')[], alpha: Number(alpha) };
    }
    return this.fail(
      text,
      path,
      'must be A,B,ALPHA: two layers (integers, -1 = L, or stock) and the weight of the second, 0..1, ' +
        'like 4,8,0.5',
    );
  }
}

type Parser = (text: string, path: FieldPath, ints: ValueIssues) => unknown;

/** Each way of reading an option's text (see ParserName); undefined = left out (an issue is recorded). */
const PARSERS: Record<Exclude<ParserName, 'switch'>, Parser> = {
  text: (text) => text,
  choice: (text) => text,
  int: (text, path, ints) => ints.read(text, path),
  ints: (text, path, ints) => ints.list(text, path),
  number: (text) => numberOrText(text),
  size: (text, path, ints) => ints.size(text, path),
  'int-or-text': (text) => plainInteger(text) ?? text,
  'int-or-auto': (text, path, ints) => ints.autoOrInteger(text, path),
  mix: (text, path, ints) => ints.mix(text, path),
  names: (text) =>
    text.trim() === 'all'
      ? 'all'
      : text
          .split(',')
          .map((name) => name.trim())
          .filter((name) => name !== ''),
};

function parseOption(spec: LensOptionSpec, given: string | boolean | string[], ints: ValueIssues): unknown {
  // A switch, or an optional value given alone (`--offload` = `--offload model`).
  if (typeof given === 'boolean' || spec.parse === 'switch') {
    return given === true && spec.bare !== undefined ? spec.bare : given;
  }
  const parse = PARSERS[spec.parse];
  // A repeatable option: one item per time it was given.
  if (Array.isArray(given)) return given.map((text, i) => parse(text, [...spec.path, i], ints));
  return parse(given, spec.path, ints);
}

/** Sets `value` at `path` in `object`, making the objects on the way. */
function setPath(object: Record<string, unknown>, path: readonly string[], value: unknown): void {
  const [key, ...rest] = path;
  if (key === undefined) return;
  if (rest.length === 0) {
    object[key] = value;
    return;
  }
  object[key] ??= {};
  setPath(object[key] as Record<string, unknown>, rest, value);
}

/**
 * The raw config object for `lens` (before validation). Integer options that are not plain decimal
 * integers (`--seeds 1e3`) are left out of it and reported in `issues`.
 */
function buildLensInput(
  prompt: string,
  options: LensOptionValues,
): { input: Record<string, unknown>; issues: ConfigIssue[] } {
  const ints = new ValueIssues();
  const input: Record<string, unknown> = { prompts: [prompt] };
  const given = options as Record<string, string | boolean | string[] | undefined>;
  for (const spec of LENS_OPTIONS) {
    const text = given[optionKey(spec)];
    if (text === undefined) continue;
    const value = parseOption(spec, text, ints);
    if (value !== undefined) setPath(input, spec.path, value);
  }
  return { input, issues: ints.issues };
}

/** The raw config object for `lens` (before validation); integer options that are not integers are left out. */
export function lensConfigInput(
  prompt: string,
  options: Partial<LensCommandOptions>,
): Record<string, unknown> {
  return buildLensInput(prompt, options).input;
}

// Issues in the order of the config's sections (the order `lens --help` lists the options in).
const SECTIONS: readonly string[] = Object.keys(ExperimentConfigSchema.shape);
const sectionOf = (issue: ConfigIssue): number => {
  const i = SECTIONS.indexOf(String(issue.path[0] ?? ''));
  return i < 0 ? SECTIONS.length : i;
};

/**
 * Validates `lens` options as a config (`out` is not part of it); throws ConfigError naming the option, e.g.
 * `--seeds: must be an integer in plain digits (got "1e3")`.
 */
export function lensConfig(prompt: string, options: Partial<LensCommandOptions>): ExperimentConfig {
  const { input, issues } = buildLensInput(prompt, options);
  let config: ExperimentConfig | undefined;
  try {
    config = parseConfig(input, { labels: OPTION_LABELS });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    issues.push(...error.issues);
  }
  if (issues.length > 0 || config === undefined) {
    throw new ConfigError([...issues].sort((a, b) => sectionOf(a) - sectionOf(b)));
  }
  return config;
}
