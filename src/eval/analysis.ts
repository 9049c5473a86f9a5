// The statistics of a set of labels, as `diffusion-lens stats` reports them: the labels split into groups
// (by question, category, model, judge, stage), and per group the per-layer accuracy with bootstrap
// intervals and each prompt's emergence layer (their median with a bootstrap interval); between the
// categories of each group, permutation tests; between judges, agreement.
import type { Label } from './labels.js';
import {
  type BootstrapOptions,
  DEFAULT_CONFIDENCE,
  DEFAULT_RESAMPLES,
  type EmergenceSummary,
  emergenceLayers,
  type LayerAccuracy,
  labelLayers,
  layerAccuracy,
  type PermutationResult,
  type PromptEmergence,
  permutationTests,
  promptCounts,
  type SourceAgreement,
  sourceAgreement,
  summarizeEmergence,
} from './stats.js';

/** What labels can be grouped by. */
export const DIMENSIONS = ['question', 'category', 'model', 'source', 'stage'] as const;
export type Dimension = (typeof DIMENSIONS)[number];

export const DEFAULT_BY: readonly Dimension[] = ['question'];

/** A group's values of the grouping dimensions. */
export type GroupKey = Partial<Record<Dimension, string>>;

const dimensionValue = (label: Label, dimension: Dimension): string =>
  dimension === 'stage' ? String(label.stage) : label[dimension];

/** A group's name: its values joined with ' · ' (an empty value as "(none)"); `all` without dimensions. */
export function groupName(key: GroupKey, by: readonly Dimension[]): string {
  if (by.length === 0) return 'all';
  return by
    .map((dimension) => {
      const value = key[dimension] ?? '';
      if (dimension === 'stage') return `stage ${value}`;
      return value === '' ? '(none)' : value;
    })
    .join(' · ');
}

export interface LabelGroup {
  key: GroupKey;
  name: string;
  labels: Label[];
}

/** Labels split by the dimensions' values, groups in the order their first label comes. */
export function groupLabels(labels: readonly Label[], by: readonly Dimension[]): LabelGroup[] {
  const groups = new Map<string, LabelGroup>();
  for (const label of labels) {
    const key: GroupKey = Object.fromEntries(by.map((d) => [d, dimensionValue(label, d)]));
    const id = JSON.stringify(by.map((d) => key[d]));
    let group = groups.get(id);
    if (group === undefined) {
      group = { key, name: groupName(key, by), labels: [] };
      groups.set(id, group);
    }
    group.labels.push(label);
  }
  return [...groups.values()];
}

export interface StatsOptions {
  /** Default: question. With labels of both stages, stage is added. */
  by?: readonly Dimension[];
  /** Bootstrap resamples and permutations, default 2000. */
  resamples?: number;
  /** Default 0. */
  seed?: number;
  /** Default 0.95. */
  confidence?: number;
}

export interface GroupStats {
  key: GroupKey;
  name: string;
  /** Judgments in the group. */
  n: number;
  prompts: number;
  seeds: number[];
  sources: string[];
  layers: LayerAccuracy[];
  emergence: PromptEmergence[];
  emergenceSummary: EmergenceSummary;
}

export type ComparisonMeasure = 'accuracy' | 'emergence';

/** A difference between two categories' prompts, within one group of the other dimensions. */
export interface CategoryComparison extends PermutationResult {
  /** The group (its dimensions other than category). */
  key: GroupKey;
  name: string;
  categoryA: string;
  categoryB: string;
  promptsA: number;
  promptsB: number;
  /**
   * accuracy: the share correct (at `layer`, or over all layers when null); emergence: the mean emergence
   * layer, a prompt that never emerges counted as one past the last layer judged.
   */
  measure: ComparisonMeasure;
  layer: number | null;
  /** For the emergence measure: the layer a prompt that never emerges counts as; else null. */
  neverAs: number | null;
}

export interface StatsSummary {
  by: Dimension[];
  resamples: number;
  seed: number;
  confidence: number;
  /** Judgments counted. */
  n: number;
  groups: GroupStats[];
  comparisons: CategoryComparison[];
  agreement: SourceAgreement[];
  /** What was pooled or added, in words. */
  notes: string[];
}

const distinct = <T>(values: Iterable<T>): T[] => [...new Set(values)];

function groupStats(group: LabelGroup, options: Required<Omit<StatsOptions, 'by'>>): GroupStats {
  const { labels } = group;
  const emergence = emergenceLayers(labels);
  return {
    key: group.key,
    name: group.name,
    n: labels.length,
    prompts: distinct(labels.map((label) => label.prompt)).length,
    seeds: distinct(labels.map((label) => label.seed)).sort((a, b) => a - b),
    sources: distinct(labels.map((label) => label.source)),
    layers: layerAccuracy(labels, { ...options, stream: `accuracy ${group.name}` }),
    emergence,
    emergenceSummary: summarizeEmergence(emergence, labelLayers(labels), {
      ...options,
      stream: `emergence ${group.name}`,
    }),
  };
}

/** A prompt as the permutation tests see it: its counts per layer and its emergence layer. */
interface PromptUnit {
  category: string;
  correct: Float64Array;
  total: Float64Array;
  /** One past the last layer when it never emerges. */
  emergence: number;
}

