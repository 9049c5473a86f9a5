// What the config files of a checkpoint say before any worker starts: the text encoder's depth L (so that
// lens.layers can be checked at once), and the commit of a hub id in the local Hugging Face cache.
// Read from JSON files only; null wherever that is not enough to know.
import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { HUB_ID, looksLikePath } from './model-path.js';

const COMMIT = /^[0-9a-f]{40}$/;

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** A JSON file's object; null when it is missing, unreadable or not an object. */
export async function readJsonObject(path: string): Promise<Record<string, unknown> | null> {
  return record(await readJson(path)) ?? null;
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

function record(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

/**
 * The hub cache folder as huggingface_hub finds it: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
 * `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
 */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, 'hub');
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'huggingface', 'hub');
  return join(homedir(), '.cache', 'huggingface', 'hub');
}

function isHubId(modelId: string): boolean {
  return !looksLikePath(modelId) && HUB_ID.test(modelId);
}

/** The cache folder of a hub model: `models--org--name`. */
function hubRepoDir(modelId: string, env: NodeJS.ProcessEnv): string {
  return join(hubCacheDir(env), `models--${modelId.split('/').join('--')}`);
}

/**
 * The commit of a hub model's revision (default `main`) in the local Hugging Face cache: a 40-hex revision
 * itself, else the commit that `refs/<revision>` names; null when the id is not a hub id, or that commit
 * has no snapshot folder in the cache (not downloaded).
 */
export async function resolveHubCommit(
  modelId: string,
  revision?: string | null,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | null> {
  if (!isHubId(modelId)) return null;
  const repo = hubRepoDir(modelId, env);
  const rev = revision ?? 'main';
  let commit: string | null = COMMIT.test(rev) ? rev : null;
  if (commit === null) {
    // Branch and tag names may hold slashes (refs/pr/1); never let one climb out of refs/.
    if (rev.split('/').some((part) => part === '' || part === '.' || part === '..')) return null;
    try {
      commit = (await readFile(join(repo, 'refs', rev), 'utf8')).trim();
    } catch {
      return null;
    }
    if (!COMMIT.test(commit)) return null;
  }
  return (await isDirectory(join(repo, 'snapshots', commit))) ? commit : null;
}

/** The folder holding a checkpoint's config files: a local folder, or a hub id's cached snapshot; else null. */
export async function checkpointFolder(
  modelId: string,
  revision?: string | null,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | null> {
  if (await isDirectory(modelId)) return modelId;
  const commit = await resolveHubCommit(modelId, revision, env);
  return commit === null ? null : join(hubRepoDir(modelId, env), 'snapshots', commit);
}

/** The depth of an encoder component's config: T5's num_layers, CLIP's and Gemma's num_hidden_layers. */
export async function encoderDepth(dir: string, component: string): Promise<number | null> {
  const config = record(await readJson(join(dir, component, 'config.json')));
  if (!config) return null;
  const entry = record(await readJson(join(dir, 'model_index.json')))?.[component];
  const className = Array.isArray(entry) && typeof entry[1] === 'string' ? entry[1] : '';
  // T5 keeps its depth in num_layers (transformers maps num_hidden_layers onto it); CLIP in num_hidden_layers.
  const modelType = typeof config.model_type === 'string' ? config.model_type : '';
  const t5 = /t5/i.test(modelType) || /^(T5|UMT5|MT5)/.test(className);
  const depth = t5 ? (config.num_layers ?? config.num_hidden_layers) : config.num_hidden_layers;
  return typeof depth === 'number' && Number.isSafeInteger(depth) && depth >= 0 ? depth : null;
}

/**
 * L of a diffusers checkpoint folder: the text encoder's layer count (`num_hidden_layers` of CLIP,
 * `num_layers` of T5), which is the number of hidden-state indices minus one (0 = the embeddings).
 */
async function folderDepth(dir: string): Promise<number | null> {
  const index = record(await readJson(join(dir, 'model_index.json')));
  const entry = index?.text_encoder;
  // ["transformers", "CLIPTextModel"]; [null, null] or absent: no text encoder (IF stage II).
  if (!Array.isArray(entry) || typeof entry[1] !== 'string') return null;
  // With several encoders, which depth the lens addresses (and its stock layer) is the family's to say.
  if (index?.text_encoder_2 !== undefined) return null;
  return encoderDepth(dir, 'text_encoder');
}

/**
 * L, the text encoder's depth (hidden-state indices 0..L: what the worker reports as `num_layers`), read
 * from the checkpoint's config files without Python: for a local diffusers folder, or for a hub id whose
 * revision (default `main`) is in the local Hugging Face cache. Null when it cannot be known that way
 * (not downloaded, a single-file checkpoint, no text encoder, several text encoders, an unknown config).
 */
export async function readModelDepth(
  modelId: string,
  revision?: string | null,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number | null> {
  const dir = await checkpointFolder(modelId, revision, env);
  return dir === null ? null : folderDepth(dir);
}
