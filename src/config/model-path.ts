// model.id is a hub id ("org/name"), a local checkpoint folder or a single weight file; model.config a
// hub id or a local folder; a LoRA a local file or folder.
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { EMBEDDED_MODEL_DIR } from '../paths.js';
import { ConfigError, type ConfigIssue, type FieldPath } from './errors.js';

/** `org/name` (or a bare `name`), as the hub spells repository ids. */
export const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;

/** Suffixes of single-file checkpoints (the worker's list: only .safetensors loads without allow_pickle). */
export const SINGLE_FILE_SUFFIXES = ['.safetensors', '.ckpt', '.pt', '.pth', '.bin'] as const;

/** True when `path` names a weight file. */
export const isWeightFile = (path: string): boolean =>
  SINGLE_FILE_SUFFIXES.some((suffix) => path.toLowerCase().endsWith(suffix));

/** True when `id` is written as a path: absolute, or starting with `.` or `~`. */
export function looksLikePath(id: string): boolean {
  return isAbsolute(id) || id.startsWith('.') || id.startsWith('~') || id.includes('\\');
}

/** True when a resolved model id is a local file (a single-file checkpoint), not a folder or hub id. */
export function isLocalFile(id: string): boolean {
  return isAbsolute(id) && existsSync(id) && statSync(id).isFile();
}

type Where = Pick<ConfigIssue, 'file' | 'line' | 'column'>;

const expandHome = (path: string): string =>
  path === '~' ? homedir() : path.startsWith('~/') ? join(homedir(), path.slice(2)) : path;

/**
 * Resolves a model id: none means the embedded shapes model; local paths (absolute, `.`/`~`-prefixed, a
 * weight file's name, or an existing path relative to `baseDir`) become absolute and must exist; anything
 * else is passed on as a hub id. A file is accepted only when `singleFile` (model.id: a single-file
 * checkpoint with a weight-file suffix). Throws ConfigError naming `field` (default `model.id`;
 * `stage2.model`, `model.config`) for a local path that does not exist or is the wrong kind.
 */
export function resolveModelId(
  id: string | undefined,
  baseDir: string = process.cwd(),
  where: Where = {},
  field: FieldPath = ['model', 'id'],
  singleFile = false,
): string {
  const fail = (message: string): never => {
    throw new ConfigError({ path: field, ...where, message });
  };
  if (id === undefined) {
    if (existsSync(join(EMBEDDED_MODEL_DIR, 'model_index.json'))) return EMBEDDED_MODEL_DIR;
    return fail(`no model given and the embedded model is missing (looked for ${EMBEDDED_MODEL_DIR})`);
  }
  const local = resolve(baseDir, expandHome(id));
  if (looksLikePath(id) || isWeightFile(id) || existsSync(local)) {
    if (!existsSync(local)) return fail(`local model "${id}" does not exist (looked for ${local})`);
    if (statSync(local).isDirectory()) return local;
    if (!isWeightFile(local)) {
      const single = singleFile ? ` nor a single-file checkpoint (${SINGLE_FILE_SUFFIXES.join(', ')})` : '';
      return fail(`"${id}" is a file, not a diffusers checkpoint folder (with model_index.json)${single}`);
    }
    if (!singleFile) {
      return fail(
        `"${id}" is a single-file checkpoint, and only a diffusers checkpoint folder (with ` +
          'model_index.json) or a hub id goes here',
      );
    }
    return local;
  }
  if (!HUB_ID.test(id)) {
    return fail(
      `"${id}" is neither an existing local folder (looked for ${local}) nor a hub id like "org/name"`,
    );
  }
  return id;
}

/** A local file or folder (a LoRA's), absolute; relative to `baseDir`. Throws ConfigError when it is missing. */
export function resolveLocalPath(path: string, baseDir: string, where: Where, field: FieldPath): string {
  const local = resolve(baseDir, expandHome(path));
  if (!existsSync(local)) {
    throw new ConfigError({
      path: field,
      ...where,
      message: `"${path}" does not exist (looked for ${local})`,
    });
  }
  return local;
}
