// The report's client app, bundled at build time (scripts/build-report-client.mjs: esbuild bundles
// src/render/report-client/main.ts and styles.css into dist/report-client/), read once and inlined into
// every page, so that report.html needs nothing but itself and the run's images.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../../paths.js';

export const CLIENT_DIR = join(packageRoot, 'dist', 'report-client');

export interface ClientAssets {
  js: string;
  css: string;
}

let cached: Promise<ClientAssets> | null = null;

async function read(): Promise<ClientAssets> {
  try {
    const [js, css] = await Promise.all([
      readFile(join(CLIENT_DIR, 'report.js'), 'utf8'),
      readFile(join(CLIENT_DIR, 'report.css'), 'utf8'),
    ]);
    return { js, css };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    throw new Error(`the report's client app is not built (${CLIENT_DIR} is missing): run \`npm run build\``);
  }
}

/** The bundled client script and styles. */
export function clientAssets(): Promise<ClientAssets> {
  cached ??= read().catch((error: unknown) => {
    cached = null;
    throw error;
  });
  return cached;
}
