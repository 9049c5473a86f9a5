// One run at a time per output folder: DIR/.diffusion-lens/lock, created exclusively, holding the owner's
// pid and host. A lock whose process is gone (same host) is stale and taken over.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { STATE_DIR } from './store.js';

export const LOCK_FILE = `${STATE_DIR}/lock`;

export class FolderBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FolderBusyError';
  }
}

interface LockOwner {
  pid: number;
  host: string;
  started: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readOwner(file: string): Promise<LockOwner | null> {
  try {
    const owner = JSON.parse(await readFile(file, 'utf8')) as Partial<LockOwner>;
    if (typeof owner.pid === 'number' && typeof owner.host === 'string') {
      return { pid: owner.pid, host: owner.host, started: String(owner.started ?? '?') };
    }
  } catch {
    // unreadable: half-written by a process that died, or not ours
  }
  return null;
}

export interface FolderLock {
  release(): Promise<void>;
}

/**
 * Takes the folder's lock (the state folder must exist). Throws FolderBusyError naming the other run when
 * a live process holds it.
 */
export async function lockFolder(outDir: string): Promise<FolderLock> {
  const file = join(outDir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(file, JSON.stringify(me), { flag: 'wx' });
      return { release: () => rm(file, { force: true }) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = await readOwner(file);
    if (owner === null && attempt === 0) {
      // Perhaps being written this instant: look again before calling it stale.
      await setTimeout(100);
      continue;
    }
    const stale = owner === null || (owner.host === me.host && !alive(owner.pid));
    if (!stale) {
      const who = owner ? `pid ${owner.pid} on ${owner.host}, since ${owner.started}` : 'unknown owner';
      throw new FolderBusyError(
        `${outDir} is in use by another diffusion-lens run (${who}); wait for it to finish or choose ` +
          `another output folder. If no run is using it, delete ${file}`,
      );
    }
    await rm(file, { force: true });
  }
  throw new FolderBusyError(`cannot lock ${outDir}: ${file} keeps coming back`);
}
