import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type LensCommandOptions, lensConfig } from '../src/cli/options.js';
import {
  ConfigError,
  configSource,
  loadConfigFile,
  loadPrompts,
  parseConfig,
  parseCsv,
  parseLayerSpec,
  resolveLayers,
  resolveModelId,
  resolveStages,
  toJsonSchema,
} from '../src/config/index.js';
import { resolveInputs } from '../src/experiment/inputs.js';
import { EMBEDDED_MODEL_DIR } from '../src/paths.js';
import { configError, write } from './config-helpers.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-config-');

describe('parseConfig', () => {
  it('fills in the documented defaults', () => {
    const config = parseConfig({ model: { id: 'org/model' }, prompts: ['a cat'] });
    expect(config).toEqual({
      model: {
        id: 'org/model',
        family: 'auto',
        dtype: 'auto',
        device: 'auto',
        offload: 'none',
        clean_caption: 'auto',
        allow_pickle: false,
        compile: false,
      },
      // steps and guidance: unset = the model's own defaults, filled in from the worker's `loaded`.
      sampler: { scheduler: 'default', negative: '' },
      lens: {
        layers: 'all',
        uncond: 'final',
        noise: 'shared',
        encoders: 'all',
        pooled: 'final',
        tokens: 'all',
      },
      seeds: [0, 1, 2, 3],
      prompts: ['a cat'],
      runtime: { max_batch: 'auto', gpus: 'auto', remote: [] },
      stage2: { scheduler: 'default', seed: 'same' },
      grid: { min_cell: 128 },
    });
  });

  it('accepts every documented form', () => {
    const config = parseConfig({
      name: 'x',
      model: {
        id: 'org/m',
        family: 'sd',
        revision: 'abc',
        dtype: 'fp16',
        device: 'cuda',
        offload: 'encoder',
        variant: 'fp16',
      },
      sampler: { steps: 4, guidance: 0, size: [64, 32], scheduler: 'dpm-multistep', negative: 'blurry' },
      lens: { layers: [0, -1], uncond: 'same-layer', noise: 'per-layer' },
      seeds: [0, 2 ** 32 - 1],
      prompts: { file: 'p.csv' },
      runtime: { max_batch: 1 },
    });
    expect(config.prompts).toEqual({ file: 'p.csv', column: 'prompt' });
    expect(config.sampler.size).toEqual([64, 32]);
    expect(config.model.variant).toBe('fp16');
  });

  it('names each bad field', async () => {
    const error = await configError(() =>
      parseConfig({
        model: { id: '' },
        sampler: { steps: 0, size: 100, scheduler: '' },
        lens: { layers: '1:x' },
        seeds: [0, 1, 1, -1, 2 ** 32],
        prompts: ['a', ''],
        runtime: { max_batch: 1.5 },
      }),
    );
    const fields = error.issues.map((i) => i.path.join('.'));
    expect(fields).toEqual(
      expect.arrayContaining([
        'model.id',
        'sampler.steps',
        'sampler.size',
        'sampler.scheduler',
        'lens.layers',
        'seeds',
        'seeds.3',
        'seeds.4',
        'prompts.1',
        'runtime.max_batch',
      ]),
    );
    expect(error.message).toContain('model.id: must not be empty');
    expect(error.message).toContain('prompts[1]: must not be empty');
    expect(error.message).toContain('sampler.size: must be a multiple of 8 (got 100)');
    expect(error.message).toContain('seeds: 1 is listed twice');
  });

  it('reports unknown keys with a suggestion', async () => {
    const error = await configError(() =>
      parseConfig({ modle: 1, model: { id: 'a/b', dtpye: 'fp16' }, prompts: ['x'] }),
    );
    expect(error.message).toContain('unexpected key "modle" (did you mean "model"?)');
    expect(error.message).toContain('model: unexpected key "dtpye" (did you mean "dtype"?)');
  });

  it('rejects an empty prompt list', async () => {
    const error = await configError(() => parseConfig({ model: { id: 'a/b' }, prompts: [] }));
    expect(error.field).toBe('prompts');
  });

  it('uses labels for CLI options', async () => {
    const error = await configError(() =>
      parseConfig({ model: { id: 'a/b' }, prompts: ['x'], seeds: [1, 1] }, { labels: { seeds: '--seeds' } }),
    );
    expect(error.message).toBe('--seeds: 1 is listed twice');
  });
});

