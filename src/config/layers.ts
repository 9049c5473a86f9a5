// Layer specs: "all", "start:end[:step]" (inclusive), comma lists, integers; negatives count from the
// end (-1 = L); relative depths ("0%:100%:25%", "50%") map onto each encoder's own depth L. Parsed
// when the config is read, resolved against L once the model is loaded.
import { ConfigError, timesListed } from './errors.js';

/**
 * One inclusive range; a single layer is `{start: n, end: n, step: 1}`. Bounds may be negative. A
 * relative range (`relative: true`) is in percent of L: start and end 0..100, step a percentage, or 0
 * for every layer between the two. `stock: true` is the layer the stock pipeline uses (`stock`).
 */
export interface LayerRange {
  start: number;
  end: number;
  step: number;
  relative?: boolean;
  stock?: boolean;
  /** The item as written (`"-3:-1"`), for error messages; derived from the bounds when absent. */
  text?: string;
}

export type LayerSpec = { kind: 'all' } | { kind: 'ranges'; ranges: LayerRange[] };

const LAYERS_PATH = ['lens', 'layers'] as const;
const INT = /^[+-]?\d+$/;
const PERCENT = /^\d+(\.\d+)?%$/;
const SYNTAX =
  'use "all", "start:end[:step]", a comma list like "0,4,8", integers (-1 = final layer), ' +
  'relative depths like "0%:100%:25%", or "stock" (the layer the stock pipeline uses)';

function specError(message: string): ConfigError {
  return new ConfigError({ path: LAYERS_PATH, message });
}

function parseInt10(text: string, whole: string): number {
  if (!INT.test(text))
    throw specError(`"${whole}" is not a layer spec: "${text}" is not an integer; ${SYNTAX}`);
  const n = Number.parseInt(text, 10);
  // Beyond 2^53 integers are not exact (n + 1 === n): no layer is that deep anyway.
  if (!Number.isSafeInteger(n)) throw specError(`"${whole}": ${text} is too large to be a layer`);
  return n;
}

/** A layer given as a number: an integer JavaScript counts exactly. */
function checkInteger(n: number): number {
  if (!Number.isInteger(n)) throw specError(`${n} is not an integer`);
  if (!Number.isSafeInteger(n)) throw specError(`${n} is too large to be a layer`);
  return n;
}

/** The smallest step of a relative range (10,000 points from 0% to 100%). */
const MIN_PERCENT_STEP = 0.01;

/** `25%` → 25; checks the range 0..100. */
function parsePercent(text: string, whole: string): number {
  if (!PERCENT.test(text)) {
    throw specError(`"${whole}" is not a layer spec: "${text}" is not a percentage like 25%; ${SYNTAX}`);
  }
  const value = Number.parseFloat(text);
  if (value > 100) throw specError(`"${whole}": ${text} is beyond 100% (the final layer)`);
  return value;
}

/** `a%:b%[:c%]`, `a%`: every bound in percent (an omitted one is 0% or 100%; no step = every layer). */
function parseRelative(pieces: string[], part: string, whole: string): LayerRange {
  if (pieces.length === 1) {
    const p = parsePercent(pieces[0] ?? '', whole);
    return { start: p, end: p, step: 0, relative: true, text: part };
  }
  const [a = '', b = '', c = ''] = pieces;
  const start = a === '' ? 0 : parsePercent(a, whole);
  const end = b === '' ? 100 : parsePercent(b, whole);
  const step = c === '' ? 0 : parsePercent(c, whole);
  if (c !== '' && step <= 0) throw specError(`"${whole}": step ${c} must be above 0%`);
  if (c !== '' && step < MIN_PERCENT_STEP) {
    throw specError(`"${whole}": step ${c} is below ${MIN_PERCENT_STEP}% (every layer: leave the step out)`);
  }
  if (start > end) throw specError(`range ${part} is empty (${a} > ${b})`);
  return { start, end, step, relative: true, text: part };
}

function parsePart(part: string, whole: string): LayerRange {
  if (part.toLowerCase() === 'stock') return { start: -1, end: -1, step: 1, stock: true, text: part };
  const pieces = part.split(':').map((p) => p.trim());
  if (pieces.length <= 3 && pieces.some((piece) => piece.endsWith('%'))) {
    if (pieces.some((piece) => piece !== '' && !piece.endsWith('%'))) {
      throw specError(
        `"${whole}": "${part}" mixes layers and percentages; write every bound of a range one way`,
      );
    }
    return parseRelative(pieces, part, whole);
  }
  if (pieces.length === 1) {
    const n = parseInt10(pieces[0] ?? '', whole);
    return { start: n, end: n, step: 1, text: part };
  }
  if (pieces.length > 3)
    throw specError(`"${whole}" is not a layer spec: "${part}" has too many ':'; ${SYNTAX}`);
  const [a = '', b = '', c = ''] = pieces;
  const start = a === '' ? 0 : parseInt10(a, whole);
  const end = b === '' ? -1 : parseInt10(b, whole);
  const step = c === '' ? 1 : parseInt10(c, whole);
  if (step < 1) throw specError(`"${whole}": step ${step} must be >= 1`);
  return { start, end, step, text: part };
}

/**
 * Parses a layer spec without knowing L. Accepts "all", "a:b", "a:b:c", ":b", "a:", "::c", comma lists of
 * those, one integer, or an integer list. Throws ConfigError (field `lens.layers`) on bad syntax.
 */
