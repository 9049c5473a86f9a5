// DIR/images.csv: one row per image (prompt, the prompt file's other columns, layer, depth, stage, seed,
// path, key), for pandas and spreadsheets.
import { join } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import type { Manifest } from './manifest.js';
import { writeFileAtomic } from './store.js';

export const IMAGES_CSV_FILE = 'images.csv';

const FIXED = ['prompt', 'layer', 'depth', 'stage', 'seed', 'path', 'key'] as const;

/** The CSV text of a manifest's images. Extra columns that clash with the fixed ones get a `prompt_` prefix. */
export function imagesCsv(manifest: Pick<Manifest, 'prompt_columns' | 'prompts' | 'images'>): string {
  const extra = manifest.prompt_columns.map((column) => ({
    column,
    header: (FIXED as readonly string[]).includes(column) ? `prompt_${column}` : column,
  }));
  const header = ['prompt', ...extra.map((e) => e.header), ...FIXED.slice(1)];
  const rows = manifest.images.map((image) => {
    const columns = manifest.prompts[image.prompt_index]?.columns ?? {};
    return [
      image.prompt,
      ...extra.map((e) => columns[e.column] ?? ''),
      image.layer,
      image.depth,
      image.stage,
      image.seed,
      image.path,
      image.key,
    ];
  });
  return stringify([header, ...rows]);
}

export async function writeImagesCsv(outDir: string, manifest: Manifest): Promise<string> {
  const path = join(outDir, IMAGES_CSV_FILE);
  await writeFileAtomic(path, imagesCsv(manifest));
  return path;
}
