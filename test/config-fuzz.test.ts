// Property-based fuzzing (fast-check) of what users write: configs (random YAML text, bytes, deep
// nesting, alias bombs, valid configs with one field made wrong at every path of the schema, shipped
// configs with their text garbled), sweeps, layer specs, prompt files and the prompt-set index. Each
// input is accepted or refused with a ConfigError that names the field (a mutated field by its dotted
// path) or the file and line: never a TypeError, RangeError or other internal error, never a hang. The
// seed is fixed (FUZZ_SEED=<n> explores others); the figures are printed as one line at the end.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYamlText, stringify } from 'yaml';
import {
  ConfigError,
  configSource,
  type ExperimentConfig,
  type FieldPath,
  formatPath,
  loadConfigFile,
  loadPromptSet,
  loadPromptSets,
  parseConfig,
  parseLayerSpec,
  resolveLayers,
  toJsonSchema,
} from '../src/config/index.js';
import { expandSweep } from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const tempDir = tempDirs('dlens-fuzz-');

const SEED = Number(process.env.FUZZ_SEED ?? 1407);
/** No case may take longer (a "hang"); a sync loop cannot be interrupted, so each case is timed. */
const CASE_LIMIT_MS = 2_000;

// ---------------------------------------------------------------------------------------------------------
// Outcomes and figures

type Group = 'configs' | 'layer specs' | 'prompt files' | 'prompt-set indexes';

const figures = {
  cases: 0,
  groups: { configs: 0, 'layer specs': 0, 'prompt files': 0, 'prompt-set indexes': 0 } as Record<
    Group,
    number
  >,
  accepted: 0,
  /** Refused, the first issue naming a field (its path or CLI label). */
  field: 0,
  /** Refused, naming the file and line (YAML syntax, encodings, a file that is no mapping). */
  line: 0,
  /** Refused, naming the file only (an empty config). */
  file: 0,
  internal: 0,
  slow: 0,
  slowestMs: 0,
};

type Outcome<T> = { ok: true; value: T } | { ok: false; error: ConfigError };

/** Runs one case: returns its value or its ConfigError; anything else (or a slow case) fails the test. */
async function attempt<T>(group: Group, what: string, run: () => Promise<T> | T): Promise<Outcome<T>> {
  figures.cases++;
  figures.groups[group]++;
  const start = performance.now();
  let outcome: Outcome<T>;
  try {
    outcome = { ok: true, value: await run() };
  } catch (error) {
    if (!(error instanceof ConfigError)) {
      figures.internal++;
      throw new Error(`${what}: an internal error, not a ConfigError:\n${(error as Error)?.stack ?? error}`);
    }
    outcome = { ok: false, error };
  }
  const ms = performance.now() - start;
  figures.slowestMs = Math.max(figures.slowestMs, ms);
  if (ms > CASE_LIMIT_MS) {
    figures.slow++;
    throw new Error(`${what}: took ${ms.toFixed(0)} ms (limit ${CASE_LIMIT_MS} ms)`);
  }
  if (outcome.ok) figures.accepted++;
  else checkNamed(outcome.error, what);
  return outcome;
}

/** A refusal names something (a field, or a file), and reads as a message, not a stack trace. */
function checkNamed(error: ConfigError, what: string): void {
  expect(error.issues.length, what).toBeGreaterThan(0);
  expect(error.message, what).not.toMatch(/\n\s+at \S+ \(|\[object Object\]/);
  for (const [i, issue] of error.issues.entries()) {
    expect(typeof issue.message === 'string' && issue.message.length > 0, what).toBe(true);
    // After the first, an issue may count the ones left out ("and 3 more issues").
    const named = issue.path.length > 0 || issue.label !== undefined || issue.file !== undefined;
    expect(named || (i > 0 && /^and \d+ more/.test(issue.message)), `${what}: ${error.message}`).toBe(true);
  }
  const [first] = error.issues;
  if (first && (first.path.length > 0 || first.label !== undefined)) figures.field++;
  else if (first?.line !== undefined) figures.line++;
  else figures.file++;
}

function params<T>(n: number, offset: number): fc.Parameters<T> {
  return { seed: SEED + offset, numRuns: n, timeout: 20_000 };
}

afterAll(() => {
  const g = figures.groups;
  console.log(
    `config fuzz (seed ${SEED}): ${figures.cases} cases (configs ${g.configs}, layer specs ${g['layer specs']}, ` +
      `prompt files ${g['prompt files']}, prompt-set indexes ${g['prompt-set indexes']}): ` +
      `${figures.accepted} accepted, ${figures.field + figures.line + figures.file} refused ` +
      `(${figures.field} naming the field, ${figures.line} the file and line, ${figures.file} the file), ` +
      `${figures.internal} internal errors, ${figures.slow} over ${CASE_LIMIT_MS} ms ` +
      `(slowest ${figures.slowestMs.toFixed(0)} ms)`,
  );
});

// ---------------------------------------------------------------------------------------------------------
// Writing and loading configs

const dir = tempDir();
let fileCount = 0;

/** Writes a config (text or bytes) to a fresh file of the fuzz folder; returns its path. */
function writeConfig(content: string | Uint8Array, name = `c${fileCount++}.yaml`): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

type Style = 'block' | 'flow' | 'json';
const style: fc.Arbitrary<Style> = fc.constantFrom('block', 'flow', 'json');

function serialize(value: unknown, how: Style): string {
  if (how === 'json') return JSON.stringify(value, null, 1);
  return stringify(value, { collectionStyle: how === 'flow' ? 'flow' : 'any', lineWidth: 0 });
}

function valueAt(value: unknown, path: FieldPath): unknown {
  let node = value;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[part];
  }
  return node;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

/** `a` is `b` or a field inside it (`sampler` holds `sampler.size[0]`). */
function inside(a: FieldPath, b: FieldPath): boolean {
  return b.length <= a.length && b.every((part, i) => a[i] === part);
}

/** Fields whose value one check reads together (an issue of one may be reported at the other). */
const COUPLED: [string, string][] = [
  ['stages', 'stage2.model'],
  ['model.clean_caption', 'model.family_options'],
  ['stage2.noise_level', 'stage2.family_options'],
  ['lens.mix', 'lens.embeds'],
  ['lens.tokens', 'lens.embeds'],
];

function coupled(a: FieldPath, b: FieldPath): boolean {
  const [fa, fb] = [formatPath(a), formatPath(b)];
  const under = (text: string, field: string) =>
    text === field || text.startsWith(`${field}.`) || text.startsWith(`${field}[`);
  return COUPLED.some(([x, y]) => (under(fa, x) && under(fb, y)) || (under(fa, y) && under(fb, x)));
}

// ---------------------------------------------------------------------------------------------------------
// Fields of the schema (from its JSON Schema, so that every field, a new one too, is covered)

type JsonSchema = Record<string, unknown>;

interface Field {
  path: FieldPath;
  /** The schemas a value here may match (union branches apart). */
  branches: JsonSchema[];
}

function collectFields(schema: JsonSchema, path: FieldPath, out: Map<string, Field>): void {
  const anyOf = schema.anyOf as JsonSchema[] | undefined;
  if (anyOf) {
    for (const branch of anyOf) collectFields(branch, path, out);
    return;
  }
  const key = formatPath(path);
  const field = out.get(key) ?? { path, branches: [] };
  field.branches.push(schema);
  out.set(key, field);
  for (const [name, child] of Object.entries((schema.properties ?? {}) as Record<string, JsonSchema>)) {
    collectFields(child, [...path, name], out);
  }
  const prefix = schema.prefixItems as JsonSchema[] | undefined;
  if (prefix) {
    for (const [i, item] of prefix.entries()) collectFields(item, [...path, i], out);
  } else if (isPlainObject(schema.items)) collectFields(schema.items, [...path, 0], out);
}

const CONFIG_SCHEMA = toJsonSchema() as JsonSchema;
const FIELD_MAP = new Map<string, Field>();
collectFields(CONFIG_SCHEMA, [], FIELD_MAP);
const FIELDS = [...FIELD_MAP.values()];

/** Whether a value matches a JSON Schema (what it says: zod's refinements may refuse more, never less). */
function accepts(schema: JsonSchema, value: unknown): boolean {
  const anyOf = schema.anyOf as JsonSchema[] | undefined;
  if (anyOf) return anyOf.some((branch) => accepts(branch, value));
  if ('const' in schema && value !== schema.const) return false;
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) return false;
  const num = (k: string) => schema[k] as number | undefined;
  switch (schema.type) {
    case 'string':
      return typeof value === 'string' && value.length >= (num('minLength') ?? 0);
    case 'integer':
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) return false;
      if (schema.type === 'integer' && !Number.isInteger(value)) return false;
      const [min, max, step] = [num('minimum'), num('maximum'), num('multipleOf')];
      if (min !== undefined && value < min) return false;
      if (max !== undefined && value > max) return false;
      return step === undefined || value % step === 0;
    }
    case 'boolean':
      return typeof value === 'boolean';
    case 'null':
      return value === null;
    case 'array': {
      if (!Array.isArray(value)) return false;
      if (value.length < (num('minItems') ?? 0) || value.length > (num('maxItems') ?? Infinity)) return false;
      const prefix = (schema.prefixItems ?? []) as JsonSchema[];
      if (!prefix.every((item, i) => i >= value.length || accepts(item, value[i]))) return false;
      if (schema.items === false) return value.length <= prefix.length;
      return !isPlainObject(schema.items) || value.every((item) => accepts(schema.items as JsonSchema, item));
    }
    case 'object': {
      if (!isPlainObject(value)) return false;
      const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
      if (!((schema.required ?? []) as string[]).every((k) => k in value)) return false;
      for (const [k, v] of Object.entries(value)) {
        const sub = Object.hasOwn(props, k) ? props[k] : schema.additionalProperties;
        if (sub === false) return false;
        if (isPlainObject(sub) && !accepts(sub, v)) return false;
      }
      return true;
    }
    default:
      return true;
  }
}

