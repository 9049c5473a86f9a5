// `diffusion-lens score` end to end: runs made by the real CLI (the tiny SD fixture, and the embedded shapes
// model), scored by the real worker with the tiny random CLIP and BLIP fixtures and with the shapes
// world's ground truth, into RUN_DIR/scores.csv; a rerun asks only what is missing. The decision rules
// themselves are tested on known cases in python/tests/test_scorers.py.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { type ScoreEvent, SHAPES_SCORER_MODEL, scoreRun } from '../src/eval/score.js';
import { readScores, SCORES_FILE } from '../src/eval/scores.js';
import type { Manifest } from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const tempDir = tempDirs('dlens-score-');
const sdFixture = inject('sdFixture');
const clipFixture = inject('clipScorerFixture');
const blipFixture = inject('blipVqaFixture');

const PROMPTS = ['a red apple', 'a blue car'];

function dlens(...args: string[]) {
  return execa('node', [cli, ...args], { reject: false, cwd: root });
}

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));

let run = '';

beforeAll(async () => {
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  const dir = tempDir();
  const config = join(dir, 'two.yaml');
  writeFileSync(
    config,
    [
      `model: { id: ${JSON.stringify(sdFixture)} }`,
      `prompts: ${JSON.stringify(PROMPTS)}`,
      'seeds: [0, 1]',
      'sampler: { steps: 2, size: 32 }',
      'lens: { layers: "1,5" }',
      '',
    ].join('\n'),
  );
  run = join(dir, 'run');
  const made = await dlens('run', config, '--out', run);
  expect(made.stderr).not.toMatch(/error/i);
  expect(made.exitCode).toBe(0);
});

