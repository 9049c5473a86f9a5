import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { gridLegend, layerLabel, shortModelId, writeGrids } from '../src/experiment/grids.js';
import { type ImageSettings, planExperiment } from '../src/experiment/plan.js';
import {
  buildGrid,
  DEFAULT_MIN_CELL,
  escapeMarkup,
  type GridLayout,
  gridLayout,
  renderText,
  textColumns,
  upscaleFactor,
  wrapItems,
  wrapText,
} from '../src/render/index.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-grid-');

// A deterministic noisy RGB image, so that any misplaced or resampled pixel shows.
async function noise(width: number, height: number, seed: number): Promise<{ png: Buffer; raw: Buffer }> {
  const raw = Buffer.alloc(width * height * 3);
  let state = seed * 2654435761 + 1;
  for (let i = 0; i < raw.length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    raw[i] = state >>> 24;
  }
  const png = await sharp(raw, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
  return { png, raw };
}

interface Decoded {
  data: Buffer;
  width: number;
  height: number;
}

async function decode(png: Buffer): Promise<Decoded> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  expect(info.channels).toBe(3);
  return { data, width: info.width, height: info.height };
}

const pixel = (img: Decoded, x: number, y: number): number[] => [
  ...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3),
];

/** Pixels darker than 128 (all channels) in a rectangle. */
function dark(img: Decoded, x: number, y: number, w: number, h: number): number {
  let n = 0;
  for (let yy = y; yy < y + h; yy++) {
    for (let xx = x; xx < x + w; xx++) if (Math.max(...pixel(img, xx, yy)) < 128) n++;
  }
  return n;
}

/** The raw RGB bytes of a rectangle. */
function region(img: Decoded, x: number, y: number, w: number, h: number): Buffer {
  const rows: Buffer[] = [];
  for (let yy = y; yy < y + h; yy++)
    rows.push(img.data.subarray((yy * img.width + x) * 3, (yy * img.width + x + w) * 3));
  return Buffer.concat(rows);
}

/** The title block: from the top to the column labels. */
function titleRegion(layout: GridLayout): { x: number; y: number; w: number; h: number } {
  const last = layout.legendBoxes.at(-1) ?? layout.titleBoxes.at(-1);
  return { x: 0, y: 0, w: layout.width, h: last ? last.y + last.height : layout.margin };
}

