// The scripted studies in examples/ run as they are on the embedded shapes model (reduced: one prompt,
// one seed, 3 steps) and print their per-layer tables.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
// Each starts a worker and runs the lens: minutes on a loaded 2-core machine.
const EXAMPLE_TIMEOUT = 300_000;
const tempDir = tempDirs('dlens-examples-');

function runExample(name: string): string[] {
  const output = execFileSync(process.execPath, [join(root, 'examples', name)], {
    cwd: tempDir(),
    encoding: 'utf8',
    env: { ...process.env, DLENS_EXAMPLE_QUICK: '1' },
  });
  return output.trimEnd().split('\n');
}

const row = (line: string): number[] => line.trim().split(/\s+/).map(Number);

it(
  'examples/uncond-ablation.mjs compares the unconditional branch per layer',
  () => {
    const [title, header, ...rows] = runExample('uncond-ablation.mjs');
    expect(title).toMatch(/final-layer image/);
    expect(header?.trim().split(/\s+/)).toEqual(['layer', 'final→L', 'same-layer→L', 'final↔same']);
    // The shapes model's encoder has 12 layers: hidden states 0..12.
    expect(rows.map((line) => row(line)[0])).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    // At the final layer both settings are the stock pipeline: the same image.
    expect(row(rows.at(-1) ?? '')).toEqual([12, 0, 0, 0]);
    // Below it, the unconditional branch's layer changes the image.
    expect(row(rows[0] ?? '')[3]).toBeGreaterThan(1);
  },
  EXAMPLE_TIMEOUT,
);

it(
  'examples/noise-ablation.mjs compares shared and per-layer noise per layer',
  () => {
    const [title, header, ...rows] = runExample('noise-ablation.mjs');
    expect(title).toMatch(/layer l - image at layer l-1/);
    expect(header?.trim().split(/\s+/)).toEqual(['layer', 'shared', 'per-layer']);
    expect(rows.map((line) => row(line)[0])).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for (const line of rows) expect(row(line).every(Number.isFinite)).toBe(true);
  },
  EXAMPLE_TIMEOUT,
);
