// The label adapters (src/eval/labels.ts): a run's annotations and scores as labels, with each prompt's
// category and each question's expected answer from the manifest; the prompt sets as a catalog.
import { describe, expect, it } from 'vitest';
import { loadPromptSets } from '../src/config/index.js';
import {
  type AnnotatorAnswers,
  annotationLabels,
  manifestCatalog,
  promptSetCatalog,
  type RunManifest,
  runLabelContext,
  scoreLabels,
  setsExpectedOf,
} from '../src/eval/index.js';

const ask = (id: string, expected: 'yes' | 'no' = 'yes') => ({ id, text: id, expected });

const manifest: RunManifest = {
  model: { id: 'org/model' },
  prompt_set: { id: 'relations', category: 'relations' },
  prompts: [
    {
      prompt: 'a cup on a table',
      columns: { construction: 'on' },
      questions: [ask('first_drawn'), ask('dependent_drawn', 'no')],
    },
    { prompt: 'a dog', columns: { category: 'animals', class: 'mammal' }, questions: [ask('first_drawn')] },
    { prompt: 'an old prompt' }, // a manifest from before questions: the generic question
  ],
  images: [
    { key: 'k1', prompt: 'a cup on a table', layer: 2, seed: 0, stage: 1 as const, path: 'x' },
    { key: 'k2', prompt: 'a dog', layer: 3, seed: 1, stage: 1 as const, path: 'y' },
    { key: 'k3', prompt: 'an old prompt', layer: 0, seed: 0, stage: 1 as const, path: 'z' },
  ],
};

const answer = (key: string, prompt: string, question: string, value: 0 | 1) => ({
  v: 1 as const,
  at: '2026-01-01T00:00:00Z',
  key,
  prompt,
  layer: 2,
  seed: 0,
  stage: 1 as const,
  question,
  answer: value,
});

describe('catalogs', () => {
  it("takes a prompt's category from the chosen column, a category column, or the set", () => {
    const catalog = manifestCatalog(manifest);
    expect(
      [...catalog].map(([prompt, info]) => [prompt, info.category, info.questions.map((q) => q.id)]),
    ).toEqual([
      ['a cup on a table', 'relations', ['first_drawn', 'dependent_drawn']],
      ['a dog', 'animals', ['first_drawn']],
      ['an old prompt', 'relations', ['matches_prompt']],
    ]);
    expect(manifestCatalog(manifest, { categoryColumn: 'class' }).get('a dog')?.category).toBe('mammal');
    expect(manifestCatalog(manifest, { categoryColumn: 'class' }).get('a cup on a table')?.category).toBe('');
  });

  it('knows every prompt of the shipped prompt sets, and the expected answer of their questions', async () => {
    const sets = await loadPromptSets();
    const catalog = promptSetCatalog(sets);
    const common = sets.find((set) => set.id === 'animals_common');
    const row = common?.rows[0];
    expect(catalog.get(row?.prompt ?? '')).toMatchObject({ category: 'common animals' });
    const expectedOf = setsExpectedOf(sets);
    expect(expectedOf('animal_correct')).toBe('yes');
    expect(sets.some((set) => set.questions.some((q) => q.expected === 'no'))).toBe(true);
    const no = sets.flatMap((set) => set.questions).find((q) => q.expected === 'no');
    expect(expectedOf(no?.id ?? '')).toBe('no');
    expect(expectedOf('no_such_question')).toBeUndefined();
  });
});

describe('run labels', () => {
  const context = runLabelContext(manifest);

  it("turns annotators' answers into labels, correct against each question's expected answer", () => {
    const annotators: AnnotatorAnswers[] = [
      {
        annotator: 'alice',
        answers: [
          answer('k1', 'a cup on a table', 'first_drawn', 1),
          answer('k1', 'a cup on a table', 'dependent_drawn', 1), // drawn, but should not be
          answer('k3', 'an old prompt', 'matches_prompt', 0),
          answer('gone', 'a cup on a table', 'first_drawn', 1),
          answer('k1', 'a cup on a table', 'renamed_question', 1),
        ],
        history: [],
        skipped: 0,
      },
    ];
    const { labels, warnings } = annotationLabels(context, annotators);
    expect(labels.map((l) => [l.question, l.value, l.correct, l.category, l.source, l.model])).toEqual([
      ['first_drawn', 1, true, 'relations', 'annotator:alice', 'org/model'],
      ['dependent_drawn', 1, false, 'relations', 'annotator:alice', 'org/model'],
      ['matches_prompt', 0, false, 'relations', 'annotator:alice', 'org/model'],
    ]);
    expect(warnings).toEqual([
      'annotator alice: 1 left out: images the run does not have (a key not in the manifest)',
      'annotator alice: 1 left out: answers to a question the prompt does not ask ("renamed_question")',
    ]);
  });

  it("turns scores into labels: the score as the value, the scorer's answer for correctness", () => {
    const row = {
      key: 'k2',
      prompt: 'a dog',
      layer: 3,
      seed: 1,
      stage: 1 as const,
      scorer: 'clip',
      scorer_model: 'openai/clip',
      scorer_version: 'transformers 5',
    };
    const { labels, warnings } = scoreLabels(context, [
      { ...row, question: 'first_drawn', score: 0.42, answer: 1 },
      { ...row, question: 'colour_correct', score: 0, answer: 0 }, // the scorer's own question
      { ...row, key: 'gone', question: 'first_drawn', score: 1, answer: 1 },
    ]);
    expect(labels.map((l) => [l.question, l.value, l.correct, l.source, l.layer, l.seed])).toEqual([
      ['first_drawn', 0.42, true, 'scorer:clip:openai/clip', 3, 1],
      ['colour_correct', 0, false, 'scorer:clip:openai/clip', 3, 1],
    ]);
    expect(warnings).toEqual([
      'scorer:clip:openai/clip: 1 left out: images the run does not have (a key not in the manifest)',
    ]);
  });
});
