// The statistics' plots as Vega-Lite specs (per-layer accuracy curves with their confidence bands, one
// line per group; the emergence-layer histogram), rendered here in Node: to SVG by vega's headless view
// (no browser, no canvas), and from that SVG to PNG by sharp, for papers. The specs are exported as they
// are, so a report or an editor (vega.github.io/editor) can restyle them.
import sharp from 'sharp';
import { parse as parseVega, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { StatsSummary } from './analysis.js';

export type { TopLevelSpec };

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
/** Installed with the fonts most systems have; the PNG rasteriser (librsvg) falls back through fontconfig. */
const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';
const NEVER = 'never';

const baseConfig = {
  font: FONT,
  view: { stroke: null },
  axis: { grid: true, gridOpacity: 0.4 },
  legend: { labelLimit: 320 },
};

/** One point of an accuracy curve. */
export interface AccuracyPoint {
  group: string;
  layer: number;
  accuracy: number;
  low: number;
  high: number;
}

export interface PlotOptions {
  title?: string;
  /** The legend's title (e.g. the grouping: "question"). */
  groupTitle?: string;
  /** Plot area, in pixels (default 480 x 300). */
  width?: number;
  height?: number;
}

/** Per-layer accuracy, a line and a confidence band per group (y from 0 to 1). */
export function accuracySpec(points: readonly AccuracyPoint[], options: PlotOptions = {}): TopLevelSpec {
  const groups = [...new Set(points.map((point) => point.group))];
  const x = {
    field: 'layer',
    type: 'quantitative' as const,
    title: 'layer',
    axis: { tickMinStep: 1, format: 'd' },
    scale: { nice: false },
  };
  const color = {
    field: 'group',
    type: 'nominal' as const,
    title: options.groupTitle ?? 'group',
    sort: groups,
    // Full colour in the legend, not the bands' faded one.
    legend: groups.length > 1 ? { symbolOpacity: 1 } : null,
  };
  return {
    $schema: SCHEMA,
    ...(options.title ? { title: options.title } : {}),
    width: options.width ?? 480,
    height: options.height ?? 300,
    data: {
      values: points.filter((point) => Number.isFinite(point.accuracy)).map((point) => ({ ...point })),
    },
    encoding: { x, color },
    layer: [
      {
        mark: { type: 'area', opacity: 0.18 },
        encoding: {
          y: { field: 'low', type: 'quantitative', title: 'accuracy', scale: { domain: [0, 1] } },
          y2: { field: 'high' },
        },
      },
      {
        mark: { type: 'line', point: true, strokeWidth: 2 },
        encoding: {
          y: { field: 'accuracy', type: 'quantitative', title: 'accuracy', scale: { domain: [0, 1] } },
          tooltip: [
            { field: 'group', type: 'nominal' },
            { field: 'layer', type: 'quantitative' },
            { field: 'accuracy', type: 'quantitative', format: '.3f' },
            { field: 'low', type: 'quantitative', format: '.3f' },
            { field: 'high', type: 'quantitative', format: '.3f' },
          ],
        },
      },
    ],
    config: baseConfig,
  } as TopLevelSpec;
}

/** One bar of the emergence histogram: how many prompts of a group emerge at a layer (or never). */
export interface EmergenceBar {
  group: string;
  /** A layer, or `never`. */
  layer: string;
  prompts: number;
}

/** How many prompts emerge at each layer, per group side by side; the last bar is `never`. */
export function emergenceSpec(bars: readonly EmergenceBar[], options: PlotOptions = {}): TopLevelSpec {
  const groups = [...new Set(bars.map((bar) => bar.group))];
  const layers = [...new Set(bars.map((bar) => bar.layer))].sort((a, b) =>
    a === NEVER ? 1 : b === NEVER ? -1 : Number(a) - Number(b),
  );
  return {
    $schema: SCHEMA,
    ...(options.title ? { title: options.title } : {}),
    width: options.width ?? 480,
    height: options.height ?? 240,
    data: { values: bars.map((bar) => ({ ...bar })) },
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'layer', type: 'ordinal', title: 'emergence layer', sort: layers, axis: { labelAngle: 0 } },
      y: { field: 'prompts', type: 'quantitative', title: 'prompts', axis: { tickMinStep: 1, format: 'd' } },
      color: {
        field: 'group',
        type: 'nominal',
        title: options.groupTitle ?? 'group',
        sort: groups,
        ...(groups.length > 1 ? {} : { legend: null }),
      },
      ...(groups.length > 1 ? { xOffset: { field: 'group', type: 'nominal', sort: groups } } : {}),
      tooltip: [
        { field: 'group', type: 'nominal' },
        { field: 'layer', type: 'ordinal' },
        { field: 'prompts', type: 'quantitative' },
      ],
    },
    config: baseConfig,
  } as TopLevelSpec;
}

/** Renders a Vega-Lite spec to SVG text, in Node. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parseVega(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/**
 * Rasterises an SVG to PNG at `scale` times its size (default 2: sharp enough for print), its white
 * border trimmed to a margin (vega, measuring text without a canvas, leaves room to spare).
 */
export async function svgToPng(svg: string, scale = 2): Promise<Buffer> {
  const white = { r: 255, g: 255, b: 255, alpha: 1 };
  const margin = 8 * scale;
  const trimmed = await sharp(Buffer.from(svg), { density: 72 * scale })
    .flatten({ background: white })
    .trim({ background: white, threshold: 0 })
    .toBuffer();
  return sharp(trimmed)
    .extend({ top: margin, bottom: margin, left: margin, right: margin, background: white })
    .png()
    .toBuffer();
}

/** The plots of a stats summary. */
export interface StatsPlot {
  /** File stem: `accuracy`, `emergence`. */
  name: string;
  spec: TopLevelSpec;
}

/** The legend title for a summary's grouping. */
const groupTitle = (summary: Pick<StatsSummary, 'by'>) =>
  summary.by.length > 0 ? summary.by.join(' · ') : 'group';

/** The accuracy curves and emergence histogram of a summary, as specs. */
export function statsPlotSpecs(summary: StatsSummary, options: Pick<PlotOptions, 'title'> = {}): StatsPlot[] {
  const percent = Math.round(summary.confidence * 100);
  const title = options.title;
  const points = summary.groups.flatMap((group) =>
    group.layers.map((row) => ({
      group: group.name,
      layer: row.layer,
      accuracy: row.accuracy,
      low: row.low,
      high: row.high,
    })),
  );
  const bars = summary.groups.flatMap((group) => [
    ...group.emergenceSummary.counts.map((count) => ({
      group: group.name,
      layer: String(count.layer),
      prompts: count.prompts,
    })),
    { group: group.name, layer: NEVER, prompts: group.emergenceSummary.never },
  ]);
  return [
    {
      name: 'accuracy',
      spec: accuracySpec(points, {
        title: title
          ? `${title}: per-layer accuracy (${percent}% CI)`
          : `Per-layer accuracy (${percent}% bootstrap CI)`,
        groupTitle: groupTitle(summary),
      }),
    },
    {
      name: 'emergence',
      spec: emergenceSpec(bars, {
        title: title ? `${title}: emergence layer` : 'Emergence layer per prompt',
        groupTitle: groupTitle(summary),
      }),
    },
  ];
}
