// The commander options of `lens`, generated from the table (lens-options.ts) and the config schema: each
// option's help is its field's `.describe()` text, the form its value takes (the field's enum for a choice)
// and the field's default.
import { type Command, Option } from 'commander';
import { z } from 'zod';
import { ExperimentConfigSchema, formatPath } from '../config/index.js';
import { LENS_OPTIONS, type LensOptionSpec, optionLabel } from './lens-options.js';

/** What the config schema says about one field. */
export interface SchemaField {
  description: string | undefined;
  /** The field's `.default()`, when it has one. */
  default?: { value: unknown };
  /** The values of its enum (or of the enum in its union). */
  choices: readonly string[] | undefined;
}

/** Peels `.optional()`, `.default()` and `.prefault()` off a schema, gathering its description and default. */
function unwrap(schema: z.ZodType): { inner: z.ZodType; description?: string; default?: { value: unknown } } {
  let inner = schema;
  let description: string | undefined;
  let fallback: { value: unknown } | undefined;
  for (;;) {
    description ??= inner.description;
    if (inner instanceof z.ZodDefault) fallback ??= { value: inner.def.defaultValue };
    if (inner instanceof z.ZodDefault || inner instanceof z.ZodOptional || inner instanceof z.ZodPrefault) {
      inner = inner.unwrap() as z.ZodType;
    } else {
      return { inner, description, default: fallback };
    }
  }
}

/** The field of the experiment config schema at `path`; undefined when the schema has none there. */
export function schemaField(path: readonly string[]): SchemaField | undefined {
  let field = unwrap(ExperimentConfigSchema);
  for (const key of path) {
    if (!(field.inner instanceof z.ZodObject)) return undefined;
    const child = field.inner.shape[key] as z.ZodType | undefined;
    if (child === undefined) return undefined;
    field = unwrap(child);
  }
  const { inner } = field;
  const enumOf = (schema: unknown): readonly string[] | undefined =>
    schema instanceof z.ZodEnum ? (schema.options as string[]) : undefined;
  const choices =
    enumOf(inner) ?? (inner instanceof z.ZodUnion ? inner.options.map(enumOf).find(Boolean) : undefined);
  return { description: field.description, default: field.default, choices };
}

/** A `.describe()` text may end with `; default: ...`, for a field whose default needs words. */
const DEFAULT_SAID = '; default: ';

function showDefault(value: unknown): string {
  if (Array.isArray(value)) return value.join(',');
  if (value === '') return '""';
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  return String(value);
}

// Config fields named in a description become the options that set them (`stage2.model` → --stage2-model).
const FIELD_NAMES = LENS_OPTIONS.filter((spec) => spec.path.length > 1).map(
  (spec) => [formatPath(spec.path), optionLabel(spec)] as const,
);
const withOptionNames = (text: string): string =>
  FIELD_NAMES.reduce((out, [field, label]) => out.replaceAll(field, label), text);

/** How the value is written on the command line, after the field's description. */
function valueForm(spec: LensOptionSpec, field: SchemaField): string | undefined {
  if (spec.repeatable) return undefined; // the description says how it repeats
  switch (spec.parse) {
    case 'choice': {
      if (!field.choices) throw new Error(`${optionLabel(spec)}: ${formatPath(spec.path)} has no enum`);
      const bare = spec.bare === undefined ? '' : `; the flag alone = ${spec.bare}`;
      return `${field.choices.join('|')}${bare}`;
    }
    case 'ints':
      return 'comma-separated';
    case 'size':
      return 'S or HxW';
    case 'int-or-text':
      return field.choices ? `${field.choices.join('|')}|N` : undefined;
    case 'int-or-auto':
      return 'auto|N';
    case 'mix':
      return 'A,B,ALPHA';
    default:
      return undefined;
  }
}

/**
 * The help of one option: `denoising steps (default: the model's: SD 50, IF 100)`. Throws when the
 * schema has no such field, or says nothing about it or its default.
 */
export function optionHelp(spec: LensOptionSpec): string {
  const field = schemaField(spec.path);
  const where = `${optionLabel(spec)}: config field ${formatPath(spec.path)}`;
  if (!field) throw new Error(`${where} is not in the config schema`);
  if (!field.description) throw new Error(`${where} has no .describe() text`);
  const said = field.description.lastIndexOf(DEFAULT_SAID);
  const meaning = said < 0 ? field.description : field.description.slice(0, said);
  const fallback =
    said >= 0
      ? field.description.slice(said + DEFAULT_SAID.length)
      : field.default && showDefault(field.default.value);
  if (fallback === undefined) throw new Error(`${where} has no default, and its description names none`);
  const form = valueForm(spec, field);
  return withOptionNames(`${meaning}${form ? `; ${form}` : ''} (default: ${fallback})`);
}

/** Adds the table's options to `command`, in its order. */
export function addLensOptions(command: Command): Command {
  for (const spec of LENS_OPTIONS) {
    const option = new Option(spec.flags, optionHelp(spec));
    // Each repeat adds one item: `--lora a.safetensors --lora b.safetensors:0.5`.
    if (spec.repeatable) option.argParser((value: string, items?: string[]) => [...(items ?? []), value]);
    command.addOption(option);
    if (spec.negatable) {
      const label = optionLabel(spec);
      command.addOption(new Option(`--no-${label.slice(2)}`, `the opposite of ${label}: false`));
    }
  }
  return command;
}
