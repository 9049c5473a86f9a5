// `diffusion-lens stats` and `diffusion-lens annotations export|import` on a run folder made by hand (a
// manifest and annotations; no images needed) and on paper-layout CSV files alone.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { appendAnnotation } from '../src/eval/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const tempDir = tempDirs('dlens-cli-stats-');

const QUESTION = { id: 'animal_correct', text: 'Is the animal in the image the one named?', expected: 'yes' };
const PROMPTS = [
  ['a zorblat', 'common'],
  ['a quibbit', 'common'],
  ['a snarfle', 'uncommon'],
  ['a vorpal', 'uncommon'],
] as const;
const LAYERS = [0, 1, 2, 3];
const SEEDS = [0, 1, 2];
const key = (p: number, layer: number, seed: number) => `k${p}-${layer}-${seed}`;

/** Alice: common animals right from layer 1, uncommon from layer 3 (Bob: see makeRun). */
const aliceSays = (p: number, layer: number) => (PROMPTS[p]?.[1] === 'common' ? layer >= 1 : layer >= 3);

async function makeRun(): Promise<string> {
  const dir = tempDir();
  const manifest = {
    model: { id: 'org/tiny' },
    prompt_set: null,
    prompts: PROMPTS.map(([prompt, category]) => ({ prompt, columns: { category }, questions: [QUESTION] })),
    images: PROMPTS.flatMap(([prompt], p) =>
      LAYERS.flatMap((layer) =>
        SEEDS.map((seed) => ({
          key: key(p, layer, seed),
          prompt,
          layer,
          seed,
          stage: 1,
          path: `images/${p}/L${layer}-s${seed}.png`,
        })),
      ),
    ),
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  for (const [p, [prompt]] of PROMPTS.entries()) {
    for (const layer of LAYERS) {
      for (const seed of SEEDS) {
        const image = {
          key: key(p, layer, seed),
          prompt,
          layer,
          seed,
          stage: 1 as const,
          question: QUESTION.id,
        };
        const alice: 0 | 1 = aliceSays(p, layer) ? 1 : 0;
        await appendAnnotation(dir, 'alice', { ...image, answer: alice });
        // Bob disagrees with Alice on seed 0 of layer 1.
        await appendAnnotation(dir, 'bob', {
          ...image,
          answer: layer === 1 && seed === 0 ? (alice === 1 ? 0 : 1) : alice,
        });
      }
    }
  }
  return dir;
}

const stats = (...args: string[]) => execa('node', [cli, ...args], { reject: false, cwd: root });

const csvRows = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(','));

let run = '';

beforeAll(async () => {
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  run = await makeRun();
});

