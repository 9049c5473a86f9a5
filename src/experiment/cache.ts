// What an output folder already holds for a plan: which images can be reused (the bytes on disk are the
// ones their key produced), which were changed or deleted by hand (made again), and which images were
// made with other settings (the folder belongs to another variant: refused, or removed on --overwrite).
import { stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Plan } from './plan.js';
import { diffSettings, readSettings, type SettingChange, settingsId, stageSettings } from './settings.js';
import type { Journal, JournalEntry } from './store.js';

export interface CacheState {
  /** Keys of the plan's images that are on disk with their recorded bytes. */
  done: Set<string>;
  /** How many of the plan's images were recorded but are now missing or have other bytes. */
  changedByHand: number;
  /** Images on disk made with other settings (the last entry of their path), with what differs. */
  foreign: { entries: JournalEntry[]; changes: SettingChange[] } | null;
}

/** Runs `fn` over `items` with at most `limit` at a time. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  });
  await Promise.all(workers);
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** True when an image of the given settings id belongs with a run of `settings` (its stages). */
async function belongsTo(
  entrySettings: string,
  outDir: string,
  plan: Pick<Plan, 'settings' | 'stages'>,
  memo: Map<string, boolean>,
): Promise<boolean> {
  const { settings } = plan;
  const known = memo.get(entrySettings);
  if (known !== undefined) return known;
  let result = entrySettings === settingsId(settings, 1);
  if (!result && plan.stages.includes(2)) result = entrySettings === settingsId(settings, 2);
  if (!result && !plan.stages.includes(2)) {
    // A stage II image whose stage I settings are this run's: stage II is simply not part of this run.
    const recorded = await readSettings(outDir, entrySettings);
    result = recorded?.stage2 !== undefined && settingsId(recorded, 1) === settingsId(settings, 1);
  }
  memo.set(entrySettings, result);
  return result;
}

/** Inspects the folder for a plan; reads (hashes) every image of the plan that the journal knows. */
export async function inspectCache(outDir: string, journal: Journal, plan: Plan): Promise<CacheState> {
  const done = new Set<string>();
  let changedByHand = 0;
  await eachLimited(plan.jobs, 16, async (job) => {
    if (await journal.verify(job.key, outDir, job.path)) done.add(job.key);
    else if (journal.get(job.key)) changedByHand++;
  });
  const memo = new Map<string, boolean>();
  const foreign: JournalEntry[] = [];
  for (const entry of journal.entries()) {
    if (await belongsTo(entry.settings, outDir, plan, memo)) continue;
    if (await exists(join(outDir, entry.path))) foreign.push(entry);
  }
  const first = foreign[0];
  if (!first) return { done, changedByHand, foreign: null };
  const recorded = await readSettings(outDir, first.settings);
  // Compare like with like: stage II settings only when both sides have them.
  const stage = recorded?.stage2 !== undefined && plan.settings.stage2 ? 2 : 1;
  const changes = recorded
    ? diffSettings(stageSettings(recorded, stage), stageSettings(plan.settings, stage))
    : [];
  return { done, changedByHand, foreign: { entries: foreign, changes } };
}

/**
 * Deletes the images made with other settings (--overwrite), and the grids of their prompts (a grid
 * shows one prompt's images), and drops them from the journal.
 */
export async function removeForeign(outDir: string, journal: Journal, entries: readonly JournalEntry[]) {
  const paths = new Set(entries.map((entry) => entry.path));
  const promptDirs = new Set([...paths].map((path) => path.split('/')[1] ?? ''));
  promptDirs.delete('');
  const grids = [...promptDirs].flatMap((dir) => [`grids/${dir}.png`, `grids/${dir}-stage2.png`]);
  for (const path of [...paths, ...grids]) await unlink(join(outDir, path)).catch(() => undefined);
  await journal.compact((entry) => !paths.has(entry.path));
}
