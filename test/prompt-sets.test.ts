// The prompt sets of configs/prompts (sets.yaml and its CSV files): each checks against the index, says
// what its columns say, and the loader refuses bad indexes and files.
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/errors.js';
import {
  indefiniteArticle,
  type LoadedPromptSet,
  loadPromptSets,
  PROMPT_SETS_FILE,
  type PromptSetRow,
  type PromptSetSpec,
  parsePromptSetIndex,
  parseTemplate,
  promptSetFileIssues,
  renderQuestion,
  renderQuestions,
} from '../src/config/prompt-sets.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-prompt-sets-');
const promptsDir = join(import.meta.dirname, '..', 'configs', 'prompts');

/** The paper's categories and sizes. */
const SIZES: Record<string, number> = {
  objects: 80,
  animals_common: 20,
  animals_uncommon: 27,
  celebrities: 31,
  relations: 160,
  single_color: 40,
  two_colors: 40,
  head_dependent: 80,
  compounds: 36,
};

const a = (word: string) => `${indefiniteArticle(word)} ${word}`;

/** What each set's prompt is, from its other columns: the columns say what makes an image correct. */
const PROMPT_OF: Record<string, (v: Record<string, string>) => string> = {
  objects: (v) => `a photo of ${a(v.object ?? '')}`,
  animals_common: (v) => `a photo of ${a(v.animal ?? '')}`,
  animals_uncommon: (v) => `a photo of ${a(v.animal ?? '')}`,
  celebrities: (v) => `a portrait of ${v.name}`,
  relations: (v) => `${a(v.object1 ?? '')} ${v.relation} ${a(v.object2 ?? '')}`,
  single_color: (v) => `${a(v.colour ?? '')} ${v.object}`,
  two_colors: (v) => `${a(v.colour1 ?? '')} ${v.object1} and ${a(v.colour2 ?? '')} ${v.object2}`,
  head_dependent: (v) =>
    ({
      'shaped-like': `${a(v.head ?? '')} shaped like ${a(v.dependent ?? '')}`,
      'made-from': `${a(v.head ?? '')} made from ${a(v.dependent ?? '')}`,
      'printed-on': `${a(v.head ?? '')} with ${a(v.dependent ?? '')} printed on it`,
      'topped-with': `${a(v.head ?? '')} topped with ${a(v.dependent ?? '')}`,
    })[v.construction ?? ''] ?? '',
  compounds: (v) => a(v.compound ?? ''),
};

function countBy(
  rows: PromptSetRow[],
  key: (row: PromptSetRow, i: number) => string,
): Record<string, number> {
  const counts: Record<string, number> = {};
  rows.forEach((row, i) => {
    const k = key(row, i);
    counts[k] = (counts[k] ?? 0) + 1;
  });
  return counts;
}

