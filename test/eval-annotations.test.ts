// The annotation store (src/eval/annotations.ts) and the questions of a run folder (src/eval/questions.ts).
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPromptSet, promptQuestions } from '../src/config/index.js';
import {
  annotationFile,
  appendAnnotation,
  listAnnotators,
  manifestQuestions,
  questionIds,
  readAllAnnotations,
  readAnnotations,
} from '../src/eval/index.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-eval-');
const image = { key: 'k1', prompt: 'a cat', layer: 3, seed: 0, stage: 1 as const };

describe('annotations', () => {
  it('keeps the last answer per image and question, takes answers back, and syncs each line', async () => {
    const dir = tempDir();
    await appendAnnotation(dir, 'alice', { ...image, question: 'q1', answer: 1 });
    await appendAnnotation(dir, 'alice', { ...image, question: 'q2', answer: 0 });
    await appendAnnotation(dir, 'alice', { ...image, question: 'q1', answer: 0 });
    await appendAnnotation(dir, 'alice', { ...image, question: 'q2', answer: null });
    await appendAnnotation(dir, 'bob', { ...image, key: 'k2', question: 'q1', answer: 1 });
    const alice = await readAnnotations(dir, 'alice');
    expect(alice.answers.map((a) => [a.question, a.answer])).toEqual([['q1', 0]]);
    expect(alice.history).toHaveLength(4);
    expect(await listAnnotators(dir)).toEqual(['alice', 'bob']);
    expect((await readAllAnnotations(dir)).map((a) => a.answers.length)).toEqual([1, 1]);
    const lines = readFileSync(annotationFile(dir, 'alice'), 'utf8').trim().split('\n');
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ v: 1, key: 'k1', question: 'q1', answer: 1 });
  });

  it('ignores a torn last line and cuts it off before the next answer; skips unreadable lines', async () => {
    const dir = tempDir();
    await appendAnnotation(dir, 'carol', { ...image, question: 'q1', answer: 1 });
    const file = annotationFile(dir, 'carol');
    appendFileSync(file, 'not json\n{"v": 1, "key": "k1", "ques');
    expect((await readAnnotations(dir, 'carol')).answers).toHaveLength(1);
    expect((await readAnnotations(dir, 'carol')).skipped).toBe(1);
    await appendAnnotation(dir, 'carol', { ...image, question: 'q2', answer: 0 });
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain('"ques\n');
    expect((await readAnnotations(dir, 'carol')).answers.map((a) => a.question)).toEqual(['q1', 'q2']);
  });

  it('refuses annotator names that are not file names', async () => {
    const dir = tempDir();
    for (const name of ['', '../x', 'a/b', '.hidden', 'x'.repeat(65)]) {
      await expect(appendAnnotation(dir, name, { ...image, question: 'q', answer: 1 })).rejects.toThrow(
        /annotator name/,
      );
    }
    writeFileSync(join(dir, 'stray.txt'), '');
    expect(await listAnnotators(dir)).toEqual([]);
  });
});

describe('questions of a run', () => {
  it("records a prompt set's questions filled in for each row, else the generic one", async () => {
    const configDir = join(import.meta.dirname, '..', 'configs');
    const set = await loadPromptSet({ file: 'prompts/two-colors.csv', column: 'prompt' }, { configDir });
    expect(set.set?.id).toBe('two_colors');
    const [first] = promptQuestions(set.set, set.prompts[0] ?? '', set.rows[0] ?? {});
    expect(first?.text).toBe(`Is there a ${set.rows[0]?.object1} in the image?`);
    const inline = await loadPromptSet(['a cat']);
    expect(inline.set).toBeNull();
    const manifest = {
      prompts: [
        {
          prompt: 'a cat',
          columns: {},
          questions: [{ id: 'x', text: 'Is it a cat?', expected: 'yes' as const }],
        },
        // A manifest from before questions were recorded.
        { prompt: 'a dog', columns: {} },
      ],
    };
    expect(manifestQuestions(manifest)).toEqual([
      [{ id: 'x', text: 'Is it a cat?', expected: 'yes' }],
      [{ id: 'matches_prompt', text: 'Does the image show "a dog"?', expected: 'yes' }],
    ]);
    expect(questionIds(manifest)).toEqual(['x', 'matches_prompt']);
  });
});
