// RUN_DIR/scores.csv (read, merged atomically, cached by image, question, scorer and model) and the texts
// the clip scorer compares images with (sets.yaml's clip templates; the generic question's rule).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { type LoadedPromptSet, loadPromptSets } from '../src/config/prompt-sets.js';
import { NEUTRAL_TEXT, renderClipTexts, runClipTexts } from '../src/eval/clip-texts.js';
import {
  mergeScores,
  readScores,
  SCORES_FILE,
  type ScoreRow,
  ScoresFileError,
  scoreId,
} from '../src/eval/scores.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-scores-');

const row = (overrides: Partial<ScoreRow> = {}): ScoreRow => ({
  key: 'k1',
  prompt: 'a red apple, "ripe"',
  layer: 3,
  seed: 0,
  stage: 1,
  question: 'matches_prompt',
  score: 0.25,
  answer: 0,
  scorer: 'clip',
  scorer_model: 'openai/clip-vit-large-patch14',
  scorer_version: 'clip rule 1; transformers 5.24.0, torch 2.13.0',
  ...overrides,
});

describe('scores.csv', () => {
  it('is empty until written, then reads back what was merged, quotes and notes included', async () => {
    const dir = tempDir();
    expect(await readScores(dir)).toEqual([]);
    const rows = [row(), row({ key: 'k2', layer: 4, score: 1, answer: 1, note: "answered 'red', neither" })];
    expect(await mergeScores(dir, rows)).toEqual({ added: 2, replaced: 0 });
    expect(await readScores(dir)).toEqual(rows);
    expect(readFileSync(join(dir, SCORES_FILE), 'utf8').split('\n')[0]).toBe(
      'key,prompt,layer,seed,stage,question,score,answer,scorer,scorer_model,scorer_version,note',
    );
  });

  it('replaces the row that caches the same answer, in place, and keeps the others', async () => {
    const dir = tempDir();
    await mergeScores(dir, [row(), row({ key: 'k2' }), row({ scorer: 'vqa', scorer_model: 'blip' })]);
    const newer = row({ score: 0.75, answer: 1, scorer_version: 'clip rule 2' });
    expect(await mergeScores(dir, [newer, row({ key: 'k3' })])).toEqual({ added: 1, replaced: 1 });
    const rows = await readScores(dir);
    expect(rows.map((r) => [r.key, r.scorer, r.score])).toEqual([
      ['k1', 'clip', 0.75],
      ['k2', 'clip', 0.25],
      ['k1', 'vqa', 0.25],
      ['k3', 'clip', 0.25],
    ]);
    expect(scoreId(rows[0] as ScoreRow)).toBe(scoreId(row()));
    expect(scoreId(rows[0] as ScoreRow)).not.toBe(scoreId(row({ scorer_model: 'other' })));
  });

  it('refuses a file edited into something else, naming the line and field', async () => {
    const dir = tempDir();
    await mergeScores(dir, [row(), row({ key: 'k2' })]);
    const file = join(dir, SCORES_FILE);
    writeFileSync(file, readFileSync(file, 'utf8').replace(/,0\.25,0,clip/, ',1.5,0,clip'));
    await expect(readScores(dir)).rejects.toThrow(ScoresFileError);
    await expect(readScores(dir)).rejects.toThrow(`${file}:2: score: Too big: expected number to be <=1`);
    await expect(mergeScores(dir, [row({ key: 'k3' })])).rejects.toThrow(ScoresFileError);
  });
});

