// report.html: one self-contained page. The data (model.ts) goes in a <script type="application/json">
// element, escaped so that nothing in it (a prompt holding `</script>` or `<!--`) can end the element;
// the bundled client script and styles are inlined, and a Content-Security-Policy allows exactly those
// two (by hash) and images, so that even markup that got into the page could not run.
import { createHash } from 'node:crypto';
import type { ClientAssets } from './client-assets.js';
import type { ReportData } from './model.js';

/** The id of the element holding the page's data. */
export const DATA_ELEMENT_ID = 'report-data';

/** Text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * JSON that is safe inside a <script> element: `<`, `>` and `&` as \u escapes (so no `</script>`, `<!--`
 * or `]]>` can appear), and U+2028/2029 too. JSON.parse reads it back unchanged.
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

const hash = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** The page's Content-Security-Policy: its own script and styles, images, and its own server's API. */
export function contentSecurityPolicy(assets: ClientAssets, mode: ReportData['mode']): string {
  return [
    "default-src 'none'",
    `script-src ${hash(assets.js)}`,
    `style-src ${hash(assets.css)}`,
    `img-src 'self' data:${mode === 'static' ? ' file:' : ''}`,
    `connect-src ${mode === 'serve' ? "'self'" : "'none'"}`,
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
}

/** A closing tag inside inlined code would end its element early. */
function checkInline(code: string, tag: 'script' | 'style'): string {
  if (new RegExp(`</${tag}`, 'i').test(code)) throw new Error(`the bundled ${tag} contains </${tag}`);
  return code;
}

/** The whole page. */
export function reportHtml(data: ReportData, assets: ClientAssets): string {
  const js = checkInline(assets.js, 'script');
  const css = checkInline(assets.css, 'style');
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<meta http-equiv="Content-Security-Policy" content="${escapeHtml(contentSecurityPolicy(assets, data.mode))}">`,
    '<meta name="referrer" content="no-referrer">',
    '<link rel="icon" href="data:,">',
    `<title>${escapeHtml(`${data.title} · diffusion-lens report`)}</title>`,
    `<style>${css}</style>`,
    '</head>',
    '<body>',
    '<noscript>This report is an app: it needs JavaScript.</noscript>',
    `<script type="application/json" id="${DATA_ELEMENT_ID}">${jsonForScript(data)}</script>`,
    `<script>${js}</script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}