describe('model memory and caption options', () => {
  it.each([
    [true, 'model'],
    [false, 'none'],
    ['none', 'none'],
    ['encoder', 'encoder'],
    ['model', 'model'],
  ])('offload %s is %s', (offload, mode) => {
    expect(parseConfig({ model: { offload }, prompts: ['x'] }).model.offload).toBe(mode);
  });

  it('names model.offload and model.clean_caption when bad', async () => {
    const error = await configError(() =>
      parseConfig({ model: { offload: 'cpu', clean_caption: 'yes' }, prompts: ['x'] }),
    );
    expect(error.message.split('\n')).toEqual([
      'model.offload: must be none, encoder or model (or true = model, false = none) (got "cpu")',
      'model.clean_caption: must be auto, true or false (got "yes")',
    ]);
  });

  it.each([
    ['auto', 'auto'],
    [true, true],
    [false, false],
  ])('clean_caption %s', (value, expected) => {
    expect(parseConfig({ model: { clean_caption: value }, prompts: ['x'] }).model.clean_caption).toBe(
      expected,
    );
  });

  it('takes any family option by name, and a shortcut for it not twice', async () => {
    const config = parseConfig({
      model: { family: 'if', family_options: { clean_caption: true } },
      prompts: ['x'],
    });
    expect(config.model.family_options).toEqual({ clean_caption: true });
    // Which family has which option (and of which type) the worker reports: the run checks it.
    expect(parseConfig({ model: { family: 'sd', clean_caption: true }, prompts: ['x'] }).model.family).toBe(
      'sd',
    );
    const twice = await configError(() =>
      parseConfig({
        model: { clean_caption: false, family_options: { clean_caption: true } },
        prompts: ['x'],
      }),
    );
    expect(twice.message).toBe(
      'model.family_options.clean_caption: is set twice: here and as model.clean_caption; keep one',
    );
  });
});

describe('stages and stage II', () => {
  const base = { model: { id: 'DeepFloyd/IF-I-XL-v1.0' }, prompts: ['a cat'] };

  it('defaults stages to [1, 2] with a stage II model, else [1]', () => {
    expect(resolveStages(parseConfig(base))).toEqual([1]);
    const both = parseConfig({ ...base, stage2: { model: 'DeepFloyd/IF-II-L-v1.0' } });
    expect(both.stages).toBeUndefined();
    expect(resolveStages(both)).toEqual([1, 2]);
    expect(both.stage2).toEqual({ model: 'DeepFloyd/IF-II-L-v1.0', scheduler: 'default', seed: 'same' });
    expect(resolveStages(parseConfig({ ...base, stages: [1], stage2: { model: 'x/ii' } }))).toEqual([1]);
    expect(resolveStages(parseConfig({ ...base, stages: [2, 1], stage2: { model: 'x/ii' } }))).toEqual([
      1, 2,
    ]);
  });

  it('accepts every stage II setting', () => {
    const config = parseConfig({
      ...base,
      stages: [1, 2],
      stage2: {
        model: './if-ii',
        revision: 'fp16',
        steps: 20,
        guidance: 0,
        size: [256, 128],
        noise_level: 0,
        scheduler: 'dpm-multistep',
        seed: 42,
      },
    });
    expect(config.stage2).toMatchObject({ size: [256, 128], noise_level: 0, seed: 42 });
  });

  it('names stage2.model when stages include 2 without it', async () => {
    const error = await configError(() => parseConfig({ ...base, stages: [1, 2] }));
    expect(error.field).toBe('stage2.model');
    expect(error.message).toBe(
      'stage2.model: is required when stages include 2 (the stage II checkpoint, e.g. DeepFloyd/IF-II-L-v1.0)',
    );
  });

  it.each([
    [[2], 'stages', 'stage 2 upscales stage 1 images: use [1, 2], not [2]'],
    [[1, 1], 'stages', '1 is listed twice'],
    [[1, 3], 'stages[1]', 'must be 1 or 2 (got 3)'],
    [[], 'stages', 'must not be empty'],
    ['1,2', 'stages', 'must be a list (got "1,2")'],
  ])('rejects stages %j at %s', async (stages, field, message) => {
    const error = await configError(() => parseConfig({ ...base, stages, stage2: { model: 'x/ii' } }));
    expect(error.message.split('\n')).toContain(`${field}: ${message}`);
  });

  it.each([
    [{ steps: 0 }, 'stage2.steps: must be >= 1 (got 0)'],
    [{ guidance: -1 }, 'stage2.guidance: must be >= 0 (got -1)'],
    [{ size: 100 }, 'stage2.size: must be a multiple of 8 (got 100)'],
    [{ noise_level: 1.5 }, 'stage2.noise_level: must be an integer (got 1.5)'],
    [{ seed: 'other' }, 'stage2.seed: must be "same" or an integer seed 0..4294967295 (got "other")'],
    [{ seed: -1 }, 'stage2.seed: must be >= 0 (got -1)'],
    [{ model: '' }, 'stage2.model: must not be empty'],
    [{ modle: 'x' }, 'stage2: unexpected key "modle" (did you mean "model"?)'],
  ])('names the bad stage II field: %j', async (stage2, message) => {
    const error = await configError(() => parseConfig({ ...base, stage2: { model: 'x/ii', ...stage2 } }));
    expect(error.message).toContain(message);
  });

  it('leaves steps and guidance unset (the model decides) unless given', () => {
    expect(parseConfig(base).sampler).toEqual({ scheduler: 'default', negative: '' });
    expect(parseConfig({ ...base, sampler: { steps: 3, guidance: 0 } }).sampler).toMatchObject({
      steps: 3,
      guidance: 0,
    });
  });
});

