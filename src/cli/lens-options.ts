// The options of `diffusion-lens lens`, each declared once: its flag, the config field it sets and how its
// text is read. Everything else is generated from this table and the config schema (src/cli/options.ts,
// src/cli/option-help.ts): the commander options and their help (the field's `.describe()` text, its
// choices and default), the options type, the labels errors name the option by, the config object.
import { Option } from 'commander';

/**
 * How an option's text becomes a config value (the schema then validates it):
 * - `text`: as given; `choice`: as given, one of the field's enum (listed in the help);
 * - `int`: a plain decimal integer; `ints`: a comma-separated list of them; `size`: `S` or `HxW`;
 * - `number`: a number when the text is one; `int-or-text`: an integer when the text is one, else the text
 *   (`--stage2-seed same|N`); `int-or-auto`: `auto`, or a plain decimal integer (`--max-batch`);
 * - `names`: `all`, or a comma-separated list of names (`--encoders text_encoder,text_encoder_2`);
 * - `mix`: `A,B,ALPHA`, two layers (integers or `stock`) and a number (`--mix 4,8,0.5`);
 * - `switch`: a flag without a value (true).
 */
export type ParserName =
  | 'text'
  | 'choice'
  | 'int'
  | 'ints'
  | 'number'
  | 'size'
  | 'int-or-text'
  | 'int-or-auto'
  | 'names'
  | 'mix'
  | 'switch';

export interface LensOptionSpec {
  /**
   * The commander flags: `--steps <n>` (a value), `-m, --model <id>`, `--offload [mode]` (an optional value:
   * see `bare`), `--allow-pickle` (a switch).
   */
  readonly flags: string;
  /** The config field it sets, e.g. ['stage2', 'noise_level']. */
  readonly path: readonly [string, ...string[]];
  readonly parse: ParserName;
  /** For an optional value (`--offload [mode]`): the value of the flag given alone. */
  readonly bare?: string;
  /** For a switch: a `--no-` form sets the field to false (neither = the schema's default). */
  readonly negatable?: boolean;
  /** The flag may be given again: each value (read by `parse`) is one item of the field's list. */
  readonly repeatable?: boolean;
}

const TABLE = [
  { flags: '-m, --model <id>', path: ['model', 'id'], parse: 'text' },
  { flags: '--config <dir>', path: ['model', 'config'], parse: 'text' },
  { flags: '--lora <path[:scale]>', path: ['model', 'lora'], parse: 'text', repeatable: true },
  { flags: '--layers <spec>', path: ['lens', 'layers'], parse: 'text' },
  { flags: '--seeds <list>', path: ['seeds'], parse: 'ints' },
  { flags: '--steps <n>', path: ['sampler', 'steps'], parse: 'int' },
  { flags: '--guidance <g>', path: ['sampler', 'guidance'], parse: 'number' },
  { flags: '--size <s>', path: ['sampler', 'size'], parse: 'size' },
  { flags: '--scheduler <name>', path: ['sampler', 'scheduler'], parse: 'text' },
  { flags: '--negative <text>', path: ['sampler', 'negative'], parse: 'text' },
  { flags: '--uncond <mode>', path: ['lens', 'uncond'], parse: 'choice' },
  { flags: '--noise <mode>', path: ['lens', 'noise'], parse: 'choice' },
  { flags: '--encoders <names>', path: ['lens', 'encoders'], parse: 'names' },
  { flags: '--pooled <mode>', path: ['lens', 'pooled'], parse: 'choice' },
  // A mode, or a position: anything else is passed on for the schema to say so.
  { flags: '--tokens <which>', path: ['lens', 'tokens'], parse: 'int-or-text' },
  { flags: '--mix <a,b,alpha>', path: ['lens', 'mix'], parse: 'mix' },
  { flags: '--embeds <file>', path: ['lens', 'embeds'], parse: 'text' },
  { flags: '--max-batch <n|auto>', path: ['runtime', 'max_batch'], parse: 'int-or-auto' },
  { flags: '--dtype <dtype>', path: ['model', 'dtype'], parse: 'choice' },
  { flags: '--device <device>', path: ['model', 'device'], parse: 'choice' },
  { flags: '--family <family>', path: ['model', 'family'], parse: 'text' },
  { flags: '--revision <rev>', path: ['model', 'revision'], parse: 'text' },
  { flags: '--variant <name>', path: ['model', 'variant'], parse: 'text' },
  // A bare `--offload` is model CPU offload, as it was when the option was a switch.
  { flags: '--offload [mode]', path: ['model', 'offload'], parse: 'choice', bare: 'model' },
  { flags: '--clean-caption', path: ['model', 'clean_caption'], parse: 'switch', negatable: true },
  { flags: '--stages <list>', path: ['stages'], parse: 'ints' },
  { flags: '--stage2-model <id>', path: ['stage2', 'model'], parse: 'text' },
  { flags: '--stage2-revision <rev>', path: ['stage2', 'revision'], parse: 'text' },
  { flags: '--stage2-steps <n>', path: ['stage2', 'steps'], parse: 'int' },
  { flags: '--stage2-guidance <g>', path: ['stage2', 'guidance'], parse: 'number' },
  { flags: '--stage2-size <s>', path: ['stage2', 'size'], parse: 'size' },
  { flags: '--stage2-scheduler <name>', path: ['stage2', 'scheduler'], parse: 'text' },
  { flags: '--noise-level <n>', path: ['stage2', 'noise_level'], parse: 'int' },
  // "same" or a seed: anything else is passed on for the schema to say so.
  { flags: '--stage2-seed <seed>', path: ['stage2', 'seed'], parse: 'int-or-text' },
  { flags: '--allow-pickle', path: ['model', 'allow_pickle'], parse: 'switch' },
  { flags: '--compile', path: ['model', 'compile'], parse: 'switch' },
  { flags: '--grid-cell <n>', path: ['grid', 'min_cell'], parse: 'int' },
  { flags: '--name <name>', path: ['name'], parse: 'text' },
] as const satisfies readonly LensOptionSpec[];

/** The options, in `lens --help` order. */
export const LENS_OPTIONS: readonly LensOptionSpec[] = TABLE;

// The options type, inferred from the flags the way commander names and fills its values:
// `--stage2-model <id>` → stage2Model: string; `--offload [mode]` → string | true; `--allow-pickle` → boolean;
// a repeatable `--lora <path[:scale]>` → string[] (its `[...]` is inside the required value's `<...>`).
type LongFlag<F extends string> = F extends `${string}--${infer Rest}`
  ? Rest extends `${infer Name} ${string}`
    ? Name
    : Rest
  : never;
type CamelCase<S extends string> = S extends `${infer Head}-${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;
type FlagValue<F extends string> = F extends `${string}<${string}>`
  ? string
  : F extends `${string}[${string}]`
    ? string | true
    : boolean;
type Spec = (typeof TABLE)[number];
type SpecValue<S extends Spec> = S extends { repeatable: true } ? string[] : FlagValue<S['flags']>;

/** What commander gives the `lens` action for the table's options (undefined = not given). */
export type LensOptionValues = {
  [S in Spec as CamelCase<LongFlag<S['flags']>>]?: SpecValue<S>;
};

/** The long flag, `--stage2-model`: how errors name the option. */
export const optionLabel = (spec: LensOptionSpec): string => new Option(spec.flags).long ?? spec.flags;

/** The key of the option's value in commander's options object, `stage2Model`. */
export const optionKey = (spec: LensOptionSpec): string => new Option(spec.flags).attributeName();
