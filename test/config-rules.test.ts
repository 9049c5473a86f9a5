import { describe, expect, it } from 'vitest';
import { type LensCommandOptions, lensConfig, OPTION_LABELS } from '../src/cli/options.js';
import {
  configSource,
  type ExperimentConfig,
  loadConfigFile,
  loadPromptSet,
  loadPrompts,
  parseConfig,
  readPromptFile,
  resolveLayers,
  toJsonSchema,
} from '../src/config/index.js';
import { configError, write } from './config-helpers.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-config-rules-');

const lines = (error: Error): string[] => error.message.split('\n');

/** Loads a config file and its prompts as the runner does (file folder, YAML locations). */
async function loadWithPrompts(path: string) {
  const config = await loadConfigFile(path);
  const source = configSource(config);
  return loadPromptSet(config.prompts, { configDir: source?.dir, locate: source?.locate });
}

describe('duplicates are errors that name the value and where it is', () => {
  it('seeds', async () => {
    const error = await configError(() => parseConfig({ prompts: ['x'], seeds: [0, 3, 1, 3] }));
    expect(error.message).toBe('seeds: 3 is listed twice');
    expect(error.field).toBe('seeds');
    const thrice = await configError(() => parseConfig({ prompts: ['x'], seeds: [3, 1, 3, 2, 3, 1] }));
    expect(lines(thrice)).toEqual(['seeds: 3 is listed 3 times', 'seeds: 1 is listed twice']);
  });

  it('seeds in YAML: the line of the repeat', async () => {
    const dir = tempDir();
    const path = write(dir, 'e.yaml', 'prompts: [a]\nseeds:\n  - 0\n  - 3\n  - 1\n  - 3\n');
    expect((await configError(loadConfigFile(path))).message).toBe(`${path}:6: seeds: 3 is listed twice`);
    const flow = write(dir, 'f.yaml', 'prompts: [a]\nseeds: [0, 3, 3]\n');
    expect((await configError(loadConfigFile(flow))).message).toBe(`${flow}:2: seeds: 3 is listed twice`);
  });

  it('stages', async () => {
    const error = await configError(() =>
      parseConfig({ prompts: ['x'], stages: [1, 2, 2], stage2: { model: 'x/ii' } }),
    );
    expect(error.message).toBe('stages: 2 is listed twice');
  });

  it('--seeds and --stages name the option', async () => {
    const error = await configError(() => lensConfig('a cat', { out: 'o', seeds: '0,1,0', stages: '1,1' }));
    expect(lines(error)).toEqual(['--seeds: 0 is listed twice', '--stages: 1 is listed twice']);
  });

  it.each([
    ['24,-1', 24, 'layer 24 is listed twice ("-1" is layer 24 of 0..24)'],
    ['-1,24', 24, 'layer 24 is listed twice ("-1" is layer 24 of 0..24)'],
    ['0:24:4,-1', 24, 'layer 24 is listed twice (in "0:24:4" and "-1"; "-1" is layer 24 of 0..24)'],
    ['0:8:4, 4:6', 24, 'layer 4 is listed twice (in "0:8:4" and "4:6")'],
    ['20:, -1', 24, 'layer 24 is listed twice ("20:" is 20:24 of 0..24; "-1" is layer 24 of 0..24)'],
    ['-3:-1, 0:5', 5, 'layer 3 is listed twice (in "-3:-1" and "0:5"; "-3:-1" is 3:5 of 0..5)'],
    ['2,2,2', 5, 'layer 2 is listed 3 times'],
  ])('layers %s with L = %d', async (spec, L, message) => {
    const error = await configError(() => resolveLayers(spec, L));
    expect(error.field).toBe('lens.layers');
    expect(error.message).toContain(`lens.layers: ${message}`);
  });

  it('layers: every repeated layer, in order; lists of integers too', async () => {
    const error = await configError(() => resolveLayers('0:4, 2:6', 8));
    expect(lines(error)).toEqual([
      'lens.layers: layer 2 is listed twice (in "0:4" and "2:6")',
      'lens.layers: layer 3 is listed twice (in "0:4" and "2:6")',
      'lens.layers: layer 4 is listed twice (in "0:4" and "2:6")',
    ]);
    expect((await configError(() => resolveLayers([0, -1, 5], 5))).message).toBe(
      'lens.layers: layer 5 is listed twice ("-1" is layer 5 of 0..5)',
    );
    expect(resolveLayers('0:4, 5, -2', 8)).toEqual([0, 1, 2, 3, 4, 5, 7]);
  });

  it('layers written out in full are checked when the config is read; negative ones once L is known', async () => {
    const error = await configError(() => parseConfig({ prompts: ['x'], lens: { layers: '0:8:4,4' } }));
    expect(error.message).toBe('lens.layers: layer 4 is listed twice (in "0:8:4" and "4")');
    expect(
      (await configError(() => parseConfig({ prompts: ['x'], lens: { layers: [1, 2, 1] } }))).message,
    ).toBe('lens.layers: layer 1 is listed twice');
    expect(parseConfig({ prompts: ['x'], lens: { layers: '0:24:4,-1' } }).lens.layers).toBe('0:24:4,-1');
    const dir = tempDir();
    const path = write(dir, 'e.yaml', 'prompts: [a]\nlens:\n  layers: "0:4, 4"\n');
    expect((await configError(loadConfigFile(path))).message).toBe(
      `${path}:3: lens.layers: layer 4 is listed twice (in "0:4" and "4")`,
    );
  });

  it('inline prompts: the indexes, and the line of the repeat', async () => {
    const error = await configError(() => parseConfig({ prompts: ['a red circle', 'b', ' a red circle '] }));
    expect(error.message).toBe('prompts: "a red circle" is listed twice (prompts[0] and prompts[2])');
    const dir = tempDir();
    const path = write(
      dir,
      'e.yaml',
      'prompts:\n  - a red circle\n  - a cat\n  - a red circle\n  - a cat\n  - a cat\n',
    );
    expect(lines(await configError(loadConfigFile(path)))).toEqual([
      `${path}:4: prompts: "a red circle" is listed twice (prompts[0] and prompts[2])`,
      `${path}:5: prompts: "a cat" is listed 3 times (prompts[1], prompts[3] and prompts[4])`,
    ]);
    // A config built by hand, not by parseConfig: the same error from loadPromptSet.
    const hand = await configError(loadPromptSet(['a', 'b', 'a']));
    expect(hand.message).toBe('prompts: "a" is listed twice (prompts[0] and prompts[2])');
  });

  it('prompt files: the lines and the file, at the config line of prompts.file', async () => {
    const dir = tempDir();
    write(
      dir,
      'prompts.csv',
      'id,prompt\n1,a blue square\n2,a red circle\n3,a cat\n4,"a\nb"\n5, a red circle\n6,a cat\n7,a cat\n',
    );
    write(dir, 'p.txt', '# shapes\na red circle\n\na blue square\na red circle\n');
    const csv = write(dir, 'e.yaml', 'name: e\nprompts:\n  file: prompts.csv\n');
    expect(lines(await configError(loadWithPrompts(csv)))).toEqual([
      `${csv}:3: prompts: "a red circle" is listed twice (lines 3 and 7 of prompts.csv)`,
      `${csv}:3: prompts: "a cat" is listed 3 times (lines 4, 8 and 9 of prompts.csv)`,
    ]);
    const txt = await configError(readPromptFile({ file: 'p.txt', column: 'prompt' }, { configDir: dir }));
    expect(txt.message).toBe('prompts: "a red circle" is listed twice (lines 2 and 5 of p.txt)');
    expect(txt.field).toBe('prompts');
  });
});

