import { describe, expect, it } from 'vitest';
import type { LoadedMessage } from '../src/bridge/index.js';
import { type ExperimentConfigInput, parseConfig } from '../src/config/index.js';
import { checkNamedFamily } from '../src/experiment/family.js';
import {
  CODE_VERSION,
  canonicalJson,
  contentKey,
  imageSettings,
  type LoadedForSettings,
  planExperiment,
} from '../src/experiment/index.js';
import type { Fingerprints } from '../src/experiment/resolution.js';
import { ifCapabilities, oneEncoder, sdCapabilities } from './capabilities.js';

const loaded: LoadedForSettings = {
  revision: 'abc123',
  family: 'sd',
  dtype: 'fp32',
  defaults: { steps: 50, guidance: 7.5, height: 64, width: 64, scheduler: 'PNDMScheduler' },
  capabilities: sdCapabilities,
  family_options: {},
  encoders: oneEncoder('CLIPTextModel', 4, 'text_model.final_layer_norm'),
  stage2: null,
};

const stage2Loaded: NonNullable<LoadedMessage['stage2']> = {
  model: '/models/if-ii',
  pipeline_class: 'IFSuperResolutionPipeline',
  revision: 'ii-rev',
  dtype: 'fp16',
  defaults: {
    steps: 50,
    guidance: 4,
    height: 256,
    width: 256,
    scheduler: 'DDPMScheduler',
  },
};

const ifLoaded: LoadedForSettings = {
  revision: 'i-rev',
  family: 'if',
  dtype: 'fp16',
  defaults: { steps: 100, guidance: 7, height: 64, width: 64, scheduler: 'DDPMScheduler' },
  capabilities: ifCapabilities,
  family_options: { clean_caption: true },
  encoders: oneEncoder('T5EncoderModel', 4, 'encoder.final_layer_norm'),
  stage2: stage2Loaded,
};

/** A config from `base` with each given section merged over it. */
function configWith(base: Record<string, unknown>, overrides: Record<string, unknown>) {
  const input: Record<string, unknown> = { ...base };
  for (const [section, value] of Object.entries(overrides)) {
    const current = input[section];
    input[section] =
      value && typeof value === 'object' && !Array.isArray(value) && current && typeof current === 'object'
        ? { ...(current as object), ...(value as object) }
        : value;
  }
  return parseConfig(input);
}

const at = { prompt: 'a cat', layer: 3, seed: 1 };

function keyFor(
  overrides: Record<string, unknown> = {},
  loadedOverrides: Partial<LoadedForSettings> = {},
): string {
  const config = configWith({ model: { id: 'org/m' }, prompts: ['a cat'] }, overrides);
  const settings = imageSettings(config, { ...loaded, ...loadedOverrides }, config.model.id ?? 'org/m');
  return contentKey(settings, { ...at, stage: 1 });
}

