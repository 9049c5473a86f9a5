// Opening an output folder for a run: checked writable before any process starts, created if needed,
// locked against a second run, and removed again when a run that created it fails before making
// anything.
import { access, constants, mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type FolderLock, lockFolder } from './lock.js';
import { STATE_DIR } from './store.js';

export class OutputFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutputFolderError';
  }
}

export interface OutputFolder {
  dir: string;
  /** Releases the lock; `discard` also removes the folders this run created. */
  close(discard: boolean): Promise<void>;
}

async function kind(path: string): Promise<'dir' | 'file' | null> {
  try {
    return (await stat(path)).isDirectory() ? 'dir' : 'file';
  } catch {
    return null;
  }
}

/** The nearest existing ancestor of a path (the path itself when it exists). */
async function nearestExisting(path: string): Promise<string> {
  let current = path;
  while ((await kind(current)) === null && dirname(current) !== current) current = dirname(current);
  return current;
}

function why(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EROFS') return 'read-only file system';
  if (code === 'ENOSPC') return 'no space left on the device';
  return (error as Error).message;
}

/** Creates (if needed), checks and locks the output folder `dir` (absolute). */
export async function openOutputFolder(dir: string): Promise<OutputFolder> {
  const existing = await nearestExisting(dir);
  if ((await kind(existing)) === 'file') {
    throw new OutputFolderError(
      existing === dir
        ? `output folder ${dir} is a file, not a folder`
        : `cannot create output folder ${dir}: ${existing} is a file`,
    );
  }
  let created: string | undefined;
  try {
    created = await mkdir(join(dir, STATE_DIR), { recursive: true });
    await access(dir, constants.W_OK);
  } catch (error) {
    throw new OutputFolderError(`cannot write to output folder ${dir}: ${why(error)} (in ${existing})`);
  }
  // The first folder mkdir made: at or above `dir` when the run created the output folder.
  const createdAbove = created !== undefined && created !== join(dir, STATE_DIR) ? created : undefined;
  let lock: FolderLock;
  try {
    lock = await lockFolder(dir);
  } catch (error) {
    if (createdAbove) await rm(createdAbove, { recursive: true, force: true });
    throw error;
  }
  return {
    dir,
    close: async (discard) => {
      await lock.release();
      if (discard && createdAbove) await rm(createdAbove, { recursive: true, force: true });
    },
  };
}