describe('ragged CSV rows', () => {
  it('refuses a row whose field count is not the header’s, with its line', async () => {
    const dir = tempDir();
    write(
      dir,
      'prompts.csv',
      'id,prompt,category,note\n1,a cat,animal,\n2,a dog,animal,x\n\n3,a cow,animal\n',
    );
    const error = await configError(
      loadPrompts({ file: 'prompts.csv', column: 'prompt' }, { configDir: dir }),
    );
    expect(error.message).toBe('prompts: prompts.csv line 5: 3 fields, the header has 4');
    expect(error.field).toBe('prompts');
  });

  it('lists every ragged row (longer ones too), located at prompts.file in the config', async () => {
    const dir = tempDir();
    write(
      dir,
      'p.csv',
      'prompt,category\n"a cat, sitting",animal\na dog,animal,extra\na cow\n"a\nhen",bird\n',
    );
    const path = write(dir, 'e.yaml', 'prompts: { file: p.csv }\n');
    const error = await configError(loadWithPrompts(path));
    expect(lines(error)).toEqual([
      `${path}:1: prompts: p.csv line 3: 3 fields, the header has 2`,
      `${path}:1: prompts: p.csv line 4: 1 field, the header has 2`,
    ]);
  });

  it('counts what it does not list', async () => {
    const dir = tempDir();
    const rows = Array.from({ length: 14 }, (_, i) => `prompt ${i},x,y`).join('\n');
    write(dir, 'p.csv', `prompt,a\n${rows}\n`);
    const error = await configError(loadPrompts({ file: 'p.csv', column: 'prompt' }, { configDir: dir }));
    expect(lines(error)).toHaveLength(11);
    expect(lines(error)[10]).toBe(
      "prompts: and 4 more rows of p.csv whose number of fields is not the header's",
    );
  });

  it('refuses a header that names a column twice', async () => {
    const dir = tempDir();
    write(dir, 'p.csv', 'prompt,tag,tag\na,b,c\n');
    const error = await configError(loadPrompts({ file: 'p.csv', column: 'prompt' }, { configDir: dir }));
    expect(error.message).toBe('prompts: p.csv line 1: column "tag" is in the header twice');
  });
});

