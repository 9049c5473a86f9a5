// Which file of a run folder a request path names, if any. The path is taken apart segment by segment
// and each decoded on its own: a segment that decodes to '', '.', '..', or to something holding '/', '\',
// ':' or a control character is refused, as is a name starting with '.' (the folder's state, its journal);
// what is left is resolved to its real path, which must lie inside the run folder's real path (no symlink
// out), be a regular file, and have an image extension. Nothing else of the folder is served.
import { realpath, stat } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { hasControlCharacter } from '../render/report/run-folder.js';

/** The files the server hands out, by extension, with their content types. */
export const SERVED_TYPES: Readonly<Record<string, string>> = {
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
};

export type Resolved =
  | { ok: true; file: string; type: string; size: number }
  | { ok: false; status: 403 | 404; reason: string };

/** The decoded segments of a '/'-separated, percent-encoded path; null when any is unsafe. */
export function safeSegments(encoded: string): string[] | null {
  if (encoded === '') return null;
  const segments: string[] = [];
  for (const raw of encoded.split('/')) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return null;
    }
    if (segment === '' || segment === '.' || segment === '..' || segment.startsWith('.')) return null;
    if (/[/\\:]/.test(segment) || hasControlCharacter(segment)) return null;
    segments.push(segment);
  }
  return segments;
}

/**
 * The file a request path (below the run folder's URL prefix, still percent-encoded) names inside
 * `root` (the run folder's real path), or why not: 403 for a path that tries to leave the folder or
 * names something that is not served, 404 for one that is not there.
 */
export async function resolveInside(root: string, encoded: string): Promise<Resolved> {
  const segments = safeSegments(encoded);
  if (segments === null) return { ok: false, status: 403, reason: 'not a path inside the run folder' };
  const type = SERVED_TYPES[extname(segments.at(-1) ?? '').toLowerCase()];
  if (type === undefined) return { ok: false, status: 403, reason: 'only images are served' };
  let real: string;
  try {
    real = await realpath(join(root, ...segments));
  } catch {
    return { ok: false, status: 404, reason: 'no such file' };
  }
  if (!real.startsWith(root + sep)) return { ok: false, status: 403, reason: 'outside the run folder' };
  const info = await stat(real).catch(() => null);
  if (!info?.isFile()) return { ok: false, status: 404, reason: 'no such file' };
  return { ok: true, file: real, type, size: info.size };
}
