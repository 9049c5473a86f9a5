// Text for the grids: DejaVu Sans Mono from the `dejavu-fonts-ttf` package, rendered by sharp (libvips →
// Pango) from that font file, so the result does not depend on the fonts a machine has (characters
// DejaVu lacks, such as CJK or emoji, fall back to whatever fonts fontconfig finds). A monospaced font
// lets the layout be computed without rendering: a character is `advance(size)` pixels wide, a wide
// (CJK, emoji) one two columns.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import stringWidth from 'string-width';

const FONT_FAMILY = 'DejaVu Sans Mono';
/** The advance width of every DejaVu Sans Mono glyph, in em (1233 / 2048 font units). */
const ADVANCE_EM = 1233 / 2048;

let fontDir: string | undefined;

/** The font files: DejaVuSansMono.ttf and DejaVuSansMono-Bold.ttf from the dejavu-fonts-ttf package. */
export function fontFiles(): { regular: string; bold: string } {
  if (fontDir === undefined) {
    const require = createRequire(import.meta.url);
    fontDir = join(dirname(require.resolve('dejavu-fonts-ttf/package.json')), 'ttf');
  }
  return { regular: join(fontDir, 'DejaVuSansMono.ttf'), bold: join(fontDir, 'DejaVuSansMono-Bold.ttf') };
}

/**
 * The width of one column (one character) at `size` pixels: at least the exact advance, and at least the
 * advance rounded to whole pixels as Pango does with hinted metrics, so layouts are never too narrow.
 */
export function advance(size: number): number {
  return Math.max(size * ADVANCE_EM, Math.round(size * ADVANCE_EM));
}

/** The height of a rendered line of text at `size` pixels (ascent + descent, rounded up). */
export function lineBoxHeight(size: number): number {
  return Math.ceil(size * 1.2) + 2;
}

/** The pixel width of `columns` columns at `size`. */
export function columnsWidth(columns: number, size: number): number {
  return Math.ceil(columns * advance(size));
}

const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/** User-perceived characters (grapheme clusters): an emoji sequence or a letter with accents is one. */
export function graphemes(text: string): string[] {
  return Array.from(segmenter.segment(text), (s) => s.segment);
}

/** The width of `text` in monospace columns: 2 for a wide (CJK, emoji) character, 0 for marks alone. */
export function textColumns(text: string): number {
  return stringWidth(text);
}

/** The longest prefix of `text` that fits in `columns` columns, whole graphemes only. */
function fitColumns(text: string, columns: number): string {
  let used = 0;
  let out = '';
  for (const g of graphemes(text)) {
    const w = stringWidth(g);
    if (used + w > columns) break;
    used += w;
    out += g;
  }
  return out;
}

/** Control characters out, whitespace runs to one space, lone surrogates to U+FFFD. */
export function cleanText(text: string): string {
  return text
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
    .replace(/\s+/g, ' ')
    .replace(/\p{Cc}/gu, '')
    .trim();
}

const ELLIPSIS = '…';

/**
 * Splits text into at most `maxLines` lines of at most `maxColumns` columns, at spaces where possible (a
 * word longer than a line is split); when it does not fit, the last line ends with '…'.
 */
