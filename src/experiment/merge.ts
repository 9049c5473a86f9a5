// mergeShards (`diffusion-lens merge DIR... --out DIR`): the shards of one run (`--shard I/N`) combined
// into one run folder with the keys, bytes, grids, manifest and images.csv an unsharded run writes.
//
// Everything is checked before anything is written: each folder is a finished shard, all are shards of
// the same experiment (the same resolved config, the same N), every index 0..N-1 is there exactly once,
// each shard holds exactly its batches' images with the bytes its journal recorded, and the images are
// the ones this host plans for the config (a model folder changed since would give other keys). An
// output folder with images of other settings is refused as runs refuse it. Then each image is
// hard-linked (or copied, across file systems) into the output folder and journaled, what the shards'
// worker resolved is recorded there, and runExperiment finishes the run: every image on disk, it starts
// no worker and writes the grids, manifest.json and images.csv as an unsharded run does. The result is a
// normal run folder: a rerun of the config into it makes nothing.
import { randomBytes } from 'node:crypto';
import { copyFile, link, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ConfigError, type ExperimentConfig, parseConfig } from '../config/index.js';
import { inspectCache } from './cache.js';
import { exactPlan } from './estimate.js';
import type { RunEvent } from './events.js';
import { FolderConflictError, plural } from './folder.js';
import { resolveInputs } from './inputs.js';
import { type Manifest, writeManifest } from './manifest.js';
import { openOutputFolder } from './outdir.js';
import { canonicalJson, type Plan } from './plan.js';
import { type Resolution, writeResolution } from './resolution.js';
import { runExperiment } from './runner.js';
import { describeChanges, diffSettings, readSettings, stageSettings } from './settings.js';
import {
  readShardState,
  type ShardRecord,
  ShardRecordSchema,
  type ShardState,
  selectShard,
} from './shard.js';
import { Journal, type JournalEntry, MANIFEST_FILE } from './store.js';

/** Shard folders that cannot be merged (the message names the folder and what is wrong). */
export class MergeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MergeError';
  }
}

export interface MergeOptions {
  /** The merged run's folder (created if needed; an existing run folder of the same settings is fine). */
  outDir: string;
  /** Hard-link images when the output folder is on the shards' file system (default true); else copy. */
  link?: boolean;
  /** The merged run's events (as runExperiment's; it makes nothing, so no worker starts). */
  onEvent?: (event: RunEvent) => void;
  signal?: AbortSignal;
  /** Environment for resolving the config's checkpoints (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface MergeResult {
  outDir: string;
  manifestPath: string;
  manifest: Manifest;
  /** The shard folders, by shard index. */
  shards: string[];
  images: number;
  /** Images hard-linked, copied, and found in the output folder already (with the right bytes). */
  linked: number;
  copied: number;
  reused: number;
}

interface ShardFolder {
  dir: string;
  manifest: Manifest;
  record: ShardRecord;
  state: ShardState;
}

const label = (shard: ShardFolder): string =>
  `${shard.dir} (shard ${shard.record.index}/${shard.record.count})`;

async function readShard(dir: string): Promise<ShardFolder> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(dir);
  } catch {
    throw new MergeError(`${dir}: no such folder`);
  }
  if (!info.isDirectory()) throw new MergeError(`${dir} is not a folder`);
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as Manifest;
  } catch (error) {
    throw new MergeError(
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? `${dir} has no ${MANIFEST_FILE}: not a run folder, or a shard that has not run yet`
        : `${dir}: ${MANIFEST_FILE} is unreadable (${(error as Error).message})`,
    );
  }
  const record = ShardRecordSchema.safeParse(manifest?.shard);
  if (!record.success) {
    throw new MergeError(
      `${dir} is not a shard: its manifest has no shard record (shards are made by run or lens with --shard I/N)`,
    );
  }
  let state: ShardState | null;
  try {
    state = await readShardState(dir);
  } catch (error) {
    throw new MergeError(`${dir}: ${(error as Error).message}`);
  }
  if (state === null) throw new MergeError(`${dir}: its shard record .diffusion-lens/shard.json is missing`);
  if (state.shard.index !== record.data.index || state.shard.count !== record.data.count) {
    throw new MergeError(
      `${dir}: its manifest says shard ${record.data.index}/${record.data.count} and .diffusion-lens/shard.json ` +
        `says ${state.shard.index}/${state.shard.count}: run the shard again`,
    );
  }
  return { dir, manifest, record: record.data, state };
}