describe('content keys', () => {
  const base = keyFor();

  it('is a sha256 hex digest and stable', () => {
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(keyFor()).toBe(base);
  });

  // Computed before stages, stage II and IF existed (tool 0.1.0, algorithm 1): an SD run made before
  // them must keep its cache, so these keys may never change for the same inputs.
  it('keeps the SD stage I keys computed before stage II existed', () => {
    const code = { tool: '0.1.0', algorithm: 1 };
    const defaults = parseConfig({ model: { id: 'org/m' }, prompts: ['a cat'] });
    expect(contentKey(imageSettings(defaults, loaded, 'org/m'), { ...at, stage: 1 }, code)).toBe(
      '9785240c27b8958b155e26844921f8c6e80f917c0335f9a0f45f94633b93b3f4',
    );
    const everything = parseConfig({
      model: { id: 'org/m', offload: 'encoder' },
      prompts: ['a cat'],
      sampler: { steps: 20, guidance: 5, size: [64, 32], scheduler: 'euler', negative: 'blurry' },
      lens: { uncond: 'same-layer', noise: 'per-layer' },
    });
    const settings = imageSettings(everything, { ...loaded, revision: null, dtype: 'fp16' }, 'org/m');
    expect(contentKey(settings, { prompt: 'a red apple', layer: 0, seed: 7, stage: 1 }, code)).toBe(
      '453c5d515a3b21ffaa7c0435be177944fc9ecd62b4071b10d4cd36b435036f9d',
    );
  });

  it.each([
    ['model id', { model: { id: 'org/other' } }],
    ['sampler.steps', { sampler: { steps: 49 } }],
    ['sampler.guidance', { sampler: { guidance: 7 } }],
    ['sampler.size', { sampler: { size: 32 } }],
    ['sampler.size (non-square)', { sampler: { size: [64, 32] } }],
    ['sampler.scheduler', { sampler: { scheduler: 'euler' } }],
    ['sampler.negative', { sampler: { negative: 'blurry' } }],
    ['lens.uncond', { lens: { uncond: 'same-layer' } }],
    ['lens.noise', { lens: { noise: 'per-layer' } }],
    ['model.variant', { model: { id: 'org/m', variant: 'fp16' } }],
  ])('changes with %s', (_, overrides) => {
    expect(keyFor(overrides)).not.toBe(base);
  });

  it.each([
    ['revision', { revision: 'def456' }],
    ['family', { family: 'sdxl' }],
    ['dtype', { dtype: 'fp16' }],
    ['native size', { defaults: { ...loaded.defaults, height: 32 } }],
    ['checkpoint scheduler (for default)', { defaults: { ...loaded.defaults, scheduler: 'DDIMScheduler' } }],
    ['default steps (steps unset)', { defaults: { ...loaded.defaults, steps: 100 } }],
    ['default guidance (guidance unset)', { defaults: { ...loaded.defaults, guidance: 7 } }],
    ['load options (caption cleaning)', { family_options: { clean_caption: true } }],
  ])('changes with the loaded %s', (_, loadedOverrides) => {
    expect(keyFor({}, loadedOverrides as Partial<LoadedForSettings>)).not.toBe(base);
  });

  it('is the same for unset steps/guidance and the same values written out', () => {
    expect(keyFor({ sampler: { steps: 50, guidance: 7.5 } })).toBe(base);
    const cleaning = (on: boolean) => ({ family_options: { clean_caption: on } });
    expect(keyFor({}, cleaning(true))).not.toBe(keyFor({}, cleaning(false)));
  });

  it('does not change with max_batch, device, offload, seeds list, layer spec, run name or stage II settings', () => {
    expect(keyFor({ runtime: { max_batch: 1 } })).toBe(base);
    expect(keyFor({ model: { id: 'org/m', device: 'cpu', offload: true } })).toBe(base);
    expect(keyFor({ model: { id: 'org/m', offload: 'encoder' } })).toBe(base);
    expect(keyFor({ seeds: [1, 7], lens: { layers: '0:3' }, name: 'other' })).toBe(base);
    // Stage II settings that are not run (stages [1]) change nothing.
    expect(keyFor({ stages: [1], stage2: { model: 'x/ii', steps: 3 } })).toBe(base);
    // The explicit size equal to the native one gives the same images.
    expect(keyFor({ sampler: { size: 64 } })).toBe(base);
  });

  describe('single-file checkpoints and LoRA weights', () => {
    const file = '/models/sd15.safetensors';
    const single = (model: Record<string, unknown>, fingerprints: Partial<Fingerprints> = {}) => {
      const config = parseConfig({ model: { id: file, ...model }, prompts: ['a cat'] });
      const settings = imageSettings(config, loaded, file, undefined, {
        model: 'files:0000000000000001',
        stage2: null,
        ...fingerprints,
      });
      return { settings, key: contentKey(settings, { ...at, stage: 1 }) };
    };
    const style = (scale: number, files = 'files:00000000000000aa') =>
      single({ lora: [{ path: 'style.safetensors', scale }] }, { lora: [files] });

    it('keys a single file by its fingerprint and its configuration', () => {
      const plain = single({});
      expect(plain.settings.model).toEqual({
        id: file,
        revision: 'abc123',
        family: 'sd',
        dtype: 'fp32',
        files: 'files:0000000000000001',
      });
      expect(single({}, { model: 'files:0000000000000002' }).key).not.toBe(plain.key);
      const local = single({ config: './sd15-config' }, { config: 'files:00000000000000c1' });
      expect(local.settings.model.config).toEqual({ files: 'files:00000000000000c1' });
      expect(local.key).not.toBe(plain.key);
      expect(single({ config: './sd15-config' }, { config: 'files:00000000000000c2' }).key).not.toBe(
        local.key,
      );
      // A hub config is its id; its commit is the loaded revision.
      expect(single({ config: 'org/sd15' }, { config: null }).settings.model.config).toEqual({
        id: 'org/sd15',
      });
    });

    it("keys LoRA weights by each one's files and scale, in order", () => {
      const half = style(0.5);
      expect(half.settings.model.lora).toEqual([{ files: 'files:00000000000000aa', scale: 0.5 }]);
      const keys = new Set([
        single({}).key,
        half.key,
        style(1).key,
        style(0.5, 'files:00000000000000bb').key,
        style(0).key,
      ]);
      expect(keys.size).toBe(5);
      expect(style(0.5).key).toBe(half.key);
      const two = (first: number, second: number) =>
        single(
          {
            lora: [
              { path: 'a', scale: first },
              { path: 'b', scale: second },
            ],
          },
          { lora: ['files:00000000000000aa', 'files:00000000000000bb'] },
        ).key;
      expect(two(1, 0.5)).not.toBe(two(0.5, 1));
      // A LoRA without its fingerprint is a bug of the caller, not an unkeyed image.
      const config = parseConfig({ model: { id: file, lora: ['x.safetensors'] }, prompts: ['a cat'] });
      expect(() => imageSettings(config, loaded, file)).toThrow(/no fingerprint for model.lora\[0\]/);
    });
  });

  it('changes with prompt, layer, seed, stage and code version', () => {
    const config = parseConfig({ model: { id: 'org/m' }, prompts: ['a cat'] });
    const settings = imageSettings(config, loaded, 'org/m');
    const withStage2 = { ...settings, stage2: imageSettings(ifConfig(), ifLoaded, 'i', 'ii').stage2 };
    const keys = new Set([
      contentKey(settings, { ...at, stage: 1 }),
      contentKey(settings, { ...at, prompt: 'a dog', stage: 1 }),
      contentKey(settings, { ...at, layer: 4, stage: 1 }),
      contentKey(settings, { ...at, seed: 2, stage: 1 }),
      contentKey(withStage2, { ...at, stage: 2 }),
      contentKey(settings, { ...at, stage: 1 }, { ...CODE_VERSION, algorithm: CODE_VERSION.algorithm + 1 }),
      contentKey(settings, { ...at, stage: 1 }, { ...CODE_VERSION, tool: '99.0.0' }),
    ]);
    expect(keys.size).toBe(7);
    expect(contentKey(withStage2, { ...at, stage: 1 })).toBe(contentKey(settings, { ...at, stage: 1 }));
    expect(() => contentKey(settings, { ...at, stage: 2 })).toThrow(/stage II/);
  });
});