describe('buildGrid', () => {
  it('upscales small images by an integer factor, nearest neighbour, and holds every source pixel exactly', async () => {
    const rows = 3;
    const cols = 2;
    const [w, h] = [32, 24];
    const images = await Promise.all(
      Array.from({ length: rows }, (_, r) =>
        Promise.all(Array.from({ length: cols }, (_, c) => noise(w, h, r * 10 + c))),
      ),
    );
    const options = {
      title: 'a red apple on a wooden table, photo',
      legend: ['model m', '20 steps'],
      rowLabels: ['L0', 'L4', 'L12 (final)'],
      colLabels: ['s0', 's1'],
    };
    const img = await decode(
      await buildGrid({ ...options, cells: images.map((row) => row.map((i) => i.png)) }),
    );
    const layout = gridLayout({ ...options, cellWidth: w, cellHeight: h });
    expect([img.width, img.height]).toEqual([layout.width, layout.height]);
    // 24 px → 6× = 144 px: the smallest integer factor that reaches 128 on the shorter side.
    expect(layout.upscale).toBe(6);
    expect([layout.cellWidth, layout.cellHeight]).toEqual([192, 144]);
    const k = layout.upscale;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const { x, y } = layout.cellOrigin(r, c);
        const source = images[r]?.[c]?.raw as Buffer;
        const src = (sx: number, sy: number) => [
          ...source.subarray((sy * w + sx) * 3, (sy * w + sx) * 3 + 3),
        ];
        // A few pixels by hand: each source pixel is a k×k block.
        expect(pixel(img, x, y)).toEqual(src(0, 0));
        expect(pixel(img, x + k - 1, y + k - 1)).toEqual(src(0, 0));
        expect(pixel(img, x + k, y)).toEqual(src(1, 0));
        expect(pixel(img, x + 5 * k + 2, y + 7 * k + 3)).toEqual(src(5, 7));
        expect(pixel(img, x + w * k - 1, y + h * k - 1)).toEqual(src(w - 1, h - 1));
        // And all of them.
        const expected = Buffer.alloc(w * k * h * k * 3);
        for (let yy = 0; yy < h * k; yy++) {
          for (let xx = 0; xx < w * k; xx++) {
            source.copy(
              expected,
              (yy * w * k + xx) * 3,
              (Math.floor(yy / k) * w + Math.floor(xx / k)) * 3,
              (Math.floor(yy / k) * w + Math.floor(xx / k)) * 3 + 3,
            );
          }
        }
        expect(Buffer.compare(region(img, x, y, w * k, h * k), expected)).toBe(0);
        // A 1 px grey border just outside the cell.
        for (const [bx, by] of [
          [x - 1, y - 1],
          [x + w * k, y + 10],
          [x + 10, y + h * k],
          [x - 1, y + h * k],
        ] as const) {
          const [pr, pg, pb] = pixel(img, bx, by);
          expect(pr).toBe(pg);
          expect(pg).toBe(pb);
          expect(pr).toBeGreaterThan(100);
          expect(pr).toBeLessThan(220);
        }
      }
    }
    // Cells do not touch, and leave room for labels and the title.
    const { x: x0, y: y0 } = layout.cellOrigin(0, 0);
    expect(layout.cellOrigin(0, 1).x - x0).toBeGreaterThan(layout.cellWidth + 2);
    expect(layout.cellOrigin(1, 0).y - y0).toBeGreaterThan(layout.cellHeight + 2);
    expect(x0).toBeGreaterThan(textColumns('L12 (final)') * layout.fontSize * 0.6);
  });

  it('keeps the minimum cell size: default 128, configurable, larger images untouched', async () => {
    expect(DEFAULT_MIN_CELL).toBe(128);
    expect(upscaleFactor(32, 32)).toBe(4);
    expect(upscaleFactor(16, 16)).toBe(8);
    expect(upscaleFactor(100, 100)).toBe(2);
    expect(upscaleFactor(128, 64)).toBe(2);
    expect(upscaleFactor(128, 128)).toBe(1);
    expect(upscaleFactor(512, 512)).toBe(1);
    expect(upscaleFactor(32, 32, 256)).toBe(8);
    expect(upscaleFactor(32, 32, 0)).toBe(1);
    expect(upscaleFactor(32, 32, 1)).toBe(1);
    for (const [side, minCell, want] of [
      [32, undefined, 128],
      [20, undefined, 140],
      [32, 100, 128],
      [32, 0, 32],
      [160, undefined, 160],
    ] as const) {
      const { png } = await noise(side, side, side);
      const opts = { title: 't', rowLabels: ['L0'], colLabels: ['s0'], minCell };
      const img = await decode(await buildGrid({ ...opts, cells: [[png]] }));
      const layout = gridLayout({ ...opts, cellWidth: side, cellHeight: side });
      expect(layout.cellWidth).toBe(want);
      expect(layout.cellWidth).toBeGreaterThanOrEqual(minCell ?? 128);
      expect(layout.cellWidth % side).toBe(0);
      expect([img.width, img.height]).toEqual([layout.width, layout.height]);
      const { x, y } = layout.cellOrigin(0, 0);
      // The last pixel of the cell is the source's last pixel, the one after it is the border.
      expect(pixel(img, x + want - 1, y + want - 1)).not.toEqual(pixel(img, x + want, y + want - 1));
    }
  });

  it('renders the title, the legend and the labels with a real font', async () => {
    const { png } = await noise(32, 32, 3);
    const base = {
      title: 'two large orange diamonds',
      legend: 'model shapes · 20 steps',
      rowLabels: ['L1'],
      colLabels: ['s0'],
      cells: [[png]],
    };
    const a = await decode(await buildGrid(base));
    const layout = gridLayout({ ...base, cellWidth: 32, cellHeight: 32 });
    const t = titleRegion(layout);
    expect(dark(a, t.x, t.y, t.w, t.h)).toBeGreaterThan(100);
    const { x: x0, y: y0 } = layout.cellOrigin(0, 0);
    const rowLabel = { x: 0, y: y0, w: x0 - 2, h: layout.cellHeight };
    const colLabel = {
      x: x0,
      y: layout.colLabelBoxes[0]?.y ?? 0,
      w: layout.cellWidth,
      h: y0 - 2 - (layout.colLabelBoxes[0]?.y ?? 0),
    };
    expect(dark(a, rowLabel.x, rowLabel.y, rowLabel.w, rowLabel.h)).toBeGreaterThan(10);
    expect(dark(a, colLabel.x, colLabel.y, colLabel.w, colLabel.h)).toBeGreaterThan(10);
    // Another label draws other pixels; another title too; the same ones draw the same.
    const b = await decode(await buildGrid({ ...base, rowLabels: ['L7'] }));
    expect([b.width, b.height]).toEqual([a.width, a.height]);
    const rows = (img: Decoded) => region(img, rowLabel.x, rowLabel.y, rowLabel.w, rowLabel.h);
    expect(Buffer.compare(rows(a), rows(b))).not.toBe(0);
    expect(Buffer.compare(region(a, t.x, t.y, t.w, t.h), region(b, t.x, t.y, t.w, t.h))).toBe(0);
    const c = await decode(await buildGrid({ ...base, title: 'two large orange circles' }));
    expect(Buffer.compare(region(a, t.x, t.y, t.w, t.h), region(c, t.x, t.y, t.w, t.h))).not.toBe(0);
    // "large" is five letters wide with a real "g" (the old bitmap font drew "lar9e").
    const large = await renderText('large', { size: 14 });
    const nine = await renderText('lar9e', { size: 14 });
    expect(large.inkRight - large.inkLeft).toBeGreaterThan(4 * 7);
    expect(Buffer.compare(large.data, nine.data)).not.toBe(0);
  });

  it('draws prompts with markup-special characters, emoji and other scripts as text', async () => {
    expect(escapeMarkup(`<b>"a" & 'b'</b>`)).toBe('&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;');
    // Rendered literally: '<b>x</b>' is eight characters wide, not a bold 'x'.
    const literal = await renderText('<b>x</b>', { size: 14 });
    const x = await renderText('x', { size: 14 });
    expect(literal.inkRight - literal.inkLeft).toBeGreaterThan(6 * (x.inkRight - x.inkLeft));
    const { png } = await noise(16, 16, 1);
    for (const title of [
      `a <span foreground="red">cat</span> & "dog" 'x' </span> <b`,
      'a cat 🙂 in 東京, ÅÉÎ, Привет, שלום',
      '&amp; &lt; &#x41; ]]> <!-- --> \u0000\u0007 \ud800 end',
      'x'.repeat(400),
    ]) {
      const options = { title, rowLabels: ['L0'], colLabels: ['s0'], cells: [[png]] };
      const img = await decode(await buildGrid(options));
      const layout = gridLayout({ ...options, cellWidth: 16, cellHeight: 16 });
      expect([img.width, img.height]).toEqual([layout.width, layout.height]);
      expect(layout.titleLines.length).toBeGreaterThan(0);
      expect(layout.titleLines.length).toBeLessThanOrEqual(3);
      const t = titleRegion(layout);
      expect(dark(img, t.x, t.y, t.w, t.h)).toBeGreaterThan(50);
    }
  });

  it('draws placeholders for missing cells, flattens alpha, and rejects mismatched sizes', async () => {
    const rgba = await sharp({
      create: { width: 16, height: 16, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 1 } },
    })
      .png()
      .toBuffer();
    const options = { title: '', rowLabels: ['L0'], colLabels: ['s0', 's1'] };
    const img = await decode(await buildGrid({ ...options, cells: [[rgba, null]] }));
    const layout = gridLayout({ ...options, cellWidth: 16, cellHeight: 16 });
    expect([img.width, img.height]).toEqual([layout.width, layout.height]);
    const a = layout.cellOrigin(0, 0);
    const b = layout.cellOrigin(0, 1);
    expect(pixel(img, a.x + 5, a.y + 70)).toEqual([10, 20, 30]);
    // Placeholder: light grey (not the white background), with a darker diagonal cross, framed.
    const fill = pixel(img, b.x + 10, b.y + 70);
    expect(fill[0]).toBe(fill[1]);
    expect(fill[0]).toBeGreaterThan(180);
    expect(fill[0]).toBeLessThan(250);
    expect(pixel(img, b.x + 64, b.y + 64)[0]).toBeLessThan(fill[0] ?? 0);
    expect(pixel(img, b.x - 1, b.y + 70)[0]).toBeLessThan(fill[0] ?? 0);
    // Only placeholders: needs the size.
    await expect(buildGrid({ ...options, cells: [[null, null]] })).rejects.toThrow(/no images/);
    const empty = await decode(
      await buildGrid({ ...options, cells: [[null, null]], emptyCellSize: { width: 16, height: 16 } }),
    );
    expect([empty.width, empty.height]).toEqual([layout.width, layout.height]);
    const big = (await noise(32, 32, 1)).png;
    await expect(buildGrid({ ...options, cells: [[rgba, big]] })).rejects.toThrow(/differ in size/);
    await expect(buildGrid({ ...options, cells: [[rgba]] })).rejects.toThrow(/expected 1×2 cells/);
  });

  it('builds a 25-layer × 4-seed grid of 32×32 images, each cell upscaled to 128 px', async () => {
    const cells = await Promise.all(
      Array.from({ length: 25 }, (_, r) =>
        Promise.all(Array.from({ length: 4 }, async (_, c) => (await noise(32, 32, r * 4 + c)).png)),
      ),
    );
    const options = {
      title: 'a photo of a cat sitting on a red chair next to a window',
      legend: ['model m', '50 steps', 'guidance 7.5', 'rows: layers (L24 = final)'],
      rowLabels: Array.from({ length: 25 }, (_, i) => layerLabel(i, 24)),
      colLabels: ['s0', 's1', 's2', 's3'],
      cells,
    };
    const meta = await sharp(await buildGrid(options)).metadata();
    expect(meta.height).toBeGreaterThan(25 * 128);
    expect(meta.width).toBeGreaterThan(4 * 128);
  });
});