describe('lens options', () => {
  const lens = (options: Partial<LensCommandOptions>) => lensConfig('a cat', { out: 'o', ...options });

  it('turns the IF options into a config', () => {
    const config = lens({
      model: 'DeepFloyd/IF-I-XL-v1.0',
      family: 'if',
      offload: 'encoder',
      variant: 'fp16',
      cleanCaption: false,
      stages: '1,2',
      stage2Model: 'DeepFloyd/IF-II-L-v1.0',
      stage2Revision: 'main',
      stage2Steps: '50',
      stage2Guidance: '4',
      stage2Size: '256',
      stage2Scheduler: 'ddpm',
      noiseLevel: '250',
      stage2Seed: '7',
    });
    expect(config.model).toMatchObject({
      family: 'if',
      offload: 'encoder',
      variant: 'fp16',
      clean_caption: false,
    });
    expect(config.stages).toEqual([1, 2]);
    expect(config.stage2).toEqual({
      model: 'DeepFloyd/IF-II-L-v1.0',
      revision: 'main',
      steps: 50,
      guidance: 4,
      size: 256,
      scheduler: 'ddpm',
      noise_level: 250,
      seed: 7,
    });
    expect(lens({ stage2Model: 'x/ii', stage2Seed: 'same' }).stage2.seed).toBe('same');
  });

  it('a bare --offload is model offload', () => {
    expect(lens({ offload: true }).model.offload).toBe('model');
    expect(lens({}).model.offload).toBe('none');
    expect(lens({ cleanCaption: true }).model.clean_caption).toBe(true);
    expect(lens({}).model.clean_caption).toBe('auto');
  });

  it('names the option in errors', async () => {
    const error = await configError(() =>
      lens({
        offload: 'gpu',
        stages: '2',
        stage2Steps: 'many',
        stage2Size: '100',
        noiseLevel: '-3',
        stage2Seed: 'random',
      }),
    );
    expect(error.message.split('\n')).toEqual(
      expect.arrayContaining([
        '--offload: must be none, encoder or model (or true = model, false = none) (got "gpu")',
        '--stages: stage 2 upscales stage 1 images: use [1, 2], not [2]',
        '--stage2-steps: must be an integer in plain digits (got "many")',
        '--stage2-size: must be a multiple of 8 (got 100)',
        '--noise-level: must be >= 0 (got -3)',
        '--stage2-seed: must be "same" or an integer seed 0..4294967295 (got "random")',
      ]),
    );
    const missing = await configError(() => lens({ stages: '1,2' }));
    expect(missing.message).toBe(
      '--stage2-model: is required when stages include 2 (the stage II checkpoint, e.g. DeepFloyd/IF-II-L-v1.0)',
    );
  });
});

