// Makes an executable that the bridge can use as its "python": it ignores the lens_server.py path
// and runs fake-worker.mjs in the given mode instead.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type FakeMode =
  | 'normal'
  | 'protocol2'
  | 'crash-on-start'
  | 'mute'
  | 'silent'
  | 'bad-reply'
  | 'garbage';

const made: string[] = [];

export function fakePython(mode: FakeMode): string {
  const dir = mkdtempSync(join(tmpdir(), 'dlens-fake-python-'));
  made.push(dir);
  const script = join(dir, 'python');
  const worker = join(import.meta.dirname, 'fake-worker.mjs');
  writeFileSync(script, `#!/bin/sh\nFAKE_WORKER_MODE=${mode} exec "${process.execPath}" "${worker}"\n`);
  chmodSync(script, 0o755);
  return script;
}

export function removeFakePythons(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}