/** `a.b.c` → value for every leaf of a JSON value (arrays as leaves). */
function leaves(value: unknown, prefix: string, out = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) leaves(child, `${prefix}.${key}`, out);
  } else if (value !== undefined) {
    out.set(prefix, canonicalJson(value));
  }
  return out;
}

/** `config.sampler.steps 4 -> 6, ...`: where two JSON values differ (at most 5 fields). */
function differences(a: unknown, b: unknown, prefix: string): string {
  const left = leaves(a, prefix);
  const right = leaves(b, prefix);
  const fields = [...new Set([...left.keys(), ...right.keys()])].sort();
  const differing = fields.filter((field) => left.get(field) !== right.get(field));
  const shown = differing
    .slice(0, 5)
    .map((field) => `${field} ${left.get(field) ?? '(unset)'} -> ${right.get(field) ?? '(unset)'}`);
  return `${shown.join(', ')}${differing.length > 5 ? `, and ${differing.length - 5} more` : ''}`;
}

/** The shards by index; a MergeError when one is missing, twice, or of another N. */
function byIndex(shards: readonly ShardFolder[]): ShardFolder[] {
  const first = shards[0] as ShardFolder;
  const count = first.record.count;
  const slots: (ShardFolder | undefined)[] = Array.from({ length: count });
  for (const shard of shards) {
    if (shard.record.count !== count) {
      throw new MergeError(
        `${label(shard)} and ${label(first)} are shards of different splits (N = ${shard.record.count} and ` +
          `${count}): merge the shards of one split`,
      );
    }
    const other = slots[shard.record.index];
    if (other) {
      throw new MergeError(
        `${other.dir} and ${shard.dir} are both shard ${shard.record.index}/${count}: give each shard once`,
      );
    }
    slots[shard.record.index] = shard;
  }
  const missing = slots.flatMap((slot, index) => (slot ? [] : [index]));
  if (missing.length > 0) {
    throw new MergeError(
      `${missing.length === 1 ? 'shard' : 'shards'} ${missing.map((i) => `${i}/${count}`).join(', ')} ` +
        `${missing.length === 1 ? 'is' : 'are'} missing: give the folders of all ${count} shards (0..${count - 1})`,
    );
  }
  return slots as ShardFolder[];
}

/** A MergeError when a shard is of another experiment than the first. */
function checkSameExperiment(shards: readonly ShardFolder[]): void {
  const first = shards[0] as ShardFolder;
  for (const shard of shards.slice(1)) {
    if (canonicalJson(shard.manifest.config) !== canonicalJson(first.manifest.config)) {
      throw new MergeError(
        `${label(shard)} is not a shard of the same run as ${label(first)}: its config differs ` +
          `(${differences(first.manifest.config, shard.manifest.config, 'config')})`,
      );
    }
    const code = (m: Manifest) => `${m.tool.version}/${m.tool.lens_algorithm}`;
    if (code(shard.manifest) !== code(first.manifest)) {
      throw new MergeError(
        `${label(shard)} was made by diffusion-lens ${code(shard.manifest)} and ${label(first)} by ` +
          `${code(first.manifest)} (version/lens algorithm): their images have other keys; run them with one version`,
      );
    }
  }
}

/** The config the shards ran, parsed again. */
function shardConfig(shard: ShardFolder): ExperimentConfig {
  try {
    return parseConfig(shard.state.config);
  } catch (error) {
    const why = error instanceof ConfigError ? error.message : String(error);
    throw new MergeError(`${shard.dir}: the config in .diffusion-lens/shard.json does not parse: ${why}`);
  }
}

