// Layer specs: "all", "start:end[:step]" (inclusive), comma lists, integers; negatives count from the
// end (-1 = L). Parsed when the config is read, resolved against L once the model is loaded.
import { ConfigError } from './errors.js';

/** One inclusive range; a single layer is `{start: n, end: n, step: 1}`. Bounds may be negative. */
export interface LayerRange {
  start: number;
  end: number;
  step: number;
}

export type LayerSpec = { kind: 'all' } | { kind: 'ranges'; ranges: LayerRange[] };

const LAYERS_PATH = ['lens', 'layers'] as const;
const INT = /^[+-]?\d+$/;
const SYNTAX = 'use "all", "start:end[:step]", a comma list like "0,4,8", or integers (-1 = final layer)';

function specError(message: string): ConfigError {
  return new ConfigError({ path: LAYERS_PATH, message });
}

function parseInt10(text: string, whole: string): number {
  if (!INT.test(text))
    throw specError(`"${whole}" is not a layer spec: "${text}" is not an integer; ${SYNTAX}`);
  return Number.parseInt(text, 10);
}

function parsePart(part: string, whole: string): LayerRange {
  const pieces = part.split(':').map((p) => p.trim());
  if (pieces.length === 1) {
    const n = parseInt10(pieces[0] ?? '', whole);
    return { start: n, end: n, step: 1 };
  }
  if (pieces.length > 3)
    throw specError(`"${whole}" is not a layer spec: "${part}" has too many ':'; ${SYNTAX}`);
  const [a = '', b = '', c = ''] = pieces;
  const start = a === '' ? 0 : parseInt10(a, whole);
  const end = b === '' ? -1 : parseInt10(b, whole);
  const step = c === '' ? 1 : parseInt10(c, whole);
  if (step < 1) throw specError(`"${whole}": step ${step} must be >= 1`);
  return { start, end, step };
}

/**
 * Parses a layer spec without knowing L. Accepts "all", "a:b", "a:b:c", ":b", "a:", "::c", comma lists of
 * those, one integer, or an integer list. Throws ConfigError (field `lens.layers`) on bad syntax.
 */
export function parseLayerSpec(spec: string | number | readonly number[]): LayerSpec {
  if (typeof spec === 'number') {
    if (!Number.isInteger(spec)) throw specError(`${spec} is not an integer`);
    return { kind: 'ranges', ranges: [{ start: spec, end: spec, step: 1 }] };
  }
  if (Array.isArray(spec)) {
    if (spec.length === 0) throw specError('the layer list is empty');
    return {
      kind: 'ranges',
      ranges: spec.map((n) => {
        if (!Number.isInteger(n)) throw specError(`${n} is not an integer`);
        return { start: n, end: n, step: 1 };
      }),
    };
  }
  const text = (spec as string).trim();
  if (text.toLowerCase() === 'all') return { kind: 'all' };
  if (text === '') throw specError(`the layer spec is empty; ${SYNTAX}`);
  const parts = text.split(',').map((p) => p.trim());
  if (parts.some((p) => p === '')) throw specError(`"${text}" has an empty item; ${SYNTAX}`);
  return { kind: 'ranges', ranges: parts.map((p) => parsePart(p, text)) };
}

function describeSpec(spec: string | number | readonly number[]): string {
  return typeof spec === 'string' ? `"${spec}"` : JSON.stringify(spec);
}

/**
 * Resolves a layer spec against L (the model's `num_layers`; hidden-state indices 0..L). Returns the
 * layers in the order given, without duplicates. Throws ConfigError (field `lens.layers`) naming the bad
 * value and the valid range.
 */
export function resolveLayers(
  spec: string | number | readonly number[] | LayerSpec,
  numLayers: number,
): number[] {
  if (!Number.isInteger(numLayers) || numLayers < 0) throw new Error(`bad layer count ${numLayers}`);
  const parsed: LayerSpec =
    typeof spec === 'object' && !Array.isArray(spec) ? (spec as LayerSpec) : parseLayerSpec(spec as string);
  const L = numLayers;
  if (parsed.kind === 'all') return Array.from({ length: L + 1 }, (_, i) => i);
  const original =
    typeof spec === 'object' && !Array.isArray(spec) ? undefined : describeSpec(spec as string);
  const suffix = original && !/^"?-?\d+"?$/.test(original) ? ` (in ${original})` : '';
  const resolve = (n: number): number => {
    const layer = n < 0 ? L + 1 + n : n;
    if (layer < 0 || layer > L) {
      const hint = n < 0 ? `; negative layers count from the end, -1 = ${L}, -${L + 1} = 0` : '';
      throw specError(`layer ${n} is out of range 0..${L}${hint}${suffix}`);
    }
    return layer;
  };
  const out: number[] = [];
  const seen = new Set<number>();
  for (const range of parsed.ranges) {
    const start = resolve(range.start);
    const end = resolve(range.end);
    if (start > end) {
      throw specError(`range ${range.start}:${range.end} is empty (${start} > ${end})${suffix}`);
    }
    for (let layer = start; layer <= end; layer += range.step) {
      if (!seen.has(layer)) {
        seen.add(layer);
        out.push(layer);
      }
    }
  }
  return out;
}
