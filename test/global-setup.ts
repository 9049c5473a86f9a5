// Builds the tiny random-weight SD pipeline once per test run and hands its folder to the tests
// (inject('sdFixture')). The tests load it by path, through the same code as a hub id.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { findPython } from '../src/bridge/python.js';

declare module 'vitest' {
  export interface ProvidedContext {
    sdFixture: string;
  }
}

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'dlens-fixture-'));
  const sd = join(dir, 'tiny-sd');
  execFileSync(findPython(), ['-m', 'diffusion_lens.fixtures', 'sd', sd], {
    stdio: 'inherit',
    cwd: join(import.meta.dirname, '..', 'python'),
  });
  project.provide('sdFixture', sd);
  return () => rmSync(dir, { recursive: true, force: true });
}
