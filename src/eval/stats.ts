// The statistics of judged images (labels.ts), each small and exact on constructed data:
// - per-layer accuracy with a hierarchical bootstrap interval (resampling prompts, then seeds in each);
// - a prompt's emergence layer (the first layer from which a majority of its seeds is correct at every
//   later layer) and their distribution, with a bootstrap interval of the median (resampling prompts);
// - a permutation test of a difference between two sets of prompts (shuffling which set a prompt is in);
// - agreement between two judges: percent agreement and Cohen's kappa.
// Every random draw comes from a seeded generator (pure-rand's xoroshiro128+), so results repeat exactly.
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { mean, median, quantileSorted } from 'simple-statistics';
import type { Label } from './labels.js';

export const DEFAULT_RESAMPLES = 2000;
export const DEFAULT_CONFIDENCE = 0.95;

/** A seeded source of random integers. */
export interface Rng {
  /** A uniform integer in 0..n-1. */
  below(n: number): number;
}

/** FNV-1a of a string: gives each named stream (a group) its own sequence from one seed. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h | 0;
}

/** A generator for `seed` and a stream name: a group's draws do not depend on which other groups exist. */
export function seededRng(seed: number, stream = ''): Rng {
  const generator = xoroshiro128plus((seed | 0) ^ hash32(stream));
  return { below: (n) => uniformInt(generator, 0, n - 1) };
}

// ---------------------------------------------------------------------------------------------------------
// Counts by prompt, seed and layer

/** One prompt's judgments: per seed, per layer (by index in `layers`), how many and how many correct. */
export interface PromptCounts {
  prompt: string;
  category: string;
  seeds: { seed: number; correct: Float64Array; total: Float64Array }[];
}

/** The layers judged, ascending. */
export const labelLayers = (labels: readonly Pick<Label, 'layer'>[]): number[] =>
  [...new Set(labels.map((label) => label.layer))].sort((a, b) => a - b);

/**
 * Labels counted per prompt, seed and layer (prompts in first-seen order, seeds ascending). Everything
 * else at a (prompt, seed, layer) (several questions, judges, models) counts together.
 */
export function promptCounts(
  labels: readonly Label[],
  layers: readonly number[] = labelLayers(labels),
): PromptCounts[] {
  const layerIndex = new Map(layers.map((layer, index) => [layer, index]));
  const prompts = new Map<string, PromptCounts & { bySeed: Map<number, PromptCounts['seeds'][number]> }>();
  for (const label of labels) {
    const index = layerIndex.get(label.layer);
    if (index === undefined) continue;
    let prompt = prompts.get(label.prompt);
    if (prompt === undefined) {
      prompt = { prompt: label.prompt, category: label.category, seeds: [], bySeed: new Map() };
      prompts.set(label.prompt, prompt);
    }
    let seed = prompt.bySeed.get(label.seed);
    if (seed === undefined) {
      seed = {
        seed: label.seed,
        correct: new Float64Array(layers.length),
        total: new Float64Array(layers.length),
      };
      prompt.bySeed.set(label.seed, seed);
      prompt.seeds.push(seed);
    }
    seed.total[index] = (seed.total[index] ?? 0) + 1;
    if (label.correct) seed.correct[index] = (seed.correct[index] ?? 0) + 1;
  }
  return [...prompts.values()].map(({ bySeed: _, ...prompt }) => ({
    ...prompt,
    seeds: prompt.seeds.sort((a, b) => a.seed - b.seed),
  }));
}

/** A prompt's counts per layer, its seeds summed. */
function promptTotals(prompt: PromptCounts, layers: number): { correct: Float64Array; total: Float64Array } {
  const correct = new Float64Array(layers);
  const total = new Float64Array(layers);
  for (const seed of prompt.seeds) {
    for (let l = 0; l < layers; l++) {
      correct[l] = (correct[l] ?? 0) + (seed.correct[l] ?? 0);
      total[l] = (total[l] ?? 0) + (seed.total[l] ?? 0);
    }
  }
  return { correct, total };
}

