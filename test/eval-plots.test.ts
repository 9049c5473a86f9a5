// The plots (src/eval/plots.ts): Vega-Lite specs rendered to SVG in Node and rasterised to PNG.
import sharp from 'sharp';
import { compile } from 'vega-lite';
import { describe, expect, it } from 'vitest';
import {
  accuracySpec,
  computeStats,
  emergenceSpec,
  type Label,
  renderStatsPlots,
  renderSvg,
  svgToPng,
} from '../src/eval/index.js';

const points = [0, 1, 2].flatMap((layer) => [
  {
    group: 'colour',
    layer,
    accuracy: layer / 2,
    low: Math.max(0, layer / 2 - 0.1),
    high: Math.min(1, layer / 2 + 0.1),
  },
  { group: 'shape', layer, accuracy: layer / 4, low: 0, high: layer / 2 },
]);

describe('plots', () => {
  it('renders accuracy curves with bands, one line per group, to SVG and PNG', async () => {
    const spec = accuracySpec(points, { title: 'Shapes', groupTitle: 'question' });
    expect(() => compile(spec)).not.toThrow();
    const svg = await renderSvg(spec);
    expect(svg).toMatch(/^<svg[^>]*width="\d+"/);
    for (const text of ['Shapes', 'colour', 'shape', 'layer', 'accuracy']) expect(svg).toContain(text);
    expect(svg).toContain('class="mark-area role-mark');
    expect(svg).toContain('class="mark-line role-mark');
    const width = Number(/width="(\d+)"/.exec(svg)?.[1]);
    const png = await svgToPng(svg);
    const meta = await sharp(png).metadata();
    expect(meta.format).toBe('png');
    // Twice the size, the spare white border trimmed to a margin.
    expect(meta.width).toBeGreaterThan(width);
    expect(meta.width).toBeLessThanOrEqual(width * 2 + 32);
  });

  it('renders the emergence histogram with a never bar', async () => {
    const svg = await renderSvg(
      emergenceSpec([
        { group: 'g', layer: '2', prompts: 3 },
        { group: 'g', layer: 'never', prompts: 1 },
        { group: 'g', layer: '10', prompts: 2 },
      ]),
    );
    expect(svg).toContain('never');
    // Layers in numeric order, never last.
    const order = ['>2<', '>10<', '>never<'].map((label) => svg.indexOf(label));
    expect(order.every((at) => at > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
  });

  it('makes both plots of a stats summary', async () => {
    const labels: Label[] = [0, 1, 2].flatMap((layer) =>
      [0, 1].map((seed) => ({
        model: 'm',
        prompt: `p${seed}`,
        category: '',
        question: 'q',
        layer,
        seed,
        stage: 1 as const,
        value: layer > seed ? 1 : 0,
        correct: layer > seed,
        source: 'annotator:a',
      })),
    );
    const plots = await renderStatsPlots(computeStats(labels, { resamples: 50 }));
    expect(plots.map((plot) => plot.name)).toEqual(['accuracy', 'emergence']);
    for (const plot of plots) expect(plot.svg.startsWith('<svg')).toBe(true);
  });
});