/** A value of a schema that fills a section a mutation needs (defaults where given; `i` tells apart). */
function example(schema: JsonSchema, i = 0): unknown {
  const anyOf = schema.anyOf as JsonSchema[] | undefined;
  if ('default' in schema) return structuredClone(schema.default);
  if (anyOf) return example(anyOf[0] as JsonSchema, i);
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  switch (schema.type) {
    case 'string':
      return `x${i}`;
    case 'integer':
    case 'number': {
      const step = (schema.multipleOf as number | undefined) ?? 1;
      return ((schema.minimum as number | undefined) ?? 0) + i * step;
    }
    case 'boolean':
      return false;
    case 'array': {
      const prefix = schema.prefixItems as JsonSchema[] | undefined;
      if (prefix) return prefix.map((item, j) => example(item, j));
      return isPlainObject(schema.items) ? [example(schema.items)] : [];
    }
    case 'object': {
      const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
      const out: Record<string, unknown> = {};
      for (const key of (schema.required ?? []) as string[]) out[key] = example(props[key] ?? {});
      return out;
    }
    default:
      return null;
  }
}

/**
 * Sets `value` at `path` in a config (a copy), making the sections on the way: a missing or other-shaped
 * one is filled with its schema's example. Returns the config, and whether a section was made.
 */
function setAt(config: unknown, path: FieldPath, value: unknown): { config: unknown; made: boolean } {
  if (path.length === 0) return { config: value, made: false };
  const copy = structuredClone(config) as Record<string | number, unknown>;
  let node: Record<string | number, unknown> = copy;
  let made = false;
  for (let i = 0; i < path.length - 1; i++) {
    const part = path[i] as string | number;
    const nextIsIndex = typeof path[i + 1] === 'number';
    let child = node[part];
    const fits = nextIsIndex ? Array.isArray(child) : isPlainObject(child);
    if (!fits) {
      const field = FIELD_MAP.get(formatPath(path.slice(0, i + 1)));
      const branch = field?.branches.find((b) => b.type === (nextIsIndex ? 'array' : 'object'));
      child = branch ? example(branch) : nextIsIndex ? [] : {};
      if (nextIsIndex && Array.isArray(child) && child.length === 0) child.push(null);
      node[part] = child;
      made = true;
    }
    node = child as Record<string | number, unknown>;
  }
  node[path.at(-1) as string | number] = value;
  return { config: copy, made };
}

// ---------------------------------------------------------------------------------------------------------
// Valid configs

const word = fc.stringMatching(/^[a-z][a-z0-9_]{0,9}$/);
const text = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 }).filter((s) => s.trim() !== '');
const prompt = fc.oneof(
  word.map((w) => `a photo of a ${w}`),
  text,
);
// No key "__proto__" anywhere in a config (fast-check's JSON values have some).
const optionValue = fc.jsonValue({ maxDepth: 2 }).filter((v) => !JSON.stringify(v).includes('"__proto__"'));
const familyOptions = fc.dictionary(
  word.filter((k) => k !== 'clean_caption' && k !== 'noise_level'),
  optionValue,
  { maxKeys: 3 },
);
const size = fc.oneof(
  fc.integer({ min: 1, max: 128 }).map((n) => n * 8),
  fc
    .tuple(fc.integer({ min: 1, max: 128 }), fc.integer({ min: 1, max: 128 }))
    .map(([h, w]) => [h * 8, w * 8]),
);
const guidance = fc.double({ min: 0, max: 100, noNaN: true });
const loraSpec = fc.oneof(
  word.map((w) => `${w}.safetensors`),
  fc.tuple(word, fc.double({ min: -4, max: 4, noNaN: true })).map(([w, s]) => `${w}.safetensors:${s}`),
  fc.record({ path: word.map((w) => `loras/${w}`), scale: fc.double({ min: -4, max: 4, noNaN: true }) }),
);
const mixLayer = fc.oneof(fc.integer({ min: -12, max: 12 }), fc.constant('stock'));

