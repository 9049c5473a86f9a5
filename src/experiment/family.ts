// A run's settings against what the worker reports of the model's family (`ready.families`,
// `loaded.capabilities`) rather than constants of our own: whether it has a stage II, its schedulers,
// its kind of guidance and its own options (JSON Schemas, read with zod). Checked before the model
// loads where the config names the family, and again once it has loaded.
import { z } from 'zod';
import type { FamilyCapabilities, FamilyOptions, FamilyOptionsKind, LoadedMessage } from '../bridge/index.js';
import {
  ConfigError,
  type ConfigIssue,
  type ExperimentConfig,
  FAMILY_OPTION_SHORTCUTS,
  type FieldPath,
  issueAt,
  nearest,
  resolveStages,
} from '../config/index.js';

/** ` (did you mean "euler"?)` when `word` looks like a typo of one of `choices`. */
function didYouMean(word: string, choices: readonly string[]): string {
  const best = nearest(word, choices);
  return best === undefined ? '' : ` (did you mean "${best}"?)`;
}

/** A family's options of each kind, defaults filled in (load: as the worker resolved them). */
export type ResolvedFamilyOptions = Record<FamilyOptionsKind, FamilyOptions>;

export const NO_FAMILY_OPTIONS: ResolvedFamilyOptions = { load: {}, sample: {}, stage2: {} };

/** Where each kind of option is written in a config. */
const OPTIONS_FIELD: Record<FamilyOptionsKind, readonly ['model' | 'sampler' | 'stage2', 'family_options']> =
  {
    load: ['model', 'family_options'],
    sample: ['sampler', 'family_options'],
    stage2: ['stage2', 'family_options'],
  };

/** The options of a kind as the config gives them (its map and the shortcuts), with the field of each. */
export function configuredOptions(
  config: ExperimentConfig,
  kind: FamilyOptionsKind,
): { values: FamilyOptions; fields: Map<string, FieldPath> } {
  const [section] = OPTIONS_FIELD[kind];
  const values: Record<string, unknown> = { ...(config[section].family_options ?? {}) };
  const fields = new Map<string, FieldPath>(
    Object.keys(values).map((name) => [name, [...OPTIONS_FIELD[kind], name]]),
  );
  for (const shortcut of FAMILY_OPTION_SHORTCUTS) {
    if (shortcut.options[0] !== section) continue;
    const [, name] = shortcut.path;
    const value = (config[section] as Record<string, unknown>)[name];
    if (value === undefined || value === shortcut.unset) continue;
    values[name] = value;
    fields.set(name, shortcut.path);
  }
  return { values, fields };
}

/** The kinds of options a run uses: stage II's only when it runs stage II. */
function kindsOf(config: ExperimentConfig): FamilyOptionsKind[] {
  return resolveStages(config).includes(2) ? ['load', 'sample', 'stage2'] : ['load', 'sample'];
}

/** Each kind's options with the family's defaults, or the issues with them. */
function parseOptions(
  config: ExperimentConfig,
  capabilities: FamilyCapabilities,
): { options: ResolvedFamilyOptions; issues: ConfigIssue[] } {
  const options: ResolvedFamilyOptions = { load: {}, sample: {}, stage2: {} };
  const issues: ConfigIssue[] = [];
  for (const kind of kindsOf(config)) {
    const { values, fields } = configuredOptions(config, kind);
    const schema = capabilities.options[kind];
    const fieldOf = (name: PropertyKey) => fields.get(String(name)) ?? [...OPTIONS_FIELD[kind], String(name)];
    const result = z.fromJSONSchema(schema as z.core.JSONSchema.JSONSchema).safeParse(values);
    if (result.success) {
      options[kind] = result.data as FamilyOptions;
      continue;
    }
    const known = Object.keys((schema.properties ?? {}) as object);
    for (const issue of result.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        const choices = known.length > 0 ? `its options here: ${known.join(', ')}` : 'it takes none here';
        for (const key of issue.keys) {
          const message = `the ${capabilities.name} family has no such option${didYouMean(key, known)} (${choices})`;
          issues.push(issueAt(config, fieldOf(key), message));
        }
      } else {
        const [name, ...rest] = issue.path;
        const path = name === undefined ? [...OPTIONS_FIELD[kind]] : [...fieldOf(name), ...rest.map(String)];
        issues.push(issueAt(config, path, issue.message));
      }
    }
  }
  return { options, issues };
}

