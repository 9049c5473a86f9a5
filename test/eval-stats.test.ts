// The statistics (src/eval/stats.ts, src/eval/analysis.ts) on constructed labels whose answers are known
// exactly: Cohen's kappa of a hand-computed table, bootstrap intervals of all-correct data and of data
// whose resampling distribution is known, emergence layers of set patterns and their median's interval,
// permutation p-values.
import { describe, expect, it } from 'vitest';
import {
  cohensKappa,
  computeStats,
  emergenceLayers,
  groupLabels,
  type Label,
  layerAccuracy,
  permutationTests,
  seededRng,
  sourceAgreement,
  summarizeEmergence,
} from '../src/eval/index.js';

/** A label with defaults; `correct` also sets `value` (expected answer yes). */
function label(fields: Partial<Label> & Pick<Label, 'prompt' | 'layer' | 'seed' | 'correct'>): Label {
  return {
    model: 'm',
    category: '',
    question: 'q',
    stage: 1,
    value: fields.correct ? 1 : 0,
    source: 'annotator:a',
    ...fields,
  };
}

/** Labels of one prompt from a pattern: rows = layers, characters = seeds ('1' correct, '0' wrong, '.' none). */
function pattern(prompt: string, rows: string[], extra: Partial<Label> = {}): Label[] {
  return rows.flatMap((row, layer) =>
    [...row].flatMap((cell, seed) =>
      cell === '.' ? [] : [label({ prompt, layer, seed, correct: cell === '1', ...extra })],
    ),
  );
}

describe("Cohen's kappa and agreement", () => {
  it('matches a hand-computed 2x2 table', () => {
    // yes/yes 20, yes/no 5, no/yes 10, no/no 15: agreement 35/50 = 0.7; chance 0.5*0.6 + 0.5*0.4 = 0.5;
    // kappa (0.7 - 0.5) / (1 - 0.5) = 0.4.
    const pairs: [boolean, boolean][] = [
      ...Array<[boolean, boolean]>(20).fill([true, true]),
      ...Array<[boolean, boolean]>(5).fill([true, false]),
      ...Array<[boolean, boolean]>(10).fill([false, true]),
      ...Array<[boolean, boolean]>(15).fill([false, false]),
    ];
    const result = cohensKappa(pairs);
    expect(result.n).toBe(50);
    expect(result.agreement).toBeCloseTo(0.7, 12);
    expect(result.kappa).toBeCloseTo(0.4, 12);
  });

  it('is undefined when both judges answer everything alike, and -1 for perfect disagreement', () => {
    expect(
      cohensKappa([
        [true, true],
        [true, true],
      ]),
    ).toEqual({ n: 2, agreement: 1, kappa: null });
    expect(
      cohensKappa([
        [true, false],
        [false, true],
      ]).kappa,
    ).toBeCloseTo(-1, 12);
  });

  it('pairs two sources on the same image and question, per question and overall', () => {
    const a = [...pattern('p', ['1', '0', '1']), ...pattern('p', ['1'], { question: 'r' })];
    const b = [
      ...pattern('p', ['1', '1', '1'], { source: 'scorer:clip:x' }),
      ...pattern('p', ['1'], { question: 'r', source: 'scorer:clip:x' }),
    ];
    const rows = sourceAgreement([...a, ...b]);
    expect(rows.map((r) => [r.a, r.b, r.question, r.n, r.agreement])).toEqual([
      ['annotator:a', 'scorer:clip:x', 'q', 3, 2 / 3],
      ['annotator:a', 'scorer:clip:x', 'r', 1, 1],
      ['annotator:a', 'scorer:clip:x', null, 4, 3 / 4],
    ]);
  });
});