export function parseLayerSpec(spec: string | number | readonly number[]): LayerSpec {
  if (typeof spec === 'number') {
    checkInteger(spec);
    return { kind: 'ranges', ranges: [{ start: spec, end: spec, step: 1 }] };
  }
  if (Array.isArray(spec)) {
    if (spec.length === 0) throw specError('the layer list is empty');
    return {
      kind: 'ranges',
      ranges: spec.map((n) => {
        checkInteger(n);
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

function rangeText(range: LayerRange): string {
  if (range.text !== undefined) return range.text;
  if (range.relative) return `${range.start}%:${range.end}%${range.step === 0 ? '' : `:${range.step}%`}`;
  if (range.start === range.end && range.step === 1) return String(range.start);
  return `${range.start}:${range.end}${range.step === 1 ? '' : `:${range.step}`}`;
}

/** `layer 24 is listed twice ("-1" is layer 24 of 0..24)`, `layer 4 is listed twice (in "0:8:4" and "4")`. */
function duplicateMessage(
  layer: number,
  producers: { range: LayerRange; start: number; end: number }[],
  L: number,
) {
  const texts = producers.map((p) => rangeText(p.range));
  // Items whose written bounds are not the layers they mean (negative or omitted bounds) are explained.
  const notes = producers.flatMap((p, i) => {
    const { range, start, end } = p;
    if (range.start === start && range.end === end) return [];
    const text = texts[i] ?? '';
    if (start === end && range.step === 1 && !text.includes(':'))
      return [`"${text}" is layer ${start} of 0..${L}`];
    return [`"${text}" is ${start}:${end}${range.step === 1 ? '' : `:${range.step}`} of 0..${L}`];
  });
  // Items that are the layer itself, written as such, need no naming.
  const plain = producers.every(
    (p, i) => texts[i] === String(layer) || !(p.range.start === p.start && p.range.end === p.end),
  );
  const details = [
    ...(plain ? [] : [`in ${texts.map((t) => `"${t}"`).join(texts.length === 2 ? ' and ' : ', ')}`]),
    ...notes,
  ];
  const count = producers.length;
  return `layer ${layer} is listed ${timesListed(count)}${details.length > 0 ? ` (${details.join('; ')})` : ''}`;
}

/**
 * Resolves a layer spec against L (the model's `num_layers`; hidden-state indices 0..L) and the stock
 * layer (what `stock` means: L unless the model says otherwise, e.g. SDXL's L - 1). Returns the
 * layers in the order given. Throws ConfigError (field `lens.layers`) naming the bad value and the valid
 * range, or a layer that the spec lists more than once (overlapping ranges, `-1` next to L, ...).
 */
export function resolveLayers(
  spec: string | number | readonly number[] | LayerSpec,
  numLayers: number,
  stockLayer: number = numLayers,
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
  const producers = new Map<number, { range: LayerRange; start: number; end: number }[]>();
  const add = (layer: number, producer: { range: LayerRange; start: number; end: number }): void => {
    const by = producers.get(layer);
    if (by) by.push(producer);
    else {
      producers.set(layer, [producer]);
      out.push(layer);
    }
  };
  for (const range of parsed.ranges) {
    if (range.stock) {
      add(stockLayer, { range, start: stockLayer, end: stockLayer });
    } else if (range.relative) {
      // Points that round to one layer are one layer: a relative axis is shared by deep and shallow models.
      for (const layer of new Set(relativeLayers(range, L))) add(layer, { range, start: layer, end: layer });
    } else {
      const start = resolve(range.start);
      const end = resolve(range.end);
      if (start > end) {
        throw specError(`range ${range.start}:${range.end} is empty (${start} > ${end})${suffix}`);
      }
      for (let layer = start; layer <= end; layer += range.step) add(layer, { range, start, end });
    }
  }
  const repeated = out.filter((layer) => (producers.get(layer)?.length ?? 0) > 1);
  if (repeated.length > 0) {
    throw new ConfigError(
      repeated.map((layer) => ({
        path: LAYERS_PATH,
        message: duplicateMessage(layer, producers.get(layer) ?? [], L),
      })),
    );
  }
  return out;
}

/** The layer nearest a relative depth (percent of L), halves rounded up: 50% of 3 is layer 2. */
export function layerAtDepth(percent: number, numLayers: number): number {
  return Math.floor((percent * numLayers) / 100 + 0.5 + 1e-9);
}

/** A relative range's layers on 0..L, in order (a point that rounds to a layer already given repeats it). */
function relativeLayers(range: LayerRange, L: number): number[] {
  if (range.step === 0) {
    const start = layerAtDepth(range.start, L);
    return Array.from({ length: layerAtDepth(range.end, L) - start + 1 }, (_, i) => start + i);
  }
  const layers: number[] = [];
  // Counted in steps, not summed, so that 0%:100%:10% reaches 100% exactly.
  for (let i = 0; range.start + i * range.step <= range.end + 1e-9; i++) {
    layers.push(layerAtDepth(range.start + i * range.step, L));
  }
  return layers;
}

/** How deep a layer is in 0..L, as a percentage rounded to one decimal: grids and the manifest show it. */
export function layerDepth(layer: number, numLayers: number): number {
  return numLayers === 0 ? 100 : Math.round((layer / numLayers) * 1000) / 10;
}