describe('wrapText and wrapItems', () => {
  it('wraps at spaces, splits long words, and ellipsises', () => {
    expect(wrapText('a red apple on a table', 10, 5)).toEqual(['a red', 'apple on a', 'table']);
    expect(wrapText('abcdefghijkl', 5, 5)).toEqual(['abcde', 'fghij', 'kl']);
    expect(wrapText('one two three four five six', 7, 2)).toEqual(['one two', 'three…']);
    expect(wrapText('  a\n\tb  ', 10, 2)).toEqual(['a b']);
    expect(wrapText('', 10, 2)).toEqual([]);
  });

  it('counts wide characters as two columns and never splits an emoji or an accented letter', () => {
    expect(textColumns('abc')).toBe(3);
    expect(textColumns('東京')).toBe(4);
    expect(textColumns('👍🏽')).toBe(2);
    expect(textColumns('e\u0301')).toBe(1);
    expect(wrapText('東京東京東京', 5, 5)).toEqual(['東京', '東京', '東京']);
    expect(wrapText('👨‍👩‍👧👨‍👩‍👧👨‍👩‍👧', 4, 5)).toEqual(['👨‍👩‍👧👨‍👩‍👧', '👨‍👩‍👧']);
  });

  it('packs legend items, breaking only between them', () => {
    expect(wrapItems(['model m', '20 steps', 'guidance 5'], 20, 3)).toEqual([
      'model m · 20 steps',
      'guidance 5',
    ]);
    expect(wrapItems(['aaaa', 'bbbb', 'cccc', 'dddd'], 11, 1)).toEqual(['aaaa · bbb…']);
    expect(wrapItems(['a very long item indeed'], 10, 3)).toEqual(['a very', 'long item', 'indeed']);
  });
});