const validConfig = fc
  .record(
    {
      name: word,
      model: fc.record(
        {
          id: fc.constantFrom('org/model', 'stabilityai/sd-turbo', 'models/local'),
          config: word,
          lora: fc.uniqueArray(loraSpec, {
            maxLength: 3,
            selector: (l) => (typeof l === 'string' ? l.split(':')[0] : l.path),
          }),
          family: fc.constantFrom('auto', 'sd', 'if', 'sdxl'),
          revision: word,
          dtype: fc.constantFrom('auto', 'fp32', 'fp16', 'bf16'),
          device: fc.constantFrom('auto', 'cpu', 'cuda', 'mps'),
          offload: fc.constantFrom('none', 'encoder', 'model', true, false),
          clean_caption: fc.constantFrom('auto', true, false),
          family_options: familyOptions,
          allow_pickle: fc.boolean(),
          variant: fc.constant('fp16'),
        },
        { requiredKeys: [] },
      ),
      sampler: fc.record(
        {
          steps: fc.integer({ min: 1, max: 200 }),
          guidance,
          size,
          scheduler: fc.constantFrom('default', 'euler', 'ddim'),
          negative: fc.oneof(fc.constant(''), text),
          family_options: familyOptions,
        },
        { requiredKeys: [] },
      ),
      lens: fc.record(
        {
          layers: fc.constantFrom('all', '0:4', '0,2,4', '-1', 'stock', '0%:100%:25%', '50%', 3, [0, 2]),
          uncond: fc.constantFrom('final', 'same-layer'),
          noise: fc.constantFrom('shared', 'per-layer'),
          encoders: fc.constantFrom('all', ['text_encoder'], ['text_encoder', 'text_encoder_2']),
          pooled: fc.constantFrom('final', 'same-layer', 'empty'),
          tokens: fc.oneof(fc.constantFrom('all', 'prompt', 'padding'), fc.nat(76)),
          mix: fc.record({
            layers: fc.tuple(mixLayer, mixLayer).filter(([a, b]) => a !== b),
            alpha: fc.double({ min: 0, max: 1, noNaN: true }),
          }),
          embeds: word.map((w) => `${w}.safetensors`),
        },
        { requiredKeys: [] },
      ),
      seeds: fc.uniqueArray(fc.integer({ min: 0, max: 2 ** 32 - 1 }), { minLength: 1, maxLength: 4 }),
      prompts: fc.oneof(
        fc.uniqueArray(prompt, { minLength: 1, maxLength: 4, selector: (p) => p.trim() }),
        fc.record(
          { file: fc.constantFrom('p.csv', 'prompts/p.txt'), column: word },
          { requiredKeys: ['file'] },
        ),
      ),
      runtime: fc.record(
        { max_batch: fc.oneof(fc.constant('auto'), fc.integer({ min: 1, max: 64 })) },
        { requiredKeys: [] },
      ),
      stages: fc.constantFrom([1], [1, 2]),
      stage2: fc.record(
        {
          model: fc.constant('DeepFloyd/IF-II-L-v1.0'),
          revision: word,
          steps: fc.integer({ min: 1, max: 100 }),
          guidance,
          size,
          noise_level: fc.nat(1000),
          scheduler: fc.constantFrom('default', 'ddpm'),
          seed: fc.oneof(fc.constant('same'), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
          family_options: familyOptions,
        },
        { requiredKeys: [] },
      ),
      grid: fc.record({ min_cell: fc.integer({ min: 16, max: 2048 }) }, { requiredKeys: [] }),
    },
    { requiredKeys: ['prompts'] },
  )
  .map((config) => {
    // The rules between fields: stage 2 needs its model; the embeds file takes no mix or tokens.
    const out = structuredClone(config) as unknown as Record<string, Record<string, unknown>>;
    if (Array.isArray(out.stages) && out.stages.includes(2)) out.stage2 = { ...out.stage2, model: 'if-ii' };
    const lens = out.lens;
    if (lens?.embeds !== undefined && (lens.mix !== undefined || (lens.tokens ?? 'all') !== 'all')) {
      delete lens.embeds;
    }
    return out as Record<string, unknown>;
  });

// ---------------------------------------------------------------------------------------------------------
// Mutations: one field made wrong

type Mutation =
  | { kind: 'value'; path: FieldPath; value: unknown }
  | { kind: 'unknown key'; path: FieldPath; key: string; value: unknown }
  | { kind: 'missing key'; path: FieldPath; key: string };

const HUGE = 'x'.repeat(100_000);
const anyValue = fc.oneof(
  fc.constantFrom<unknown>(
    null,
    true,
    false,
    '',
    ' ',
    'x',
    'all',
    'none',
    '\u0000',
    HUGE,
    0,
    -1,
    0.5,
    -0.5,
    2 ** 53,
    -(2 ** 53),
    1e308,
    -1e308,
    5e-324,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    [],
    [null],
    [1, 'a'],
    [[]],
    [{}],
    {},
    { a: 1 },
    { file: 'x' },
  ),
  fc.jsonValue({ maxDepth: 3 }),
  fc.string(),
  fc.integer(),
  fc.double(),
);

/** Values at a field's edges: below its minimum, above its maximum, between integers, off its step and
 *  its enum, an empty string or list, a list one too long. */
function edgeValues(field: Field): unknown[] {
  const out: unknown[] = [];
  for (const b of field.branches) {
    const min = b.minimum as number | undefined;
    const max = b.maximum as number | undefined;
    if (b.type === 'integer' || b.type === 'number') {
      if (min !== undefined) out.push(min - 1, min - 0.5);
      if (max !== undefined) out.push(max + 1, max + 0.5, max * 2);
      if (b.type === 'integer') out.push((min ?? 0) + 0.5, 1e300);
      if (b.multipleOf !== undefined) out.push((min ?? 0) + 1);
    }
    if (b.type === 'string') out.push('', ' ', 'é'.repeat(3));
    if (Array.isArray(b.enum)) {
      for (const v of b.enum) out.push(String(v).toUpperCase(), `${v} `, `${String(v).slice(1)}`);
    }
    if ('const' in b) out.push(`${b.const}x`, 3);
    if (b.type === 'array') {
      out.push([]);
      const ex = example(b);
      if (Array.isArray(ex)) out.push([...ex, ...ex, ex[0] ?? 0]);
    }
  }
  return out;
}

/** A typo of a key (one character dropped, doubled, swapped or changed), or a word. */
function typoOf(key: string, n: number, pick: number): string {
  const i = n % Math.max(1, key.length);
  switch (pick % 4) {
    case 0:
      return key.slice(0, i) + key.slice(i + 1);
    case 1:
      return key.slice(0, i) + (key[i] ?? 'x') + key.slice(i);
    case 2:
      return key.slice(0, i) + (key[i + 1] ?? '') + (key[i] ?? '') + key.slice(i + 2);
    default:
      return `${key.slice(0, i)}q${key.slice(i + 1)}`;
  }
}

function mutationsOf(field: Field): fc.Arbitrary<Mutation> {
  const value = fc
    .oneof(anyValue, ...(edgeValues(field).length > 0 ? [fc.constantFrom(...edgeValues(field))] : []))
    .map((v): Mutation => ({ kind: 'value', path: field.path, value: v }));
  const strict = field.branches.find((b) => b.type === 'object' && b.additionalProperties === false);
  const options: fc.Arbitrary<Mutation>[] = [value];
  if (strict) {
    const keys = Object.keys((strict.properties ?? {}) as object);
    options.push(
      fc
        .tuple(
          fc.constantFrom(...(keys.length > 0 ? keys : ['x'])),
          fc.nat(20),
          fc.nat(5),
          word,
          // 1e21 is an integer YAML writes as 1e+21: the plain-digits check looks up its field.
          fc.constantFrom<unknown>(1, 1e21, 'x', null, [1]),
        )
        .map(([key, n, pick, other, value]): Mutation => {
          // Now and then a name of Object.prototype, which no field has.
          const proto = ['constructor', 'toString', '__proto__'][pick - 3];
          const typo = proto ?? typoOf(key, n, pick);
          const unknown = [typo, `${other}_x`].find((k) => k !== '' && !keys.includes(k)) ?? 'zz_unknown';
          return { kind: 'unknown key', path: field.path, key: unknown, value };
        }),
    );
    const required = (strict.required ?? []) as string[];
    if (required.length > 0) {
      options.push(
        fc.constantFrom(...required).map((key): Mutation => ({ kind: 'missing key', path: field.path, key })),
      );
    }
  }
  return fc.oneof(...options);
}

/** Applies a mutation; `sure` when the schema itself (not just a refinement) refuses the result. */
function mutate(base: unknown, m: Mutation): { config: unknown; made: boolean; sure: boolean } {
  if (m.kind === 'value') return { ...setAt(base, m.path, m.value), sure: false };
  const strict = FIELD_MAP.get(formatPath(m.path))?.branches.find((b) => b.type === 'object') ?? {};
  let current = valueAt(base, m.path);
  const made = !isPlainObject(current) || !accepts(strict, current);
  if (made) current = example(strict);
  const object = { ...(current as Record<string, unknown>) };
  // defineProperty: `object.__proto__ = v` would set its prototype, not a key.
  if (m.kind === 'unknown key') Object.defineProperty(object, m.key, { value: m.value, enumerable: true });
  else delete object[m.key];
  const set = setAt(base, m.path, object);
  return { config: set.config, made: made || set.made, sure: true };
}

// ---------------------------------------------------------------------------------------------------------
// Tests

describe('config fuzzing', () => {
  it('covers every field of the schema', () => {
    const paths = FIELDS.map((f) => formatPath(f.path));
    for (const field of ['model.id', 'sampler.size[1]', 'lens.mix.alpha', 'prompts.column', 'stage2.seed']) {
      expect(paths).toContain(field);
    }
    expect(FIELDS.length).toBeGreaterThan(50);
  });

  it('accepts valid configs, in any YAML style', async () => {
    await fc.assert(
      fc.asyncProperty(validConfig, style, async (config, how) => {
        const path = writeConfig(serialize(config, how));
        const out = await attempt('configs', path, () => loadConfigFile(path));
        if (!out.ok) throw new Error(`a valid config was refused:\n${out.error.message}`);
      }),
      params(300, 1),
    );
  });

  it('names the mutated field of a config with one field made wrong, at every path of the schema', async () => {
    const runs = 40;
    for (const [n, field] of FIELDS.entries()) {
      await fc.assert(
        fc.asyncProperty(validConfig, mutationsOf(field), style, async (base, mutation, how) => {
          const { config, made, sure } = mutate(base, mutation);
          const path = writeConfig(serialize(config, how));
          const written = parseYamlText(readFileSync(path, 'utf8'));
          const what = `${formatPath(field.path) || 'the config'} (${mutation.kind}) in ${path}`;
          const mustRefuse =
            sure ||
            !field.branches.some((b) => accepts(b, valueAt(written, field.path))) ||
            !isPlainObject(written);
          const out = await attempt('configs', what, () => loadConfigFile(path));
          if (out.ok) {
            expect(mustRefuse, `${what} was accepted`).toBe(false);
            return;
          }
          for (const issue of out.error.issues) {
            const why = `${what}: ${out.error.message}`;
            // The whole config made wrong: "the config is empty" has no line.
            expect(field.path.length === 0 ? issue.file : issue.line, why).toBeDefined();
            if (field.path.length === 0) continue;
            const related =
              (issue.path.length > 0 && inside(field.path, issue.path)) ||
              inside(issue.path, field.path) ||
              (made && field.path.length > 1 && inside(issue.path, field.path.slice(0, -1))) ||
              coupled(issue.path, field.path);
            expect(related, why).toBe(true);
          }
          if (mutation.kind === 'unknown key') {
            const named = out.error.issues.some(
              (i) => inside(i.path, field.path) && i.message.includes(`"${mutation.key}"`),
            );
            expect(named, `${what}: ${out.error.message}`).toBe(true);
          }
        }),
        params(runs, 100 + n),
      );
    }
  });

  it('refuses random YAML text, bytes and tokens with the file and line, or accepts it', async () => {
    const tokens = fc.constantFrom(
      ...['{', '}', '[', ']', ', ', ': ', ':', '- ', '-', '\n', '\n  ', '\n    ', '\n- ', '? ', '&a ', '*a'],
      ...[
        '&b ',
        '*b',
        '!!str ',
        '!!int ',
        '!!float ',
        '!!map ',
        '!!seq ',
        '!!binary ',
        '!!set ',
        '!foo ',
        '!<x> ',
      ],
      ...[
        '|\n  ',
        '>-\n  ',
        '"',
        "'",
        '\\',
        '#',
        ' # c\n',
        '---\n',
        '...\n',
        '%YAML 1.1\n',
        '%TAG ! x\n',
        '<<: ',
      ],
      ...['~', 'null', 'true', 'no', 'on', '.nan', '.inf', '-.inf', '0x1F', '0o17', '0b11', '1e3', '1e999'],
      ...[
        '-0',
        '1_000',
        '99999999999999999999',
        '2001-12-14',
        '12:30:00',
        '\t',
        '\u0000',
        '\uFEFF',
        '\u2028',
      ],
      ...['@', '`', '%', '|', '>', '=', '\r', '\r\n', 'é', '😀', 'prompts', 'prompts: [a]\n', 'model', 'id'],
      ...['sampler', 'steps', 'lens', 'layers', 'seeds', 'sweep', 'lens.layers', 'family_options', 'stage2'],
      ...['__proto__', 'constructor', 'toString', 'file', 'column', 'mix', 'alpha', 'size', 'stages', 'all'],
    );
    const soup = fc
      .tuple(
        fc.boolean(),
        fc.array(fc.oneof(tokens, fc.string({ maxLength: 8 }), fc.integer().map(String)), { maxLength: 40 }),
      )
      .map(([prefix, parts]) => (prefix ? 'prompts: [a cat]\n' : '') + parts.join(''));
    const text = fc.oneof(
      { weight: 4, arbitrary: soup.map((t) => ({ text: t })) },
      { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }).map((t) => ({ text: t })) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ bytes })) },
    );
    await fc.assert(
      fc.asyncProperty(text, async (input) => {
        const path = writeConfig('text' in input ? input.text : input.bytes);
        await attempt('configs', path, () => loadConfigFile(path));
      }),
      params(800, 2),
    );
  });

  it('refuses deep nesting and alias bombs quickly, naming the file and line', async () => {
    const nested = fc
      .record({
        depth: fc.integer({ min: 1, max: 3000 }),
        how: fc.constantFrom('flow-seq', 'flow-map', 'block-seq', 'block-map'),
        at: fc.constantFrom(
          'name',
          'prompts',
          'model.family_options.x',
          'sweep.model.family_options.x',
          'lens',
        ),
      })
      .map(({ depth, how, at }) => {
        let value: string;
        if (how === 'flow-seq') value = `${'['.repeat(depth)}1${']'.repeat(depth)}`;
        else if (how === 'flow-map') value = `${'{a: '.repeat(depth)}1${'}'.repeat(depth)}`;
        else {
          const lines = Array.from(
            { length: depth },
            (_, i) => `${'  '.repeat(i + 1)}${how === 'block-seq' ? '-' : `k${i}:`}`,
          );
          value = `\n${lines.join('\n')} 1`;
        }
        const parts = at.split('.');
        if (parts[0] === 'sweep')
          return `prompts: [a]\nsweep:\n  ${parts.slice(1).join('.')}:\n    - ${value.replaceAll('\n', '\n    ')}\n`;
        const open = parts.map((p, i) => `${'  '.repeat(i)}${p}:`).join('\n');
        const body = value.replaceAll('\n', `\n${'  '.repeat(parts.length)}`);
        return `${at === 'prompts' ? '' : 'prompts: [a]\n'}${open} ${body}\n`;
      });
    const bomb = fc
      .record({
        width: fc.integer({ min: 2, max: 12 }),
        depth: fc.integer({ min: 1, max: 12 }),
        at: fc.constantFrom('name', 'model.family_options', 'sweep', 'prompts', 'x'),
        cycle: fc.boolean(),
      })
      .map(({ width, depth, at, cycle }) => {
        const lines = ['prompts: [a cat]', `${at.split('.')[0]}:`];
        const pad = at.includes('.') ? '    ' : '  ';
        if (at.includes('.')) lines.push(`  ${at.split('.')[1]}:`);
        lines.push(`${pad}l0: &l0 ["lol", "lol"]`);
        for (let d = 1; d <= depth; d++) {
          lines.push(
            `${pad}l${d}: &l${d} [${Array(width)
              .fill(`*l${d - 1}`)
              .join(', ')}]`,
          );
        }
        if (cycle) lines.push(`${pad}self: &self [*self]`);
        return { text: `${lines.join('\n')}\n`, size: width ** depth };
      });
    await fc.assert(
      fc.asyncProperty(nested, async (yamlText) => {
        const path = writeConfig(yamlText);
        await attempt('configs', path, () => loadConfigFile(path));
      }),
      params(150, 3),
    );
    await fc.assert(
      fc.asyncProperty(bomb, async ({ text: yamlText, size: expanded }) => {
        const path = writeConfig(yamlText);
        const out = await attempt('configs', path, () => loadConfigFile(path));
        if (expanded >= 10_000) {
          expect(out.ok, `${path} (${expanded} nodes) was accepted`).toBe(false);
          if (!out.ok) expect(out.error.issues[0]?.line, out.error.message).toBeDefined();
        }
      }),
      params(150, 4),
    );
  });

  it('names the sweep or the swept field of a bad sweep, in loading or expanding it', async () => {
    const fieldPaths = FIELDS.filter((f) => f.path.length > 0 && f.path.every((p) => typeof p === 'string'))
      .map((f) => (f.path as string[]).join('.'))
      .filter((p) => p !== 'name' && p !== 'sweep');
    const sweepPath = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(...fieldPaths) },
      {
        weight: 2,
        arbitrary: fc
          .tuple(fc.constantFrom(...fieldPaths), fc.nat(20), fc.nat(3))
          .map(([p, n, k]) => typoOf(p, n, k)),
      },
      { weight: 1, arbitrary: word.map((w) => `model.family_options.${w}`) },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          ...['', '.', 'a..b', 'model.', '.lens', 'name', 'sweep', 'sweep.x', '__proto__', 'constructor'],
          ...['model.toString', 'model.hasOwnProperty', 'lens.layers.x', 'seeds.0', 'prompts[0]', 'é'],
          ...['model.family_options.__proto__', 'model.family_options.a.b', 'lens.mix.layers', 'lens.mix'],
        ),
      },
    );
    const sweepValues = fc.oneof(
      { weight: 6, arbitrary: fc.array(anyValue, { minLength: 1, maxLength: 4 }) },
      { weight: 1, arbitrary: anyValue },
      { weight: 1, arbitrary: fc.constant([]) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          [1, 1],
          ['a', 'a'],
          [
            { a: 1, b: 2 },
            { b: 2, a: 1 },
          ],
        ),
      },
    );
    const sweep = fc.oneof(
      { weight: 8, arbitrary: fc.dictionary(sweepPath, sweepValues, { minKeys: 1, maxKeys: 3 }) },
      {
        weight: 1,
        // Many variants: refused when loaded (beyond 10,000), never expanded into millions.
        arbitrary: fc
          .tuple(fc.integer({ min: 5, max: 9 }), fc.integer({ min: 8, max: 20 }))
          .map(([fields, values]) =>
            Object.fromEntries(
              ['sampler.steps', 'sampler.guidance', 'runtime.max_batch', 'grid.min_cell', 'stage2.steps']
                .concat(['stage2.noise_level', 'lens.tokens', 'stage2.seed', 'model.family_options.k'])
                .slice(0, fields)
                .map((p) => [p, Array.from({ length: values }, (_, i) => i + 16)]),
            ),
          ),
      },
    );
    await fc.assert(
      fc.asyncProperty(validConfig, sweep, style, async (base, swept, how) => {
        const path = writeConfig(serialize({ ...base, sweep: swept }, how));
        const what = `${path} (sweep ${JSON.stringify(Object.keys(swept))})`;
        const out = await attempt('configs', what, async () => {
          const config = await loadConfigFile(path);
          return config.sweep ? expandSweep(config) : config;
        });
        if (out.ok) return;
        const fields = Object.keys(swept).map((p) => p.split('.'));
        for (const issue of out.error.issues) {
          // A swept value may make its section (lens.mix: {layers}), whose other fields are then missing.
          const related =
            inside(issue.path, ['sweep']) ||
            fields.some(
              (f) =>
                inside(issue.path, f) ||
                inside(f, issue.path) ||
                (f.length > 1 && inside(issue.path, f.slice(0, -1))) ||
                coupled(issue.path, f),
            );
          expect(related, `${what}: ${out.error.message}`).toBe(true);
          expect(issue.line, `${what}: ${out.error.message}`).toBeDefined();
        }
      }),
      params(500, 5),
    );
  });

  it('names lens.layers for any layer spec, and resolves good ones into layers 0..L once each', async () => {
    const int = fc.oneof(
      fc.integer({ min: -40, max: 40 }).map(String),
      fc.bigInt().map(String),
      fc.constantFrom(
        '',
        '+3',
        '-0',
        '007',
        ' 4 ',
        '99999999999999999999',
        '9007199254740993',
        '1e3',
        '0x10',
      ),
      fc.constantFrom('3.5', '١', 'abc', '100000000', '-100000000'),
    );
    const percent = fc.oneof(
      fc.double({ min: 0, max: 150, noNaN: true }).map((d) => `${d}%`),
      fc.constantFrom(
        '0%',
        '100%',
        '50%',
        '25%',
        '0.0000001%',
        '0.01%',
        '1e-5%',
        '%',
        '-5%',
        '100.5%',
        '33.333%',
      ),
    );
    const bound = fc.oneof(int, percent);
    const item = fc.oneof(
      fc.constantFrom('all', 'stock', 'STOCK', 'All', ' ', '0:100000000', '5:9007199254740993', '-1:0'),
      bound,
      fc.array(bound, { minLength: 2, maxLength: 4 }).map((parts) => parts.join(':')),
    );
    const spec = fc.oneof(
      {
        weight: 6,
        arbitrary: fc
          .tuple(fc.array(item, { maxLength: 5 }), fc.constantFrom(',', ', ', ' ,'))
          .map(([items, sep]) => items.join(sep)),
      },
      { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
      { weight: 2, arbitrary: fc.integer({ min: -60, max: 60 }) },
      { weight: 2, arbitrary: fc.array(fc.integer({ min: -60, max: 60 }), { maxLength: 8 }) },
      {
        weight: 1,
        arbitrary: fc.constantFrom<unknown>(1e300, 2 ** 53, -(2 ** 53), 0.5, [1e300], [0.5, 1], [2 ** 53]),
      },
    );
    const depth = fc
      .integer({ min: 0, max: 48 })
      .chain((L) => fc.tuple(fc.constant(L), fc.integer({ min: 0, max: L })));
    await fc.assert(
      fc.asyncProperty(spec, depth, async (layers, [L, stock]) => {
        const what = `lens.layers ${JSON.stringify(layers)} against L = ${L}, stock ${stock}`;
        const direct = await attempt('layer specs', what, () =>
          resolveLayers(parseLayerSpec(layers as string), L, stock),
        );
        if (direct.ok) {
          expect(direct.value.length, what).toBeGreaterThan(0);
          expect(new Set(direct.value).size, what).toBe(direct.value.length);
          for (const layer of direct.value)
            expect(Number.isInteger(layer) && layer >= 0 && layer <= L, what).toBe(true);
        } else {
          for (const issue of direct.error.issues) expect(formatPath(issue.path), what).toBe('lens.layers');
        }
        const path = writeConfig(stringify({ prompts: ['a cat'], lens: { layers } }));
        const loaded = await attempt('configs', `${what} in ${path}`, () => loadConfigFile(path));
        if (!loaded.ok) {
          for (const issue of loaded.error.issues) {
            expect(inside(issue.path, ['lens', 'layers']), `${what}: ${loaded.error.message}`).toBe(true);
          }
        }
      }),
      params(1500, 6),
    );
  });

  it('reads any prompt file or names prompts and the file', async () => {
    const field = fc.oneof(
      word,
      text,
      fc.constantFrom(
        '',
        ' ',
        '"',
        '""',
        '"a,b"',
        '"line\nbreak"',
        'a"b',
        '"unterminated',
        '"x"y',
        ',',
        '#c',
      ),
      fc.constantFrom('\r', 'a cat', 'a  cat', 'A cat', '\u0000', '\uFFFD', HUGE),
    );
    const header = fc.array(fc.constantFrom('prompt', 'category', 'prompt ', 'Prompt', '', 'a', '"prompt"'), {
      maxLength: 4,
    });
    const eol = fc.constantFrom('\n', '\r\n', '\r');
    const csv = fc
      .tuple(header, fc.array(fc.array(field, { maxLength: 5 }), { maxLength: 8 }), eol, fc.boolean())
      .map(
        ([head, rows, end, trailing]) =>
          [head, ...rows].map((r) => r.join(',')).join(end) + (trailing ? end : ''),
      );
    const txt = fc
      .tuple(
        fc.array(fc.oneof(prompt, field, fc.constantFrom('# comment', '   ', 'a cat')), { maxLength: 10 }),
        eol,
      )
      .map(([lines, end]) => lines.join(end));
    const encoding = fc.constantFrom('utf8', 'utf8', 'utf8', 'bom', 'utf16', 'latin1', 'junk');
    const encode = (content: string, how: string): Uint8Array => {
      if (how === 'bom') return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(content)]);
      if (how === 'utf16') return Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(content, 'utf16le')]);
      if (how === 'latin1') return Buffer.from(`${content}é`, 'latin1');
      if (how === 'junk') return Buffer.concat([Buffer.from(content), Buffer.from([0xc3, 0x28, 0xff, 0x0a])]);
      return Buffer.from(content);
    };
    const promptFile = fc.record({
      kind: fc.constantFrom('csv', 'csv', 'txt', 'missing', 'folder', 'tsv'),
      csv,
      txt,
      encoding,
      column: fc.constantFrom('prompt', 'prompt', 'category', 'missing', 'Prompt', ' prompt', ''),
      sets: fc.constantFrom('none', 'none', 'shipped', 'junk'),
    });
    let n = 0;
    await fc.assert(
      fc.asyncProperty(promptFile, async (spec) => {
        const folder = join(dir, `prompts-${n++}`);
        mkdirSync(folder);
        const name = spec.kind === 'csv' || spec.kind === 'tsv' ? `p.${spec.kind}` : 'p.txt';
        if (spec.kind === 'folder') mkdirSync(join(folder, name));
        else if (spec.kind !== 'missing') {
          writeFileSync(join(folder, name), encode(spec.kind === 'txt' ? spec.txt : spec.csv, spec.encoding));
        }
        if (spec.sets === 'shipped')
          copyFileSync(join(root, 'configs/prompts/sets.yaml'), join(folder, 'sets.yaml'));
        if (spec.sets === 'junk') writeFileSync(join(folder, 'sets.yaml'), 'version: 1\nsets: &a [*a]\n');
        const path = join(folder, 'c.yaml');
        writeFileSync(path, stringify({ prompts: { file: name, column: spec.column } }));
        const what = `${path} (${spec.kind}, ${spec.encoding})`;
        const out = await attempt('prompt files', what, async () => {
          const config: ExperimentConfig = await loadConfigFile(path);
          const locate = configSource(config)?.locate;
          return loadPromptSet(config.prompts, { configDir: folder, ...(locate ? { locate } : {}) });
        });
        if (out.ok) {
          const prompts = out.value.prompts;
          expect(prompts.length, what).toBeGreaterThan(0);
          expect(new Set(prompts).size, what).toBe(prompts.length);
          for (const p of prompts) expect(p.trim() === p && p !== '', what).toBe(true);
          expect(out.value.rows.length, what).toBe(prompts.length);
        } else {
          for (const issue of out.error.issues) {
            expect(inside(issue.path, ['prompts']), `${what}: ${out.error.message}`).toBe(true);
            expect(issue.file, `${what}: ${out.error.message}`).toBeDefined();
          }
        }
      }),
      params(500, 7),
    );
  });

  // Garbles the text of real files: a slice dropped, a token put in, a line doubled, swapped or shifted.
  const garble = (source: string) =>
    fc
      .array(
        fc.record({
          op: fc.constantFrom('drop', 'insert', 'line', 'double', 'swap', 'indent', 'dedent', 'number'),
          at: fc.nat(),
          other: fc.nat(),
          length: fc.integer({ min: 1, max: 20 }),
          token: fc.constantFrom(
            ...[':', '- ', '[', ']', '{', '}', '"', "'", '&a ', '*a', '\n', '  ', '#', ',', '!!str ', '?'],
            ...['-1', '1e999', '0.5', 'null', '99999999999999999999', '__proto__: 1\n', 'é', '\t', '*b'],
            ...['constructor: 0x10\n', 'toString: 1e3\n', '__proto__: 8.0\n'],
          ),
        }),
        { minLength: 1, maxLength: 3 },
      )
      .map((ops) => {
        let out = source;
        for (const { op, at, other, length, token } of ops) {
          const lines = out.split('\n');
          const i = at % Math.max(1, out.length);
          const l = at % lines.length;
          const m = other % lines.length;
          if (op === 'drop') out = out.slice(0, i) + out.slice(i + length);
          else if (op === 'line') out = [...lines.slice(0, l), token.trimEnd(), ...lines.slice(l)].join('\n');
          else if (op === 'insert') out = out.slice(0, i) + token + out.slice(i);
          else if (op === 'number') out = out.replace(/\d+(\.\d+)?/g, (d, _f, pos) => (pos >= i ? token : d));
          else {
            if (op === 'double') lines.splice(l, 0, lines[l] ?? '');
            if (op === 'swap') [lines[l], lines[m]] = [lines[m] ?? '', lines[l] ?? ''];
            if (op === 'indent') lines[l] = `  ${lines[l]}`;
            if (op === 'dedent') lines[l] = (lines[l] ?? '').replace(/^ {1,2}/, '');
            out = lines.join('\n');
          }
        }
        return out;
      });

  it('refuses garbled shipped configs with the file and line, or accepts them', async () => {
    const files = [
      ...readdirSync(join(root, 'configs'))
        .filter((f) => f.endsWith('.yaml'))
        .map((f) => join('configs', f)),
      ...readdirSync(join(root, 'configs/paper')).map((f) => join('configs/paper', f)),
    ];
    const garbled = fc
      .constantFrom(...files)
      .chain((file) => garble(readFileSync(join(root, file), 'utf8')).map((t) => ({ file, text: t })));
    await fc.assert(
      fc.asyncProperty(garbled, async ({ file, text: garbledText }) => {
        const path = writeConfig(garbledText);
        await attempt('configs', `${file} garbled, in ${path}`, () => loadConfigFile(path));
      }),
      params(600, 8),
    );
  });

  it('refuses a garbled prompt-set index or set file naming the file and line, or accepts it', async () => {
    const folder = join(dir, 'sets');
    mkdirSync(folder);
    const source = join(root, 'configs/prompts');
    const csvs = readdirSync(source).filter((f) => f.endsWith('.csv'));
    for (const f of readdirSync(source)) copyFileSync(join(source, f), join(folder, f));
    const index = readFileSync(join(source, 'sets.yaml'), 'utf8');
    const target = fc.constantFrom('sets.yaml', 'sets.yaml', ...csvs);
    const garbled = target.chain((file) =>
      garble(readFileSync(join(source, file), 'utf8')).map((t) => ({ file, text: t })),
    );
    await fc.assert(
      fc.asyncProperty(garbled, async ({ file, text: garbledText }) => {
        writeFileSync(join(folder, file), garbledText);
        try {
          await attempt('prompt-set indexes', `${file} garbled`, () =>
            loadPromptSets(join(folder, 'sets.yaml')),
          );
        } finally {
          copyFileSync(join(source, file), join(folder, file));
        }
      }),
      params(250, 9),
    );
    expect(index.length).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------------------
// What the fuzzing found (each was an internal error, a hang or a silent acceptance before its fix)

describe('regressions found by fuzzing configs', () => {
  const load = async (yamlText: string | Uint8Array) => {
    const path = writeConfig(yamlText);
    const start = performance.now();
    try {
      await loadConfigFile(path);
    } catch (error) {
      expect(performance.now() - start).toBeLessThan(1_000);
      expect(error).toBeInstanceOf(ConfigError);
      return (error as ConfigError).message.replaceAll(`${path}:`, 'c.yaml:');
    }
    throw new Error(`${path} was accepted`);
  };

  it('refuses an alias bomb (a ReferenceError from the yaml package before)', async () => {
    const bomb = [
      'prompts: [a]',
      'x:',
      '  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ];
    for (const [i, c] of [...'bcdefghi'].entries())
      bomb.push(`  ${c}: &${c} [${Array(9).fill(`*${'abcdefghi'[i]}`).join(', ')}]`);
    expect(await load(bomb.join('\n'))).toBe(
      'c.yaml:4: invalid YAML: its aliases expand it too far (an alias bomb?); write the values out',
    );
    const index = writeConfig(
      'version: 1\nsets:\n  - &a [1, 1, 1, 1, 1, 1, 1, 1]\n' +
        Array.from(
          { length: 8 },
          (_, i) =>
            `  - &${String.fromCharCode(98 + i)} [${Array(8)
              .fill(`*${String.fromCharCode(97 + i)}`)
              .join(', ')}]`,
        ).join('\n'),
    );
    await expect(loadPromptSets(index)).rejects.toThrow(/its aliases expand it too far/);
  });

  it('refuses an alias that names no anchor (a ReferenceError from the yaml package before)', async () => {
    expect(await load('prompts: [a]\nmodel: *base\n')).toBe(
      'c.yaml:2: invalid YAML: the alias *base names no anchor (&base) before it',
    );
    expect(await load('prompts: [a]\nseeds: &s [1]\nlens: { layers: [*s, *t] }\n')).toBe(
      'c.yaml:3: invalid YAML: the alias *t names no anchor (&t) before it',
    );
  });

  it('locates an empty prompt file at prompts.file (no file or line before)', async () => {
    const folder = join(dir, 'empty-csv');
    mkdirSync(folder);
    writeFileSync(join(folder, 'p.csv'), '');
    const path = join(folder, 'c.yaml');
    writeFileSync(path, 'name: x\nprompts: { file: p.csv }\n');
    const config = await loadConfigFile(path);
    const locate = configSource(config)?.locate;
    await expect(
      loadPromptSet(config.prompts, { configDir: folder, ...(locate ? { locate } : {}) }),
    ).rejects.toThrow(`${path}:2: prompts.file: p.csv is empty (expected a header row)`);
  });

  it('refuses a value that holds itself (accepted before, or a TypeError in a sweep)', async () => {
    expect(await load('prompts: [a]\nmodel: { family_options: &o { x: *o } }\n')).toBe(
      'c.yaml:2: model.family_options.x: holds itself (a YAML alias inside its own anchor); write the value out',
    );
    expect(await load('prompts: [a]\nsweep: &s { model.family_options.x: [*s] }\n')).toMatch(
      /^c\.yaml:2: sweep\.model\.family_options\.x\[0\]: holds itself/,
    );
  });

  it('refuses keys that are Object.prototype names (a TypeError before)', async () => {
    expect(await load('prompts: [a]\nconstructor: 0x10\n')).toMatch(
      /^c\.yaml:2: unexpected key "constructor"/,
    );
    expect(await load('prompts: [a]\nmodel: { toString: 1e3 }\n')).toMatch(
      /^c\.yaml:2: model: unexpected key "toString"/,
    );
    expect(await load('prompts: [a]\nlens: { mix: { layers: [1, 2], alpha: 0.5, __proto__: 1e3 } }\n')).toBe(
      'c.yaml:2: lens.mix: unexpected key "__proto__"',
    );
    // A mapping of names dropped "__proto__" without a word.
    expect(await load('prompts: [a]\nmodel: { family_options: { __proto__: { x: 1 } } }\n')).toBe(
      'c.yaml:2: model.family_options: unexpected key "__proto__"',
    );
  });

  it('refuses sweep paths that name no field but an Object.prototype member (accepted before)', async () => {
    const cases: [string, string][] = [
      ['constructor', 'the config'],
      ['model.toString', 'model'],
      ['model.hasOwnProperty', 'model'],
    ];
    for (const [path, parent] of cases) {
      expect(await load(`prompts: [a]\nsweep: { ${path}: [1] }\n`)).toMatch(
        new RegExp(
          `^c\\.yaml:2: sweep\\.${path.replace('.', '\\.')}: is not a config field: ${parent} has no`,
        ),
      );
    }
    expect(await load('prompts: [a]\nsweep: { model.family_options.__proto__: [1] }\n')).toMatch(
      /sweep\.model\.family_options\.__proto__: is not a config field/,
    );
  });

  it('refuses a sweep of more than 10,000 variants when loading it (out of memory expanding it before)', async () => {
    const fields = [
      'sampler.steps',
      'sampler.guidance',
      'runtime.max_batch',
      'grid.min_cell',
      'stage2.steps',
    ];
    const sweep = fields.map((f) => `  ${f}: [${Array.from({ length: 10 }, (_, i) => i + 16).join(', ')}]`);
    expect(await load(`prompts: [a]\nsweep:\n${sweep.join('\n')}\n`)).toBe(
      'c.yaml:3: sweep: makes 100,000 variants (every combination of its values); at most 10,000: sweep fewer fields or values',
    );
  });

  it('refuses layer numbers beyond 2^53 and relative steps below 0.01% (hangs or out of memory before)', async () => {
    expect(await load('prompts: [a]\nlens: { layers: "0:99999999999999999999" }\n')).toBe(
      'c.yaml:2: lens.layers: "0:99999999999999999999": 99999999999999999999 is too large to be a layer',
    );
    expect(await load('prompts: [a]\nlens: { layers: "9007199254740993" }\n')).toBe(
      'c.yaml:2: lens.layers: "9007199254740993": 9007199254740993 is too large to be a layer',
    );
    expect(await load('prompts: [a]\nlens: { layers: [1e300] }\n')).toContain(
      'lens.layers[0]: must be an integer',
    );
    expect(() => resolveLayers([1e300], 24)).toThrow('1e+300 is too large to be a layer');
    expect(await load('prompts: [a]\nlens: { layers: "0%:100%:0.0000001%" }\n')).toBe(
      'c.yaml:2: lens.layers: "0%:100%:0.0000001%": step 0.0000001% is below 0.01% (every layer: leave the step out)',
    );
    // Deeper than any encoder: not expanded when loading (14 s, then "Map maximum size exceeded", before);
    // the model's depth refuses it.
    const start = performance.now();
    const config = parseConfig({ prompts: ['a'], lens: { layers: '0:100000000' } });
    expect(performance.now() - start).toBeLessThan(1_000);
    expect(() => resolveLayers(config.lens.layers, 24)).toThrow('layer 100000000 is out of range 0..24');
  });

  it('refuses text that is not UTF-8, naming the line (read with replacement characters before)', async () => {
    expect(await load(Buffer.from('prompts:\n  - a café\n', 'latin1'))).toBe(
      'c.yaml:2: the config is not UTF-8 text: save it as UTF-8',
    );
    expect(
      await load(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('prompts: [a]\n', 'utf16le')])),
    ).toBe('c.yaml:1: the config is UTF-16 text: save it as UTF-8');
    const folder = join(dir, 'latin1');
    mkdirSync(folder);
    writeFileSync(join(folder, 'p.csv'), Buffer.from('prompt\na cat\na café\n', 'latin1'));
    const config = parseConfig({ prompts: { file: 'p.csv' } });
    await expect(loadPromptSet(config.prompts, { configDir: folder })).rejects.toThrow(
      'p.csv:3: prompts: p.csv is not UTF-8 text: save it as UTF-8',
    );
  });

  it('says "nested too deeply" and "more than one document" in words (JavaScript and API text before)', async () => {
    expect(await load(`prompts: [a]\nname: ${'['.repeat(5000)}${']'.repeat(5000)}\n`)).toMatch(
      /^c\.yaml:2: invalid YAML: nested too deeply$/m,
    );
    expect(await load('prompts: [a]\n---\nprompts: [b]\n')).toBe(
      'c.yaml:2: invalid YAML: the file holds more than one document (a second "---")',
    );
  });
});
