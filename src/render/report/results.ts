// The results panel of a report: per run, the per-layer accuracy curves (with bootstrap confidence
// bands) and emergence-layer histograms of its labels (annotations, imported CSVs, automatic scores),
// as `diffusion-lens stats` computes and plots them (src/eval), with their tables. Runs without labels
// add nothing; the page says "no annotations or scores yet" while the panel is empty.
import {
  computeStats,
  type Label,
  readRunLabels,
  renderSvg,
  type StatsSummary,
  statsPlotSpecs,
} from '../../eval/index.js';
import { runLabels } from './data.js';
import { EMPTY_RESULTS, type ReportPlot, type ReportResults, type ReportTable } from './model.js';
import type { RunFolder } from './run-folder.js';

/** At most this many categories get their own curves (beyond, the plot is unreadable). */
const MAX_CATEGORY_GROUPS = 12;

const round = (value: number | null | undefined) =>
  value === null || value === undefined || !Number.isFinite(value) ? null : Math.round(value * 1000) / 1000;

function tables(label: string, summary: StatsSummary): ReportTable[] {
  return [
    {
      title: `${label}: per-layer accuracy (${Math.round(summary.confidence * 100)}% bootstrap CI)`,
      columns: ['group', 'layer', 'judgments', 'prompts', 'accuracy', 'CI low', 'CI high'],
      rows: summary.groups.flatMap((group) =>
        group.layers.map((row) => [
          group.name,
          row.layer,
          row.n,
          row.prompts,
          round(row.accuracy),
          round(row.low),
          round(row.high),
        ]),
      ),
    },
    {
      title:
        `${label}: emergence layer (first layer a prompt's images reach the threshold; the median's ` +
        `${Math.round(summary.confidence * 100)}% bootstrap CI resamples the prompts that emerge)`,
      columns: [
        'group',
        'prompts',
        'emerged',
        'never',
        'median layer',
        'median CI low',
        'median CI high',
        'mean layer',
      ],
      rows: summary.groups.map((group) => {
        const s = group.emergenceSummary;
        return [
          group.name,
          s.prompts,
          s.emerged,
          s.never,
          round(s.median),
          round(s.interval?.[0]),
          round(s.interval?.[1]),
          round(s.mean),
        ];
      }),
    },
  ];
}

async function plots(label: string, summary: StatsSummary): Promise<ReportPlot[]> {
  return Promise.all(
    statsPlotSpecs(summary, { title: label }).map(async (plot) => ({
      title: `${label}: ${plot.name}${summary.by.length > 0 ? ` by ${summary.by.join(', ')}` : ''}`,
      svg: await renderSvg(plot.spec),
    })),
  );
}

/** The results panel for the runs of a report. */
export async function reportResults(runs: readonly RunFolder[]): Promise<ReportResults> {
  const names = runLabels(runs);
  const result: ReportResults = { plots: [], tables: [], note: null };
  const notes: string[] = [];
  for (const [i, run] of runs.entries()) {
    const name = names[i] ?? run.dir;
    let labels: Label[];
    try {
      const read = await readRunLabels(run.dir);
      labels = read.labels;
      notes.push(...read.warnings.map((warning) => `${name}: ${warning}`));
    } catch (error) {
      notes.push(`${name}: labels not read: ${(error as Error).message}`);
      continue;
    }
    if (labels.length === 0) continue;
    const summary = computeStats(labels, { by: ['question'] });
    result.plots.push(...(await plots(name, summary)));
    result.tables.push(...tables(name, summary));
    const categories = new Set(labels.map((l) => l.category).filter((c) => c !== ''));
    if (categories.size > 1 && categories.size <= MAX_CATEGORY_GROUPS) {
      const byCategory = computeStats(labels, { by: ['question', 'category'] });
      result.plots.push(...(await plots(name, byCategory)));
      result.tables.push(...tables(name, byCategory));
    }
    notes.push(...summary.notes.map((note) => `${name}: ${note}`));
  }
  if (result.plots.length === 0 && result.tables.length === 0 && notes.length === 0) return EMPTY_RESULTS;
  result.note = notes.length > 0 ? notes.join('\n') : null;
  return result;
}