/** Why a shard's images have other keys than the plan: the settings that differ, when known. */
async function keyMismatch(shard: ShardFolder, journal: Journal, plan: Plan): Promise<string> {
  const image = shard.manifest.images[0];
  const entry = image ? journal.get(image.key) : undefined;
  const recorded = entry ? await readSettings(shard.dir, entry.settings) : null;
  const stage = image?.stage ?? 1;
  const changes = recorded
    ? diffSettings(stageSettings(recorded, stage), stageSettings(plan.settings, stage))
    : [];
  return (
    `${label(shard)} holds images with other keys than its config makes here` +
    (changes.length > 0 ? ` (${describeChanges(changes)})` : '') +
    ': was the model or a file the config names changed since the shard ran, or did it run with another ' +
    'diffusion-lens? Run the shards again'
  );
}

/** The shard's journal entries for its jobs, checked: exactly its batches' images, with their bytes. */
async function shardEntries(shard: ShardFolder, plan: Plan): Promise<Map<string, JournalEntry>> {
  const { plan: own, record } = selectShard(plan, shard.record.batch_size, shard.record);
  if (!shard.manifest.complete) {
    throw new MergeError(
      `${label(shard)} is incomplete (${plural(shard.manifest.images.length, 'image')} of ${own.jobs.length}): ` +
        'run it again to finish it (a rerun resumes)',
    );
  }
  const journal = await Journal.open(shard.dir);
  const expected = new Map(own.jobs.map((job) => [job.key, job.path]));
  const listed = shard.manifest.images;
  if (
    canonicalJson(record?.batches) !== canonicalJson(shard.record.batches) ||
    listed.length !== expected.size ||
    listed.some((image) => expected.get(image.key) !== image.path)
  ) {
    throw new MergeError(await keyMismatch(shard, journal, plan));
  }
  const entries = new Map<string, JournalEntry>();
  for (const job of own.jobs) {
    const entry = journal.get(job.key);
    if (!entry || !(await journal.verify(job.key, shard.dir, job.path))) {
      throw new MergeError(
        `${label(shard)}: ${job.path} is missing or changed since the shard made it: run the shard again ` +
          'to make it again',
      );
    }
    entries.set(job.key, entry);
  }
  return entries;
}