describe('per-layer accuracy with a hierarchical bootstrap', () => {
  it('gives [1, 1] for all-correct data and [0, 0] for all-wrong', () => {
    const labels = [...pattern('a', ['111', '000']), ...pattern('b', ['111', '000'])];
    const rows = layerAccuracy(labels, { resamples: 200 });
    expect(rows).toEqual([
      { layer: 0, n: 6, prompts: 2, correct: 6, accuracy: 1, low: 1, high: 1 },
      { layer: 1, n: 6, prompts: 2, correct: 0, accuracy: 0, low: 0, high: 0 },
    ]);
  });

  it('resamples seeds within a prompt, not only prompts', () => {
    // One prompt, one seed right and one wrong: resampling prompts alone would always give 0.5; resampling
    // seeds gives 0, 0.5 or 1 (probabilities 1/4, 1/2, 1/4), so the 95% interval is [0, 1].
    const rows = layerAccuracy(pattern('a', ['10']), { resamples: 2000 });
    expect(rows[0]).toMatchObject({ accuracy: 0.5, low: 0, high: 1 });
  });

  it('is reproducible for a seed and differs for another', () => {
    const labels = ['a', 'b', 'c', 'd', 'e'].flatMap((p, i) => pattern(p, [i % 2 ? '1101' : '0100', '1111']));
    const first = layerAccuracy(labels, { seed: 7, resamples: 300 });
    expect(layerAccuracy(labels, { seed: 7, resamples: 300 })).toEqual(first);
    expect(layerAccuracy(labels, { seed: 8, resamples: 300 })[0]).not.toEqual(first[0]);
    const [row] = first;
    expect(row?.accuracy).toBeCloseTo(9 / 20, 12); // 1 + 3 + 1 + 3 + 1 of 20
    expect(row?.low).toBeLessThan(0.45);
    expect(row?.high).toBeGreaterThan(0.45);
  });

  it('draws the same numbers from a named stream whatever else is drawn', () => {
    const a = seededRng(3, 'x');
    const b = seededRng(3, 'x');
    const other = seededRng(3, 'y');
    const draws = (rng: ReturnType<typeof seededRng>) => Array.from({ length: 20 }, () => rng.below(100));
    expect(draws(a)).toEqual(draws(b));
    expect(draws(seededRng(3, 'x'))).not.toEqual(draws(other));
  });
});

describe('emergence layers', () => {
  it('is the first layer from which a majority of seeds is correct at every later layer', () => {
    const labels = [
      ...pattern('late', ['000', '110', '100', '011', '111']), // majority at 1, lost at 2, back from 3
      ...pattern('never', ['000', '000', '000', '000', '100']),
      ...pattern('lost', ['111', '111', '111', '111', '100']), // correct until the last layer
      ...pattern('always', ['111', '110', '011', '101', '111']),
      ...pattern('gaps', ['000', '...', '110', '...', '011']), // layers not judged are skipped
    ];
    expect(emergenceLayers(labels).map((row) => [row.prompt, row.layer])).toEqual([
      ['late', 3],
      ['never', null],
      ['lost', null],
      ['always', 0],
      ['gaps', 2],
    ]);
    // Half is not a majority.
    expect(emergenceLayers(pattern('tie', ['10', '10']))[0]?.layer).toBeNull();
  });

  it('summarises the distribution', () => {
    const rows = [
      { prompt: 'a', category: '', layer: 2 },
      { prompt: 'b', category: '', layer: 4 },
      { prompt: 'c', category: '', layer: 4 },
      { prompt: 'd', category: '', layer: null },
    ];
    expect(summarizeEmergence(rows, [0, 2, 4], { resamples: 500 })).toEqual({
      prompts: 4,
      emerged: 3,
      never: 1,
      median: 4,
      // Resampling 2, 4, 4: the median is 2 when at least two draws are 2 (7 in 27), else 4.
      interval: [2, 4],
      mean: 10 / 3,
      counts: [
        { layer: 0, prompts: 0 },
        { layer: 2, prompts: 1 },
        { layer: 4, prompts: 2 },
      ],
    });
  });
});