/**
 * The percentile interval of bootstrap draws at `confidence` (the draws sorted in place); null when there
 * are none. Quantiles interpolate linearly (numpy's default).
 */
function percentileInterval(draws: number[], confidence: number): [number, number] | null {
  if (draws.length === 0) return null;
  const alpha = (1 - confidence) / 2;
  draws.sort((a, b) => a - b);
  return [quantileSorted(draws, alpha), quantileSorted(draws, 1 - alpha)];
}

// ---------------------------------------------------------------------------------------------------------
// Per-layer accuracy with bootstrap intervals

export interface BootstrapOptions {
  /** Default 2000. */
  resamples?: number;
  /** Default 0. */
  seed?: number;
  /** The interval's coverage, default 0.95. */
  confidence?: number;
  /** Names the random stream (see seededRng), e.g. the group. */
  stream?: string;
}

export interface LayerAccuracy {
  layer: number;
  /** Judgments at the layer. */
  n: number;
  /** Prompts with a judgment at the layer. */
  prompts: number;
  correct: number;
  /** correct / n */
  accuracy: number;
  /** The bootstrap interval's ends (equal to accuracy with a single prompt of a single seed). */
  low: number;
  high: number;
}

/**
 * Accuracy (the share of judgments that are correct) per layer, with a percentile bootstrap interval.
 * Each resample draws as many prompts as there are, with replacement, then for each drawn prompt as many
 * of its seeds as it has, with replacement (prompts vary most, and a prompt's seeds are not independent);
 * its accuracy is computed as the estimate is. One resample draws for all layers, so a resample is a whole
 * curve. Quantiles interpolate linearly (numpy's default).
 */
export function layerAccuracy(labels: readonly Label[], options: BootstrapOptions = {}): LayerAccuracy[] {
  const layers = labelLayers(labels);
  const prompts = promptCounts(labels, layers);
  const resamples = options.resamples ?? DEFAULT_RESAMPLES;
  const confidence = options.confidence ?? DEFAULT_CONFIDENCE;
  const rng = seededRng(options.seed ?? 0, options.stream);
  const L = layers.length;
  const draws: number[][] = layers.map(() => []);
  const correct = new Float64Array(L);
  const total = new Float64Array(L);
  for (let r = 0; r < resamples && prompts.length > 0; r++) {
    correct.fill(0);
    total.fill(0);
    for (let p = 0; p < prompts.length; p++) {
      const { seeds } = prompts[rng.below(prompts.length)] as PromptCounts;
      for (let s = 0; s < seeds.length; s++) {
        const seed = seeds[rng.below(seeds.length)] as PromptCounts['seeds'][number];
        for (let l = 0; l < L; l++) {
          correct[l] = (correct[l] ?? 0) + (seed.correct[l] ?? 0);
          total[l] = (total[l] ?? 0) + (seed.total[l] ?? 0);
        }
      }
    }
    for (let l = 0; l < L; l++) {
      const n = total[l] ?? 0;
      if (n > 0) draws[l]?.push((correct[l] ?? 0) / n);
    }
  }
  const sums = prompts.map((prompt) => promptTotals(prompt, L));
  return layers.map((layer, l) => {
    const n = sums.reduce((sum, s) => sum + (s.total[l] ?? 0), 0);
    const right = sums.reduce((sum, s) => sum + (s.correct[l] ?? 0), 0);
    const accuracy = n > 0 ? right / n : Number.NaN;
    const [low, high] = percentileInterval(draws[l] ?? [], confidence) ?? [accuracy, accuracy];
    return {
      layer,
      n,
      prompts: sums.filter((s) => (s.total[l] ?? 0) > 0).length,
      correct: right,
      accuracy,
      low,
      high,
    };
  });
}

// ---------------------------------------------------------------------------------------------------------
// Emergence

export interface PromptEmergence {
  prompt: string;
  category: string;
  /** The first layer from which the prompt is correct at every later layer judged; null if none. */
  layer: number | null;
}

/**
 * Each prompt's emergence layer: the first layer at which more than half of its judgments (one per seed,
 * when one question by one judge is counted) are correct and stay so at every later layer it was judged
 * at. Null when it never does (not even at the last layer).
 */