const ifBase = {
  model: { id: 'DeepFloyd/IF-I-XL-v1.0' },
  prompts: ['a cat'],
  stage2: { model: 'DeepFloyd/IF-II-L-v1.0' },
};

function ifConfig(overrides: Record<string, unknown> = {}) {
  return configWith(ifBase, overrides);
}

function ifKeys(overrides: Record<string, unknown> = {}, loadedOverrides: Partial<LoadedForSettings> = {}) {
  const config = ifConfig(overrides);
  const settings = imageSettings(config, { ...ifLoaded, ...loadedOverrides }, 'if-i', 'if-ii');
  return {
    stage1: contentKey(settings, { ...at, stage: 1 }),
    stage2: contentKey(settings, { ...at, stage: 2 }),
  };
}

describe('stage II keys and settings', () => {
  const base = ifKeys();

  it('fills in the stage I and stage II defaults from the loaded models', () => {
    const settings = imageSettings(ifConfig(), ifLoaded, 'if-i', 'if-ii');
    expect(settings.model).toEqual({
      id: 'if-i',
      revision: 'i-rev',
      family: 'if',
      dtype: 'fp16',
      clean_caption: true,
    });
    expect(settings.sampler).toMatchObject({ steps: 100, guidance: 7, height: 64, width: 64 });
    expect(settings.stage2).toEqual({
      model: { id: 'if-ii', revision: 'ii-rev' },
      steps: 50,
      guidance: 4,
      height: 256,
      width: 256,
      noise_level: 250,
      scheduler: 'DDPMScheduler',
      seed: 'same',
    });
    const sd = imageSettings(parseConfig({ prompts: ['x'] }), loaded, 'm');
    expect(sd.sampler).toMatchObject({ steps: 50, guidance: 7.5 });
    expect(sd.stage2).toBeUndefined();
    expect('clean_caption' in sd.model).toBe(false);
  });

  it.each([
    ['stage2.model', { stage2: { model: 'org/other-ii' } }],
    ['stage2.steps', { stage2: { steps: 20 } }],
    ['stage2.guidance', { stage2: { guidance: 5 } }],
    ['stage2.size', { stage2: { size: 128 } }],
    ['stage2.noise_level', { stage2: { noise_level: 100 } }],
    ['stage2.scheduler', { stage2: { scheduler: 'dpm-multistep' } }],
    ['stage2.seed', { stage2: { seed: 3 } }],
  ])('the stage II key changes with %s, the stage I key does not', (field, overrides) => {
    const keys =
      field === 'stage2.model'
        ? (() => {
            const settings = imageSettings(ifConfig(overrides), ifLoaded, 'if-i', 'other-ii');
            return {
              stage1: contentKey(settings, { ...at, stage: 1 }),
              stage2: contentKey(settings, { ...at, stage: 2 }),
            };
          })()
        : ifKeys(overrides);
    expect(keys.stage2).not.toBe(base.stage2);
    expect(keys.stage1).toBe(base.stage1);
  });

  it.each([
    ['stage II revision', { stage2: { ...stage2Loaded, revision: 'other' } }],
    [
      'stage II default steps',
      { stage2: { ...stage2Loaded, defaults: { ...stage2Loaded.defaults, steps: 30 } } },
    ],
    [
      'stage II scheduler class',
      { stage2: { ...stage2Loaded, defaults: { ...stage2Loaded.defaults, scheduler: 'DDIMScheduler' } } },
    ],
  ])('the stage II key changes with the loaded %s, the stage I key does not', (_, loadedOverrides) => {
    const keys = ifKeys({}, loadedOverrides as Partial<LoadedForSettings>);
    expect(keys.stage2).not.toBe(base.stage2);
    expect(keys.stage1).toBe(base.stage1);
  });

  it('changes both keys with a stage I setting', () => {
    const keys = ifKeys({ sampler: { steps: 10 } });
    expect(keys.stage1).not.toBe(base.stage1);
    expect(keys.stage2).not.toBe(base.stage2);
  });

  it('the stage I key of an IF run does not depend on whether stage II runs', () => {
    const stageOne = imageSettings(ifConfig({ stages: [1] }), ifLoaded, 'if-i');
    expect(contentKey(stageOne, { ...at, stage: 1 })).toBe(base.stage1);
  });

  // Computed before family options moved into family_options maps (tool 0.1.0, algorithm 1): IF's
  // clean_caption and noise_level sit where they did, so an IF run made before keeps its cache.
  it('keeps the IF keys computed before family options were reported by the worker', () => {
    const config = ifConfig({ stage2: { noise_level: 100 } });
    const settings = imageSettings(
      config,
      { ...ifLoaded, stage2: { ...stage2Loaded, revision: 'ii-rev' } },
      'if-i',
      'if-ii',
    );
    const code = { tool: '0.1.0', algorithm: 1 };
    expect(contentKey(settings, { ...at, stage: 1 }, code)).toBe(
      'b1772f06a48c12b425aac8ac0fb912048f0b614cf0e254845a6e53415536e3c8',
    );
    expect(contentKey(settings, { ...at, stage: 2 }, code)).toBe(
      '9943cc87c7ee1bdcd79e02af5efd6f90060e5083a9afefadddc4c1638cce567f',
    );
    // The same option written in the family's own map is the same setting.
    const mapped = ifConfig({ stage2: { family_options: { noise_level: 100 } } });
    expect(contentKey(imageSettings(mapped, ifLoaded, 'if-i', 'if-ii'), { ...at, stage: 2 }, code)).toBe(
      '9943cc87c7ee1bdcd79e02af5efd6f90060e5083a9afefadddc4c1638cce567f',
    );
  });

  it('needs the loaded stage II when stages include 2', () => {
    expect(() => imageSettings(ifConfig(), { ...ifLoaded, stage2: null }, 'if-i', 'if-ii')).toThrow(
      /no stage II/,
    );
  });
});

