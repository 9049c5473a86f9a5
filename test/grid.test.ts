import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { buildGrid, gridLayout, textWidth, wrapText } from '../src/render/index.js';

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

describe('buildGrid', () => {
  it('has the layout size and holds every source image exactly', async () => {
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
      rowLabels: ['L0', 'L4', 'L12'],
      colLabels: ['s0', 's1'],
    };
    const png = await buildGrid({ ...options, cells: images.map((row) => row.map((i) => i.png)) });
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const layout = gridLayout({ ...options, cellWidth: w, cellHeight: h });
    expect(info.channels).toBe(3);
    expect([info.width, info.height]).toEqual([layout.width, layout.height]);
    // Room for labels, a title and gutters, and no more than needed.
    const { x: x0, y: y0 } = layout.cellOrigin(0, 0);
    expect(x0).toBeGreaterThanOrEqual(textWidth('L12', layout.scale));
    expect(y0).toBeGreaterThan(2 * 7 * layout.scale);
    expect(layout.cellOrigin(0, 1).x - x0).toBeGreaterThan(w);
    expect(layout.cellOrigin(1, 0).y - y0).toBeGreaterThan(h);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const { x, y } = layout.cellOrigin(r, c);
        const source = images[r]?.[c]?.raw as Buffer;
        for (let row = 0; row < h; row++) {
          const got = data.subarray(((y + row) * info.width + x) * 3, ((y + row) * info.width + x + w) * 3);
          expect(Buffer.compare(got, source.subarray(row * w * 3, (row + 1) * w * 3))).toBe(0);
        }
      }
    }
    // Labels and title are drawn (some dark pixels left of and above the cells).
    const dark = (x: number, y: number, ww: number, hh: number): number => {
      let n = 0;
      for (let yy = y; yy < y + hh; yy++) {
        for (let xx = x; xx < x + ww; xx++) if ((data[(yy * info.width + xx) * 3] ?? 255) < 128) n++;
      }
      return n;
    };
    expect(dark(0, y0, x0, h)).toBeGreaterThan(0); // L0
    expect(dark(x0, y0 - 7 * layout.scale - layout.gutter, w, 7 * layout.scale)).toBeGreaterThan(0); // s0
    expect(dark(0, 0, info.width, layout.gutter + 7 * layout.scale)).toBeGreaterThan(0); // title
  });

  it('flattens alpha, draws placeholders, and rejects mismatched sizes', async () => {
    const rgba = await sharp({
      create: { width: 16, height: 16, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 1 } },
    })
      .png()
      .toBuffer();
    const png = await buildGrid({
      title: '',
      rowLabels: ['L0'],
      colLabels: ['s0', 's1'],
      cells: [[rgba, null]],
    });
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const layout = gridLayout({
      title: '',
      rowLabels: ['L0'],
      colLabels: ['s0', 's1'],
      cellWidth: 16,
      cellHeight: 16,
    });
    const at = (x: number, y: number) => [
      ...data.subarray((y * info.width + x) * 3, (y * info.width + x) * 3 + 3),
    ];
    const a = layout.cellOrigin(0, 0);
    const b = layout.cellOrigin(0, 1);
    expect(at(a.x + 5, a.y + 5)).toEqual([10, 20, 30]);
    expect(at(b.x + 5, b.y + 5)).toEqual([200, 200, 200]);
    const big = (await noise(32, 32, 1)).png;
    await expect(
      buildGrid({ title: 't', rowLabels: ['L0'], colLabels: ['s0', 's1'], cells: [[rgba, big]] }),
    ).rejects.toThrow(/differ in size/);
  });
});

describe('wrapText', () => {
  it('wraps at spaces, splits long words, and ellipsises', () => {
    expect(wrapText('a red apple on a table', 10, 5)).toEqual(['a red', 'apple on a', 'table']);
    expect(wrapText('abcdefghijkl', 5, 5)).toEqual(['abcde', 'fghij', 'kl']);
    expect(wrapText('one two three four five six', 7, 2)).toEqual(['one two', 'thre...']);
  });
});