describe('configs/ presets', () => {
  const configs = join(import.meta.dirname, '..', 'configs');

  it('sdxl-base.yaml has the stock SDXL settings, the stock layer among relative depths', async () => {
    const config = await loadConfigFile(join(configs, 'sdxl-base.yaml'));
    expect(config.model).toMatchObject({ family: 'sdxl', dtype: 'fp16', variant: 'fp16' });
    expect(config.sampler).toMatchObject({ steps: 50, guidance: 5, size: 1024, scheduler: 'default' });
    expect(resolveLayers(config.lens.layers, 32, 31)).toEqual([0, 4, 8, 12, 16, 20, 24, 28, 32, 31]);
  });

  it('flux-dev.yaml has the stock Flux.1-dev settings', async () => {
    const config = await loadConfigFile(join(configs, 'flux-dev.yaml'));
    expect(config.model).toMatchObject({ family: 'flux', dtype: 'bf16', offload: 'encoder' });
    expect(config.sampler).toMatchObject({
      steps: 28,
      guidance: 3.5,
      size: 1024,
      scheduler: 'default',
      negative: '',
    });
    expect(resolveLayers(config.lens.layers, 24)).toEqual([0, 3, 6, 9, 12, 15, 18, 21, 24]);
  });

  it('sd3-medium.yaml has the stock SD3 settings', async () => {
    const config = await loadConfigFile(join(configs, 'sd3-medium.yaml'));
    expect(config.model).toMatchObject({ family: 'sd3', dtype: 'bf16', offload: 'encoder' });
    expect(config.sampler).toMatchObject({ steps: 28, guidance: 7, size: 1024, scheduler: 'default' });
  });

  it('pixart-alpha.yaml has the stock PixArt-alpha settings', async () => {
    const config = await loadConfigFile(join(configs, 'pixart-alpha.yaml'));
    expect(config.model).toMatchObject({
      id: 'PixArt-alpha/PixArt-XL-2-1024-MS',
      family: 'pixart',
      dtype: 'fp16',
    });
    expect(config.sampler).toMatchObject({ steps: 20, guidance: 4.5, size: 1024, scheduler: 'default' });
    expect(resolveLayers(config.lens.layers, 24)).toEqual([0, 4, 8, 12, 16, 20, 24]);
  });

  it('sana-1600m.yaml has the stock Sana settings', async () => {
    const config = await loadConfigFile(join(configs, 'sana-1600m.yaml'));
    expect(config.model).toMatchObject({
      id: 'Efficient-Large-Model/Sana_1600M_1024px_BF16_diffusers',
      family: 'sana',
      dtype: 'bf16',
      variant: 'bf16',
      offload: 'encoder',
    });
    expect(config.model.family_options).toBeUndefined(); // the stock instruction, 300 positions, no cleaning
    expect(config.sampler).toMatchObject({ steps: 20, guidance: 4.5, size: 1024, scheduler: 'default' });
    // Gemma-2-2B: 26 decoder layers.
    expect(resolveLayers(config.lens.layers, 26)).toEqual([0, 3, 7, 10, 13, 16, 20, 23, 26]);
  });

  it('if-paper.yaml has exactly the paper settings', async () => {
    const config = await loadConfigFile(join(configs, 'if-paper.yaml'));
    expect(config.model).toEqual({
      id: 'DeepFloyd/IF-I-XL-v1.0',
      family: 'if',
      dtype: 'fp16',
      device: 'auto',
      offload: 'encoder',
      clean_caption: 'auto',
      allow_pickle: false,
      compile: false,
      variant: 'fp16',
    });
    expect(config.sampler).toEqual({
      steps: 100,
      guidance: 7.0,
      size: 64,
      scheduler: 'dpm-multistep',
      negative: '',
    });
    expect(config.lens).toEqual({
      layers: '0:24:4',
      uncond: 'final',
      noise: 'shared',
      encoders: 'all',
      pooled: 'final',
      tokens: 'all',
    });
    expect(resolveLayers(config.lens.layers, 24)).toEqual([0, 4, 8, 12, 16, 20, 24]);
    expect(config.stages).toEqual([1, 2]);
    expect(config.stage2).toEqual({
      model: 'DeepFloyd/IF-II-L-v1.0',
      steps: 50,
      guidance: 4.0,
      size: 256,
      scheduler: 'default',
      seed: 'same',
    });
    expect(config.seeds).toEqual([0, 1, 2, 3]);
    const prompts = await loadPrompts(config.prompts, { configDir: configs });
    expect(prompts.length).toBeGreaterThan(0);
  });

  it.each(['sd21-two-colors.yaml', 'tiny-sd.yaml', 'tiny-if.yaml', 'shapes-demo.yaml'])(
    '%s parses and its prompts load',
    async (file) => {
      const config = await loadConfigFile(join(configs, file));
      expect((await loadPrompts(config.prompts, { configDir: configs })).length).toBeGreaterThan(0);
      if (file === 'tiny-if.yaml') expect(resolveStages(config)).toEqual([1, 2]);
    },
  );
});