describe('the clip texts', () => {
  let sets: LoadedPromptSet[] = [];
  beforeAll(async () => {
    sets = await loadPromptSets();
  });
  const set = (id: string): LoadedPromptSet => {
    const found = sets.find((s) => s.id === id);
    if (!found) throw new Error(`no set ${id}`);
    return found;
  };
  const texts = (setId: string, questionId: string, prompt: string) => {
    const s = set(setId);
    const clip = s.questions.find((q) => q.id === questionId)?.clip;
    const r = s.rows.find((x) => x.prompt === prompt);
    if (!clip || !r) throw new Error(`no ${questionId} or ${prompt}`);
    return renderClipTexts(clip, s, r);
  };

  it('every question of every set has them, with something to contrast for every row', () => {
    for (const s of sets) {
      for (const question of s.questions) {
        expect(question.clip, `${s.id}.${question.id}`).toBeDefined();
        for (const r of s.rows) {
          const rendered = renderClipTexts(question.clip ?? { right: '', contrast: [] }, s, r);
          expect(rendered.contrast.length, `${s.id}.${question.id}: ${r.prompt}`).toBeGreaterThan(0);
          expect(rendered.contrast).not.toContain(rendered.right);
          expect(new Set(rendered.contrast).size).toBe(rendered.contrast.length);
        }
      }
    }
  });

  it('classification: the right object against every other object of the set', () => {
    const object = texts('objects', 'object_correct', 'a photo of a banana');
    expect(object.right).toBe('a photo of a banana');
    expect(object.contrast).toHaveLength(79);
    expect(object.contrast).toContain('a photo of an apple');
    const kind = texts('objects', 'class_correct', 'a photo of a banana');
    expect(kind).toEqual({
      right: 'a photo of a kind of fruit',
      contrast: [
        'a photo of a kind of vegetable',
        'a photo of a kind of furniture',
        'a photo of a kind of vehicle',
        'a photo of a kind of tool',
        'a photo of a kind of musical instrument',
        'a photo of a kind of kitchenware',
        'a photo of a kind of clothing',
      ],
    });
  });

  it('relations and binding: roles and colours swapped; a present object never contrasts the other', () => {
    const relation = texts('relations', 'relation_correct', 'a table on a cup');
    expect(relation).toEqual({
      right: 'a photo of a table on a cup',
      contrast: ['a photo of a cup on a table', 'a photo of a table in a cup'],
    });
    const first = texts('relations', 'object1_present', 'a table on a cup');
    expect(first.right).toBe('a photo of a table');
    expect(first.contrast).not.toContain('a photo of a cup');
    const colours = set('two_colors').rows[0];
    if (!colours) throw new Error('no rows');
    const { colour1, colour2, object1 } = colours.values;
    const colour = texts('two_colors', 'colour1_correct', colours.prompt);
    expect(colour.contrast).toHaveLength(9);
    // The other object's colour on this object: the binding mistake.
    expect(colour.contrast).toContain(
      `a photo of ${/^[aeiou]/.test(colour2 ?? '') ? 'an' : 'a'} ${colour2} ${object1}`,
    );
    expect(colour.contrast).not.toContain(`a photo of a ${colour1} ${object1}`);
  });

  it('head and dependent: the caption against its parts alone', () => {
    expect(texts('head_dependent', 'caption_correct', 'a lamp shaped like a pineapple')).toEqual({
      right: 'a photo of a lamp shaped like a pineapple',
      contrast: ['a photo of a lamp', 'a photo of a pineapple'],
    });
    expect(texts('head_dependent', 'dependent_only', 'a lamp shaped like a pineapple')).toEqual({
      right: 'a photo of a pineapple',
      contrast: ['a photo of a lamp shaped like a pineapple', 'a photo of a lamp'],
    });
  });

  it("of a run: its set's questions, and the generic question against the run's other prompts", async () => {
    const banana = set('objects').rows.find((r) => r.prompt === 'a photo of a banana');
    const manifest = {
      prompt_set: { id: 'objects' },
      prompts: [
        {
          prompt: 'a photo of a banana',
          columns: banana?.values ?? {},
          questions: [
            { id: 'object_correct', text: 'Does the image show a banana?', expected: 'yes' as const },
            { id: 'class_correct', text: 'Is it a kind of fruit?', expected: 'yes' as const },
          ],
        },
      ],
    };
    const [of] = await runClipTexts(manifest);
    expect([...(of?.keys() ?? [])]).toEqual(['object_correct', 'class_correct']);
    expect(of?.get('class_correct')?.right).toBe('a photo of a kind of fruit');

    const generic = await runClipTexts({ prompts: [{ prompt: 'a red apple' }, { prompt: 'a blue car' }] });
    expect(generic.map((m) => m.get('matches_prompt'))).toEqual([
      { right: 'a red apple', contrast: ['a blue car'] },
      { right: 'a blue car', contrast: ['a red apple'] },
    ]);
    const alone = await runClipTexts({ prompts: [{ prompt: 'a red apple' }] });
    expect(alone[0]?.get('matches_prompt')).toEqual({ right: 'a red apple', contrast: [NEUTRAL_TEXT] });

    await expect(runClipTexts({ ...manifest, prompt_set: { id: 'mine' } })).rejects.toThrow(
      /the run's prompt set "mine" is not in .*sets\.yaml: pass the index it is in \(--prompt-sets FILE\)/,
    );
    const noColumns = { ...manifest, prompts: [{ ...manifest.prompts[0], columns: {} }] };
    await expect(runClipTexts(noColumns as typeof manifest)).rejects.toThrow(
      'question "object_correct" of prompt "a photo of a banana": question "a photo of {a object}": no column "object"',
    );
  });
});