describe('integers are written as integers', () => {
  const lens = (options: Partial<LensCommandOptions>) => lensConfig('a cat', { out: 'o', ...options });

  it.each([
    [{ seeds: '1e3' }, '--seeds: must be an integer in plain digits (got "1e3")'],
    [{ seeds: '0,1.5,2' }, '--seeds: must be an integer in plain digits (got "1.5")'],
    [{ seeds: '0x10' }, '--seeds: must be an integer in plain digits (got "0x10")'],
    [{ steps: '8.0' }, '--steps: must be an integer in plain digits (got "8.0")'],
    [{ steps: '+8' }, '--steps: must be an integer in plain digits (got "+8")'],
    [{ maxBatch: '1e1' }, '--max-batch: must be auto or an integer in plain digits (got "1e1")'],
    [{ maxBatch: 'many' }, '--max-batch: must be auto or an integer in plain digits (got "many")'],
    [{ stages: '1,2e0' }, '--stages: must be an integer in plain digits (got "2e0")'],
    [{ stage2Steps: 'many' }, '--stage2-steps: must be an integer in plain digits (got "many")'],
    [{ noiseLevel: '2.5e2' }, '--noise-level: must be an integer in plain digits (got "2.5e2")'],
    [{ stage2Seed: '1e3' }, '--stage2-seed: must be "same" or an integer seed 0..4294967295 (got "1e3")'],
    [
      { size: '5.12e2' },
      '--size: must be one side or HEIGHTxWIDTH in plain digits, like 512 or 512x768 (got "5.12e2")',
    ],
    [
      { size: '512x1e3' },
      '--size: must be one side or HEIGHTxWIDTH in plain digits, like 512 or 512x768 (got "512x1e3")',
    ],
    [
      { stage2Size: '256x' },
      '--stage2-size: must be one side or HEIGHTxWIDTH in plain digits, like 512 or 512x768 (got "256x")',
    ],
    [{ gridCell: '1.28e2' }, '--grid-cell: must be an integer in plain digits (got "1.28e2")'],
  ])('refuses %j', async (options, message) => {
    expect((await configError(() => lens(options))).message).toBe(message);
  });

  it('reads plain integers, negative ones and sizes', () => {
    const config = lens({
      seeds: ' 0, 007 ,42',
      steps: ' 8 ',
      size: '64x32',
      maxBatch: '2',
      stages: '1,2',
      stage2Model: 'x/ii',
      stage2Steps: '3',
      stage2Size: '48',
      noiseLevel: '0',
      stage2Seed: '9',
      gridCell: '256',
    });
    expect(config.seeds).toEqual([0, 7, 42]);
    expect(config.sampler).toMatchObject({ steps: 8, size: [64, 32] });
    expect(config.runtime.max_batch).toBe(2);
    expect(config.stage2).toMatchObject({ steps: 3, size: 48, noise_level: 0, seed: 9 });
    expect(config.grid.min_cell).toBe(256);
    expect(lens({ layers: '-1' }).lens.layers).toBe('-1');
    expect(lens({ guidance: '1e1' }).sampler.guidance).toBe(10);
  });

  it('reports bad integers with the other option errors, in option order', async () => {
    const error = await configError(() =>
      lens({ steps: '1e1', seeds: '0,0', offload: 'gpu', noiseLevel: '-3' }),
    );
    expect(lines(error)).toEqual([
      '--offload: must be none, encoder or model (or true = model, false = none) (got "gpu")',
      '--steps: must be an integer in plain digits (got "1e1")',
      '--seeds: 0 is listed twice',
      '--noise-level: must be >= 0 (got -3)',
    ]);
  });

  it('YAML: refuses 1e3-style and 8.0-style numbers where an integer is meant, with the line', async () => {
    const dir = tempDir();
    const path = write(
      dir,
      'e.yaml',
      [
        'prompts: [a]', // 1
        'sampler: { steps: 1e3, guidance: 1e1, size: [512, 5.12e2] }', // 2
        'seeds: [0, 1E3]', // 3
        'lens: { layers: [0, 8.0] }', // 4
        'runtime: { max_batch: 0x10 }', // 5
        'stage2: { noise_level: 2.5e2, seed: 1e3 }', // 6
        'grid: { min_cell: 1.28e2 }', // 7
        '',
      ].join('\n'),
    );
    expect(lines(await configError(loadConfigFile(path)))).toEqual([
      `${path}:2: sampler.steps: must be an integer in plain digits (got 1e3)`,
      `${path}:2: sampler.size[1]: must be an integer in plain digits (got 5.12e2)`,
      `${path}:3: seeds[1]: must be an integer in plain digits (got 1E3)`,
      `${path}:4: lens.layers[1]: must be an integer in plain digits (got 8.0)`,
      `${path}:5: runtime.max_batch: must be an integer in plain digits (got 0x10)`,
      `${path}:6: stage2.noise_level: must be an integer in plain digits (got 2.5e2)`,
      `${path}:6: stage2.seed: must be an integer in plain digits (got 1e3)`,
      `${path}:7: grid.min_cell: must be an integer in plain digits (got 1.28e2)`,
    ]);
  });

  it('YAML: one issue per field, and floats stay floats where floats are meant', async () => {
    const dir = tempDir();
    const both = write(
      dir,
      'b.yaml',
      'prompts: [a]\nsampler: { steps: 1e3 }\nlens: { uncond: never }\nseeds: ["0"]\n',
    );
    expect(lines(await configError(loadConfigFile(both)))).toEqual([
      `${both}:2: sampler.steps: must be an integer in plain digits (got 1e3)`,
      `${both}:3: lens.uncond: must be one of final, same-layer (got "never")`,
      `${both}:4: seeds[0]: must be a number (got "0")`,
    ]);
    const fine = write(
      dir,
      'f.yaml',
      'prompts: [a]\nsampler: { steps: 20, guidance: 7.5e0 }\nstage2: { guidance: 4.0 }\n',
    );
    const config = await loadConfigFile(fine);
    expect(config.sampler).toMatchObject({ steps: 20, guidance: 7.5 });
    expect(config.stage2.guidance).toBe(4);
  });

  it('refuses integers beyond the safe range (zod does, for every int)', async () => {
    const error = await configError(() =>
      parseConfig({ prompts: ['x'], sampler: { steps: 2 ** 53 }, lens: { layers: [-(2 ** 60)] } }),
    );
    expect(lines(error)).toEqual([
      'sampler.steps: is too large for an integer (at most 2^53 - 1; got 9007199254740992)',
      `lens.layers[0]: is too small for an integer (at least -(2^53 - 1); got ${-(2 ** 60)})`,
    ]);
    const dir = tempDir();
    const path = write(dir, 'e.yaml', 'prompts: [a]\nruntime: { max_batch: 99999999999999999999 }\n');
    expect((await configError(loadConfigFile(path))).message).toBe(
      `${path}:2: runtime.max_batch: is too large for an integer (at most 2^53 - 1; got 100000000000000000000)`,
    );
    const seeds = await configError(() => lens({ seeds: '99999999999999999999' }));
    expect(lines(seeds)).toEqual(['--seeds: must be <= 4294967295 (got 100000000000000000000)']);
  });
});

