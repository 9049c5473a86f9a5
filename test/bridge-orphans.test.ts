// No orphans: whatever happens to the orchestrator, its worker process goes with it. These run the
// built bridge in a separate node process, so that process can be killed or left to exit.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../src/bridge/python.js';
import { isAlive, waitUntil } from './bridge/processes.js';

const parentScript = join(import.meta.dirname, 'bridge', 'parent-script.mjs');
const parents: ResultPromise[] = [];

/** Compiles just src/bridge into dist/bridge, so the test works whatever the rest of src/ is doing. */
function buildBridge(): void {
  const dir = mkdtempSync(join(tmpdir(), 'dlens-bridge-build-'));
  try {
    const config = join(dir, 'tsconfig.json');
    writeFileSync(
      config,
      JSON.stringify({
        extends: join(packageRoot, 'tsconfig.json'),
        // Type roots resolve from this config's folder, so point them back at the project.
        compilerOptions: { typeRoots: [join(packageRoot, 'node_modules', '@types')] },
        files: [join(packageRoot, 'src', 'bridge', 'index.ts')],
        include: [],
      }),
    );
    execFileSync(
      process.execPath,
      [join(packageRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', config],
      {
        stdio: 'inherit',
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Parent {
  parent: ResultPromise;
  workerPid: number;
  /** The private folder of the worker's ipc socket. */
  ipcFolder: string;
}

/** Runs parent-script.mjs in `mode` and resolves once it has printed its worker's pid. */
async function startParent(mode: 'hold' | 'exit' | 'forget'): Promise<Parent> {
  const parent = execa(process.execPath, [parentScript, mode], { reject: false, stderr: 'inherit' });
  parents.push(parent);
  const lines = createInterface({ input: parent.stdout });
  for await (const line of lines) {
    lines.close();
    const { pid, endpoint } = JSON.parse(line) as { pid: number; endpoint: string };
    return { parent, workerPid: pid, ipcFolder: dirname(endpoint.replace(/^ipc:\/\//, '')) };
  }
  throw new Error(`parent-script.mjs ${mode} printed no pid (exit: ${(await parent).exitCode})`);
}

describe('no orphaned workers', () => {
  beforeAll(buildBridge);
  afterEach(() => {
    for (const parent of parents.splice(0)) parent.kill('SIGKILL');
  });

  it('a SIGKILLed orchestrator takes its worker with it', async () => {
    const { parent, workerPid, ipcFolder } = await startParent('hold');
    expect(isAlive(workerPid)).toBe(true);
    parent.kill('SIGKILL');
    await parent;
    expect(await waitUntil(() => !isAlive(workerPid), 10_000)).toBe(true);
    // It saw its stdin close and shut down cleanly, removing its socket folder.
    expect(await waitUntil(() => !existsSync(ipcFolder), 2_000)).toBe(true);
  });

  it('process.exit() kills the worker at once', async () => {
    const { parent, workerPid, ipcFolder } = await startParent('exit');
    expect((await parent).exitCode).toBe(0);
    expect(await waitUntil(() => !isAlive(workerPid), 2_000)).toBe(true);
    expect(existsSync(ipcFolder)).toBe(false);
  });

  it('a forgotten worker does not keep node alive, and dies with it', async () => {
    const { parent, workerPid, ipcFolder } = await startParent('forget');
    const exit = await Promise.race([
      parent,
      new Promise((resolve) => setTimeout(resolve, 15_000, 'still running')),
    ]);
    expect(exit).not.toBe('still running');
    expect(await waitUntil(() => !isAlive(workerPid), 5_000)).toBe(true);
    expect(existsSync(ipcFolder)).toBe(false);
  });
});
