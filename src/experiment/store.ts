// The output folder: image and grid paths, atomic writes, and the journal that makes runs resumable.
//
//   DIR/images/<slug>-<hash8>/L07-s2.png          (stage II: L07-s2-stage2.png)
//   DIR/grids/<slug>-<hash8>.png                  (stage II: <slug>-<hash8>-stage2.png)
//   DIR/.diffusion-lens/journal.jsonl   one {key, path, sha256, bytes, settings} line per image, appended
//                                       after its rename
import { createHash, randomBytes } from 'node:crypto';
import { appendFile, mkdir, open, readFile, rename, rm, truncate } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
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

export const journalEntrySchema = z.object({
  /** The image's content key. */
  key: z.string().min(1),
  /** Where the image was written, relative to the output folder. */
  path: z.string().min(1),
  /** sha256 (hex) and length of the PNG bytes the worker sent for this key. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.int().nonnegative(),
  /** Id of the settings the image was made with (see settings.ts). */
  settings: z.string().min(1),
});
export type JournalEntry = z.infer<typeof journalEntrySchema>;

/** sha256 (hex) of bytes. */
export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 (hex) and length of a file, or null when it is missing or not a readable file. */
export async function hashFile(path: string): Promise<{ sha256: string; bytes: number } | null> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch {
    return null;
  }
  return { sha256: sha256Hex(data), bytes: data.length };
}

/** The lines of a JSONL file that an append-only writer keeps (a missing file has none). */
export interface JsonLines<T> {
  entries: T[];
  /** Lines that are not JSON or not what `schema` accepts. */
  skipped: number;
  /** The length in bytes of the complete lines, when a torn last line (a crash mid-append) follows them;
   *  the writer cuts it off before its next append. */
  tornBytes: number | null;
}

/** Reads a JSONL file written by appending whole lines: every complete line `schema` accepts. */
export async function readJsonLines<T>(file: string, schema: z.ZodType<T>): Promise<JsonLines<T>> {
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const complete = text.endsWith('\n') ? text : text.slice(0, text.lastIndexOf('\n') + 1);
  const entries: T[] = [];
  let skipped = 0;
  for (const line of complete.split('\n')) {
    if (!line.trim()) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      skipped++;
      continue;
    }
    const entry = schema.safeParse(parsed);
    if (entry.success) entries.push(entry.data);
    else skipped++;
  }
  return { entries, skipped, tornBytes: complete.length < text.length ? Buffer.byteLength(complete) : null };
}

/**
 * The append-only record of finished images: for each, the sha256 of the bytes its key produced. An
 * entry is appended only after the image's rename, and an image is reused only while the file at its
 * path still has those bytes (`verify`). A torn last line (a crash mid-append) is ignored and cut off
 * before the next append; other unreadable lines (or lines of older formats, which recorded no hash)
 * are skipped, so their images are made again.
 */
export class Journal {
  private readonly byKey = new Map<string, JournalEntry>();
  private readonly byPath = new Map<string, JournalEntry>();
  private repaired = false;

  private constructor(
    readonly file: string,
    private tornBytes: number | null,
    /** Lines skipped as unreadable. */
    readonly skippedLines: number,
  ) {}

  /** Reads DIR/.diffusion-lens/journal.jsonl (a missing file is an empty journal; nothing is created). */
  static async open(outDir: string): Promise<Journal> {
    const file = join(outDir, JOURNAL_FILE);
    const { entries, skipped, tornBytes } = await readJsonLines(file, journalEntrySchema);
    const journal = new Journal(file, tornBytes, skipped);
    for (const entry of entries) journal.remember(entry);
    return journal;
  }

  private remember(entry: JournalEntry): void {
    // The later line wins: a path rewritten by a later run holds that run's image.
    const previous = this.byPath.get(entry.path);
    if (previous && previous.key !== entry.key && this.byKey.get(previous.key) === previous) {
      this.byKey.delete(previous.key);
    }
    this.byKey.set(entry.key, entry);
    this.byPath.set(entry.path, entry);
  }

  /** The entry of a key, if its path has not been written since by another key. */
  get(key: string): JournalEntry | undefined {
    return this.byKey.get(key);
  }

  /** The last entry written at a path. */
  atPath(path: string): JournalEntry | undefined {
    return this.byPath.get(path);
  }

  /** The current entries: the last one of each path. */
  entries(): JournalEntry[] {
    return [...this.byPath.values()];
  }

  get size(): number {
    return this.byPath.size;
  }

  /**
   * True when the journal has `key` at `path` and the file there has exactly the bytes recorded for it
   * (so a file edited, truncated or deleted by hand, or rewritten by other settings, is not reused).
   */
  async verify(key: string, outDir: string, path: string): Promise<boolean> {
    const entry = this.byKey.get(key);
    if (!entry || entry.path !== path) return false;
    const actual = await hashFile(join(outDir, path));
    return actual !== null && actual.bytes === entry.bytes && actual.sha256 === entry.sha256;
  }

  async append(entry: JournalEntry): Promise<void> {
    if (!this.repaired) {
      await mkdir(dirname(this.file), { recursive: true });
      if (this.tornBytes !== null) await truncate(this.file, this.tornBytes);
      this.tornBytes = null;
      this.repaired = true;
    }
    const { key, path, sha256, bytes, settings } = entry;
    await appendFile(this.file, `${JSON.stringify({ key, path, sha256, bytes, settings })}\n`);
    this.remember(entry);
  }

  /** Rewrites the journal (atomically) with only the entries `keep` accepts. */
  async compact(keep: (entry: JournalEntry) => boolean): Promise<void> {
    const kept = this.entries().filter(keep);
    await writeFileAtomic(this.file, kept.map((entry) => `${JSON.stringify(entry)}\n`).join(''));
    this.byKey.clear();
    this.byPath.clear();
    for (const entry of kept) this.remember(entry);
    this.tornBytes = null;
    this.repaired = true;
  }
}
