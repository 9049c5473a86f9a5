// What the worker resolved when it last loaded the model for this folder (family, depth, revision,
// dtype, the model's default steps, guidance, size and scheduler), kept so that a rerun whose images are
// all on disk can be planned, checked and finished without starting Python. The record is used only when
// the load request, the host and the checkpoints' fingerprints are exactly as they were.
import { readdir, readFile, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, isAbsolute, join, relative } from 'node:path';
import { z } from 'zod';
import {
  type LoadedMessage,
  type LoadRequest,
  loadedMessageSchema,
  readyMessageSchema,
} from '../bridge/index.js';
import { resolveHubCommit } from '../config/index.js';
import { canonicalJson } from './plan.js';
import { STATE_DIR, sha256Hex, writeFileAtomic } from './store.js';

/** The load request as far as it decides what the worker resolves: compiling the denoiser changes
 *  nothing of it (so records made before the option existed, or without it, still serve). */
function resolvingRequest(request: LoadRequest): Omit<LoadRequest, 'compile'> {
  const { compile: _compile, ...rest } = request;
  return rest;
}

/** One record per (load request, checkpoint fingerprints, host): variants of a folder keep theirs. */
function recordFile(outDir: string, request: LoadRequest, fingerprints: Fingerprints): string {
  const id = sha256Hex(
    canonicalJson({ request: resolvingRequest(request), fingerprints, host: hostname() }),
  ).slice(0, 16);
  return join(outDir, STATE_DIR, 'resolved', `${id}.json`);
}

export const workerInfoSchema = readyMessageSchema.pick({
  worker: true,
  python: true,
  torch: true,
  diffusers: true,
  transformers: true,
  device: true,
});
export type WorkerInfo = z.infer<typeof workerInfoSchema>;

const recordSchema = z.object({
  version: z.literal(1),
  host: z.string(),
  request: z.string(),
  fingerprints: z.string(),
  loaded: loadedMessageSchema,
  worker: workerInfoSchema,
});

/** Which checkpoint files a model id stands for now; null when that cannot be known without Python. */
export interface Fingerprints {
  model: string | null;
  stage2: string | null;
  /** A single-file model's configuration (folder files or hub commit); absent for other models. */
  config?: string | null;
  /** Each LoRA's files, in `model.lora` order; absent without LoRA weights. */
  lora?: string[];
}

/** Whether every checkpoint of the load can be recognised again without the worker. */
function known(request: LoadRequest, fingerprints: Fingerprints): boolean {
  return (
    fingerprints.model !== null &&
    (request.stage2 === null || fingerprints.stage2 !== null) &&
    fingerprints.config !== null
  );
}

const COMMIT = /^[0-9a-f]{40}$/;

function hubOffline(env: NodeJS.ProcessEnv): boolean {
  return ['1', 'true', 'yes', 'on'].includes((env.HF_HUB_OFFLINE ?? '').toLowerCase());
}

async function listFiles(root: string, dir = root, out: string[] = []): Promise<string[]> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await listFiles(root, path, out);
    else out.push(path);
  }
  return out;
}

/**
 * A local checkpoint folder's fingerprint: its files' names, sizes and modification times (content
 * hashes would cost seconds per gigabyte); a single file's: its name, size and time. A checkpoint
 * retrained or replaced in place gets a new one.
 */
export async function localFingerprint(path: string): Promise<string> {
  const line = async (file: string, name: string): Promise<string> => {
    const info = await stat(file);
    return `${name}\t${info.size}\t${Math.trunc(info.mtimeMs)}`;
  };
  const lines = (await stat(path)).isFile()
    ? [await line(path, basename(path))]
    : await Promise.all((await listFiles(path)).map((file) => line(file, relative(path, file))));
  return `files:${sha256Hex(lines.sort().join('\n')).slice(0, 16)}`;
}

/**
 * The fingerprint of a model id: local folders by their files; hub ids by their commit when it is pinned
 * (a 40-hex revision) or when the hub is offline (the cached commit the worker will load); else null.
 */
export async function modelFingerprint(
  id: string,
  revision: string | null,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | null> {
  if (isAbsolute(id)) return localFingerprint(id);
  if (revision !== null && COMMIT.test(revision)) return `hub:${revision}`;
  if (!hubOffline(env)) return null;
  const commit = await resolveHubCommit(id, revision);
  return commit === null ? null : `hub:${commit}`;
}

/** A resolved load that can stand in for the worker's reply. */
export interface Resolution {
  loaded: LoadedMessage;
  worker: WorkerInfo;
}

function matches(fingerprints: Fingerprints, loaded: LoadedMessage): boolean {
  const hub = (fp: string | null, revision: string | null | undefined) =>
    fp === null || !fp.startsWith('hub:') || fp === `hub:${revision}`;
  return (
    hub(fingerprints.model, loaded.revision) &&
    hub(fingerprints.config ?? null, loaded.revision) &&
    hub(fingerprints.stage2, loaded.stage2?.revision)
  );
}

/** The recorded resolution when it is valid for this request here and now; else null. */
export async function readResolution(
  outDir: string,
  request: LoadRequest,
  fingerprints: Fingerprints,
): Promise<Resolution | null> {
  if (!known(request, fingerprints)) return null;
  let record: z.infer<typeof recordSchema>;
  try {
    const parsed = recordSchema.safeParse(
      JSON.parse(await readFile(recordFile(outDir, request, fingerprints), 'utf8')),
    );
    if (!parsed.success) return null;
    record = parsed.data;
  } catch {
    return null;
  }
  if (
    record.host !== hostname() ||
    record.request !== canonicalJson(resolvingRequest(request)) ||
    record.fingerprints !== canonicalJson(fingerprints) ||
    !matches(fingerprints, record.loaded)
  ) {
    return null;
  }
  return { loaded: record.loaded, worker: record.worker };
}

/** Records what the worker resolved, when the checkpoints can be recognised again without it. */
export async function writeResolution(
  outDir: string,
  request: LoadRequest,
  fingerprints: Fingerprints,
  resolution: Resolution,
): Promise<void> {
  if (!known(request, fingerprints)) return;
  if (!matches(fingerprints, resolution.loaded)) return;
  const { worker, python, torch, diffusers, transformers, device } = resolution.worker;
  const record: z.infer<typeof recordSchema> = {
    version: 1,
    host: hostname(),
    request: canonicalJson(resolvingRequest(request)),
    fingerprints: canonicalJson(fingerprints),
    loaded: resolution.loaded,
    worker: { worker, python, torch, diffusers, transformers, device },
  };
  await writeFileAtomic(recordFile(outDir, request, fingerprints), `${JSON.stringify(record, null, 2)}\n`);
}