export function emergenceLayers(labels: readonly Label[]): PromptEmergence[] {
  const layers = labelLayers(labels);
  return promptCounts(labels, layers).map((prompt) => {
    const { correct, total } = promptTotals(prompt, layers.length);
    let layer: number | null = null;
    for (let l = layers.length - 1; l >= 0; l--) {
      const n = total[l] ?? 0;
      if (n === 0) continue; // not judged at this layer: no evidence either way
      if ((correct[l] ?? 0) * 2 > n) layer = layers[l] ?? null;
      else break;
    }
    return { prompt: prompt.prompt, category: prompt.category, layer };
  });
}

export interface EmergenceSummary {
  prompts: number;
  /** Prompts that emerge at some layer. */
  emerged: number;
  never: number;
  /** Of the prompts that emerge; null when none does. */
  median: number | null;
  /**
   * The median's percentile bootstrap interval ([low, high], at the options' confidence): the prompts that
   * emerge resampled with replacement, the median of each resample. Within the layers judged; [m, m] when
   * every prompt emerges at layer m; null when none emerges.
   */
  interval: [number, number] | null;
  mean: number | null;
  /** How many prompts emerge at each layer judged (zeros included), ascending. */
  counts: { layer: number; prompts: number }[];
}

/**
 * The distribution of the prompts' emergence layers. The median's interval is a percentile bootstrap over
 * the prompts that emerge (a prompt's seeds are already summed into its emergence layer), drawn as
 * layerAccuracy draws: `options.resamples` resamples from seededRng(seed, stream), at `options.confidence`.
 */
