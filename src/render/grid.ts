// One labelled grid per prompt: rows = layers, columns = seeds; a title (the prompt) and a legend line on
// top, seed labels above the columns and layer labels left of the rows, a thin grey border around every
// cell. Small images are upscaled by an integer factor with nearest-neighbour sampling (pixels stay
// square and exact); cells are composed in a raw RGB buffer, so every cell holds its (scaled) source
// pixels exactly. Text goes through sharp with a bundled font (./text.ts).
import sharp from 'sharp';
import {
  columnsWidth,
  drawTextImage,
  lineBoxHeight,
  type RgbImage,
  renderText,
  type TextImage,
  textColumns,
  wrapItems,
  wrapText,
} from './text.js';

/** The default minimum cell size (shorter side, pixels) that small images are upscaled to. */
export const DEFAULT_MIN_CELL = 128;

export interface GridOptions {
  /** The title (the prompt), wrapped to the grid's width, at most `maxTitleLines` lines. */
  title: string;
  /**
   * A line under the title in a smaller grey font (e.g. model and settings). A list is joined with ' · '
   * and wrapped only between its items. At most `maxLegendLines` lines.
   */
  legend?: string | readonly string[];
  /** One label per row, e.g. `L0`, `L4`, `L24 (final)`. */
  rowLabels: readonly string[];
  /** One label per column, e.g. `s0`, `s1`. */
  colLabels: readonly string[];
  /** cells[row][col]: PNG bytes or a file path; null leaves a placeholder. All the same size. */
  cells: ReadonlyArray<ReadonlyArray<Buffer | string | null>>;
  /** The images' size when no cell has one (a grid of placeholders); without it such a grid is an error. */
  emptyCellSize?: { width: number; height: number };
  /**
   * Images whose shorter side is below this are upscaled by the smallest integer factor that reaches it
   * (nearest neighbour); larger ones keep their size. Default 128; 0 or 1 never upscales.
   */
  minCell?: number;
  /** Label font size in pixels (the title is 1.3×, the legend 0.9×); default from the cell size (14 up to 256 px cells). */
  fontSize?: number;
  /** Space between cells, in pixels; default from the font size (7 for 14 px). */
  gutter?: number;
  /** Default 3. */
  maxTitleLines?: number;
  /** Default 3. */
  maxLegendLines?: number;
}

export interface GridLayoutOptions {
  title: string;
  legend?: string | readonly string[];
  rowLabels: readonly string[];
  colLabels: readonly string[];
  /** The source images' size (before upscaling). */
  cellWidth: number;
  cellHeight: number;
  minCell?: number;
  fontSize?: number;
  gutter?: number;
  maxTitleLines?: number;
  maxLegendLines?: number;
}

/** Where a line of text goes: its line box (top-left and size) and the font size. */
export interface TextBox {
  text: string;
  x: number;
  y: number;
  width: number;
  height: number;
  size: number;
}

export interface GridLayout {
  width: number;
  height: number;
  /** The displayed cell size (the source size × `upscale`). */
  cellWidth: number;
  cellHeight: number;
  /** The integer upscaling factor (1 = none). */
  upscale: number;
  /** Label font size; the title's is `titleSize`, the legend's `legendSize`. */
  fontSize: number;
  titleSize: number;
  legendSize: number;
  gutter: number;
  /** Outer margin. */
  margin: number;
  titleLines: string[];
  legendLines: string[];
  /** Line boxes of the title, the legend, the column labels (above each column), the row labels. */
  titleBoxes: TextBox[];
  legendBoxes: TextBox[];
  colLabelBoxes: TextBox[];
  rowLabelBoxes: TextBox[];
  /** Top-left corner of the cell (row, col). */
  cellOrigin(row: number, col: number): { x: number; y: number };
}

