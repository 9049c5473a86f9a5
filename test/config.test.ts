import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
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
  toJsonSchema,
} from '../src/config/index.js';
import { EMBEDDED_MODEL_DIR } from '../src/paths.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'dlens-config-'));
}

function write(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

async function configError(promise: Promise<unknown> | (() => unknown)): Promise<ConfigError> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('parseConfig', () => {
  it('fills in the documented defaults', () => {
    const config = parseConfig({ model: { id: 'org/model' }, prompts: ['a cat'] });
    expect(config).toEqual({
      model: {
        id: 'org/model',
        family: 'auto',
        dtype: 'auto',
        device: 'auto',
        offload: false,
        allow_pickle: false,
      },
      sampler: { steps: 50, guidance: 7.5, scheduler: 'default', negative: '' },
      lens: { layers: 'all', uncond: 'final', noise: 'shared' },
      seeds: [0, 1, 2, 3],
      prompts: ['a cat'],
      runtime: { max_batch: 8 },
    });
  });

  it('accepts every documented form', () => {
    const config = parseConfig({
      name: 'x',
      model: { id: 'org/m', family: 'sd', revision: 'abc', dtype: 'fp16', device: 'cuda', offload: true },
      sampler: { steps: 4, guidance: 0, size: [64, 32], scheduler: 'dpm-multistep', negative: 'blurry' },
      lens: { layers: [0, -1], uncond: 'same-layer', noise: 'per-layer' },
      seeds: [0, 2 ** 32 - 1],
      prompts: { file: 'p.csv' },
      runtime: { max_batch: 1 },
    });
    expect(config.prompts).toEqual({ file: 'p.csv', column: 'prompt' });
    expect(config.sampler.size).toEqual([64, 32]);
  });

  it('names each bad field', async () => {
    const error = await configError(() =>
      parseConfig({
        model: { id: '' },
        sampler: { steps: 0, size: 100, scheduler: 'eulr' },
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
        'seeds.2',
        'seeds.3',
        'seeds.4',
        'prompts.1',
        'runtime.max_batch',
      ]),
    );
    expect(error.message).toContain('model.id: must not be empty');
    expect(error.message).toContain('prompts[1]: must not be empty');
    expect(error.message).toContain('sampler.size: must be a multiple of 8 (got 100)');
    expect(error.message).toContain('seeds[2]: duplicate seed 1');
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
    expect(error.message).toMatch(/^--seeds: duplicate seed 1/);
  });
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
    write(dir, 'p.txt', '# colours\na red apple\n\n  a blue car  \n# end\na red apple\n');
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
    ['1,1,2', [1, 2]],
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

  it('names model.id when a local path does not exist', async () => {
    const dir = tempDir();
    for (const id of ['./missing', join(dir, 'missing'), '~/definitely-not-here-dlens', 'a/b/c']) {
      const error = await configError(() => resolveModelId(id, dir));
      expect(error.field).toBe('model.id');
      expect(error.message).toContain(id);
    }
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