/** Why `scheduler` (a config's, at `path`) is not one the family runs with, or null. */
function schedulerIssue(
  config: ExperimentConfig,
  capabilities: FamilyCapabilities,
  scheduler: string,
  path: FieldPath,
): ConfigIssue | null {
  if (capabilities.schedulers.includes(scheduler)) return null;
  return issueAt(
    config,
    path,
    `${JSON.stringify(scheduler)} is not a scheduler of the ${capabilities.name} family` +
      `${didYouMean(scheduler, capabilities.schedulers)}; choose one of ${capabilities.schedulers.join(', ')}`,
  );
}

/**
 * Checks the config against the family's capabilities; returns its options with the family's defaults.
 * Throws ConfigError naming each field that asks for what the family cannot do.
 */
export function checkFamily(
  config: ExperimentConfig,
  capabilities: FamilyCapabilities,
): ResolvedFamilyOptions {
  const { name } = capabilities;
  const stage2 = resolveStages(config).includes(2);
  const issues: ConfigIssue[] = [];
  if (stage2 && capabilities.stages < 2) {
    const path = config.stages === undefined ? ['stage2', 'model'] : ['stages'];
    issues.push(issueAt(config, path, `family ${name} has no stage II (its pipeline runs one stage)`));
  }
  const schedulers = [
    schedulerIssue(config, capabilities, config.sampler.scheduler, ['sampler', 'scheduler']),
  ];
  if (stage2)
    schedulers.push(schedulerIssue(config, capabilities, config.stage2.scheduler, ['stage2', 'scheduler']));
  issues.push(...schedulers.filter((issue) => issue !== null));
  if (capabilities.guidance === 'distilled') {
    const distilled = `family ${name} is guidance-distilled: it has no unconditional branch`;
    if (config.sampler.negative !== '') {
      issues.push(issueAt(config, ['sampler', 'negative'], `${distilled}, so no negative prompt`));
    }
    if (config.lens.uncond !== 'final')
      issues.push(issueAt(config, ['lens', 'uncond'], `${distilled} to ablate`));
  }
  const parsed = parseOptions(config, capabilities);
  issues.push(...parsed.issues);
  if (issues.length > 0) throw new ConfigError(issues);
  return parsed.options;
}

/** The options of a run on what the worker loaded (checked): the load options as the worker resolved them. */
export function familyOptionsFor(
  config: ExperimentConfig,
  loaded: Pick<LoadedMessage, 'capabilities' | 'family_options'>,
): ResolvedFamilyOptions {
  return { ...checkFamily(config, loaded.capabilities), load: loaded.family_options };
}

/** Before a load that names its family: that the worker has it, and that the config suits it. */
export function checkNamedFamily(config: ExperimentConfig, families: readonly FamilyCapabilities[]): void {
  const named = config.model.family;
  if (named === 'auto') return;
  const capabilities = families.find((family) => family.name === named);
  if (!capabilities) {
    const names = families.map((family) => family.name);
    const message =
      `unknown family ${JSON.stringify(named)}${didYouMean(named, names)}; ` +
      `choose one of auto, ${names.join(', ')}`;
    throw new ConfigError(issueAt(config, ['model', 'family'], message));
  }
  checkFamily(config, capabilities);
}

/** An option's value in a line of text: as JSON, long lists as their length (Sana's 8-line instruction). */
export function optionValueText(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  if (text.length <= 48) return text;
  return Array.isArray(value) ? `[${value.length} items]` : `${text.slice(0, 45)}...`;
}

/** `noise level 250`: options as grid labels show them. */
export function describeOptions(options: FamilyOptions): string[] {
  return Object.entries(options).map(
    ([name, value]) =>
      `${name.replaceAll('_', ' ')} ${typeof value === 'string' ? value : optionValueText(value)}`,
  );
}