describe('canonicalJson', () => {
  it('sorts keys at every level and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: undefined } })).toBe(
      '{"a":{"d":[1,{"x":1,"y":2}]},"b":1}',
    );
  });
});

describe('planExperiment', () => {
  it('makes prompts x layers x seeds jobs with paths', () => {
    const config = parseConfig({ model: { id: 'org/m' }, prompts: ['a cat', 'a dog'] });
    const plan = planExperiment({
      settings: imageSettings(config, loaded, 'org/m'),
      prompts: ['a cat', 'a dog'],
      layers: [0, 7, 12],
      seeds: [0, 1],
      numLayers: 12,
    });
    expect(plan.stages).toEqual([1]);
    expect(plan.jobs).toHaveLength(12);
    expect(new Set(plan.jobs.map((j) => j.key)).size).toBe(12);
    expect(plan.jobs.map((j) => j.index)).toEqual([...Array(12).keys()]);
    const job = plan.jobs[3];
    expect(job).toMatchObject({ prompt: 'a cat', promptIndex: 0, layer: 7, seed: 1, stage: 1 });
    expect(job?.path).toMatch(/^images\/a-cat-[0-9a-f]{8}\/L07-s1\.png$/);
    expect(plan.jobs[6]?.prompt).toBe('a dog');
  });

  it('plans both stages, stage innermost, with stage II paths', () => {
    const input: ExperimentConfigInput = { ...ifBase, prompts: ['a cat', 'a dog'] };
    const config = parseConfig(input);
    const plan = planExperiment({
      settings: imageSettings(config, ifLoaded, 'if-i', 'if-ii'),
      prompts: ['a cat', 'a dog'],
      layers: [0, 24],
      seeds: [0, 1],
      stages: [1, 2],
      numLayers: 24,
    });
    expect(plan.jobs).toHaveLength(16);
    expect(new Set(plan.jobs.map((j) => j.key)).size).toBe(16);
    expect(plan.jobs.slice(0, 4).map((j) => [j.layer, j.seed, j.stage])).toEqual([
      [0, 0, 1],
      [0, 0, 2],
      [0, 1, 1],
      [0, 1, 2],
    ]);
    expect(plan.jobs[0]?.path).toMatch(/^images\/a-cat-[0-9a-f]{8}\/L00-s0\.png$/);
    expect(plan.jobs[1]?.path).toMatch(/^images\/a-cat-[0-9a-f]{8}\/L00-s0-stage2\.png$/);
    expect(plan.jobs[15]).toMatchObject({ prompt: 'a dog', layer: 24, seed: 1, stage: 2 });
  });
});

