export { drawText, GLYPH_HEIGHT, GLYPH_WIDTH, glyphRows, type RgbImage, textWidth } from './font.js';
export { buildGrid, type GridLayout, type GridOptions, gridLayout, wrapText } from './grid.js';
