// The paper's CSV layout (src/eval/paper-csv.ts): file names carrying model and question, reading 0/1 and
// graded files, errors naming file and line, and export -> import giving the same labels back.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  importedLabels,
  type Label,
  modelFromSlug,
  modelSlug,
  PaperCsvError,
  paperCsvFiles,
  paperCsvName,
  parsePaperCsv,
  parsePaperCsvName,
  readPaperCsvs,
} from '../src/eval/index.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-paper-csv-');
const FILE = 'stabilityai--stable-diffusion-2-1__animal_correct__alice.csv';

describe('file names', () => {
  it('carry the model, question, tag and stage', () => {
    expect(modelSlug('stabilityai/stable-diffusion-2-1')).toBe('stabilityai--stable-diffusion-2-1');
    expect(modelFromSlug('stabilityai--stable-diffusion-2-1')).toBe('stabilityai/stable-diffusion-2-1');
    expect(modelSlug('/work/models/shapes')).toBe('shapes');
    expect(modelSlug('./ckpt/v1-5-pruned.safetensors')).toBe('v1-5-pruned');
    const name = paperCsvName({ model: 'org/m', question: 'animal_correct', tag: 'annotator bob', stage: 2 });
    expect(name).toBe('org--m__animal_correct__annotator-bob__stage2.csv');
    expect(parsePaperCsvName(`some/dir/${name}`)).toEqual({
      model: 'org/m',
      question: 'animal_correct',
      tag: 'annotator-bob',
      stage: 2,
    });
    expect(parsePaperCsvName('org--m__is_animal.csv')).toEqual({
      model: 'org/m',
      question: 'is_animal',
      tag: null,
      stage: 1,
    });
    expect(parsePaperCsvName('results.csv')).toBeNull();
  });
});

describe('reading', () => {
  it('reads 0/1 cells, skips empty ones, and takes the model and question from the name', () => {
    const text = 'prompt,0,4,8,seed\n"a photo of a cat, sitting",0,1,1,0\na photo of a cat,0,,1,1\n';
    const table = parsePaperCsv(text, FILE);
    expect(table).toMatchObject({
      model: 'stabilityai/stable-diffusion-2-1',
      question: 'animal_correct',
      tag: 'alice',
      stage: 1,
      scale: 1,
      scaleFrom: 'binary',
      layers: [0, 4, 8],
    });
    expect(table.cells).toEqual([
      { prompt: 'a photo of a cat, sitting', seed: 0, layer: 0, value: 0, line: 2 },
      { prompt: 'a photo of a cat, sitting', seed: 0, layer: 4, value: 1, line: 2 },
      { prompt: 'a photo of a cat, sitting', seed: 0, layer: 8, value: 1, line: 2 },
      { prompt: 'a photo of a cat', seed: 1, layer: 0, value: 0, line: 3 },
      { prompt: 'a photo of a cat', seed: 1, layer: 8, value: 1, line: 3 },
    ]);
  });

  it('scales graded values: guessed 0-10 from the largest, or as given', () => {
    const text = 'prompt,L0,L1,seed\nx,0,7,0\ny,2.5,10,0\n';
    const guessed = parsePaperCsv(text, 'm__q.csv');
    expect([guessed.scale, guessed.scaleFrom]).toEqual([10, 'guessed']);
    expect(guessed.cells.map((c) => c.value)).toEqual([0, 0.7, 0.25, 1]);
    const given = parsePaperCsv('prompt,0,seed\nx,4,0\n', 'm__q.csv', { scale: 5 });
    expect([given.scale, given.scaleFrom, given.cells[0]?.value]).toEqual([5, 'given', 0.8]);
    expect(parsePaperCsv('prompt,0,seed\nx,0.25,0\n', 'm__q.csv').scaleFrom).toBe('fractions');
  });

  it('ignores an unnamed index column and takes --question and --model for other names', () => {
    const table = parsePaperCsv(',prompt,3,seed\n0,x,1,2\n', 'results.csv', {
      question: 'is_animal',
      model: 'm',
    });
    expect(table).toMatchObject({
      model: 'm',
      question: 'is_animal',
      cells: [{ prompt: 'x', seed: 2, layer: 3 }],
    });
  });

  it.each([
    ['prompt,0,1\nx,1,0\n', 'm__q.csv:1: no "seed" column'],
    ['0,1,seed\n1,0,0\n', 'm__q.csv:1: no "prompt" column'],
    ['prompt,0,depth,seed\nx,1,0,0\n', 'm__q.csv:1: column "depth" is not a layer number'],
    ['prompt,0,L0,seed\nx,1,0,0\n', 'm__q.csv:1: layer 0 has two columns'],
    ['prompt,seed\nx,0\n', 'm__q.csv:1: no layer columns'],
    ['prompt,0,1,seed\nx,1,0,0\ny,1,0\n', 'm__q.csv:3: 3 fields, the header has 4'],
    ['prompt,0,1,seed\nx,1,yes,0\n', 'm__q.csv:2: column 1: "yes" is not a number'],
    ['prompt,0,seed\nx,-1,0\n', 'm__q.csv:2: column 0: -1 is negative'],
    ['prompt,0,seed\nx,1,0.5\n', 'm__q.csv:2: seed "0.5" is not a whole number'],
    ['prompt,0,seed\n,1,0\n', 'm__q.csv:2: empty prompt'],
    ['prompt,0,seed\nx,1,0\ny,1,0\nx,0,0\n', 'm__q.csv:4: "x" seed 0 is also on line 2'],
    ['prompt,0,seed\nx,1000,0\n', 'm__q.csv: values go up to 1000'],
    ['prompt,0,seed\n"x,1,0\n', 'm__q.csv:2: Quote Not Closed'],
    ['', 'm__q.csv: the file is empty'],
  ])('refuses %j: %s', (text, message) => {
    expect(() => parsePaperCsv(text, 'm__q.csv')).toThrow(message);
  });

  it('says which file needs a question, and refuses a cell above the given scale', () => {
    expect(() => parsePaperCsv('prompt,0,seed\nx,1,0\n', 'results.csv')).toThrow(
      /results\.csv: cannot tell the question from the file name/,
    );
    expect(() => parsePaperCsv('prompt,0,seed\nx,6,0\n', 'm__q.csv', { scale: 5 })).toThrow(
      'm__q.csv:2: column 0: 6 is above the scale (5)',
    );
  });

  it('reads folders and files, each file once', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'b__q.csv'), 'prompt,0,seed\nx,1,0\n');
    writeFileSync(join(dir, 'a__q.csv'), 'prompt,0,seed\nx,0,0\n');
    writeFileSync(join(dir, 'notes.txt'), 'not a csv');
    const tables = await readPaperCsvs([dir, join(dir, 'a__q.csv')]);
    expect(tables.map((t) => [t.model, t.cells[0]?.value])).toEqual([
      ['a', 0],
      ['b', 1],
    ]);
    await expect(readPaperCsvs([join(dir, 'sub')])).rejects.toThrow(PaperCsvError);
    await expect(readPaperCsvs([join(dir, 'missing')])).rejects.toThrow(/missing: no such file or folder/);
  });
});

