// The output folder: image and grid paths, atomic writes, and the journal that makes runs resumable.
//
//   DIR/images/<slug>-<hash8>/L07-s2.png          (stage II: L07-s2-stage2.png)
//   DIR/grids/<slug>-<hash8>.png                  (stage II: <slug>-<hash8>-stage2.png)
//   DIR/.diffusion-lens/journal.jsonl   one {"key","path"} line per image, appended after its rename
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, open, readFile, rename, rm, truncate } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Stage } from '../config/index.js';

const SLUG_MAX = 40;

/** A file-name-safe slug of a prompt: lowercase [a-z0-9-], at most 40 characters, never empty. */
export function slugify(text: string): string {
  const slug = text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, SLUG_MAX)
    .replace(/-+$/, '');
  return slug || 'prompt';
}

/** First 8 hex digits of sha256(prompt): keeps prompts with the same slug apart. */
export function promptHash8(prompt: string): string {
  return createHash('sha256').update(prompt).digest('hex').slice(0, 8);
}

/** `<slug>-<hash8>`: the folder of a prompt's images and the name of its grid. */
export function promptDirName(prompt: string): string {
  return `${slugify(prompt)}-${promptHash8(prompt)}`;
}

/** The file-name suffix of a stage's images and grids: none for stage I (paths as before stages). */
function stageSuffix(stage: Stage): string {
  return stage === 1 ? '' : `-stage${stage}`;
}

/**
 * `images/<slug>-<hash8>/L07-s2.png`, the layer zero-padded to the width of L; stage II images are
 * `L07-s2-stage2.png`. Relative, with '/'.
 */
export function imagePath(
  prompt: string,
  layer: number,
  seed: number,
  numLayers: number,
  stage: Stage = 1,
): string {
  const width = String(numLayers).length;
  return `images/${promptDirName(prompt)}/L${String(layer).padStart(width, '0')}-s${seed}${stageSuffix(stage)}.png`;
}

/** `grids/<slug>-<hash8>.png`; stage II: `grids/<slug>-<hash8>-stage2.png`. */
export function gridPath(prompt: string, stage: Stage = 1): string {
  return `grids/${promptDirName(prompt)}${stageSuffix(stage)}.png`;
}

export const STATE_DIR = '.diffusion-lens';
export const JOURNAL_FILE = `${STATE_DIR}/journal.jsonl`;
export const MANIFEST_FILE = 'manifest.json';

/**
 * Writes a file atomically: a temp file in the same folder, fsynced, then renamed over the target. A
 * reader sees the old file or the new one, never a partial one.
 */
export async function writeFileAtomic(path: string, data: Buffer | string): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

export interface JournalEntry {
  key: string;
  path: string;
}

/**
 * The append-only record of finished images. An entry is appended only after the image's rename, so
 * "in the journal and on disk" means "complete". A torn last line (a crash mid-append) is ignored, and
 * cut off before the next append.
 */
export class Journal {
  private readonly entries = new Map<string, string>();
  private repaired = false;

  private constructor(
    readonly file: string,
    private tornBytes: number | null,
  ) {}

  /** Reads DIR/.diffusion-lens/journal.jsonl (a missing file is an empty journal; nothing is created). */
  static async open(outDir: string): Promise<Journal> {
    const file = join(outDir, JOURNAL_FILE);
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const complete = text.endsWith('\n') ? text : text.slice(0, text.lastIndexOf('\n') + 1);
    const journal = new Journal(file, complete.length < text.length ? Buffer.byteLength(complete) : null);
    for (const line of complete.split('\n')) {
      if (!line.trim()) continue;
      try {
        const entry = JSON.parse(line) as Partial<JournalEntry>;
        if (typeof entry.key === 'string' && typeof entry.path === 'string') {
          journal.entries.set(entry.key, entry.path);
        }
      } catch {
        // A corrupt line (should not happen: lines are appended whole) is skipped.
      }
    }
    return journal;
  }

  /** The recorded path of a key, if any. */
  get(key: string): string | undefined {
    return this.entries.get(key);
  }

  /** True when the journal has `key` and the image file exists under `outDir`. */
  isDone(key: string, outDir: string, path: string): boolean {
    const recorded = this.entries.get(key);
    return recorded === path && existsSync(join(outDir, path));
  }

  get size(): number {
    return this.entries.size;
  }

  async append(entry: JournalEntry): Promise<void> {
    if (!this.repaired) {
      await mkdir(dirname(this.file), { recursive: true });
      if (this.tornBytes !== null) await truncate(this.file, this.tornBytes);
      this.tornBytes = null;
      this.repaired = true;
    }
    await appendFile(this.file, `${JSON.stringify({ key: entry.key, path: entry.path })}\n`);
    this.entries.set(entry.key, entry.path);
  }
}
