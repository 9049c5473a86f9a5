// Shards (`--shard I/N`): a deterministic share of a run, for clusters. A shard plans the whole experiment
// (the same keys as an unsharded run) and makes the jobs of its batches only: the plan's items cut into
// batches of runtime.max_batch (batches.ts: planBatchSize, 16 items for auto), batch b belonging to
// shard b mod N. Its request is whole plan batches in plan order, so with an integer max_batch the worker
// samples the batches an unsharded run samples and the images have the same bytes (under auto the worker
// cuts each request itself: the same images within float rounding). A shard's manifest, images.csv and journal
// cover its own jobs; it writes no grids (the merge does). DIR/.diffusion-lens/shard.json keeps what
// `merge` needs to finish the run without a worker: the config as run, its folder, and what the worker
// resolved.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { loadedMessageSchema } from '../bridge/index.js';
import { configSource, type ExperimentConfig } from '../config/index.js';
import { jobsOf, planBatches } from './batches.js';
import type { Plan } from './plan.js';
import { type Resolution, workerInfoSchema } from './resolution.js';
import { STATE_DIR, writeFileAtomic } from './store.js';

/** Which share of a run: shard `index` (0-based) of `count`. */
export interface ShardSpec {
  index: number;
  count: number;
}

/** A shard given wrongly (`--shard 2/2`, a library call with index 5 of 3). */
export class ShardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShardError';
  }
}

/** Checks a shard: whole numbers, count ≥ 1, index in 0..count-1. */
export function checkShard(shard: ShardSpec): ShardSpec {
  const { index, count } = shard;
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new ShardError(`the shard count must be a whole number of at least 1 (got ${count})`);
  }
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new ShardError(
      `the shard index must be a whole number from 0 to ${count - 1} (0-based; got ${index} of ${count})`,
    );
  }
  return shard;
}

/** `I/N` (0-based I) → {index, count}; a ShardError saying what is wrong otherwise. */
export function parseShard(text: string): ShardSpec {
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!match) {
    throw new ShardError(`expected I/N, shard I (0-based) of N, such as 0/4 (got ${JSON.stringify(text)})`);
  }
  return checkShard({ index: Number(match[1]), count: Number(match[2]) });
}

/** What a shard's manifest records of its share. */
export const ShardRecordSchema = z.object({
  /** 0-based. */
  index: z.int().nonnegative(),
  count: z.int().positive(),
  /** The size of the plan's batches: runtime.max_batch, or 16 for auto (planBatchSize). */
  batch_size: z.int().positive(),
  /** How many batches and images the whole plan has. */
  plan_batches: z.int().nonnegative(),
  plan_images: z.int().nonnegative(),
  /** The plan batches this shard makes (b with b mod count = index), in order. */
  batches: z.array(z.int().nonnegative()),
});
export type ShardRecord = z.infer<typeof ShardRecordSchema>;

/** The batches of a plan of `batchCount` batches that belong to a shard. */
export function shardBatches(batchCount: number, shard: ShardSpec): number[] {
  const batches: number[] = [];
  for (let b = shard.index; b < batchCount; b += shard.count) batches.push(b);
  return batches;
}

/**
 * The plan a shard makes: the full plan with only the jobs of its batches (same keys, paths and job
 * indices), and its record. Without a shard, the plan itself and no record.
 */
export function selectShard(
  plan: Plan,
  maxBatch: number,
  shard: ShardSpec | undefined,
): { plan: Plan; record: ShardRecord | null } {
  if (shard === undefined) return { plan, record: null };
  const { index, count } = checkShard(shard);
  const all = planBatches(plan, maxBatch);
  const own = new Set(shardBatches(all.length, shard));
  const mine = all.filter((batch) => own.has(batch.index));
  return {
    plan: { ...plan, jobs: jobsOf(mine) },
    record: {
      index,
      count,
      batch_size: maxBatch,
      plan_batches: all.length,
      plan_images: plan.jobs.length,
      batches: mine.map((batch) => batch.index),
    },
  };
}

export const SHARD_FILE = `${STATE_DIR}/shard.json`;

/** DIR/.diffusion-lens/shard.json: what `merge` needs of a shard besides its manifest and journal. */
export const ShardStateSchema = z.object({
  version: z.literal(1),
  shard: z.object({ index: z.int().nonnegative(), count: z.int().positive() }),
  /** The config as run (parsed: defaults filled in), to be parsed again by the merge. */
  config: z.record(z.string(), z.unknown()),
  /** The folder relative paths in the config are relative to (absolute). */
  config_dir: z.string(),
  /** What the worker resolved for the load: the merge plans with it, so it needs no worker. */
  loaded: loadedMessageSchema,
  worker: workerInfoSchema,
});
export type ShardState = z.infer<typeof ShardStateSchema>;

/** The folder a run's relative config paths resolve against (as resolveInputs decides). */
export function configDirOf(config: ExperimentConfig, configDir: string | undefined): string {
  return configDir ?? configSource(config)?.dir ?? process.cwd();
}

/** Writes DIR/.diffusion-lens/shard.json (atomically). */
export async function writeShardState(
  outDir: string,
  input: { shard: ShardSpec; config: ExperimentConfig; configDir: string; resolution: Resolution },
): Promise<void> {
  const { worker, python, torch, diffusers, transformers, device } = input.resolution.worker;
  const state: ShardState = {
    version: 1,
    shard: { index: input.shard.index, count: input.shard.count },
    config: JSON.parse(JSON.stringify(input.config)) as Record<string, unknown>,
    config_dir: input.configDir,
    loaded: input.resolution.loaded,
    worker: { worker, python, torch, diffusers, transformers, device },
  };
  await writeFileAtomic(join(outDir, SHARD_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

/** A shard folder's shard.json; null when it has none; throws when it is unreadable. */
export async function readShardState(dir: string): Promise<ShardState | null> {
  let text: string;
  try {
    text = await readFile(join(dir, SHARD_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  const parsed = ShardStateSchema.safeParse(json);
  if (!parsed.success) throw new ShardError(`${join(dir, SHARD_FILE)} is not a shard record of this version`);
  return parsed.data;
}