const settings: ImageSettings = {
  model: { id: '/home/me/checkpoints/shapes/', revision: null, family: 'sd', dtype: 'fp32' },
  sampler: {
    steps: 20,
    guidance: 5,
    height: 32,
    width: 32,
    scheduler: 'DPMSolverMultistepScheduler',
    negative: '',
  },
  lens: { uncond: 'final', noise: 'shared' },
};

describe('grid legends and labels', () => {
  it('marks the final layer', () => {
    expect(layerLabel(3, 8)).toBe('L3 · 37.5%');
    expect(layerLabel(7, 8, 7)).toBe('L7 · 87.5% (stock)');
    expect(layerLabel(8, 8, 7)).toBe('L8 (final)');
    expect(layerLabel(8, 8)).toBe('L8 (final)');
    expect(layerLabel(24, 24)).toBe('L24 (final)');
  });

  it('shortens local model paths to their folder name, keeps hub ids', () => {
    expect(shortModelId('/home/me/checkpoints/shapes/')).toBe('shapes');
    expect(shortModelId('/work/main/models/shapes')).toBe('shapes');
    expect(shortModelId('C:\\models\\sd15')).toBe('sd15');
    expect(shortModelId('./models/tiny')).toBe('tiny');
    expect(shortModelId('stabilityai/stable-diffusion-2-1')).toBe('stabilityai/stable-diffusion-2-1');
    expect(shortModelId('DeepFloyd/IF-I-XL-v1.0')).toBe('DeepFloyd/IF-I-XL-v1.0');
  });

  it('says the model, the settings and which layer is final; stage II its own settings', () => {
    const plan = planExperiment({ settings, prompts: ['p'], layers: [0, 8], seeds: [0], numLayers: 8 });
    const legend = gridLegend(plan, 1);
    expect(legend).toEqual([
      'model shapes',
      '20 steps',
      'guidance 5',
      '32×32',
      'DPMSolverMultistepScheduler',
      'uncond final',
      'noise shared',
      'rows: layers (L8 = final)',
      'columns: seeds',
    ]);
    const withNegative = planExperiment({
      settings: { ...settings, sampler: { ...settings.sampler, negative: 'blurry' } },
      prompts: ['p'],
      layers: [0],
      seeds: [0],
      numLayers: 8,
    });
    expect(gridLegend(withNegative, 1)).toContain('negative "blurry"');
    const two: ImageSettings = {
      ...settings,
      model: { id: 'DeepFloyd/IF-I-XL-v1.0', revision: null, family: 'if', dtype: 'fp16' },
      stage2: {
        model: { id: '/models/IF-II-L-v1.0', revision: null },
        steps: 50,
        guidance: 4,
        height: 256,
        width: 256,
        noise_level: 250,
        scheduler: 'DDPMScheduler',
        seed: 'same',
      },
    };
    const plan2 = planExperiment({
      settings: two,
      familyOptions: { load: {}, sample: {}, stage2: { noise_level: 250 } },
      prompts: ['p'],
      layers: [24],
      seeds: [0],
      stages: [1, 2],
      numLayers: 24,
    });
    const stage1 = gridLegend(plan2, 1).join(' · ');
    const stage2 = gridLegend(plan2, 2).join(' · ');
    expect(stage1).toContain('model DeepFloyd/IF-I-XL-v1.0');
    expect(stage1).not.toContain('stage II');
    expect(stage1).toContain('L24 = final');
    expect(stage2).toContain(
      'stage II: model IF-II-L-v1.0 · 50 steps · guidance 4 · 256×256 · noise level 250',
    );
  });

  it('writeGrids labels the final row, adds the legend, and leaves jobs that are not done as placeholders', async () => {
    const out = tempDir();
    const plan = planExperiment({
      settings,
      prompts: ['a <red> "cube" & co'],
      layers: [0, 4, 8],
      seeds: [0, 1],
      numLayers: 8,
    });
    const sources = new Map<string, Buffer>();
    for (const job of plan.jobs) {
      const { png, raw } = await noise(32, 32, job.index);
      sources.set(job.key, raw);
      mkdirSync(dirname(join(out, job.path)), { recursive: true });
      writeFileSync(join(out, job.path), png);
    }
    const notDone = plan.jobs.find((job) => job.layer === 4 && job.seed === 1);
    const grids = await writeGrids({
      outDir: out,
      plan,
      prompts: plan.prompts,
      layers: plan.layers,
      seeds: plan.seeds,
      minCell: 64,
      isDone: (job) => job !== notDone,
    });
    expect(grids).toHaveLength(1);
    const img = await decode(
      await sharp(join(out, grids[0]?.path ?? ''))
        .png()
        .toBuffer(),
    );
    const layout = gridLayout({
      title: plan.prompts[0] ?? '',
      legend: gridLegend(plan, 1),
      rowLabels: ['L0', 'L4', 'L8 (final)'],
      colLabels: ['s0', 's1'],
      cellWidth: 32,
      cellHeight: 32,
      minCell: 64,
    });
    expect([img.width, img.height]).toEqual([layout.width, layout.height]);
    expect(layout.upscale).toBe(2);
    expect(layout.legendLines.join(' ')).toContain('L8 = final');
    plan.layers.forEach((layer, r) => {
      plan.seeds.forEach((seed, c) => {
        const job = plan.jobs.find((j) => j.layer === layer && j.seed === seed);
        const { x, y } = layout.cellOrigin(r, c);
        const source = sources.get(job?.key ?? '') as Buffer;
        const got = pixel(img, x + 2 * 3 + 1, y + 2 * 5);
        const want = [...source.subarray((5 * 32 + 3) * 3, (5 * 32 + 3) * 3 + 3)];
        if (job === notDone) expect(got).not.toEqual(want);
        else expect(got).toEqual(want);
      });
    });
    const filler = pixel(img, layout.cellOrigin(1, 1).x + 20, layout.cellOrigin(1, 1).y + 40);
    expect(filler[0]).toBe(filler[2]);
    expect(filler[0]).toBeGreaterThan(180);
  });
});