export function wrapText(text: string, maxColumns: number, maxLines: number): string[] {
  const width = Math.max(1, Math.floor(maxColumns));
  const words = cleanText(text).split(' ').filter(Boolean);
  const lines: string[] = [];
  let line = '';
  for (let word of words) {
    while (textColumns(word) > width) {
      if (line) {
        lines.push(line);
        line = '';
      }
      const head = fitColumns(word, width) || (graphemes(word)[0] ?? '');
      lines.push(head);
      word = word.slice(head.length);
    }
    if (!word) continue;
    if (!line) line = word;
    else if (textColumns(line) + 1 + textColumns(word) <= width) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  return truncateLines(lines, width, maxLines);
}

function truncateLines(lines: string[], width: number, maxLines: number): string[] {
  const limit = Math.max(1, Math.floor(maxLines));
  if (lines.length <= limit) return lines;
  const kept = lines.slice(0, limit);
  const last = kept[limit - 1] ?? '';
  kept[limit - 1] = `${fitColumns(last, Math.max(0, width - 1)).trimEnd()}${ELLIPSIS}`;
  return kept;
}

/**
 * Packs items into lines of at most `maxColumns` columns, joined by `separator` and broken only between
 * items (an item longer than a line is wrapped at its spaces); at most `maxLines` lines, else '…'.
 */
export function wrapItems(
  items: readonly string[],
  maxColumns: number,
  maxLines: number,
  separator = ' · ',
): string[] {
  const width = Math.max(1, Math.floor(maxColumns));
  const sep = textColumns(separator);
  const lines: string[] = [];
  let line = '';
  for (const raw of items) {
    const item = cleanText(raw);
    if (!item) continue;
    if (line && textColumns(line) + sep + textColumns(item) <= width) {
      line += `${separator}${item}`;
      continue;
    }
    if (line) lines.push(line);
    line = '';
    if (textColumns(item) <= width) line = item;
    else {
      const parts = wrapText(item, width, Number.MAX_SAFE_INTEGER);
      line = parts.pop() ?? '';
      lines.push(...parts);
    }
  }
  if (line) lines.push(line);
  return truncateLines(lines, width, maxLines);
}

/** Escapes text for Pango markup (the input format of sharp's text rendering). */
export function escapeMarkup(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

export interface TextStyle {
  /** Font size in pixels. */
  size: number;
  bold?: boolean;
  /** Text colour, [r, g, b]. */
  color?: readonly [number, number, number];
}

/** One rendered line: RGBA pixels on a transparent background. */
export interface TextImage {
  data: Buffer;
  width: number;
  height: number;
  /** The first and one past the last column with ink (alpha > 0); 0, 0 when there is none. */
  inkLeft: number;
  inkRight: number;
}

const cache = new Map<string, Promise<TextImage>>();
const CACHE_LIMIT = 512;

function hex(color: readonly [number, number, number]): string {
  return `#${color
    .map((c) =>
      Math.max(0, Math.min(255, Math.round(c)))
        .toString(16)
        .padStart(2, '0'),
    )
    .join('')}`;
}

/**
 * Renders one line of text. The image starts with an invisible full-height block (a strut), so every
 * line of one size has the same height and baseline whatever its letters; the visible text lies in
 * columns `inkLeft`..`inkRight`. Results are cached (labels repeat from grid to grid).
 */
export function renderText(text: string, style: TextStyle): Promise<TextImage> {
  const clean = cleanText(text);
  const color = style.color ?? [0, 0, 0];
  const key = `${style.size}|${style.bold ? 'b' : 'r'}|${hex(color)}|${clean}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const files = fontFiles();
  const markup = `<span fgalpha="1">\u2588</span><span foreground="${hex(color)}">${escapeMarkup(clean)}</span>`;
  const rendered = sharp({
    text: {
      text: markup,
      font: `${FONT_FAMILY}${style.bold ? ' Bold' : ''} ${style.size}px`,
      fontfile: style.bold ? files.bold : files.regular,
      dpi: 72,
      rgba: true,
    },
  })
    .ensureAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true })
    .then(({ data, info }) => {
      if (info.channels !== 4) throw new Error(`text: expected RGBA, got ${info.channels} channels`);
      let inkLeft = info.width;
      let inkRight = 0;
      for (let y = 0; y < info.height; y++) {
        const row = y * info.width * 4;
        for (let x = 0; x < info.width; x++) {
          if ((data[row + x * 4 + 3] ?? 0) > 0) {
            if (x < inkLeft) inkLeft = x;
            if (x + 1 > inkRight) inkRight = x + 1;
          }
        }
      }
      if (inkRight === 0) inkLeft = 0;
      return { data, width: info.width, height: info.height, inkLeft, inkRight };
    });
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(key, rendered);
  rendered.catch(() => cache.delete(key));
  return rendered;
}

/** An RGB image in a raw buffer, 3 bytes a pixel, row-major. */
export interface RgbImage {
  data: Buffer;
  width: number;
  height: number;
}

/**
 * Draws the visible part of `text` with its ink starting at `x` (left edge of the first letter) and its
 * line box top at `y`, clipped to the rectangle `clip` (default: the whole image).
 */
export function drawTextImage(
  target: RgbImage,
  text: TextImage,
  x: number,
  y: number,
  clip: { x: number; y: number; width: number; height: number } = {
    x: 0,
    y: 0,
    width: target.width,
    height: target.height,
  },
): void {
  const x0 = Math.max(clip.x, 0);
  const y0 = Math.max(clip.y, 0);
  const x1 = Math.min(clip.x + clip.width, target.width);
  const y1 = Math.min(clip.y + clip.height, target.height);
  const left = x - text.inkLeft;
  for (let row = 0; row < text.height; row++) {
    const ty = y + row;
    if (ty < y0 || ty >= y1) continue;
    for (let col = text.inkLeft; col < text.inkRight; col++) {
      const tx = left + col;
      if (tx < x0 || tx >= x1) continue;
      const s = (row * text.width + col) * 4;
      const a = text.data[s + 3] ?? 0;
      if (a === 0) continue;
      const d = (ty * target.width + tx) * 3;
      for (let c = 0; c < 3; c++) {
        const src = text.data[s + c] ?? 0;
        const dst = target.data[d + c] ?? 0;
        target.data[d + c] = Math.round((src * a + dst * (255 - a)) / 255);
      }
    }
  }
}