describe('a bootstrap interval of the median emergence layer', () => {
  const rows = (layers: (number | null)[]) =>
    layers.map((layer, i) => ({ prompt: `p${i}`, category: '', layer }));
  const layers = [0, 2, 4, 6, 8, 10];

  it('is [m, m] when every prompt emerges at layer m, and null when none emerges', () => {
    expect(summarizeEmergence(rows([6, 6, 6, 6, null]), layers).interval).toEqual([6, 6]);
    expect(summarizeEmergence(rows([4]), layers).interval).toEqual([4, 4]);
    const none = summarizeEmergence(rows([null, null]), layers);
    expect(none).toMatchObject({ emerged: 0, median: null, interval: null });
    expect(summarizeEmergence([], layers).interval).toBeNull();
  });

  it('contains the median, lies within the layers judged, and widens as the layers spread', () => {
    const tight = summarizeEmergence(rows([4, 4, 4, 4, 4, 4, 6, 4, 4, 4, 4, 4]), layers);
    const spread = summarizeEmergence(rows([0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, null]), layers);
    for (const summary of [tight, spread]) {
      const [low, high] = summary.interval as [number, number];
      expect(low).toBeLessThanOrEqual(summary.median as number);
      expect(high).toBeGreaterThanOrEqual(summary.median as number);
      expect(low).toBeGreaterThanOrEqual(0);
      expect(high).toBeLessThanOrEqual(10);
    }
    expect(tight.interval).toEqual([4, 4]);
    expect(spread.median).toBe(6);
    const [low, high] = spread.interval as [number, number];
    expect(low).toBeLessThan(6);
    expect(high).toBeGreaterThan(6);
  });

  it('repeats for a seed and stream, and takes the resamples and confidence of the options', () => {
    const spread = rows([0, 2, 2, 4, 6, 6, 8, 10, 10]);
    const options = { seed: 5, resamples: 400, stream: 'emergence q' };
    const first = summarizeEmergence(spread, layers, options);
    expect(summarizeEmergence(spread, layers, options)).toEqual(first);
    // Another seed draws other resamples; the interval still holds the median.
    const [otherLow, otherHigh] = summarizeEmergence(spread, layers, { ...options, seed: 6 }).interval as [
      number,
      number,
    ];
    expect(otherLow).toBeLessThanOrEqual(6);
    expect(otherHigh).toBeGreaterThanOrEqual(6);
    const [low, high] = first.interval as [number, number];
    const narrow = summarizeEmergence(spread, layers, { ...options, confidence: 0.5 }).interval as [
      number,
      number,
    ];
    expect(narrow[0]).toBeGreaterThanOrEqual(low);
    expect(narrow[1]).toBeLessThanOrEqual(high);
  });

  it('is part of each group of computeStats, drawn from the same seed as the accuracy intervals', () => {
    const labels = ['a', 'b', 'c', 'd', 'e', 'f'].flatMap((p, i) =>
      pattern(
        p,
        [0, 1, 2, 3].map((layer) => (layer >= i % 4 ? '11' : '00')),
      ),
    );
    const summary = computeStats(labels, { seed: 3, resamples: 300 });
    const [group] = summary.groups;
    expect(group?.emergenceSummary.median).toBe(1); // layers 0, 1, 2, 3, 0, 1
    expect(group?.emergenceSummary.interval).toEqual(
      summarizeEmergence(group?.emergence ?? [], [0, 1, 2, 3], {
        seed: 3,
        resamples: 300,
        stream: 'emergence q',
      }).interval,
    );
    expect(computeStats(labels, { seed: 3, resamples: 300 }).groups[0]?.emergenceSummary).toEqual(
      group?.emergenceSummary,
    );
  });
});

describe('permutation tests', () => {
  const mean = (units: readonly number[]) => units.reduce((s, u) => s + u, 0) / units.length;

  it('gives p = 1 for identical sets', () => {
    const [result] = permutationTests([1, 0, 1], [1, 0, 1], [mean], { resamples: 500 });
    expect(result).toMatchObject({ difference: 0, p: 1, permutations: 500 });
  });

  it('gives the exact tail probability of perfectly separated sets', () => {
    // 5 ones vs 5 zeros: |difference| 1 in 2 of the C(10,5) = 252 splits, so p is about 2/252.
    const [result] = permutationTests([1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [mean], {
      resamples: 20_000,
      seed: 1,
    });
    expect(result?.difference).toBe(1);
    expect(result?.p).toBeGreaterThan(0.004);
    expect(result?.p).toBeLessThan(0.013);
  });

  it('compares categories within each group, shuffling prompts', () => {
    const common = ['cat', 'dog', 'cow', 'pig'].flatMap((p) =>
      pattern(p, ['00', '11', '11', '11'], { category: 'common' }),
    );
    const rare = ['okapi', 'quokka', 'tapir', 'saiga'].flatMap((p) =>
      pattern(p, ['00', '00', '00', '11'], { category: 'uncommon' }),
    );
    const summary = computeStats([...common, ...rare], { by: ['question', 'category'], resamples: 1000 });
    expect(summary.groups.map((g) => [g.name, g.emergenceSummary.median])).toEqual([
      ['q · common', 1],
      ['q · uncommon', 3],
    ]);
    const emergence = summary.comparisons.find((row) => row.measure === 'emergence');
    expect(emergence).toMatchObject({
      categoryA: 'common',
      categoryB: 'uncommon',
      a: 1,
      b: 3,
      difference: -2,
    });
    // 2 of the C(8,4) = 70 splits are as extreme.
    expect(emergence?.p).toBeLessThan(0.06);
    const last = summary.comparisons.find((row) => row.measure === 'accuracy' && row.layer === 3);
    expect(last).toMatchObject({ difference: 0, p: 1 });
  });
});

describe('grouping', () => {
  it('groups by the chosen dimensions in first-seen order, adds stage when both stages are there', () => {
    const labels = [
      ...pattern('a', ['1'], { question: 'x' }),
      ...pattern('a', ['0'], { question: 'y', stage: 2 }),
      ...pattern('a', ['1'], { question: 'x', stage: 2 }),
    ];
    expect(groupLabels(labels, ['question']).map((g) => [g.name, g.labels.length])).toEqual([
      ['x', 2],
      ['y', 1],
    ]);
    const summary = computeStats(labels, { resamples: 10 });
    expect(summary.by).toEqual(['question', 'stage']);
    expect(summary.groups.map((g) => g.name)).toEqual(['x · stage 1', 'y · stage 2', 'x · stage 2']);
    expect(summary.notes[0]).toMatch(/stage/);
  });
});
