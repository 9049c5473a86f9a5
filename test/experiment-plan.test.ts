import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/index.js';
import {
  CODE_VERSION,
  canonicalJson,
  contentKey,
  imageSettings,
  planExperiment,
} from '../src/experiment/index.js';

const loaded = {
  revision: 'abc123',
  family: 'sd',
  dtype: 'fp32',
  defaults: { steps: 50, guidance: 7.5, height: 64, width: 64, scheduler: 'PNDMScheduler' },
};

function keyFor(
  overrides: Record<string, unknown> = {},
  loadedOverrides: Partial<typeof loaded> = {},
): string {
  const base = { model: { id: 'org/m' }, prompts: ['a cat'] } as Record<string, unknown>;
  const input: Record<string, unknown> = { ...base };
  for (const [section, value] of Object.entries(overrides)) {
    const current = input[section];
    input[section] =
      value && typeof value === 'object' && !Array.isArray(value) && current && typeof current === 'object'
        ? { ...(current as object), ...(value as object) }
        : value;
  }
  const config = parseConfig(input);
  const settings = imageSettings(config, { ...loaded, ...loadedOverrides }, config.model.id ?? 'org/m');
  return contentKey(settings, 'a cat', 3, 1);
}

describe('content keys', () => {
  const base = keyFor();

  it('is a sha256 hex digest and stable', () => {
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(keyFor()).toBe(base);
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
  ])('changes with %s', (_, overrides) => {
    expect(keyFor(overrides)).not.toBe(base);
  });

  it.each([
    ['revision', { revision: 'def456' }],
    ['family', { family: 'sdxl' }],
    ['dtype', { dtype: 'fp16' }],
    ['native size', { defaults: { ...loaded.defaults, height: 32 } }],
    ['checkpoint scheduler (for default)', { defaults: { ...loaded.defaults, scheduler: 'DDIMScheduler' } }],
  ])('changes with the loaded %s', (_, loadedOverrides) => {
    expect(keyFor({}, loadedOverrides)).not.toBe(base);
  });

  it('does not change with max_batch, device, offload, seeds list, layer spec or run name', () => {
    expect(keyFor({ runtime: { max_batch: 1 } })).toBe(base);
    expect(keyFor({ model: { id: 'org/m', device: 'cpu', offload: true } })).toBe(base);
    expect(keyFor({ seeds: [1, 7], lens: { layers: '0:3' }, name: 'other' })).toBe(base);
    // The explicit size equal to the native one gives the same images.
    expect(keyFor({ sampler: { size: 64 } })).toBe(base);
  });

  it('changes with prompt, layer, seed and code version', () => {
    const config = parseConfig({ model: { id: 'org/m' }, prompts: ['a cat'] });
    const settings = imageSettings(config, loaded, 'org/m');
    const keys = new Set([
      contentKey(settings, 'a cat', 3, 1),
      contentKey(settings, 'a dog', 3, 1),
      contentKey(settings, 'a cat', 4, 1),
      contentKey(settings, 'a cat', 3, 2),
      contentKey(settings, 'a cat', 3, 1, { ...CODE_VERSION, algorithm: CODE_VERSION.algorithm + 1 }),
      contentKey(settings, 'a cat', 3, 1, { ...CODE_VERSION, tool: '99.0.0' }),
    ]);
    expect(keys.size).toBe(6);
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
    expect(plan.jobs).toHaveLength(12);
    expect(new Set(plan.jobs.map((j) => j.key)).size).toBe(12);
    expect(plan.jobs.map((j) => j.index)).toEqual([...Array(12).keys()]);
    const job = plan.jobs[3];
    expect(job).toMatchObject({ prompt: 'a cat', promptIndex: 0, layer: 7, seed: 1 });
    expect(job?.path).toMatch(/^images\/a-cat-[0-9a-f]{8}\/L07-s1\.png$/);
    expect(plan.jobs[6]?.prompt).toBe('a dog');
  });
});