describe('loadConfigFile', () => {
  it('loads YAML, names the run after the file, and remembers its folder', async () => {
    const dir = tempDir();
    const path = write(dir, 'colors.yaml', 'model: { id: org/m }\nprompts: [a red apple]\nseeds: [0]\n');
    const config = await loadConfigFile(path);
    expect(config.name).toBe('colors');
    expect(config.seeds).toEqual([0]);
    expect(configSource(config)?.dir).toBe(dir);
  });

  it('reports invalid YAML with file and line', async () => {
    const dir = tempDir();
    const path = write(dir, 'bad.yaml', 'model: { id: org/m }\nprompts: [a, b\nseeds: [0]\n');
    const error = await configError(loadConfigFile(path));
    expect(error.issues[0]?.file).toBe(path);
    expect(error.issues[0]?.line).toBeGreaterThanOrEqual(2);
    expect(error.message).toMatch(/bad\.yaml:\d+: invalid YAML/);
  });

  it('reports duplicate keys', async () => {
    const dir = tempDir();
    const path = write(dir, 'dup.yaml', 'model: { id: org/m }\nprompts: [a]\nseeds: [0]\nseeds: [1]\n');
    const error = await configError(loadConfigFile(path));
    expect(error.message).toMatch(/dup\.yaml:4: invalid YAML/);
  });

  it('names the file, line and field of schema errors', async () => {
    const dir = tempDir();
    const path = write(
      dir,
      'exp.yaml',
      [
        'name: test', // 1
        'modle: x', // 2
        'model:', // 3
        '  id: org/m', // 4
        'sampler:', // 5
        '  steps: 0', // 6
        'prompts:', // 7
        '  - a cat', // 8
        '  - ""', // 9
        '', // 10
      ].join('\n'),
    );
    const error = await configError(loadConfigFile(path));
    expect(error.message.split('\n')).toEqual([
      `${path}:2: unexpected key "modle" (did you mean "model"?)`,
      `${path}:6: sampler.steps: must be >= 1 (got 0)`,
      `${path}:9: prompts[1]: must not be empty`,
    ]);
  });

  it('names a missing required field at its parent', async () => {
    const dir = tempDir();
    const path = write(dir, 'e.yaml', 'model: { id: org/m }\nprompts:\n  column: text\n');
    const error = await configError(loadConfigFile(path));
    expect(error.message).toBe(`${path}:3: prompts.file: is required`);
  });

  it('rejects an empty file and a missing file', async () => {
    const dir = tempDir();
    expect((await configError(loadConfigFile(write(dir, 'empty.yaml', '')))).message).toContain('empty');
    expect((await configError(loadConfigFile(join(dir, 'nope.yaml')))).message).toContain('no such file');
  });
});

describe('prompt files', () => {
  it('reads a CSV column with RFC 4180 quoting, relative to the config folder', async () => {
    const dir = tempDir();
    write(
      dir,
      'p.csv',
      'id,prompt,category\r\n1,"a red, round apple",fruit\r\n2,"a ""quoted"" dog",animal\n\n3,plain,x\n',
    );
    const config = await loadConfigFile(write(dir, 'e.yaml', 'model: {id: org/m}\nprompts: {file: p.csv}\n'));
    const prompts = await loadPrompts(config.prompts, { configDir: configSource(config)?.dir });
    expect(prompts).toEqual(['a red, round apple', 'a "quoted" dog', 'plain']);
  });

  it('names the missing CSV column and the columns found', async () => {
    const dir = tempDir();
    write(dir, 'p.csv', 'text,category\na cat,animal\n');
    const config = await loadConfigFile(
      write(dir, 'e.yaml', 'model: {id: org/m}\nprompts:\n  file: p.csv\n  column: prompt\n'),
    );
    const source = configSource(config);
    const error = await configError(
      loadPrompts(config.prompts, { configDir: source?.dir, locate: source?.locate }),
    );
    expect(error.field).toBe('prompts.column');
    expect(error.message).toContain('column "prompt" not found in p.csv; columns found: "text", "category"');
    expect(error.issues[0]?.line).toBe(4);
  });

  it('reads .txt files skipping blank lines and # comments', async () => {
    const dir = tempDir();
    write(dir, 'p.txt', '# colours\na red apple\n\n  a blue car  \n# end\n');
    expect(await loadPrompts({ file: 'p.txt', column: 'prompt' }, { configDir: dir })).toEqual([
      'a red apple',
      'a blue car',
    ]);
  });

  it('rejects empty prompt files, empty CSV cells, unknown extensions and missing files', async () => {
    const dir = tempDir();
    write(dir, 'empty.txt', '# nothing\n\n');
    write(dir, 'hole.csv', 'prompt\na\n""\n');
    write(dir, 'p.json', '[]');
    const load = (file: string) => loadPrompts({ file, column: 'prompt' }, { configDir: dir });
    expect((await configError(load('empty.txt'))).message).toContain('has no prompts');
    const hole = await configError(load('hole.csv'));
    expect(hole.message).toContain('hole.csv:3: prompts: empty prompt');
    expect((await configError(load('p.json'))).message).toContain('must be a .csv or .txt file');
    expect((await configError(load('missing.csv'))).message).toContain('no such file');
  });

  it('parses CSV edge cases', () => {
    expect(parseCsv('a,b\n"x\ny",""\n').map((r) => r.fields)).toEqual([
      ['a', 'b'],
      ['x\ny', ''],
    ]);
    expect(parseCsv('\ufeffa\n1').map((r) => r.line)).toEqual([1, 2]);
    expect(() => parseCsv('a\n"open')).toThrow(/unterminated/);
  });
});

