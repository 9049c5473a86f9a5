// Where a plan is written and what is reused there. A folder holds one set of settings: when it holds
// images of other settings, the run is refused with the way out, moved to `DIR/variants/<what changed>/`
// (newVariant), or those images are deleted (overwrite). Never mixed silently.
import { join } from 'node:path';
import { inspectCache, removeForeign } from './cache.js';
import type { Plan } from './plan.js';
import { describeChanges, settingsId, variantName } from './settings.js';
import { Journal } from './store.js';

/** A settings change in a used folder, refused: the message says how to go on. */
export class FolderConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FolderConflictError';
  }
}

export const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

export interface ClaimedFolder {
  outDir: string;
  journal: Journal;
  /** Keys of the plan's images on disk with their recorded bytes. */
  done: Set<string>;
}

export async function claimFolder(input: {
  outDir: string;
  plan: Plan;
  overwrite?: boolean;
  newVariant?: boolean;
  /** Opens (creates, checks, locks) a variant folder. */
  openVariant: (dir: string) => Promise<void>;
  notice: (message: string) => void;
}): Promise<ClaimedFolder> {
  const { plan, notice } = input;
  let outDir = input.outDir;
  let journal = await Journal.open(outDir);
  let state = await inspectCache(outDir, journal, plan);
  const variantOf = (changes: Parameters<typeof variantName>[0]) =>
    join(outDir, 'variants', variantName(changes, settingsId(plan.settings, 1)));
  if (state.foreign && input.newVariant) {
    const changes = state.foreign.changes;
    outDir = variantOf(changes);
    await input.openVariant(outDir);
    notice(
      `this run's settings differ from the folder's (${describeChanges(changes)}): writing it to ${outDir}`,
    );
    journal = await Journal.open(outDir);
    state = await inspectCache(outDir, journal, plan);
  }
  if (state.foreign && input.overwrite) {
    await removeForeign(outDir, journal, state.foreign.entries);
    notice(
      `removed ${plural(state.foreign.entries.length, 'image')} made with other settings ` +
        `(${describeChanges(state.foreign.changes)})`,
    );
  } else if (state.foreign) {
    const { entries, changes } = state.foreign;
    throw new FolderConflictError(
      `${outDir} holds ${plural(entries.length, 'image')} made with other settings` +
        (changes.length > 0 ? ` (${describeChanges(changes)})` : '') +
        `, e.g. ${entries[0]?.path}. A folder holds one set of settings; rerun with --new-variant to write ` +
        `this run to ${variantOf(changes)}, with --overwrite to delete those images and make these, or ` +
        'choose another output folder',
    );
  }
  if (state.changedByHand > 0) {
    notice(`${plural(state.changedByHand, 'image')} changed or deleted since made: making them again`);
  }
  if (journal.skippedLines > 0) {
    notice(`${plural(journal.skippedLines, 'unreadable journal line')} skipped: their images are made again`);
  }
  return { outDir, journal, done: state.done };
}