describe('guidance bound', () => {
  it.each([
    [{ sampler: { guidance: 1e308 } }, 'sampler.guidance: must be <= 100 (got 1e+308)'],
    [{ sampler: { guidance: 100.5 } }, 'sampler.guidance: must be <= 100 (got 100.5)'],
    [
      { sampler: { guidance: Number.POSITIVE_INFINITY } },
      'sampler.guidance: must be a finite number (got Infinity)',
    ],
    [{ sampler: { guidance: Number.NaN } }, 'sampler.guidance: must be a finite number (got NaN)'],
    [{ sampler: { guidance: -0.5 } }, 'sampler.guidance: must be >= 0 (got -0.5)'],
    [{ stage2: { guidance: 1e308 } }, 'stage2.guidance: must be <= 100 (got 1e+308)'],
    [
      { stage2: { guidance: Number.NEGATIVE_INFINITY } },
      'stage2.guidance: must be a finite number (got -Infinity)',
    ],
  ])('refuses %j', async (input, message) => {
    expect((await configError(() => parseConfig({ prompts: ['x'], ...input }))).message).toBe(message);
  });

  it('accepts 0..100', () => {
    expect(parseConfig({ prompts: ['x'], sampler: { guidance: 0 } }).sampler.guidance).toBe(0);
    expect(parseConfig({ prompts: ['x'], sampler: { guidance: 100 } }).sampler.guidance).toBe(100);
    expect(parseConfig({ prompts: ['x'], stage2: { guidance: 100 } }).stage2.guidance).toBe(100);
  });

  it('names the options, and YAML .inf', async () => {
    const error = await configError(() =>
      lensConfig('x', { out: 'o', guidance: '1e308', stage2Guidance: '1e400', stage2Model: 'x/ii' }),
    );
    expect(lines(error)).toEqual([
      '--guidance: must be <= 100 (got 1e+308)',
      '--stage2-guidance: must be a finite number (got Infinity)',
    ]);
    const dir = tempDir();
    const path = write(dir, 'e.yaml', 'prompts: [a]\nsampler:\n  guidance: .inf\n');
    expect((await configError(loadConfigFile(path))).message).toBe(
      `${path}:3: sampler.guidance: must be a finite number (got Infinity)`,
    );
  });

  it('is in the JSON Schema', () => {
    const schema = toJsonSchema() as {
      properties: Record<string, { properties: Record<string, { maximum?: number; minimum?: number }> }>;
    };
    expect(schema.properties.sampler?.properties.guidance).toMatchObject({ minimum: 0, maximum: 100 });
    expect(schema.properties.stage2?.properties.guidance).toMatchObject({ minimum: 0, maximum: 100 });
  });
});