describe('layer specs', () => {
  const L = 5;
  it.each([
    ['all', [0, 1, 2, 3, 4, 5]],
    ['ALL', [0, 1, 2, 3, 4, 5]],
    ['0:5:2', [0, 2, 4]],
    ['1:4', [1, 2, 3, 4]],
    ['3:23:4', null],
    ['0,4,2', [0, 4, 2]],
    ['-1', [5]],
    ['-6', [0]],
    ['-3:-1', [3, 4, 5]],
    ['::2', [0, 2, 4]],
    ['2:', [2, 3, 4, 5]],
    [':1', [0, 1]],
    ['0:2, 4, -1', [0, 1, 2, 4, 5]],
    ['1,1,2', null],
  ])('%s', (spec, expected) => {
    if (expected === null) expect(() => resolveLayers(spec, L)).toThrow(ConfigError);
    else expect(resolveLayers(spec, L)).toEqual(expected);
  });

  it('accepts integers and integer lists', () => {
    expect(resolveLayers(3, L)).toEqual([3]);
    expect(resolveLayers([0, -1, 2], L)).toEqual([0, 5, 2]);
    expect(resolveLayers(parseLayerSpec('0:4:2'), L)).toEqual([0, 2, 4]);
  });

  it('names lens.layers, the value and the range when out of range', async () => {
    const error = await configError(() => resolveLayers('0:30:10', L));
    expect(error.field).toBe('lens.layers');
    expect(error.message).toBe('lens.layers: layer 30 is out of range 0..5 (in "0:30:10")');
    expect((await configError(() => resolveLayers(30, L))).message).toBe(
      'lens.layers: layer 30 is out of range 0..5',
    );
    expect((await configError(() => resolveLayers('-7', L))).message).toContain(
      'layer -7 is out of range 0..5',
    );
    expect((await configError(() => resolveLayers('4:1', L))).message).toContain('empty');
  });

  it.each([
    // Relative depths: percent of L, the nearest layer (halves up); points on one layer count once.
    ['0%:100%:25%', 24, [0, 6, 12, 18, 24]],
    ['0%:100%:25%', 3, [0, 1, 2, 3]], // 25% of 3 = 0.75 -> 1, 50% -> 1.5 -> 2, 75% -> 2.25 -> 2
    ['0%:100%:10%', 5, [0, 1, 2, 3, 4, 5]],
    ['50%', 3, [2]],
    ['50%', 24, [12]],
    ['25%:75%', 8, [2, 3, 4, 5, 6]],
    [':50%', 4, [0, 1, 2]],
    ['0%:100%:33.3%', 12, [0, 4, 8, 12]],
    ['0, 100%', 24, [0, 24]],
  ])('relative "%s" on 0..%i', (spec, depth, expected) => {
    expect(resolveLayers(spec, depth)).toEqual(expected);
  });

  it('takes "stock" for the layer the stock pipeline uses (L unless the model says otherwise)', async () => {
    expect(resolveLayers('stock', 5)).toEqual([5]);
    expect(resolveLayers('0, stock, -1', 32, 31)).toEqual([0, 31, 32]);
    expect(resolveLayers('0%:100%:50%, stock', 32, 31)).toEqual([0, 16, 32, 31]);
    expect((await configError(() => resolveLayers('stock, 5', 5))).message).toContain(
      'layer 5 is listed twice',
    );
    expect(parseConfig({ prompts: ['x'], lens: { layers: 'stock' } }).lens.layers).toBe('stock');
  });

  it('refuses relative specs that mean nothing, and a layer listed twice across items', async () => {
    for (const [spec, message] of [
      ['0:50%', 'mixes layers and percentages'],
      ['120%', 'beyond 100%'],
      ['0%:100%:0%', 'must be above 0%'],
      ['75%:25%', 'is empty'],
      ['-10%', 'is not a percentage'],
    ]) {
      expect((await configError(() => parseLayerSpec(spec ?? ''))).message).toContain(message);
    }
    expect((await configError(() => resolveLayers('24, 100%', 24))).message).toContain(
      'layer 24 is listed twice',
    );
  });

  it.each(['', 'x', '1:x', '1:2:3:4', '1,,2', '0:4:0', '0:4:-1', '1.5'])('rejects "%s"', async (spec) => {
    const error = await configError(() => parseLayerSpec(spec));
    expect(error.field).toBe('lens.layers');
  });
});

