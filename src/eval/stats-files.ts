// A stats summary as files: CSV tables (accuracy.csv, emergence.csv, emergence-summary.csv,
// comparisons.csv, agreement.csv, labels.csv), the plots as SVG with their Vega-Lite specs (*.vl.json),
// and PNG on request.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import type { Dimension, GroupKey, StatsSummary } from './analysis.js';
import type { Label } from './labels.js';
import { renderSvg, type StatsPlot, statsPlotSpecs, svgToPng } from './plots.js';

/** A number as written: 4 decimals at most; empty when undefined. */
const num = (value: number | null | undefined): string =>
  value === null || value === undefined || !Number.isFinite(value)
    ? ''
    : String(Math.round(value * 10_000) / 10_000);

const keyCells = (key: GroupKey, by: readonly Dimension[]) => by.map((dimension) => key[dimension] ?? '');

const csv = (header: string[], rows: (string | number)[][]) =>
  stringify([header, ...rows.map((r) => r.map(String))]);

/** accuracy.csv: per group and layer, the judgments, prompts, correct, accuracy and its interval. */
export function accuracyCsv(summary: StatsSummary): string {
  return csv(
    [...summary.by, 'group', 'layer', 'n', 'prompts', 'correct', 'accuracy', 'ci_low', 'ci_high'],
    summary.groups.flatMap((group) =>
      group.layers.map((row) => [
        ...keyCells(group.key, summary.by),
        group.name,
        row.layer,
        row.n,
        row.prompts,
        row.correct,
        num(row.accuracy),
        num(row.low),
        num(row.high),
      ]),
    ),
  );
}

/** emergence.csv: per group and prompt, its category and emergence layer (empty: never). */
export function emergenceCsv(summary: StatsSummary): string {
  return csv(
    [...summary.by, 'group', 'prompt', 'category', 'emergence_layer'],
    summary.groups.flatMap((group) =>
      group.emergence.map((row) => [
        ...keyCells(group.key, summary.by),
        group.name,
        row.prompt,
        row.category,
        row.layer ?? '',
      ]),
    ),
  );
}

/**
 * emergence-summary.csv: per group, prompts, how many emerge, never, the median layer with its bootstrap
 * interval (median_low, median_high; empty when none emerges), and the mean layer.
 */
export function emergenceSummaryCsv(summary: StatsSummary): string {
  return csv(
    [
      ...summary.by,
      'group',
      'prompts',
      'emerged',
      'never',
      'median_layer',
      'median_low',
      'median_high',
      'mean_layer',
    ],
    summary.groups.map((group) => {
      const s = group.emergenceSummary;
      return [
        ...keyCells(group.key, summary.by),
        group.name,
        s.prompts,
        s.emerged,
        s.never,
        num(s.median),
        num(s.interval?.[0]),
        num(s.interval?.[1]),
        num(s.mean),
      ];
    }),
  );
}

/** comparisons.csv: per group and pair of categories, each measure with its permutation p-value. */
export function comparisonsCsv(summary: StatsSummary): string {
  const others = summary.by.filter((dimension) => dimension !== 'category');
  return csv(
    [
      ...others,
      'group',
      'category_a',
      'category_b',
      'prompts_a',
      'prompts_b',
      'measure',
      'layer',
      'a',
      'b',
      'difference',
      'p_value',
      'permutations',
    ],
    summary.comparisons.map((row) => [
      ...keyCells(row.key, others),
      row.name,
      row.categoryA,
      row.categoryB,
      row.promptsA,
      row.promptsB,
      row.measure,
      row.layer ?? 'all',
      num(row.a),
      num(row.b),
      num(row.difference),
      num(row.p),
      row.permutations,
    ]),
  );
}

/** agreement.csv: per two judges and question (empty: all), items both judged, agreement and kappa. */
export function agreementCsv(summary: StatsSummary): string {
  return csv(
    ['source_a', 'source_b', 'question', 'n', 'agreement', 'kappa'],
    summary.agreement.map((row) => [
      row.a,
      row.b,
      row.question ?? '',
      row.n,
      num(row.agreement),
      num(row.kappa),
    ]),
  );
}

/** labels.csv: every judgment counted, one per line (the input of every number here). */
export function labelsCsv(labels: readonly Label[]): string {
  return csv(
    ['model', 'prompt', 'category', 'question', 'layer', 'seed', 'stage', 'value', 'correct', 'source'],
    labels.map((l) => [
      l.model,
      l.prompt,
      l.category,
      l.question,
      l.layer,
      l.seed,
      l.stage,
      num(l.value),
      l.correct ? 1 : 0,
      l.source,
    ]),
  );
}

/** A plot rendered: its spec and SVG. */
export interface RenderedPlot extends StatsPlot {
  svg: string;
}

/** The summary's plots rendered to SVG (for a report to embed). */
export async function renderStatsPlots(
  summary: StatsSummary,
  options: { title?: string } = {},
): Promise<RenderedPlot[]> {
  return Promise.all(
    statsPlotSpecs(summary, options).map(async (plot) => ({ ...plot, svg: await renderSvg(plot.spec) })),
  );
}

export interface WriteStatsOptions {
  /** Also write each plot as PNG (at twice its size). */
  png?: boolean;
  /** The plots' title prefix (e.g. the run's name). */
  title?: string;
}

/** Writes the tables and plots of a summary into `outDir` (made if missing); returns the paths written. */
export async function writeStatsFiles(
  summary: StatsSummary,
  labels: readonly Label[],
  outDir: string,
  options: WriteStatsOptions = {},
): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const files: [string, string | Buffer][] = [
    ['accuracy.csv', accuracyCsv(summary)],
    ['emergence.csv', emergenceCsv(summary)],
    ['emergence-summary.csv', emergenceSummaryCsv(summary)],
    ['labels.csv', labelsCsv(labels)],
  ];
  if (summary.comparisons.length > 0) files.push(['comparisons.csv', comparisonsCsv(summary)]);
  if (summary.agreement.length > 0) files.push(['agreement.csv', agreementCsv(summary)]);
  for (const plot of await renderStatsPlots(summary, options)) {
    files.push([`${plot.name}.vl.json`, `${JSON.stringify(plot.spec, null, 2)}\n`]);
    files.push([`${plot.name}.svg`, plot.svg]);
    if (options.png) files.push([`${plot.name}.png`, await svgToPng(plot.svg)]);
  }
  return Promise.all(
    files.map(async ([name, content]) => {
      const path = join(outDir, name);
      await writeFile(path, content);
      return path;
    }),
  );
}