/** Puts `source` at `target` atomically: a hard link (when `tryLink` and possible) or a copy. */
async function place(source: string, target: string, tryLink: boolean): Promise<'linked' | 'copied'> {
  const temp = join(
    dirname(target),
    `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
  try {
    let how: 'linked' | 'copied' = 'copied';
    if (tryLink) {
      try {
        await link(source, temp);
        how = 'linked';
      } catch {
        // another file system, or links not allowed: copy
      }
    }
    if (how === 'copied') {
      await copyFile(source, temp);
      const handle = await open(temp, 'r+');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    await rename(temp, target);
    return how;
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Merges shard folders into `options.outDir`; see the module comment. */
export async function mergeShards(dirs: readonly string[], options: MergeOptions): Promise<MergeResult> {
  if (dirs.length === 0) throw new MergeError('no shard folders given');
  const outDir = resolve(options.outDir);
  const folders = dirs.map((dir) => resolve(dir));
  const seen = new Set<string>();
  for (const dir of folders) {
    if (seen.has(dir)) throw new MergeError(`${dir} is given twice: give each shard once`);
    seen.add(dir);
    if (dir === outDir) {
      throw new MergeError(`the output folder ${outDir} is one of the shards: merge into another folder`);
    }
  }
  const shards = byIndex(await Promise.all(folders.map(readShard)));
  checkSameExperiment(shards);
  const first = shards[0] as ShardFolder;
  const config = shardConfig(first);
  const configDir = first.state.config_dir;
  const env = options.env ?? process.env;
  const inputs = await resolveInputs(config, { configDir, env });
  const resolution: Resolution = { loaded: first.state.loaded, worker: first.state.worker };
  const plan = exactPlan(config, inputs, resolution.loaded);
  if (plan.jobs.length !== first.record.plan_images) {
    throw new MergeError(
      `${label(first)} records a plan of ${plural(first.record.plan_images, 'image')}; its config makes ` +
        `${plan.jobs.length} here: was a prompt file changed since the shards ran? Run them again`,
    );
  }
  const entries = new Map<string, { shard: ShardFolder; entry: JournalEntry }>();
  for (const shard of shards) {
    for (const [key, entry] of await shardEntries(shard, plan)) entries.set(key, { shard, entry });
  }
  // Every image of the plan in exactly one shard (the batches partition the plan; checked all the same).
  const missing = plan.jobs.filter((job) => !entries.has(job.key));
  if (missing.length > 0 || entries.size !== plan.jobs.length) {
    throw new MergeError(`the shards do not hold every image of the run (e.g. ${missing[0]?.path ?? '?'})`);
  }

  const folder = await openOutputFolder(outDir);
  let failed = true;
  let linked = 0;
  let copied = 0;
  let reused = 0;
  try {
    const journal = await Journal.open(outDir);
    const state = await inspectCache(outDir, journal, plan);
    if (state.foreign) {
      const { entries: foreign, changes } = state.foreign;
      throw new FolderConflictError(
        `${outDir} holds ${plural(foreign.length, 'image')} made with other settings` +
          (changes.length > 0 ? ` (${describeChanges(changes)})` : '') +
          `, e.g. ${foreign[0]?.path}. A folder holds one set of settings: merge into another folder`,
      );
    }
    for (const job of plan.jobs) {
      if (state.done.has(job.key)) {
        reused++;
        continue;
      }
      options.signal?.throwIfAborted();
      const { shard, entry } = entries.get(job.key) as { shard: ShardFolder; entry: JournalEntry };
      const target = join(outDir, job.path);
      await mkdir(dirname(target), { recursive: true });
      if ((await place(join(shard.dir, job.path), target, options.link ?? true)) === 'linked') linked++;
      else copied++;
      await journal.append({ ...entry, key: job.key, path: job.path });
    }
    await writeResolution(outDir, inputs.load, inputs.fingerprints, resolution);
    failed = false;
  } finally {
    // A folder this merge created is removed again when it fails before every image is in.
    await folder.close(failed);
  }

  const result = await runExperiment(config, {
    outDir,
    configDir,
    resolution,
    env: options.env,
    signal: options.signal,
    onEvent: options.onEvent,
  });
  if (!result.manifest || !result.manifestPath || !result.complete) {
    throw new MergeError(`finishing the merged run in ${outDir} stopped before its manifest was written`);
  }
  const manifest = withShardRecords(result.manifest, shards);
  await writeManifest(result.outDir, manifest);
  return {
    outDir: result.outDir,
    manifestPath: result.manifestPath,
    manifest,
    shards: shards.map((shard) => shard.dir),
    images: plan.jobs.length,
    linked,
    copied,
    reused,
  };
}

/**
 * The merged manifest with the shard folders, and what the shards' workers reported of each prompt (the
 * merge itself encodes nothing): the prompts the encoder cut and, with lens.tokens, the positions that
 * followed the layer.
 */
function withShardRecords(manifest: Manifest, shards: readonly ShardFolder[]): Manifest {
  const prompts = manifest.prompts.map((prompt, index) => {
    const reported = shards.map((shard) => shard.manifest.prompts[index]);
    return {
      ...prompt,
      truncated: prompt.truncated ?? reported.find((p) => p?.truncated)?.truncated ?? null,
      lensed_tokens: prompt.lensed_tokens ?? reported.find((p) => p?.lensed_tokens)?.lensed_tokens ?? null,
    };
  });
  const { version, tool, complete, ...rest } = manifest;
  return { version, tool, complete, merged_from: shards.map((shard) => shard.dir), ...rest, prompts };
}