describe('model ids', () => {
  it('passes hub ids through and resolves local folders', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'tiny'));
    expect(resolveModelId('stabilityai/stable-diffusion-2-1', dir)).toBe('stabilityai/stable-diffusion-2-1');
    expect(resolveModelId('./tiny', dir)).toBe(join(dir, 'tiny'));
    expect(resolveModelId('tiny', dir)).toBe(join(dir, 'tiny'));
    expect(resolveModelId(join(dir, 'tiny'), '/')).toBe(join(dir, 'tiny'));
  });

  it('takes a single-file checkpoint for model.id only, and a weight file by its name', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'model.safetensors'), '');
    writeFileSync(join(dir, 'notes.txt'), '');
    const single = join(dir, 'model.safetensors');
    expect(resolveModelId('./model.safetensors', dir, {}, ['model', 'id'], true)).toBe(single);
    // A weight file's name is a path even without ./ (a hub id has no such suffix).
    expect(resolveModelId('model.safetensors', dir, {}, ['model', 'id'], true)).toBe(single);
    const missing = await configError(() => resolveModelId('gone.ckpt', dir, {}, ['model', 'id'], true));
    expect(missing.message).toMatch(/^model\.id: local model "gone\.ckpt" does not exist/);
    const stage2 = await configError(() => resolveModelId(single, dir, {}, ['stage2', 'model']));
    expect(stage2.message).toMatch(
      /^stage2\.model: ".*model\.safetensors" is a single-file checkpoint, and only a diffusers checkpoint folder/,
    );
    const notes = await configError(() => resolveModelId('./notes.txt', dir, {}, ['model', 'id'], true));
    expect(notes.message).toMatch(
      /is a file, not a diffusers checkpoint folder .* nor a single-file checkpoint/,
    );
  });

  it('names stage2.model when its local path does not exist', async () => {
    const error = await configError(() =>
      resolveModelId('./no-stage-ii', tempDir(), {}, ['stage2', 'model']),
    );
    expect(error.message).toMatch(/^stage2\.model: local model "\.\/no-stage-ii" does not exist/);
  });

  it('names model.id when a local path does not exist', async () => {
    const dir = tempDir();
    for (const id of ['./missing', join(dir, 'missing'), '~/definitely-not-here-dlens', 'a/b/c']) {
      const error = await configError(() => resolveModelId(id, dir));
      expect(error.field).toBe('model.id');
      expect(error.message).toContain(id);
    }
  });
});