describe('grid.min_cell', () => {
  it('defaults to 128 and takes 16..2048', () => {
    expect(parseConfig({ prompts: ['x'] }).grid).toEqual({ min_cell: 128 });
    expect(parseConfig({ prompts: ['x'], grid: {} }).grid.min_cell).toBe(128);
    expect(parseConfig({ prompts: ['x'], grid: { min_cell: 16 } }).grid.min_cell).toBe(16);
    expect(parseConfig({ prompts: ['x'], grid: { min_cell: 2048 } }).grid.min_cell).toBe(2048);
    const typed: ExperimentConfig['grid'] = { min_cell: 64 };
    expect(typed.min_cell).toBe(64);
  });

  it.each([
    [{ min_cell: 15 }, 'grid.min_cell: must be >= 16 (got 15)'],
    [{ min_cell: 2049 }, 'grid.min_cell: must be <= 2048 (got 2049)'],
    [{ min_cell: 64.5 }, 'grid.min_cell: must be an integer (got 64.5)'],
    [{ min_cell: '64' }, 'grid.min_cell: must be a number (got "64")'],
    [{ min_cel: 64 }, 'grid: unexpected key "min_cel" (did you mean "min_cell"?)'],
  ])('refuses %j', async (grid, message) => {
    expect((await configError(() => parseConfig({ prompts: ['x'], grid }))).message).toBe(message);
  });

  it('is --grid-cell on the command line', async () => {
    expect(OPTION_LABELS['grid.min_cell']).toBe('--grid-cell');
    expect(lensConfig('x', { out: 'o', gridCell: '512' }).grid.min_cell).toBe(512);
    expect(lensConfig('x', { out: 'o' }).grid.min_cell).toBe(128);
    expect((await configError(() => lensConfig('x', { out: 'o', gridCell: '8' }))).message).toBe(
      '--grid-cell: must be >= 16 (got 8)',
    );
  });

  it('reads from YAML with its line', async () => {
    const dir = tempDir();
    expect(
      (await loadConfigFile(write(dir, 'a.yaml', 'prompts: [a]\ngrid: { min_cell: 256 }\n'))).grid,
    ).toEqual({
      min_cell: 256,
    });
    const bad = write(dir, 'b.yaml', 'prompts: [a]\ngrid:\n  min_cell: 4096\n');
    expect((await configError(loadConfigFile(bad))).message).toBe(
      `${bad}:3: grid.min_cell: must be <= 2048 (got 4096)`,
    );
  });

  it('is in the JSON Schema', () => {
    const schema = toJsonSchema() as {
      properties: Record<string, { properties?: Record<string, unknown>; additionalProperties?: boolean }>;
    };
    expect(schema.properties.grid?.additionalProperties).toBe(false);
    expect(schema.properties.grid?.properties?.min_cell).toMatchObject({
      type: 'integer',
      minimum: 16,
      maximum: 2048,
      default: 128,
    });
  });
});