export function summarizeEmergence(
  rows: readonly PromptEmergence[],
  layers: readonly number[],
  options: BootstrapOptions = {},
): EmergenceSummary {
  const emerged = rows.flatMap((row) => (row.layer === null ? [] : [row.layer]));
  const resamples = options.resamples ?? DEFAULT_RESAMPLES;
  const rng = seededRng(options.seed ?? 0, options.stream);
  const medians: number[] = [];
  const sample = new Array<number>(emerged.length);
  for (let r = 0; r < resamples && emerged.length > 0; r++) {
    for (let p = 0; p < emerged.length; p++) sample[p] = emerged[rng.below(emerged.length)] as number;
    medians.push(median(sample));
  }
  return {
    prompts: rows.length,
    emerged: emerged.length,
    never: rows.length - emerged.length,
    median: emerged.length > 0 ? median(emerged) : null,
    interval: percentileInterval(medians, options.confidence ?? DEFAULT_CONFIDENCE),
    mean: emerged.length > 0 ? mean(emerged) : null,
    counts: layers.map((layer) => ({ layer, prompts: emerged.filter((l) => l === layer).length })),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Permutation tests

export interface PermutationResult {
  /** The statistic on each set. */
  a: number;
  b: number;
  /** a - b */
  difference: number;
  /**
   * Two-sided: (1 + permutations with |difference| at least the observed) / (1 + permutations), the
   * permutations where either side's statistic is undefined left out. Null when the observed is undefined.
   */
  p: number | null;
  permutations: number;
}

/**
 * Permutation tests of differences between two sets of units (prompts): each statistic on set a minus on
 * set b, against the same statistic after shuffling which set each unit is in (the sets' sizes kept). One
 * set of shuffles serves every statistic.
 */
export function permutationTests<T>(
  a: readonly T[],
  b: readonly T[],
  statistics: readonly ((units: readonly T[]) => number)[],
  options: Omit<BootstrapOptions, 'confidence'> = {},
): PermutationResult[] {
  const resamples = options.resamples ?? DEFAULT_RESAMPLES;
  const rng = seededRng(options.seed ?? 0, options.stream);
  const observed = statistics.map((statistic) => {
    const [sa, sb] = [statistic(a), statistic(b)];
    return { a: sa, b: sb, difference: sa - sb };
  });
  const extreme = statistics.map(() => 0);
  const valid = statistics.map(() => 0);
  const pool = [...a, ...b];
  for (let r = 0; r < resamples; r++) {
    for (let i = pool.length - 1; i > 0; i--) {
      const j = rng.below(i + 1);
      [pool[i], pool[j]] = [pool[j] as T, pool[i] as T];
    }
    const left = pool.slice(0, a.length);
    const right = pool.slice(a.length);
    statistics.forEach((statistic, s) => {
      const difference = statistic(left) - statistic(right);
      if (!Number.isFinite(difference)) return;
      valid[s] = (valid[s] ?? 0) + 1;
      // A relative tolerance keeps ties (equal up to rounding) counted as extreme.
      const bound = Math.abs(observed[s]?.difference ?? 0);
      if (Math.abs(difference) >= bound - 1e-12 * Math.max(1, bound)) extreme[s] = (extreme[s] ?? 0) + 1;
    });
  }
  return observed.map((o, s) => ({
    ...o,
    p: Number.isFinite(o.difference) ? (1 + (extreme[s] ?? 0)) / (1 + (valid[s] ?? 0)) : null,
    permutations: valid[s] ?? 0,
  }));
}

// ---------------------------------------------------------------------------------------------------------
// Agreement

export interface Agreement {
  /** Items both judged. */
  n: number;
  /** Share of items with the same answer. */
  agreement: number;
  /**
   * Cohen's kappa: (agreement - chance) / (1 - chance), chance from each judge's own yes rate. Null when
   * chance is 1 (both judges gave one and the same answer to everything: kappa is undefined).
   */
  kappa: number | null;
}

/** Percent agreement and Cohen's kappa of paired yes/no judgments. */
export function cohensKappa(pairs: readonly (readonly [boolean, boolean])[]): Agreement {
  const n = pairs.length;
  if (n === 0) return { n, agreement: Number.NaN, kappa: null };
  let same = 0;
  let yesA = 0;
  let yesB = 0;
  for (const [x, y] of pairs) {
    if (x === y) same++;
    if (x) yesA++;
    if (y) yesB++;
  }
  const agreement = same / n;
  const pa = yesA / n;
  const pb = yesB / n;
  const chance = pa * pb + (1 - pa) * (1 - pb);
  return { n, agreement, kappa: chance >= 1 ? null : (agreement - chance) / (1 - chance) };
}

export interface SourceAgreement extends Agreement {
  a: string;
  b: string;
  /** The question compared; null for all questions together. */
  question: string | null;
}

const itemId = (label: Label) =>
  JSON.stringify([label.model, label.prompt, label.layer, label.seed, label.stage, label.question]);

/**
 * Agreement between every two judges (sources) that judged some of the same images on the same
 * questions: per question, and all questions together. Compares whether each judged the image correct,
 * which for one question is the same as comparing their answers.
 */
export function sourceAgreement(labels: readonly Label[]): SourceAgreement[] {
  const bySource = new Map<string, Map<string, Label>>();
  for (const label of labels) {
    let items = bySource.get(label.source);
    if (items === undefined) {
      items = new Map();
      bySource.set(label.source, items);
    }
    items.set(itemId(label), label);
  }
  const sources = [...bySource.keys()].sort();
  const rows: SourceAgreement[] = [];
  for (const [i, a] of sources.entries()) {
    for (const b of sources.slice(i + 1)) {
      const itemsB = bySource.get(b) as Map<string, Label>;
      const pairs = new Map<string, [boolean, boolean][]>();
      for (const [id, la] of bySource.get(a) as Map<string, Label>) {
        const lb = itemsB.get(id);
        if (lb === undefined) continue;
        const list = pairs.get(la.question);
        if (list) list.push([la.correct, lb.correct]);
        else pairs.set(la.question, [[la.correct, lb.correct]]);
      }
      if (pairs.size === 0) continue;
      for (const [question, list] of pairs) rows.push({ a, b, question, ...cohensKappa(list) });
      if (pairs.size > 1) rows.push({ a, b, question: null, ...cohensKappa([...pairs.values()].flat()) });
    }
  }
  return rows;
}
