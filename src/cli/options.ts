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

export interface LensOptions {
  model?: string;
  out: string;
  layers?: string;
  seeds?: string;
  steps?: string;
  guidance?: string;
  size?: string;
  scheduler?: string;
  negative?: string;
  uncond?: string;
  noise?: string;
  maxBatch?: string;
  dtype?: string;
  device?: string;
  family?: string;
  revision?: string;
  variant?: string;
  /** `--offload` alone is `true` (= model CPU offload); `--offload MODE` a mode name. */
  offload?: boolean | string;
  /** `--clean-caption` / `--no-clean-caption`; unset = auto. */
  cleanCaption?: boolean;
  allowPickle?: boolean;
  name?: string;
  stages?: string;
  stage2Model?: string;
  stage2Revision?: string;
  stage2Steps?: string;
  stage2Guidance?: string;
  stage2Size?: string;
  stage2Scheduler?: string;
  noiseLevel?: string;
  stage2Seed?: string;
  /** `--grid-cell N`: the smallest side of a grid cell in pixels (grid.min_cell). */
  gridCell?: string;
}

/** Field → option, so that errors say `--steps` rather than `sampler.steps`. */
export const OPTION_LABELS: Record<string, string> = {
  name: '--name',
  'model.id': '--model',
  'model.family': '--family',
  'model.revision': '--revision',
  'model.variant': '--variant',
  'model.dtype': '--dtype',
  'model.device': '--device',
  'model.offload': '--offload',
  'model.clean_caption': '--clean-caption',
  'sampler.steps': '--steps',
  'sampler.guidance': '--guidance',
  'sampler.size': '--size',
  'sampler.scheduler': '--scheduler',
  'sampler.negative': '--negative',
  'lens.layers': '--layers',
  'lens.uncond': '--uncond',
  'lens.noise': '--noise',
  seeds: '--seeds',
  prompts: 'PROMPT',
  'runtime.max_batch': '--max-batch',
  stages: '--stages',
  'stage2.model': '--stage2-model',
  'stage2.revision': '--stage2-revision',
  'stage2.steps': '--stage2-steps',
  'stage2.guidance': '--stage2-guidance',
  'stage2.size': '--stage2-size',
  'stage2.scheduler': '--stage2-scheduler',
  'stage2.noise_level': '--noise-level',
  'stage2.seed': '--stage2-seed',
  'grid.min_cell': '--grid-cell',
};

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

/** A number when the text is one; else the text, so that validation reports what was given. */
export function numberOrText(text: string): number | string {
  const trimmed = text.trim();
  return NUMBER.test(trimmed) ? Number(trimmed) : text;
}

/** A plain decimal integer: digits with an optional leading '-' (no exponent, point, '+' or hex). */
const INTEGER = /^-?\d+$/;

/** Where a lens option's text is not an integer: one issue per bad value, gathered while building. */
class IntegerIssues {
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
    const trimmed = text.trim();
    // + 0: "-0" is 0.
    if (INTEGER.test(trimmed)) return Number(trimmed) + 0;
    return this.fail(text, path, 'must be an integer in plain digits');
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
    const parts = text.trim().toLowerCase().split('x');
    if (parts.length <= 2 && parts.every((p) => INTEGER.test(p.trim()))) {
      const sides = parts.map((p) => Number(p.trim()) + 0);
      return sides.length === 1 ? sides[0] : sides;
    }
    return this.fail(text, path, 'must be one side or HEIGHTxWIDTH in plain digits, like 512 or 512x768');
  }
}

function defined<T extends Record<string, unknown>>(object: T): Partial<T> {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * The raw config object for `lens` (before validation). Integer options that are not plain decimal
 * integers (`--seeds 1e3`) are left out of it and reported in `issues`.
 */
function buildLensInput(
  prompt: string,
  options: LensOptions,
): { input: Record<string, unknown>; issues: ConfigIssue[] } {
  const ints = new IntegerIssues();
  const int = (text: string | undefined, path: FieldPath) =>
    text === undefined ? undefined : ints.read(text, path);
  const size = (text: string | undefined, path: FieldPath) =>
    text === undefined ? undefined : ints.size(text, path);
  const list = (text: string | undefined, path: FieldPath) =>
    text === undefined ? undefined : ints.list(text, path);
  const input = defined({
    name: options.name,
    model: defined({
      id: options.model,
      family: options.family,
      revision: options.revision,
      variant: options.variant,
      dtype: options.dtype,
      device: options.device,
      // A bare `--offload` is model CPU offload, as it was when the option was a switch.
      offload: options.offload === true ? 'model' : options.offload,
      clean_caption: options.cleanCaption,
      allow_pickle: options.allowPickle,
    }),
    sampler: defined({
      steps: int(options.steps, ['sampler', 'steps']),
      guidance: options.guidance === undefined ? undefined : numberOrText(options.guidance),
      size: size(options.size, ['sampler', 'size']),
      scheduler: options.scheduler,
      negative: options.negative,
    }),
    lens: defined({ layers: options.layers, uncond: options.uncond, noise: options.noise }),
    seeds: list(options.seeds, ['seeds']),
    prompts: [prompt],
    runtime: defined({
      max_batch: int(options.maxBatch, ['runtime', 'max_batch']),
    }),
    stages: list(options.stages, ['stages']),
    stage2: defined({
      model: options.stage2Model,
      revision: options.stage2Revision,
      steps: int(options.stage2Steps, ['stage2', 'steps']),
      guidance: options.stage2Guidance === undefined ? undefined : numberOrText(options.stage2Guidance),
      size: size(options.stage2Size, ['stage2', 'size']),
      scheduler: options.stage2Scheduler,
      noise_level: int(options.noiseLevel, ['stage2', 'noise_level']),
      // "same" or a seed: anything else is passed on for the schema to say so.
      seed:
        options.stage2Seed === undefined
          ? undefined
          : INTEGER.test(options.stage2Seed.trim())
            ? Number(options.stage2Seed.trim()) + 0
            : options.stage2Seed,
    }),
    grid: defined({ min_cell: int(options.gridCell, ['grid', 'min_cell']) }),
  });
  return { input, issues: ints.issues };
}

/** The raw config object for `lens` (before validation); integer options that are not integers are left out. */
export function lensConfigInput(prompt: string, options: LensOptions): Record<string, unknown> {
  return buildLensInput(prompt, options).input;
}

// Issues in the order of the config's sections (the order `lens --help` lists the options in).
const SECTIONS: readonly string[] = Object.keys(ExperimentConfigSchema.shape);
const sectionOf = (issue: ConfigIssue): number => {
  const i = SECTIONS.indexOf(String(issue.path[0] ?? ''));
  return i < 0 ? SECTIONS.length : i;
};

/**
 * Validates `lens` options as a config; throws ConfigError naming the option, e.g.
 * `--seeds: must be an integer in plain digits (got "1e3")`.
 */
export function lensConfig(prompt: string, options: LensOptions): ExperimentConfig {
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