describe('loadPromptSet', () => {
  it('returns a CSV’s other columns, in header order, and each prompt’s values', async () => {
    const dir = tempDir();
    write(
      dir,
      'p.csv',
      '\ufeffid, category ,prompt,note\r\n1,fruit,"a red, round apple",\r\n2,animal,"a ""quoted"" dog", tall \r\n',
    );
    const set = await loadPromptSet({ file: 'p.csv', column: 'prompt' }, { configDir: dir });
    expect(set).toEqual({
      prompts: ['a red, round apple', 'a "quoted" dog'],
      columns: ['id', 'category', 'note'],
      rows: [
        { id: '1', category: 'fruit', note: '' },
        { id: '2', category: 'animal', note: 'tall' },
      ],
      set: null, // no sets.yaml beside it
    });
    expect(await loadPrompts({ file: 'p.csv', column: 'prompt' }, { configDir: dir })).toEqual(set.prompts);
  });

  it('uses the chosen column', async () => {
    const dir = tempDir();
    write(dir, 'p.csv', 'text,prompt\nthe text,the prompt\n');
    expect(await loadPromptSet({ file: 'p.csv', column: 'text' }, { configDir: dir })).toEqual({
      prompts: ['the text'],
      columns: ['prompt'],
      rows: [{ prompt: 'the prompt' }],
      set: null,
    });
  });

  it('has no columns for .txt files and inline lists', async () => {
    const dir = tempDir();
    write(dir, 'p.txt', 'a cat\n# no\na dog\n');
    expect(await loadPromptSet({ file: 'p.txt', column: 'prompt' }, { configDir: dir })).toEqual({
      prompts: ['a cat', 'a dog'],
      columns: [],
      rows: [{}, {}],
      set: null,
    });
    expect(await loadPromptSet(['a cat', 'a dog'])).toEqual({
      prompts: ['a cat', 'a dog'],
      columns: [],
      rows: [{}, {}],
      set: null,
    });
    expect(await loadPrompts(['a cat'])).toEqual(['a cat']);
  });

  it('a CSV with only the prompt column', async () => {
    const dir = tempDir();
    write(dir, 'p.csv', 'prompt\na\nb\n');
    expect(await loadPromptSet({ file: 'p.csv', column: 'prompt' }, { configDir: dir })).toEqual({
      prompts: ['a', 'b'],
      columns: [],
      rows: [{}, {}],
      set: null,
    });
  });
});
