// The README's library example runs as written (on the embedded shapes model).
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
// Each starts a worker and runs the lens: minutes on a loaded 2-core machine.
const EXAMPLE_TIMEOUT = 300_000;
const tempDir = tempDirs('dlens-readme-');

it(
  'the README library example runs and writes its run folder',
  () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const library = readme.slice(readme.indexOf('## Library'));
    const code = /```js\n([\s\S]*?)```/.exec(library)?.[1];
    if (!code) throw new Error('no js block under "## Library" in the README');
    // Inside the package folder, so that `import 'diffusion-lens'` resolves to this package (dist/).
    const script = join(root, 'test', `.readme-example-${process.pid}.mjs`);
    writeFileSync(script, code);
    const cwd = tempDir();
    try {
      const output = execFileSync(process.execPath, [script], { cwd, encoding: 'utf8' });
      expect(output).toMatch(/layer 12, seed 0: images\/two-blue-squares-[0-9a-f]{8}\/L12-s0\.png/);
      expect(output).toMatch(/^6 images; manifest at .*runs\/library-example\/manifest\.json$/m);
      const manifest = JSON.parse(
        readFileSync(join(cwd, 'runs', 'library-example', 'manifest.json'), 'utf8'),
      );
      expect(manifest.complete).toBe(true);
    } finally {
      rmSync(script, { force: true });
    }
  },
  EXAMPLE_TIMEOUT,
);

it(
  'the README study example reuses one worker and streams image records',
  () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const library = readme.slice(readme.indexOf('## Library'));
    const code = [...library.matchAll(/```js\n([\s\S]*?)```/g)][1]?.[1];
    if (!code) throw new Error('no second js block under "## Library" in the README');
    const script = join(root, 'test', `.readme-study-${process.pid}.mjs`);
    writeFileSync(script, code);
    try {
      const lines = execFileSync(process.execPath, [script], { cwd: tempDir(), encoding: 'utf8' })
        .trimEnd()
        .split('\n');
      // The shapes model: layers 0..12, one seed, two settings, all made (a fresh folder each).
      expect(lines).toHaveLength(26);
      expect(lines[0]).toMatch(/^final \d+ made .*runs\/uncond-final\/images\/.*\.png$/);
      expect(lines.at(-1)).toMatch(/^same-layer \d+ made .*runs\/uncond-same-layer\//);
    } finally {
      rmSync(script, { force: true });
    }
  },
  EXAMPLE_TIMEOUT,
);