describe('diffusion-lens stats', () => {
  it('prints per-layer accuracy, emergence, category tests and agreement, and writes the tables and plots', async () => {
    const result = await stats(
      'stats',
      run,
      '--by',
      'question,category',
      '--source',
      'annotator:alice',
      '--resamples',
      '500',
      '--png',
    );
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain('animal_correct · common: 2 prompts, seeds 0-2, annotator:alice');
    expect(result.stdout).toMatch(
      /emergence: 2 of 2 prompts, median layer 1\.0 \[95% CI 1\.0, 1\.0\], mean 1\.0; never: 0/,
    );
    expect(result.stdout).toMatch(
      /emergence: 2 of 2 prompts, median layer 3\.0 \[95% CI 3\.0, 3\.0\], mean 3\.0; never: 0/,
    );
    expect(result.stdout).toMatch(/common \(2\) vs uncommon \(2\)/);
    expect(result.stdout).toMatch(/mean emergence layer \(never = 4\)\s+1\.00\s+3\.00\s+-2\.00/);
    const out = join(run, 'stats');
    expect(readdirSync(out).sort()).toEqual(
      [
        'accuracy.csv',
        'accuracy.png',
        'accuracy.svg',
        'accuracy.vl.json',
        'comparisons.csv',
        'emergence-summary.csv',
        'emergence.csv',
        'emergence.png',
        'emergence.svg',
        'emergence.vl.json',
        'labels.csv',
      ].sort(),
    );
    const rows = csvRows(join(out, 'accuracy.csv'));
    expect(rows[0]).toEqual([
      'question',
      'category',
      'group',
      'layer',
      'n',
      'prompts',
      'correct',
      'accuracy',
      'ci_low',
      'ci_high',
    ]);
    expect(rows.slice(1, 5).map((row) => row.slice(3, 8))).toEqual([
      ['0', '6', '2', '0', '0'],
      ['1', '6', '2', '6', '1'],
      ['2', '6', '2', '6', '1'],
      ['3', '6', '2', '6', '1'],
    ]);
    expect(csvRows(join(out, 'emergence-summary.csv'))).toEqual([
      [
        'question',
        'category',
        'group',
        'prompts',
        'emerged',
        'never',
        'median_layer',
        'median_low',
        'median_high',
        'mean_layer',
      ],
      ['animal_correct', 'common', 'animal_correct · common', '2', '2', '0', '1', '1', '1', '1'],
      ['animal_correct', 'uncommon', 'animal_correct · uncommon', '2', '2', '0', '3', '3', '3', '3'],
    ]);
    expect(csvRows(join(out, 'emergence.csv'))[1]).toEqual([
      'animal_correct',
      'common',
      'animal_correct · common',
      'a zorblat',
      'common',
      '1',
    ]);
  });

  it('prints the summary as JSON with --json, the median emergence layer with its interval', async () => {
    const out = join(tempDir(), 'stats');
    const result = await stats(
      'stats',
      run,
      '--source',
      'annotator:alice',
      '--out',
      out,
      '--resamples',
      '100',
      '--json',
    );
    expect(result.exitCode).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary.groups[0].emergenceSummary).toMatchObject({
      prompts: 4,
      emerged: 4,
      median: 2,
      mean: 2,
    });
    // Two prompts emerge at layer 1 and two at 3: a resample's median is 1, 2 or 3.
    const [low, high] = summary.groups[0].emergenceSummary.interval;
    expect(low).toBeGreaterThanOrEqual(1);
    expect(low).toBeLessThan(2);
    expect(high).toBeGreaterThan(2);
    expect(high).toBeLessThanOrEqual(3);
  });

  it('measures the agreement of two annotators', async () => {
    const out = join(tempDir(), 'stats');
    const result = await stats('stats', run, '--out', out, '--resamples', '100');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain(
      'note: 2 judges (sources) counted together: annotator:alice, annotator:bob',
    );
    // 48 images; they differ on seed 0 of layer 1 of the 4 prompts: 44 / 48 agree.
    const [, row] = csvRows(join(out, 'agreement.csv'));
    expect(row?.slice(0, 5)).toEqual([
      'annotator:alice',
      'annotator:bob',
      'animal_correct',
      '48',
      String(Math.round((44 / 48) * 10_000) / 10_000),
    ]);
    expect(Number(row?.[5])).toBeGreaterThan(0.8);
  });

  it('exports the annotations in the paper layout, and the CSVs alone give the same numbers', async () => {
    const exported = await stats('annotations', 'export', run);
    expect(exported.exitCode).toBe(0);
    const dir = join(run, 'export', 'annotations');
    expect(readdirSync(dir).sort()).toEqual([
      'org--tiny__animal_correct__alice.csv',
      'org--tiny__animal_correct__bob.csv',
    ]);
    expect(
      readFileSync(join(dir, 'org--tiny__animal_correct__alice.csv'), 'utf8').split('\n').slice(0, 2),
    ).toEqual(['prompt,0,1,2,3,seed', 'a zorblat,0,1,1,1,0']);
    const fromRun = join(tempDir(), 'a');
    const fromCsv = join(tempDir(), 'b');
    await stats('stats', run, '--source', 'annotator:alice', '--out', fromRun, '--resamples', '300');
    const alone = await stats(
      'stats',
      '--annotations',
      join(dir, 'org--tiny__animal_correct__alice.csv'),
      '--out',
      fromCsv,
      '--resamples',
      '300',
    );
    expect(alone.exitCode).toBe(0);
    expect(alone.stdout).toContain('import:org--tiny__animal_correct__alice.csv');
    expect(readFileSync(join(fromCsv, 'accuracy.csv'), 'utf8')).toBe(
      readFileSync(join(fromRun, 'accuracy.csv'), 'utf8'),
    );
  });

  it('imports graded CSVs into a run, where stats counts them as another judge', async () => {
    const file = join(tempDir(), 'carol-scores.csv');
    writeFileSync(file, 'prompt,0,1,2,3,seed\na zorblat,0,8,9,10,0\na snarfle,1,2,3,9,0\n');
    const imported = await stats(
      'annotations',
      'import',
      file,
      '--into',
      run,
      '--question',
      'animal_correct',
    );
    expect(imported.exitCode).toBe(0);
    expect(imported.stderr).toContain('graded values read as 0-10');
    const copy = join(run, 'annotations', 'imported', 'org--tiny__animal_correct__carol-scores.csv');
    expect(readFileSync(copy, 'utf8')).toBe(
      'prompt,0,1,2,3,seed\na zorblat,0,0.8,0.9,1,0\na snarfle,0.1,0.2,0.3,0.9,0\n',
    );
    const again = await stats('annotations', 'import', file, '--into', run, '--question', 'animal_correct');
    expect(again.stdout).toContain('imported already');
    const out = join(tempDir(), 'stats');
    const result = await stats('stats', run, '--by', 'source', '--out', out, '--resamples', '100');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain('import:org--tiny__animal_correct__carol-scores.csv: 2 prompts, seeds 0');
  });
});

describe('diffusion-lens stats errors', () => {
  it('needs a run folder or CSV files, and --out without exactly one run', async () => {
    const none = await stats('stats');
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toContain('give a run folder, or CSV files with --annotations');
    const noOut = await stats('stats', '--annotations', 'x.csv');
    expect(noOut.exitCode).toBe(2);
    expect(noOut.stderr).toContain('give --out DIR');
    const badBy = await stats('stats', run, '--by', 'colour');
    expect(badBy.exitCode).toBe(2);
    expect(badBy.stderr).toContain('"colour" is not one of question, category, model, source, stage');
  });

  it('names the file and line of a bad cell, and a folder that is not a run', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'm__q.csv'), 'prompt,0,seed\nx,1,0\ny,maybe,1\n');
    const bad = await stats('stats', '--annotations', dir, '--out', join(dir, 'out'));
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain(`error: ${join(dir, 'm__q.csv')}:3: column 0: "maybe" is not a number`);
    const notRun = await stats('stats', dir);
    expect(notRun.exitCode).toBe(1);
    expect(notRun.stderr).toContain(`error: ${dir}: no manifest.json`);
  });

  it('refuses to import a question the run does not ask, and says when a run has no judgments', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'org--tiny__is_red.csv'), 'prompt,0,seed\na zorblat,1,0\n');
    const result = await stats('annotations', 'import', join(dir, 'org--tiny__is_red.csv'), '--into', run);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain('the run\'s prompts do not ask "is_red" (they ask: animal_correct)');
    const empty = tempDir();
    writeFileSync(
      join(empty, 'manifest.json'),
      JSON.stringify({ model: { id: 'm' }, prompts: [], images: [] }),
    );
    const none = await stats('stats', empty);
    expect(none.exitCode).toBe(1);
    expect(none.stderr).toContain('no judgments in');
  });
});
