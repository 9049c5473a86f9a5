#!/usr/bin/env node
// Bundles the report's client app (src/render/report-client/main.ts and styles.css) with esbuild into
// dist/report-client/report.js and report.css, which the report generator inlines into every
// report.html (src/render/report/client-assets.ts). Part of `npm run build`.
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const src = join(root, 'src', 'render', 'report-client');
const out = join(root, 'dist', 'report-client');
await mkdir(out, { recursive: true });

const common = { bundle: true, minify: true, legalComments: 'none', logLevel: 'warning', charset: 'utf8' };
await build({
  ...common,
  entryPoints: [join(src, 'main.ts')],
  outfile: join(out, 'report.js'),
  format: 'iife',
  target: ['chrome100', 'firefox100', 'safari15'],
  platform: 'browser',
});
await build({ ...common, entryPoints: [join(src, 'styles.css')], outfile: join(out, 'report.css') });