describe('export and import', () => {
  it('round-trips labels through the files, one per model, question and source', () => {
    const base = { category: 'animals', stage: 1 as const, source: 'annotator:alice' };
    const labels: Label[] = [];
    for (const [prompt, seed, layer, value] of [
      ['a cat', 0, 0, 0],
      ['a cat', 0, 4, 1],
      ['a cat', 1, 4, 1],
      ['a dog', 0, 0, 1],
    ] as const) {
      labels.push({
        ...base,
        model: 'org/sd',
        prompt,
        seed,
        layer,
        question: 'animal_correct',
        value,
        correct: value === 1,
      });
      labels.push({
        ...base,
        model: 'org/sd',
        prompt,
        seed,
        layer,
        question: 'animal_correct',
        value: 1,
        correct: true,
        source: 'annotator:bob',
      });
    }
    const files = paperCsvFiles(labels);
    expect(files.map((f) => [f.name, f.images])).toEqual([
      ['org--sd__animal_correct__alice.csv', 4],
      ['org--sd__animal_correct__bob.csv', 4],
    ]);
    expect(files[0]?.text).toBe('prompt,0,4,seed\na cat,0,1,0\na cat,,1,1\na dog,1,,0\n');
    const catalog = new Map([
      [
        'a cat',
        { category: 'animals', questions: [{ id: 'animal_correct', text: '', expected: 'yes' as const }] },
      ],
    ]);
    const back = files.flatMap((file) => {
      const table = parsePaperCsv(file.text, file.name);
      return importedLabels({ ...table, source: file.source }, catalog, { category: 'animals' });
    });
    const id = (l: Label) => JSON.stringify([l.source, l.prompt, l.seed, l.layer]);
    const order = (list: Label[]) => [...list].sort((a, b) => id(a).localeCompare(id(b)));
    expect(order(back)).toEqual(order(labels));
  });

  it('counts an answer as correct against the question’s expected answer', () => {
    const table = {
      model: 'm',
      question: 'dependent_drawn',
      source: 'import:x.csv',
      cells: [{ prompt: 'p', seed: 0, layer: 1, value: 0.8 }],
    };
    const catalog = new Map([
      ['p', { category: 'c', questions: [{ id: 'dependent_drawn', text: '', expected: 'no' as const }] }],
    ]);
    expect(importedLabels(table, catalog)[0]).toMatchObject({ value: 0.8, correct: false, category: 'c' });
    expect(importedLabels(table, new Map())[0]).toMatchObject({ correct: true, category: '' });
    expect(importedLabels(table, new Map(), { expectedOf: () => 'no' })[0]?.correct).toBe(false);
  });
});