describe('single-file checkpoints and LoRA weights', () => {
  const lora = (entries: unknown[]) => parseConfig({ prompts: ['x'], model: { lora: entries } }).model.lora;

  it('reads model.lora as PATH[:SCALE] strings or {path, scale}', () => {
    expect(
      lora([
        'a.safetensors',
        'b.safetensors:0.5',
        { path: 'c', scale: -1 },
        { path: 'd' },
        'C:\\loras\\e.safetensors',
        'f.safetensors:1e-1',
        './g/h:2',
      ]),
    ).toEqual([
      { path: 'a.safetensors', scale: 1 },
      { path: 'b.safetensors', scale: 0.5 },
      { path: 'c', scale: -1 },
      { path: 'd', scale: 1 },
      { path: 'C:\\loras\\e.safetensors', scale: 1 },
      { path: 'f.safetensors', scale: 0.1 },
      { path: './g/h', scale: 2 },
    ]);
    expect(parseConfig({ prompts: ['x'], model: { config: './sd15' } }).model.config).toBe('./sd15');
  });

  it.each([
    ['x.safetensors:abc', /model\.lora\[0\]: "x\.safetensors:abc": the scale after ":" must be a number/],
    ['x.safetensors:', /model\.lora\[0\]: "x\.safetensors:": the scale after ":" must be a number/],
    [':0.5', /model\.lora\[0\]: ":0\.5" has no path before ":"/],
    ['', /model\.lora\[0\]: must not be empty/],
  ])('refuses the LoRA entry "%s"', async (entry, message) => {
    const error = await configError(() => lora([entry]));
    expect(error.message).toMatch(message);
  });

  it('refuses a LoRA listed twice and a scale that is no number', async () => {
    const twice = await configError(() => lora(['a.safetensors', 'a.safetensors:0.5']));
    expect(twice.message).toMatch(
      /"a\.safetensors" is listed twice \(model\.lora\[0\] and model\.lora\[1\]\)/,
    );
    const bad = await configError(() => lora([{ path: 'a', scale: 'high' }]));
    expect(bad.field).toMatch(/^model\.lora\[0\]/);
  });

  it('reads --config and repeated --lora, naming --lora in errors', async () => {
    const options = { config: './sd15', lora: ['a.safetensors:0.5', 'b.safetensors'] };
    const config = lensConfig('x', options as Partial<LensCommandOptions>);
    expect(config.model.config).toBe('./sd15');
    expect(config.model.lora).toEqual([
      { path: 'a.safetensors', scale: 0.5 },
      { path: 'b.safetensors', scale: 1 },
    ]);
    const error = await configError(() => lensConfig('x', { lora: ['a.safetensors:lots'] }));
    expect(error.message).toMatch(/^--lora: "a\.safetensors:lots": the scale after ":" must be a number/);
  });

  it('resolves the configuration and LoRA paths into the load request, relative to the config', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'sd15.safetensors'), '');
    writeFileSync(join(dir, 'style.safetensors'), '');
    mkdirSync(join(dir, 'sd15-config'));
    const config = parseConfig({
      prompts: ['x'],
      model: { id: 'sd15.safetensors', config: './sd15-config', lora: ['style.safetensors:0.5'] },
    });
    const inputs = await resolveInputs(config, { configDir: dir });
    expect(inputs.load).toMatchObject({
      model: join(dir, 'sd15.safetensors'),
      config: join(dir, 'sd15-config'),
      lora: [{ path: join(dir, 'style.safetensors'), scale: 0.5 }],
    });
    expect(inputs.fingerprints.model).toMatch(/^files:/);
    expect(inputs.fingerprints.config).toMatch(/^files:/);
    expect(inputs.fingerprints.lora).toEqual([expect.stringMatching(/^files:/)]);
    // Without a config the hub repo the weights look like is only the worker's to tell.
    const inferred = await resolveInputs(parseConfig({ prompts: ['x'], model: { id: 'sd15.safetensors' } }), {
      configDir: dir,
    });
    expect(inferred.load.config).toBeNull();
    expect(inferred.fingerprints.config).toBeNull();
    expect(inferred.fingerprints).not.toHaveProperty('lora');
  });

  it('refuses a configuration beside a folder or hub id, and a LoRA that is not there', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'folder'));
    const folder = parseConfig({ prompts: ['x'], model: { id: 'org/m', config: './folder' } });
    const error = await configError(resolveInputs(folder, { configDir: dir }));
    expect(error.message).toMatch(
      /^model\.config: is for a single-file model\.id; org\/m is a diffusers checkpoint/,
    );
    const missing = parseConfig({ prompts: ['x'], model: { id: 'org/m', lora: ['gone.safetensors'] } });
    const gone = await configError(resolveInputs(missing, { configDir: dir }));
    expect(gone.message).toMatch(/^model\.lora\[0\]: "gone\.safetensors" does not exist \(looked for /);
  });
});

describe('toJsonSchema', () => {
  it('describes the config, strictly', () => {
    const schema = toJsonSchema() as {
      properties: Record<string, { properties?: Record<string, unknown>; additionalProperties?: boolean }>;
      required: string[];
      additionalProperties: boolean;
    };
    expect(JSON.parse(JSON.stringify(schema))).toEqual(schema);
    expect(Object.keys(schema.properties)).toEqual([
      'name',
      'model',
      'sampler',
      'lens',
      'seeds',
      'prompts',
      'runtime',
      'stages',
      'stage2',
      'grid',
      'sweep',
    ]);
    expect(schema.required).toEqual(['prompts']);
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.model?.additionalProperties).toBe(false);
    expect(Object.keys(schema.properties.sampler?.properties ?? {})).toContain('scheduler');
  });
});

describe('the embedded default model', () => {
  it('is what an experiment without model.id runs', () => {
    const config = parseConfig({ prompts: ['a red circle'] });
    expect(config.model.id).toBeUndefined();
    expect(config.model.family).toBe('auto');
    expect(resolveModelId(undefined)).toBe(EMBEDDED_MODEL_DIR);
  });
});
