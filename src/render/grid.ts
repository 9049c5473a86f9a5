// One labelled grid per prompt: rows = layers, columns = seeds, a title line with the prompt, seed labels
// on top and layer labels on the left. Pixels are composed in a raw RGB buffer, so every cell holds its
// source image exactly.
import sharp from 'sharp';
import { drawText, fillRect, GLYPH_ADVANCE, GLYPH_HEIGHT, type RgbImage, textWidth } from './font.js';

export interface GridOptions {
  /** The title (the prompt), wrapped to the grid's width, at most `maxTitleLines` lines. */
  title: string;
  /** One label per row, e.g. `L0`, `L4`. */
  rowLabels: readonly string[];
  /** One label per column, e.g. `s0`, `s1`. */
  colLabels: readonly string[];
  /** cells[row][col]: PNG bytes or a file path; null leaves a grey placeholder. All the same size. */
  cells: ReadonlyArray<ReadonlyArray<Buffer | string | null>>;
  /** Font scale (font pixels → image pixels); default from the cell size (2 for small images). */
  scale?: number;
  /** Space between cells and around labels, in pixels; default 4 (scaled up with large cells). */
  gutter?: number;
  maxTitleLines?: number;
}

export interface GridLayout {
  width: number;
  height: number;
  cellWidth: number;
  cellHeight: number;
  scale: number;
  gutter: number;
  titleLines: string[];
  /** Top-left corner of the cell (row, col). */
  cellOrigin(row: number, col: number): { x: number; y: number };
}

const BLACK = [0, 0, 0] as const;
const GREY = [200, 200, 200] as const;
const TITLE_WIDTH_MIN = 480;

/** Splits text into lines of at most `maxChars` characters, at spaces where possible. */
export function wrapText(text: string, maxChars: number, maxLines: number): string[] {
  const width = Math.max(1, maxChars);
  const words = text.replace(/\s+/g, ' ').trim().split(' ');
  const lines: string[] = [];
  let line = '';
  for (let word of words) {
    while ([...word].length > width) {
      if (line) {
        lines.push(line);
        line = '';
      }
      lines.push([...word].slice(0, width).join(''));
      word = [...word].slice(width).join('');
    }
    if (!line) line = word;
    else if ([...line].length + 1 + [...word].length <= width) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  if (lines.length > maxLines) {
    const kept = lines.slice(0, maxLines);
    const last = kept[maxLines - 1] ?? '';
    kept[maxLines - 1] = `${[...last].slice(0, Math.max(0, width - 3)).join('')}...`;
    return kept;
  }
  return lines;
}

/** Where everything goes, for cells of `cellWidth`×`cellHeight`. */
export function gridLayout(options: {
  title: string;
  rowLabels: readonly string[];
  colLabels: readonly string[];
  cellWidth: number;
  cellHeight: number;
  scale?: number;
  gutter?: number;
  maxTitleLines?: number;
}): GridLayout {
  const { cellWidth, cellHeight, rowLabels, colLabels } = options;
  const rows = rowLabels.length;
  const cols = colLabels.length;
  const small = Math.min(cellWidth, cellHeight);
  const scale = options.scale ?? Math.max(2, Math.min(6, Math.floor(small / 100)));
  const gutter = options.gutter ?? Math.max(4, scale * 2);
  const textHeight = GLYPH_HEIGHT * scale;
  const labelWidth = Math.max(0, ...rowLabels.map((l) => textWidth(l, scale)));
  const left = labelWidth + 2 * gutter;
  const bodyWidth = cols * cellWidth + Math.max(0, cols - 1) * gutter;
  const contentWidth = left + bodyWidth + gutter;
  const titleWidth = textWidth(options.title, scale) + 2 * gutter;
  const width = Math.max(contentWidth, Math.min(titleWidth, Math.max(TITLE_WIDTH_MIN, contentWidth)));
  const maxChars = Math.floor((width - 2 * gutter + scale) / (GLYPH_ADVANCE * scale));
  const titleLines = options.title ? wrapText(options.title, maxChars, options.maxTitleLines ?? 3) : [];
  const lineHeight = textHeight + Math.max(2, scale * 2);
  const titleHeight = titleLines.length * lineHeight;
  const top = gutter + titleHeight + gutter + textHeight + gutter;
  const height = top + rows * cellHeight + Math.max(0, rows - 1) * gutter + gutter;
  return {
    width,
    height,
    cellWidth,
    cellHeight,
    scale,
    gutter,
    titleLines,
    cellOrigin: (row, col) => ({
      x: left + col * (cellWidth + gutter),
      y: top + row * (cellHeight + gutter),
    }),
  };
}

async function decode(source: Buffer | string): Promise<RgbImage> {
  const { data, info } = await sharp(source)
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`expected an RGB image, got ${info.channels} channels`);
  return { data, width: info.width, height: info.height };
}

function blit(target: RgbImage, source: RgbImage, x: number, y: number): void {
  const rowBytes = source.width * 3;
  for (let row = 0; row < source.height; row++) {
    const from = row * rowBytes;
    source.data.copy(target.data, ((y + row) * target.width + x) * 3, from, from + rowBytes);
  }
}

/** Builds the grid and returns it as PNG bytes (RGB). */
export async function buildGrid(options: GridOptions): Promise<Buffer> {
  const { rowLabels, colLabels, cells } = options;
  if (cells.length !== rowLabels.length || cells.some((row) => row.length !== colLabels.length)) {
    throw new Error(`grid: expected ${rowLabels.length}×${colLabels.length} cells`);
  }
  const decoded = await Promise.all(cells.map((row) => Promise.all(row.map((c) => (c ? decode(c) : null)))));
  const first = decoded.flat().find((img): img is RgbImage => img !== null);
  if (!first) throw new Error('grid: no images');
  for (const img of decoded.flat()) {
    if (img && (img.width !== first.width || img.height !== first.height)) {
      throw new Error(
        `grid: images differ in size (${img.width}×${img.height} vs ${first.width}×${first.height})`,
      );
    }
  }
  const layout = gridLayout({
    title: options.title,
    rowLabels,
    colLabels,
    cellWidth: first.width,
    cellHeight: first.height,
    scale: options.scale,
    gutter: options.gutter,
    maxTitleLines: options.maxTitleLines,
  });
  const { width, height, scale, gutter } = layout;
  const canvas: RgbImage = { data: Buffer.alloc(width * height * 3, 255), width, height };
  const textHeight = GLYPH_HEIGHT * scale;
  const lineHeight = textHeight + Math.max(2, scale * 2);
  layout.titleLines.forEach((line, i) => {
    drawText(canvas, line, gutter, gutter + i * lineHeight, scale, BLACK);
  });
  colLabels.forEach((label, col) => {
    const { x, y } = layout.cellOrigin(0, col);
    const lx = x + Math.floor((layout.cellWidth - textWidth(label, scale)) / 2);
    drawText(canvas, label, Math.max(x, lx), y - gutter - textHeight, scale, BLACK);
  });
  rowLabels.forEach((label, row) => {
    const { y } = layout.cellOrigin(row, 0);
    drawText(canvas, label, gutter, y + Math.floor((layout.cellHeight - textHeight) / 2), scale, BLACK);
  });
  decoded.forEach((row, r) => {
    row.forEach((img, c) => {
      const { x, y } = layout.cellOrigin(r, c);
      if (img) blit(canvas, img, x, y);
      else fillRect(canvas, x, y, layout.cellWidth, layout.cellHeight, GREY);
    });
  });
  return sharp(canvas.data, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}
