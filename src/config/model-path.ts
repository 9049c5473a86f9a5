// model.id is a hub id ("org/name") or a local checkpoint folder (single files are not supported yet).
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { EMBEDDED_MODEL_DIR } from '../paths.js';
import { ConfigError, type ConfigIssue, type FieldPath } from './errors.js';

/** `org/name` (or a bare `name`), as the hub spells repository ids. */
export const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;

/** True when `id` is written as a path: absolute, or starting with `.` or `~`. */
export function looksLikePath(id: string): boolean {
  return isAbsolute(id) || id.startsWith('.') || id.startsWith('~') || id.includes('\\');
}

/**
 * Resolves a model id: none means the embedded shapes model; local paths (absolute, `.`/`~`-prefixed, or an existing folder relative to
 * `baseDir`) become absolute and must exist; anything else is passed on as a hub id. Throws ConfigError
 * naming `field` (default `model.id`; `stage2.model` for the stage II checkpoint) for a local path that
 * does not exist.
 */
export function resolveModelId(
  id: string | undefined,
  baseDir: string = process.cwd(),
  where: Pick<ConfigIssue, 'file' | 'line' | 'column'> = {},
  field: FieldPath = ['model', 'id'],
): string {
  if (id === undefined) {
    if (existsSync(join(EMBEDDED_MODEL_DIR, 'model_index.json'))) return EMBEDDED_MODEL_DIR;
    throw new ConfigError({
      path: field,
      ...where,
      message: `no model given and the embedded model is missing (looked for ${EMBEDDED_MODEL_DIR})`,
    });
  }
  const expanded = id === '~' ? homedir() : id.startsWith('~/') ? join(homedir(), id.slice(2)) : id;
  const local = resolve(baseDir, expanded);
  if (looksLikePath(id)) {
    if (!existsSync(local)) {
      throw new ConfigError({
        path: field,
        ...where,
        message: `local model "${id}" does not exist (looked for ${local})`,
      });
    }
    if (!statSync(local).isDirectory()) {
      throw new ConfigError({
        path: field,
        ...where,
        message:
          `"${id}" is a single file; single-file checkpoints are not supported yet: pass a diffusers ` +
          'checkpoint folder (with model_index.json) instead',
      });
    }
    return local;
  }
  if (existsSync(local) && statSync(local).isDirectory()) return local;
  if (!HUB_ID.test(id)) {
    throw new ConfigError({
      path: field,
      ...where,
      message: `"${id}" is neither an existing local folder (looked for ${local}) nor a hub id like "org/name"`,
    });
  }
  return id;
}