const WHITE = 255;
const TITLE_COLOR = [17, 17, 17] as const;
const LABEL_COLOR = [34, 34, 34] as const;
const LEGEND_COLOR = [90, 90, 90] as const;
const BORDER = [160, 160, 160] as const;
const PLACEHOLDER = [226, 226, 226] as const;
const PLACEHOLDER_CROSS = [185, 185, 185] as const;
/** The grid is widened up to this many title columns so that a long prompt needs fewer lines. */
const TITLE_MIN_COLUMNS = 48;
/** ... and widened up to this many title columns so that the title and the legend fit their lines. */
const MAX_TEXT_COLUMNS = 110;

/** The integer factor that brings the shorter side of a `width`×`height` image up to `minCell`. */
export function upscaleFactor(width: number, height: number, minCell: number = DEFAULT_MIN_CELL): number {
  const short = Math.min(width, height);
  if (!(minCell > 1) || !(short > 0) || short >= minCell) return 1;
  return Math.ceil(minCell / short);
}

function legendItems(legend: string | readonly string[] | undefined): readonly string[] {
  if (legend === undefined) return [];
  return typeof legend === 'string' ? [legend] : legend;
}

/** Where everything goes, for source images of `cellWidth`×`cellHeight`. */
export function gridLayout(options: GridLayoutOptions): GridLayout {
  const { rowLabels, colLabels } = options;
  if (!(options.cellWidth > 0 && options.cellHeight > 0)) throw new Error('grid: empty cell size');
  const upscale = upscaleFactor(options.cellWidth, options.cellHeight, options.minCell ?? DEFAULT_MIN_CELL);
  const cellWidth = options.cellWidth * upscale;
  const cellHeight = options.cellHeight * upscale;
  const rows = rowLabels.length;
  const cols = colLabels.length;
  const fontSize = Math.max(
    8,
    Math.round(options.fontSize ?? Math.min(48, 14 * Math.max(1, Math.min(cellWidth, cellHeight) / 256))),
  );
  const titleSize = Math.round(fontSize * 1.3);
  const legendSize = Math.max(8, Math.round(fontSize * 0.9));
  const gutter = Math.max(3, Math.round(options.gutter ?? fontSize / 2));
  const margin = Math.round(fontSize * 0.9);
  const labelHeight = lineBoxHeight(fontSize);
  const labelWidth = columnsWidth(Math.max(0, ...rowLabels.map(textColumns)), fontSize);
  const left = margin + labelWidth + (labelWidth > 0 ? fontSize : 0);
  const bodyWidth = cols * cellWidth + Math.max(0, cols - 1) * gutter;
  const contentWidth = left + bodyWidth + margin;
  // At least as wide as the cells; wider (up to MAX_TEXT_COLUMNS title columns) where the title or the
  // legend would otherwise need more than their lines, or to give a long title TITLE_MIN_COLUMNS.
  const maxTitleLines = options.maxTitleLines ?? 3;
  const maxLegendLines = options.maxLegendLines ?? 3;
  const items = legendItems(options.legend);
  const columnsFor = (size: number, w: number) =>
    Math.max(1, Math.floor((w - 2 * margin) / columnsWidth(1, size)));
  const fits = (w: number) =>
    wrapText(options.title, columnsFor(titleSize, w), Number.MAX_SAFE_INTEGER).length <= maxTitleLines &&
    wrapItems(items, columnsFor(legendSize, w), Number.MAX_SAFE_INTEGER).length <= maxLegendLines;
  const titleColumns = textColumns(options.title);
  let width = Math.max(
    contentWidth,
    columnsWidth(Math.min(titleColumns, TITLE_MIN_COLUMNS), titleSize) + 2 * margin,
  );
  const maxWidth = Math.max(width, columnsWidth(MAX_TEXT_COLUMNS, titleSize) + 2 * margin);
  const step = columnsWidth(4, titleSize);
  while (width < maxWidth && !fits(width)) width = Math.min(maxWidth, width + step);
  const textWidth = width - 2 * margin;
  const titleLines = options.title
    ? wrapText(options.title, columnsFor(titleSize, width), maxTitleLines)
    : [];
  const legendLines = wrapItems(items, columnsFor(legendSize, width), maxLegendLines);
  let y = margin;
  const titleBoxes = titleLines.map((text) => {
    const h = lineBoxHeight(titleSize);
    const box = { text, x: margin, y, width: textWidth, height: h, size: titleSize };
    y += h + Math.round(titleSize * 0.15);
    return box;
  });
  if (titleLines.length > 0 && legendLines.length > 0) y += Math.round(fontSize * 0.2);
  const legendBoxes = legendLines.map((text) => {
    const h = lineBoxHeight(legendSize);
    const box = { text, x: margin, y, width: textWidth, height: h, size: legendSize };
    y += h + Math.round(legendSize * 0.1);
    return box;
  });
  if (titleLines.length + legendLines.length > 0) y += Math.round(fontSize * 0.6);
  const colLabelTop = y;
  const top = colLabelTop + labelHeight + Math.round(gutter / 2) + 1;
  const height = top + rows * cellHeight + Math.max(0, rows - 1) * gutter + margin;
  const cellOrigin = (row: number, col: number) => ({
    x: left + col * (cellWidth + gutter),
    y: top + row * (cellHeight + gutter),
  });
  const colLabelBoxes = colLabels.map((text, col) => ({
    text,
    x: cellOrigin(0, col).x,
    y: colLabelTop,
    width: cellWidth,
    height: labelHeight,
    size: fontSize,
  }));
  const rowLabelBoxes = rowLabels.map((text, row) => ({
    text,
    x: margin,
    y: cellOrigin(row, 0).y,
    width: labelWidth + Math.round(fontSize / 2),
    height: cellHeight,
    size: fontSize,
  }));
  return {
    width,
    height,
    cellWidth,
    cellHeight,
    upscale,
    fontSize,
    titleSize,
    legendSize,
    gutter,
    margin,
    titleLines,
    legendLines,
    titleBoxes,
    legendBoxes,
    colLabelBoxes,
    rowLabelBoxes,
    cellOrigin,
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

/** Nearest-neighbour upscaling by an integer factor: every source pixel becomes a factor×factor block. */
async function upscale(image: RgbImage, factor: number): Promise<RgbImage> {
  if (factor === 1) return image;
  const width = image.width * factor;
  const height = image.height * factor;
  const data = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(width, height, { kernel: 'nearest', fit: 'fill' })
    .raw()
    .toBuffer();
  return { data, width, height };
}

function blit(target: RgbImage, source: RgbImage, x: number, y: number): void {
  const rowBytes = source.width * 3;
  for (let row = 0; row < source.height; row++) {
    const from = row * rowBytes;
    source.data.copy(target.data, ((y + row) * target.width + x) * 3, from, from + rowBytes);
  }
}

function setPixel(target: RgbImage, x: number, y: number, color: readonly number[]): void {
  if (x < 0 || y < 0 || x >= target.width || y >= target.height) return;
  const i = (y * target.width + x) * 3;
  target.data[i] = color[0] ?? 0;
  target.data[i + 1] = color[1] ?? 0;
  target.data[i + 2] = color[2] ?? 0;
}

function fillRect(target: RgbImage, x: number, y: number, w: number, h: number, color: readonly number[]) {
  const row = Buffer.alloc(w * 3);
  for (let i = 0; i < w; i++) row.set(color.slice(0, 3), i * 3);
  for (let yy = y; yy < y + h; yy++) row.copy(target.data, (yy * target.width + x) * 3);
}

/** A 1 px frame just outside the rectangle (x, y, w, h). */
function frame(target: RgbImage, x: number, y: number, w: number, h: number, color: readonly number[]) {
  for (let xx = x - 1; xx <= x + w; xx++) {
    setPixel(target, xx, y - 1, color);
    setPixel(target, xx, y + h, color);
  }
  for (let yy = y; yy < y + h; yy++) {
    setPixel(target, x - 1, yy, color);
    setPixel(target, x + w, yy, color);
  }
}

/** A missing cell: light grey with both diagonals drawn. */
function placeholder(target: RgbImage, x: number, y: number, w: number, h: number): void {
  fillRect(target, x, y, w, h, PLACEHOLDER);
  const steps = Math.max(w, h);
  for (let i = 0; i < steps; i++) {
    const xx = Math.floor((i * w) / steps);
    const yy = Math.floor((i * h) / steps);
    setPixel(target, x + xx, y + yy, PLACEHOLDER_CROSS);
    setPixel(target, x + w - 1 - xx, y + yy, PLACEHOLDER_CROSS);
  }
}

type Align = 'left' | 'center';

/** Draws one line of text in its box: vertically centred, left-aligned or centred, clipped to the box. */
function drawInBox(canvas: RgbImage, text: TextImage, box: TextBox, align: Align): void {
  const ink = text.inkRight - text.inkLeft;
  const x = align === 'center' ? box.x + Math.floor((box.width - ink) / 2) : box.x;
  const y = box.y + Math.floor((box.height - text.height) / 2);
  drawTextImage(canvas, text, Math.max(box.x, x), y, box);
}

/** Builds the grid and returns it as PNG bytes (RGB). */
export async function buildGrid(options: GridOptions): Promise<Buffer> {
  const { rowLabels, colLabels, cells } = options;
  if (cells.length !== rowLabels.length || cells.some((row) => row.length !== colLabels.length)) {
    throw new Error(`grid: expected ${rowLabels.length}×${colLabels.length} cells`);
  }
  const decoded = await Promise.all(cells.map((row) => Promise.all(row.map((c) => (c ? decode(c) : null)))));
  const first = decoded.flat().find((img): img is RgbImage => img !== null) ?? options.emptyCellSize;
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
    legend: options.legend,
    rowLabels,
    colLabels,
    cellWidth: first.width,
    cellHeight: first.height,
    minCell: options.minCell,
    fontSize: options.fontSize,
    gutter: options.gutter,
    maxTitleLines: options.maxTitleLines,
    maxLegendLines: options.maxLegendLines,
  });
  const texts: Array<{ box: TextBox; align: Align; image: Promise<TextImage> }> = [
    ...layout.titleBoxes.map((box) => ({
      box,
      align: 'left' as const,
      image: renderText(box.text, { size: box.size, bold: true, color: TITLE_COLOR }),
    })),
    ...layout.legendBoxes.map((box) => ({
      box,
      align: 'left' as const,
      image: renderText(box.text, { size: box.size, color: LEGEND_COLOR }),
    })),
    ...layout.colLabelBoxes.map((box) => ({
      box,
      align: 'center' as const,
      image: renderText(box.text, { size: box.size, color: LABEL_COLOR }),
    })),
    ...layout.rowLabelBoxes.map((box) => ({
      box,
      align: 'left' as const,
      image: renderText(box.text, { size: box.size, color: LABEL_COLOR }),
    })),
  ];
  const [scaled, rendered] = await Promise.all([
    Promise.all(decoded.map((row) => Promise.all(row.map((img) => img && upscale(img, layout.upscale))))),
    Promise.all(texts.map((t) => t.image)),
  ]);
  const { width, height } = layout;
  const canvas: RgbImage = { data: Buffer.alloc(width * height * 3, WHITE), width, height };
  texts.forEach((t, i) => {
    const image = rendered[i];
    if (image) drawInBox(canvas, image, t.box, t.align);
  });
  scaled.forEach((row, r) => {
    row.forEach((img, c) => {
      const { x, y } = layout.cellOrigin(r, c);
      if (img) blit(canvas, img, x, y);
      else placeholder(canvas, x, y, layout.cellWidth, layout.cellHeight);
      frame(canvas, x, y, layout.cellWidth, layout.cellHeight, BORDER);
    });
  });
  return sharp(canvas.data, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}