function promptUnits(labels: readonly Label[]): PromptUnit[] {
  const layers = labelLayers(labels);
  const past = (layers.at(-1) ?? 0) + 1;
  const emergence = new Map(emergenceLayers(labels).map((row) => [row.prompt, row.layer ?? past]));
  return promptCounts(labels, layers).map((prompt) => {
    const correct = new Float64Array(layers.length);
    const total = new Float64Array(layers.length);
    for (const seed of prompt.seeds) {
      for (let l = 0; l < layers.length; l++) {
        correct[l] = (correct[l] ?? 0) + (seed.correct[l] ?? 0);
        total[l] = (total[l] ?? 0) + (seed.total[l] ?? 0);
      }
    }
    return { category: prompt.category, correct, total, emergence: emergence.get(prompt.prompt) ?? past };
  });
}

/** The share correct of units at layer index `l` (all layers when null). */
function accuracyOf(l: number | null) {
  return (units: readonly PromptUnit[]): number => {
    let right = 0;
    let n = 0;
    for (const unit of units) {
      if (l === null) {
        for (let i = 0; i < unit.total.length; i++) {
          right += unit.correct[i] ?? 0;
          n += unit.total[i] ?? 0;
        }
      } else {
        right += unit.correct[l] ?? 0;
        n += unit.total[l] ?? 0;
      }
    }
    return n > 0 ? right / n : Number.NaN;
  };
}

const meanEmergence = (units: readonly PromptUnit[]): number =>
  units.length > 0 ? units.reduce((sum, unit) => sum + unit.emergence, 0) / units.length : Number.NaN;

/**
 * Each two categories of each group of the other dimensions compared: accuracy over all layers and at
 * each layer, and the mean emergence layer, each with a permutation test that shuffles the prompts'
 * categories. Prompts without a category take no part.
 */
export function compareCategories(
  labels: readonly Label[],
  by: readonly Dimension[],
  options: Omit<BootstrapOptions, 'confidence' | 'stream'> = {},
): CategoryComparison[] {
  const others = by.filter((dimension) => dimension !== 'category');
  const rows: CategoryComparison[] = [];
  for (const group of groupLabels(labels, others)) {
    const layers = labelLayers(group.labels);
    const units = promptUnits(group.labels).filter((unit) => unit.category !== '');
    const categories = distinct(units.map((unit) => unit.category));
    const measures: {
      measure: ComparisonMeasure;
      layer: number | null;
      statistic: (u: readonly PromptUnit[]) => number;
    }[] = [
      { measure: 'accuracy', layer: null, statistic: accuracyOf(null) },
      { measure: 'emergence', layer: null, statistic: meanEmergence },
      ...layers.map((layer, l) => ({ measure: 'accuracy' as const, layer, statistic: accuracyOf(l) })),
    ];
    for (const [i, categoryA] of categories.entries()) {
      for (const categoryB of categories.slice(i + 1)) {
        const a = units.filter((unit) => unit.category === categoryA);
        const b = units.filter((unit) => unit.category === categoryB);
        const results = permutationTests(
          a,
          b,
          measures.map((m) => m.statistic),
          { ...options, stream: `compare ${group.name} ${categoryA} ${categoryB}` },
        );
        results.forEach((result, m) => {
          const { measure, layer } = measures[m] as (typeof measures)[number];
          rows.push({
            key: group.key,
            name: group.name,
            categoryA,
            categoryB,
            promptsA: a.length,
            promptsB: b.length,
            measure,
            layer,
            neverAs: measure === 'emergence' ? (layers.at(-1) ?? 0) + 1 : null,
            ...result,
          });
        });
      }
    }
  }
  return rows;
}

/** The notes on what a grouping pools: a group with several questions, judges or models counted together. */
function poolingNotes(groups: readonly LabelGroup[], by: readonly Dimension[]): string[] {
  const notes: string[] = [];
  const pooled = (dimension: Dimension, what: string) => {
    if (by.includes(dimension)) return;
    const within = groups.map((group) =>
      distinct(group.labels.map((label) => dimensionValue(label, dimension))),
    );
    const widest = within.reduce((a, b) => (b.length > a.length ? b : a), []);
    if (widest.length > 1) {
      const where = groups.length > 1 ? ' in a group' : '';
      notes.push(`${widest.length} ${what} counted together${where}: ${widest.join(', ')}`);
    }
  };
  pooled('question', 'questions');
  pooled('model', 'models');
  pooled('source', 'judges (sources)');
  return notes;
}

/** Everything `diffusion-lens stats` reports, for a set of labels. */
export function computeStats(labels: readonly Label[], options: StatsOptions = {}): StatsSummary {
  const by = [...(options.by ?? DEFAULT_BY)];
  const notes: string[] = [];
  if (!by.includes('stage') && distinct(labels.map((label) => label.stage)).length > 1) {
    by.push('stage'); // a stage II image is another image of the same (prompt, layer, seed)
    notes.push('labels of stage I and stage II images: grouped by stage too');
  }
  const groups = groupLabels(labels, by);
  notes.push(...poolingNotes(groups, by));
  const resolved = {
    resamples: options.resamples ?? DEFAULT_RESAMPLES,
    seed: options.seed ?? 0,
    confidence: options.confidence ?? DEFAULT_CONFIDENCE,
  };
  return {
    by,
    ...resolved,
    n: labels.length,
    groups: groups.map((group) => groupStats(group, resolved)),
    comparisons: compareCategories(labels, by, resolved),
    agreement: sourceAgreement(labels),
    notes,
  };
}
