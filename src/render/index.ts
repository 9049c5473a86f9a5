export {
  buildGrid,
  DEFAULT_MIN_CELL,
  type GridLayout,
  type GridLayoutOptions,
  type GridOptions,
  gridLayout,
  type TextBox,
  upscaleFactor,
} from './grid.js';
export {
  escapeMarkup,
  fontFiles,
  type RgbImage,
  renderText,
  type TextImage,
  type TextStyle,
  textColumns,
  wrapItems,
  wrapText,
} from './text.js';
