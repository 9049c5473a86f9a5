// Thumbnails for the report's grids: a WebP of at most THUMB_SIDE pixels per side for each image larger
// than THUMB_MIN_SOURCE, in RUN_DIR/report/thumbs/<key>.webp. Small images (the shapes model's 32×32)
// need none: the page upscales them without smoothing. A thumbnail is made again only when its image is
// newer; images missing on disk get none (the page shows their placeholder).
import { mkdir, realpath, rename, stat } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import sharp from 'sharp';

export const THUMBS_DIR = 'report/thumbs';
/** The longer side of a thumbnail, in pixels (twice a grid cell's default CSS size, for sharp screens). */
export const THUMB_SIDE = 192;
/** Images with a longer side up to this are shown as they are. */
export const THUMB_MIN_SOURCE = 256;

/** A thumbnail's path in its run folder ('/'-separated). Keys are hex digests; anything else is hashed. */
export function thumbPath(key: string): string {
  const name = /^[A-Za-z0-9_-]{1,128}$/.test(key) ? key : Buffer.from(key).toString('hex').slice(0, 128);
  return `${THUMBS_DIR}/${name}.webp`;
}

export interface ThumbJob {
  key: string;
  /** The image, relative to the run folder (already checked by safeRelativePath). */
  src: string;
}

export interface ThumbStats {
  made: number;
  reused: number;
  /** Images that could not be read (missing or not an image). */
  failed: number;
}

/** Runs `work` over `items`, `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  });
  await Promise.all(runners);
}

/**
 * Makes the thumbnails of `jobs` in `runDir` that are missing or older than their image. Returns, per
 * key, the thumbnail's path for the images that have one.
 */
export async function makeThumbnails(
  runDir: string,
  jobs: readonly ThumbJob[],
  options: { concurrency?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<{ paths: Map<string, string>; stats: ThumbStats }> {
  const paths = new Map<string, string>();
  const stats: ThumbStats = { made: 0, reused: 0, failed: 0 };
  if (jobs.length === 0) return { paths, stats };
  const root = await realpath(runDir);
  await mkdir(join(root, THUMBS_DIR), { recursive: true });
  let done = 0;
  await pool(jobs, options.concurrency ?? 4, async (job) => {
    const target = thumbPath(job.key);
    const out = join(root, target);
    try {
      // The image must really be in the folder (no symlink out of it).
      const source = await realpath(join(root, job.src));
      if (!source.startsWith(root + sep)) throw new Error('outside the run folder');
      const [src, thumb] = await Promise.all([stat(source), stat(out).catch(() => null)]);
      if (thumb !== null && thumb.mtimeMs >= src.mtimeMs) {
        stats.reused++;
      } else {
        await mkdir(dirname(out), { recursive: true });
        const temp = `${out}.${process.pid}.tmp`;
        await sharp(source)
          .resize(THUMB_SIDE, THUMB_SIDE, { fit: 'inside', withoutEnlargement: true })
          .webp({ quality: 80 })
          .toFile(temp);
        await rename(temp, out);
        stats.made++;
      }
      paths.set(job.key, target);
    } catch {
      stats.failed++;
    }
    options.onProgress?.(++done, jobs.length);
  });
  return { paths, stats };
}