describe('diffusion-lens score', () => {
  it('clip: one row per image and question, the generic question against the other prompt; cached', async () => {
    const first = await dlens(
      'score',
      run,
      '--scorer',
      'clip',
      '--model',
      clipFixture,
      '--batch',
      '3',
      '--json',
    );
    expect(first.stderr).not.toMatch(/error/i);
    expect(first.exitCode).toBe(0);
    const events = first.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(events[0]).toMatchObject({ type: 'score-start', images: 8, images_cached: 0, images_to_score: 8 });
    expect(events.filter((e) => e.type === 'score-progress').map((e) => e.images_done)).toEqual([3, 6, 8]);
    expect(events.at(-1)).toMatchObject({ type: 'score-done', images_scored: 8, rows_written: 8 });

    const manifest = readManifest(run);
    const rows = await readScores(run);
    expect(rows).toHaveLength(8);
    expect(new Set(rows.map((row) => row.key))).toEqual(new Set(manifest.images.map((image) => image.key)));
    for (const row of rows) {
      const image = manifest.images.find((i) => i.key === row.key);
      expect(row).toMatchObject({
        prompt: image?.prompt,
        layer: image?.layer,
        seed: image?.seed,
        stage: 1,
        question: 'matches_prompt',
        scorer: 'clip',
        scorer_model: clipFixture,
      });
      expect(row.score).toBeGreaterThanOrEqual(0);
      expect(row.score).toBeLessThanOrEqual(1);
      // Two candidates (the prompt and the other prompt): yes exactly when the prompt's probability > 0.5.
      expect(row.answer).toBe(row.score > 0.5 ? 1 : 0);
      expect(row.scorer_version).toMatch(/^clip rule 1; transformers \S+, torch \S+$/);
    }
    expect(readFileSync(join(run, SCORES_FILE), 'utf8').split('\n')[0]).toBe(
      'key,prompt,layer,seed,stage,question,score,answer,scorer,scorer_model,scorer_version,note',
    );

    // Everything is answered: no worker starts, nothing changes.
    const before = readFileSync(join(run, SCORES_FILE), 'utf8');
    const again = await dlens('score', run, '--scorer', 'clip', '--model', clipFixture);
    expect(again.exitCode).toBe(0);
    expect(again.stderr).toContain('8 images, 8 answered already, 0 to score');
    expect(again.stderr).not.toContain('scorer clip');
    expect(readFileSync(join(run, SCORES_FILE), 'utf8')).toBe(before);

    // --rescore asks again: the same answers in the same rows (scores up to float rounding: the images
    // share other batches than with --batch 3).
    const rescored = await dlens('score', run, '--scorer', 'clip', '--model', clipFixture, '--rescore');
    expect(rescored.exitCode).toBe(0);
    expect(rescored.stdout).toContain('8 images scored');
    const again8 = await readScores(run);
    expect(again8.map(({ score, ...rest }) => rest)).toEqual(rows.map(({ score, ...rest }) => rest));
    again8.forEach((r, i) => {
      expect(r.score).toBeCloseTo(rows[i]?.score ?? -1, 5);
    });
  });

  it('vqa: its rows join the clip rows, each answer yes or no (a note says what else it said)', async () => {
    const result = await dlens('score', run, '--scorer', 'vqa', '--model', blipFixture);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const rows = await readScores(run);
    const vqa = rows.filter((row) => row.scorer === 'vqa');
    expect(vqa).toHaveLength(8);
    expect(rows.filter((row) => row.scorer === 'clip')).toHaveLength(8);
    for (const row of vqa) {
      expect(row.scorer_model).toBe(blipFixture);
      if (row.note !== undefined) {
        expect(row.answer).toBe(0);
        expect(row.note).toMatch(/neither yes nor no: counted as no$/);
      }
    }
  });

  it('stopped after a batch, keeps what was answered; the next scoring asks only the rest', async () => {
    const copy = join(tempDir(), 'copy');
    cpSync(run, copy, { recursive: true });
    rmSync(join(copy, SCORES_FILE), { force: true });
    const controller = new AbortController();
    const events: ScoreEvent[] = [];
    const stopped = await scoreRun(copy, {
      scorer: 'clip',
      model: clipFixture,
      batch: 2,
      signal: controller.signal,
      onEvent: (event) => {
        events.push(event);
        if (event.type === 'score-progress') controller.abort();
      },
    });
    expect(stopped.aborted).toBe(true);
    expect(stopped.imagesScored).toBe(2);
    expect(await readScores(copy)).toHaveLength(2);
    const rest = await scoreRun(copy, { scorer: 'clip', model: clipFixture, batch: 2 });
    expect(rest).toMatchObject({ aborted: false, imagesCached: 2, imagesScored: 6, rowsWritten: 6 });
    expect(await readScores(copy)).toHaveLength(8);
  });

  it('refuses what it cannot do, before starting a worker', async () => {
    const missing = await dlens('score', run, '--scorer', 'clip', '--model', join(run, 'no-such-model'));
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain(
      `error: --model: the folder ${join(run, 'no-such-model')} does not exist`,
    );
    const shapesModel = await dlens('score', run, '--scorer', 'shapes', '--model', clipFixture);
    expect(shapesModel.stderr).toContain('error: --model: the shapes scorer has no model');
    const notRun = await dlens('score', tempDir(), '--scorer', 'clip');
    expect(notRun.exitCode).toBe(1);
    expect(notRun.stderr).toMatch(/has no manifest\.json: not a run folder/);
    const badKind = await dlens('score', run, '--scorer', 'blip');
    expect(badKind.exitCode).toBe(2);
    expect(badKind.stderr).toMatch(/Allowed choices are clip, vqa, shapes/);
  });

  it("shapes: the ground truth's own questions on the shapes model's images; other prompts are skipped", async () => {
    const out = join(tempDir(), 'shapes');
    const prompt = 'a small red circle at the left';
    const made = await dlens('lens', prompt, '--layers', '0,8', '--seeds', '0', '--steps', '8', '--out', out);
    expect(made.exitCode).toBe(0);
    const result = await dlens('score', out, '--scorer', 'shapes');
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const rows = await readScores(out);
    const manifest = readManifest(out);
    for (const image of manifest.images) {
      const mine = rows.filter((row) => row.key === image.key);
      expect(mine.map((row) => row.question)).toEqual([
        'object_correct',
        'colour_correct',
        'shape_correct',
        'size_correct',
        'position_correct',
        'matches_prompt',
      ]);
      expect(mine.every((row) => row.scorer === 'shapes' && row.scorer_model === SHAPES_SCORER_MODEL)).toBe(
        true,
      );
      expect(mine.every((row) => row.score === row.answer)).toBe(true);
      const matches = mine.find((row) => row.question === 'matches_prompt');
      expect(matches?.answer).toBe(mine.every((row) => row.answer === 1) ? 1 : 0);
    }
    // The token embeddings (layer 0) draw nothing of the prompt.
    const layer0 = manifest.images.find((image) => image.layer === 0);
    expect(rows.find((row) => row.key === layer0?.key && row.question === 'matches_prompt')?.answer).toBe(0);

    const skipped = await dlens('score', run, '--scorer', 'shapes');
    expect(skipped.exitCode).toBe(0);
    expect(skipped.stderr).toContain(
      'skipped 4 images of "a red apple": \'a red apple\' is not a prompt of the shapes world',
    );
    expect(skipped.stdout).toContain('0 images scored, 0 answered already, 8 skipped; 0 rows written');
  });
});