describe('the prompt sets of configs/prompts', () => {
  let sets: LoadedPromptSet[] = [];
  beforeAll(async () => {
    sets = await loadPromptSets();
  });
  const set = (id: string): LoadedPromptSet => {
    const found = sets.find((s) => s.id === id);
    if (!found) throw new Error(`no set ${id}`);
    return found;
  };

  it('are the paper categories, in their sizes, and every CSV file there is one of them', () => {
    expect(Object.fromEntries(sets.map((s) => [s.id, s.rows.length]))).toEqual(SIZES);
    const files = readdirSync(promptsDir).filter((f) => f.endsWith('.csv'));
    expect(files.sort()).toEqual(sets.map((s) => s.file).sort());
    expect(PROMPT_SETS_FILE).toBe(join(promptsDir, 'sets.yaml'));
  });

  it.each(Object.keys(SIZES))('%s: each prompt is what its columns say, lower-case, articles right', (id) => {
    const { rows } = set(id);
    for (const row of rows) {
      expect(row.prompt).toBe(PROMPT_OF[id]?.(row.values));
      if (id !== 'celebrities') expect(row.prompt).toBe(row.prompt.toLowerCase());
      for (const [, article, word] of row.prompt.matchAll(/\b(a|an) ([A-Za-z]+)/g)) {
        expect(`${article} ${word}`).toBe(a(word ?? ''));
      }
    }
  });

  it.each(Object.keys(SIZES))('%s: every question renders for every prompt', (id) => {
    const s = set(id);
    for (const row of s.rows) {
      for (const question of renderQuestions(s, row)) {
        expect(question.text).not.toMatch(/[{}]/);
        expect(question.text).not.toMatch(/\ba [aeiou]/i);
      }
    }
  });

  it('relations: 40 per relation and naturalness; each unnatural prompt swaps a natural one', () => {
    const { rows } = set('relations');
    expect(countBy(rows, (r) => `${r.values.relation} ${r.values.natural}`)).toEqual({
      'in true': 40,
      'in false': 40,
      'on true': 40,
      'on false': 40,
    });
    const natural = new Set(
      rows
        .filter((r) => r.values.natural === 'true')
        .map((r) => `${r.values.object1}|${r.values.relation}|${r.values.object2}`),
    );
    for (const r of rows.filter((row) => row.values.natural === 'false')) {
      expect(natural.has(`${r.values.object2}|${r.values.relation}|${r.values.object1}`)).toBe(true);
    }
  });

  it('single colour: each object once in its usual colour and once in another', () => {
    const { rows } = set('single_color');
    expect(countBy(rows, (r) => r.values.natural ?? '')).toEqual({ true: 20, false: 20 });
    const colours = new Map<string, string[]>();
    for (const r of rows)
      colours.set(r.values.object ?? '', [
        ...(colours.get(r.values.object ?? '') ?? []),
        r.values.colour ?? '',
      ]);
    expect(colours.size).toBe(20);
    for (const pair of colours.values()) expect(new Set(pair).size).toBe(2);
  });

  it('two colours: two distinct objects and colours per prompt, balanced use, no object pair twice', () => {
    const { rows } = set('two_colors');
    for (const { values: v } of rows) {
      expect(v.object1).not.toBe(v.object2);
      expect(v.colour1).not.toBe(v.colour2);
    }
    const pairs = rows.map((r) => [r.values.object1, r.values.object2].sort().join('|'));
    expect(new Set(pairs).size).toBe(rows.length);
    const uses = (a: string, b: string) =>
      new Set(
        Object.values(
          countBy([...rows, ...rows], (r, i) => (i < rows.length ? r.values[a] : r.values[b]) ?? ''),
        ),
      );
    expect(uses('object1', 'object2')).toEqual(new Set([4]));
    expect(uses('colour1', 'colour2')).toEqual(new Set([8]));
  });

  it('head and dependent: 20 per construction, head and dependent distinct', () => {
    const { rows } = set('head_dependent');
    expect(Object.values(countBy(rows, (r) => r.values.construction ?? ''))).toEqual([20, 20, 20, 20]);
    for (const { values: v } of rows) expect(v.head).not.toBe(v.dependent);
  });

  it('compounds: modifier + head, as written', () => {
    for (const { values: v } of set('compounds').rows) expect(v.compound).toBe(`${v.modifier} ${v.head}`);
  });

  it('objects: 10 per class', () => {
    expect(new Set(Object.values(countBy(set('objects').rows, (r) => r.values.class ?? '')))).toEqual(
      new Set([10]),
    );
  });

  it('animals: every common animal is more popular than every uncommon one', () => {
    const popularity = (id: string) => set(id).rows.map((r) => Number(r.values.popularity));
    expect(Math.min(...popularity('animals_common'))).toBeGreaterThan(
      Math.max(...popularity('animals_uncommon')),
    );
    const names = [...set('animals_common').rows, ...set('animals_uncommon').rows].map(
      (r) => r.values.animal,
    );
    expect(new Set(names).size).toBe(47);
    for (const name of names) expect(name).toMatch(/^[a-z]+$/); // one word: its own Zipf frequency
  });

  it('celebrities: distinct people of both genders, several fields and eras', () => {
    const { rows } = set('celebrities');
    expect(countBy(rows, (r) => r.values.gender ?? '')).toEqual({ female: 15, male: 16 });
    expect(Object.keys(countBy(rows, (r) => r.values.field ?? '')).length).toBeGreaterThanOrEqual(8);
    const centuries = new Set(rows.map((r) => Math.floor(Number(r.values.born) / 100)));
    expect(centuries.size).toBeGreaterThanOrEqual(4);
  });

  it('renders questions with the row values and articles', () => {
    expect(renderQuestion('Is there {a colour1} {object1}?', { colour1: 'orange', object1: 'cup' })).toBe(
      'Is there an orange cup?',
    );
    const relations = set('relations');
    const row = relations.rows.find((r) => r.prompt === 'a table on a cup');
    expect(row && renderQuestions(relations, row)).toEqual([
      { id: 'object1_present', text: 'Is there a table in the image?', expected: 'yes' },
      { id: 'object2_present', text: 'Is there a cup in the image?', expected: 'yes' },
      { id: 'relation_correct', text: 'Is the table on the cup?', expected: 'yes' },
    ]);
    expect(['umbrella', 'owl', 'unicorn', 'hour', 'euro', 'lamp'].map(indefiniteArticle)).toEqual([
      'an',
      'an',
      'a',
      'an',
      'a',
      'a',
    ]);
    expect(() => renderQuestion('Is it {colour}?', {})).toThrow(/no column "colour"/);
  });
});