describe('settings against the family the worker reports', () => {
  it('names each field that asks for what the family cannot do', () => {
    const config = parseConfig({
      model: { id: 'org/m', clean_caption: true, family_options: { lora: 'x' } },
      prompts: ['a cat'],
      sampler: { scheduler: 'warp-drive' },
      stages: [1, 2],
      stage2: { model: 'org/ii' },
    });
    expect(() => imageSettings(config, loaded, 'org/m', 'org/ii')).toThrow(
      [
        'stages: family sd has no stage II (its pipeline runs one stage)',
        'sampler.scheduler: "warp-drive" is not a scheduler of the sd family; choose one of default, ' +
          'dpm-multistep, dpm-singlestep, euler, euler-ancestral, ddim, ddpm, pndm, heun, unipc, lms',
        'model.family_options.lora: the sd family has no such option (it takes none here)',
        'model.clean_caption: the sd family has no such option (it takes none here)',
      ].join('\n'),
    );
  });

  it("checks the family's options against the schema it reports, by the field that set them", () => {
    const bad = ifConfig({
      stage2: { family_options: { noise_level: 2.5 } },
      model: { family_options: { x: 1 } },
    });
    expect(() => imageSettings(bad, ifLoaded, 'if-i', 'if-ii')).toThrow(
      'model.family_options.x: the if family has no such option (its options here: clean_caption)\n' +
        'stage2.family_options.noise_level: Invalid input: expected int, received number',
    );
    expect(() =>
      imageSettings(ifConfig({ sampler: { scheduler: 'euler' } }), ifLoaded, 'if-i', 'if-ii'),
    ).toThrow(
      /^sampler\.scheduler: "euler" is not a scheduler of the if family; choose one of default, dpm-multistep/,
    );
    expect(() =>
      parseConfig({ ...ifBase, stage2: { model: 'x', noise_level: 5, family_options: { noise_level: 6 } } }),
    ).toThrow('stage2.family_options.noise_level: is set twice: here and as stage2.noise_level; keep one');
  });

  it('suggests the name a typo was meant to be', () => {
    const typos = ifConfig({
      sampler: { scheduler: 'dpm-multistp' },
      stage2: { family_options: { noise_levl: 1 } },
    });
    expect(() => imageSettings(typos, ifLoaded, 'if-i', 'if-ii')).toThrow(
      'sampler.scheduler: "dpm-multistp" is not a scheduler of the if family (did you mean "dpm-multistep"?); ' +
        'choose one of default, dpm-multistep, dpm-singlestep, ddpm\n' +
        'stage2.family_options.noise_levl: the if family has no such option (did you mean "noise_level"?) ' +
        '(its options here: noise_level)',
    );
    const named = parseConfig({ model: { id: 'org/m', family: 'sdd' }, prompts: ['a cat'] });
    expect(() => checkNamedFamily(named, [sdCapabilities, ifCapabilities])).toThrow(
      'model.family: unknown family "sdd" (did you mean "sd"?); choose one of auto, sd, if',
    );
    const sd = parseConfig({
      model: { id: 'org/m', family: 'sd' },
      prompts: ['a cat'],
      stage2: { model: 'x' },
    });
    expect(() => checkNamedFamily(sd, [sdCapabilities, ifCapabilities])).toThrow(
      'stage2.model: family sd has no stage II (its pipeline runs one stage)',
    );
  });

  it('refuses a negative prompt and same-layer uncond for a guidance-distilled family', () => {
    const distilled = {
      ...loaded,
      capabilities: { ...sdCapabilities, name: 'flux', guidance: 'distilled' as const },
    };
    const config = parseConfig({
      prompts: ['a cat'],
      sampler: { negative: 'blurry' },
      lens: { uncond: 'same-layer' },
    });
    expect(() => imageSettings(config, distilled, 'm')).toThrow(
      'sampler.negative: family flux is guidance-distilled: it has no unconditional branch, so no negative prompt\n' +
        'lens.uncond: family flux is guidance-distilled: it has no unconditional branch to ablate',
    );
  });
});