/** A small valid index and file, to break one thing at a time. */
const SPEC: PromptSetSpec = {
  id: 'fruit',
  file: 'fruit.csv',
  category: 'fruit',
  description: 'three fruit',
  count: 3,
  columns: [
    { name: 'object', description: 'the fruit', type: 'text' },
    { name: 'colour', description: 'its colour', type: 'text', values: ['red', 'yellow'] },
  ],
  questions: [{ id: 'colour_correct', text: 'Is the {object} {colour}?', expected: 'yes' }],
};
const CSV =
  'prompt,object,colour\na red apple,apple,red\na yellow banana,banana,yellow\na red cherry,cherry,red\n';
const INDEX = `version: 1
sets:
  - id: fruit
    file: fruit.csv
    category: fruit
    description: three fruit
    count: 3
    columns:
      - { name: object, description: the fruit }
      - { name: colour, description: its colour, values: [red, yellow] }
    questions:
      - { id: colour_correct, text: "Is the {object} {colour}?" }
`;

const messages = (spec: PromptSetSpec, csv: string) =>
  promptSetFileIssues(spec, csv, 'fruit.csv').issues.map((issue) => `${issue.line ?? '-'}: ${issue.message}`);

function indexError(text: string): string {
  try {
    parsePromptSetIndex(text, 'sets.yaml');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('the index was accepted');
}

describe('loadPromptSets refuses', () => {
  it('nothing in a valid set', async () => {
    expect(messages(SPEC, CSV)).toEqual([]);
    const dir = tempDir();
    writeFileSync(join(dir, 'sets.yaml'), INDEX);
    writeFileSync(join(dir, 'fruit.csv'), CSV);
    const [fruit] = await loadPromptSets(join(dir, 'sets.yaml'));
    expect(fruit?.rows.map((r) => r.prompt)).toEqual(['a red apple', 'a yellow banana', 'a red cherry']);
    expect(fruit?.rows[1]).toEqual({
      line: 3,
      prompt: 'a yellow banana',
      values: { object: 'banana', colour: 'yellow' },
    });
  });

  it('a row count other than the declared one', () => {
    expect(messages({ ...SPEC, count: 4 }, CSV)).toEqual(['-: 3 prompts, the index says count: 4']);
  });

  it('a missing column, and one not declared', () => {
    expect(messages(SPEC, 'prompt,object\na red apple,apple\n')).toEqual([
      '1: column "colour" is missing (the header has "prompt", "object")',
    ]);
    expect(messages(SPEC, CSV.replace('prompt,object,colour', 'prompt,object,color'))).toEqual([
      '1: column "colour" is missing (the header has "prompt", "object", "color")',
      '1: column "color" is not declared in the index (declare it under columns)',
    ]);
  });

  it('a prompt listed twice (case and spacing aside)', () => {
    expect(messages({ ...SPEC, count: 4 }, `${CSV}A red  apple,apple,red\n`)).toEqual([
      '5: "a red apple" is listed twice (lines 2 and 5)',
    ]);
  });

  it('a value a categorical or number column does not allow, an empty cell, a ragged row', () => {
    const spec: PromptSetSpec = {
      ...SPEC,
      count: 4,
      columns: [...SPEC.columns, { name: 'weight', description: 'grams', type: 'number' }],
    };
    const csv =
      'prompt,object,colour,weight\na red apple,apple,red,150\na blue banana,banana,blue,120\na red cherry,,red,heavy\na pear,pear\n';
    expect(messages(spec, csv)).toEqual([
      '3: colour "blue" is not one of red, yellow',
      '4: object is empty',
      '4: weight "heavy" is not a number',
      '5: 2 fields, the header has 4',
    ]);
  });

  it('a placeholder that names no column, and broken braces', () => {
    const bad = INDEX.replace('Is the {object} {colour}?', 'Is the {object} {a color}?');
    expect(indexError(bad)).toBe(
      'sets.yaml:12: sets[0].questions[0].text: {a color} names no column of fruit.csv; its columns: prompt, object, colour',
    );
    expect(parseTemplate('Is {it}} {A object}? {').errors).toEqual([
      'unmatched "}" at character 8',
      '{A object} is not a placeholder (write {column} or {a column})',
      'unmatched "{" at character 22',
    ]);
    expect(parseTemplate('Does the image show {prompt}?').placeholders).toEqual([
      { column: 'prompt', article: false },
    ]);
  });

  it('an index that breaks its schema, repeats an id, or lists the prompt column', () => {
    expect(indexError(INDEX.replace('count: 3', 'count: three'))).toMatch(
      /^sets\.yaml:7: sets\[0\]\.count: /,
    );
    expect(indexError(INDEX.replace('id: colour_correct', 'id: ColourCorrect'))).toContain(
      'sets.yaml:12: sets[0].questions[0].id: a question id must be snake_case',
    );
    expect(indexError(INDEX.replace('category: fruit', 'category: fruit\n    colour: red'))).toMatch(
      /sets\.yaml:3: sets\[0\]: .*colour/,
    );
    const twice = `${INDEX}${INDEX.split('sets:\n')[1]?.replace('file: fruit.csv', 'file: more.csv')}`;
    expect(indexError(twice)).toBe('sets.yaml:13: sets[1].id: set id "fruit" is listed twice');
    expect(indexError(INDEX.replace('- { name: object', '- { name: prompt'))).toContain(
      'sets[0].columns[0].name: "prompt" is every set\'s prompt column',
    );
  });

  it("a question's clip texts with a bad template, a varied column not in the right text, a bad except", () => {
    const clip = (spec: string) =>
      INDEX.replace(
        '- { id: colour_correct, text: "Is the {object} {colour}?" }',
        `- { id: colour_correct, text: "Is the {object} {colour}?", clip: ${spec} }`,
      );
    expect(() =>
      parsePromptSetIndex(
        clip('{ right: "a {colour} {object}", contrast: [{ vary: colour }, "a {object}"] }'),
      ),
    ).not.toThrow();
    expect(indexError(clip('{ right: "a {color} {object}", contrast: ["x"] }'))).toBe(
      'sets.yaml:12: sets[0].questions[0].clip.right: {color} names no column of fruit.csv; its columns: prompt, object, colour',
    );
    expect(indexError(clip('{ right: "a {object}", contrast: [{ vary: colour }] }'))).toBe(
      'sets.yaml:12: sets[0].questions[0].clip.contrast[0].vary: {colour} is not in the right text "a {object}", so varying it changes nothing',
    );
    expect(indexError(clip('{ right: "a {object}", contrast: [{ vary: weight }] }'))).toBe(
      'sets.yaml:12: sets[0].questions[0].clip.contrast[0].vary: "weight" is no column of fruit.csv; its columns: object, colour',
    );
    expect(indexError(clip('{ right: "a {object}", contrast: [{ vary: object, except: [object] }] }'))).toBe(
      'sets.yaml:12: sets[0].questions[0].clip.contrast[0].except[0]: "object" must be another column of fruit.csv than "object"; its columns: object, colour',
    );
    expect(indexError(clip('{ right: "a {object}", contrast: [] }'))).toMatch(
      /^sets\.yaml:12: sets\[0\]\.questions\[0\]\.clip\.contrast: /,
    );
  });

  it('a set whose file is missing, naming the index line', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'sets.yaml'), INDEX);
    await expect(loadPromptSets(join(dir, 'sets.yaml'))).rejects.toThrow(
      `sets.yaml:4: sets[0].file: cannot read ${join(dir, 'fruit.csv')}: no such file`,
    );
  });
});
