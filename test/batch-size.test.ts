// runtime.max_batch (a number, or `auto`: the worker sizes its batches) and model.compile, from the config
// and the lens options to the requests: a lone worker gets every item with `auto`; pools and shards cut
// the plan into planBatchSize items, the request still saying `auto`. No worker.
import { describe, expect, it } from 'vitest';
import {
  generateRequestSchema,
  type LoadedMessage,
  loadRequestSchema,
  protocolJsonSchema,
} from '../src/bridge/index.js';
import { lensConfig } from '../src/cli/options.js';
import { type ExperimentConfig, parseConfig } from '../src/config/index.js';
import { AUTO_PLAN_BATCH, planBatches, planBatchSize } from '../src/experiment/batches.js';
import { familyOptionsFor } from '../src/experiment/family.js';
import { buildWork, imageSettings, planExperiment, selectShard } from '../src/experiment/index.js';
import { fixtureLoad, smallJob } from './bridge/jobs.js';
import { oneEncoder, sdCapabilities } from './capabilities.js';
import { configError } from './config-helpers.js';

const loaded = {
  revision: null,
  family: 'sd',
  dtype: 'fp32',
  defaults: { steps: 20, guidance: 7.5, height: 32, width: 32, scheduler: 'PNDMScheduler' },
  capabilities: sdCapabilities,
  family_options: {},
  encoders: oneEncoder('CLIPTextModel', 5, 'final_layer_norm'),
  stage2: null,
} as unknown as LoadedMessage;

function config(runtime: Record<string, unknown> = {}): ExperimentConfig {
  return parseConfig({
    model: { id: '/m/sd' },
    seeds: [0, 1, 2],
    prompts: ['a cat', 'a dog'],
    lens: { layers: 'all' },
    runtime,
  });
}

/** 2 prompts x 6 layers x 3 seeds = 36 items. */
function planOf(cfg: ExperimentConfig) {
  return planExperiment({
    settings: imageSettings(cfg, loaded, '/m/sd'),
    familyOptions: familyOptionsFor(cfg, loaded),
    prompts: ['a cat', 'a dog'],
    layers: [0, 1, 2, 3, 4, 5],
    seeds: [0, 1, 2],
    stages: [1],
    numLayers: 5,
  });
}

describe('runtime.max_batch', () => {
  it('is auto by default, or a whole number of at least 1', async () => {
    expect(config().runtime.max_batch).toBe('auto');
    expect(config({ max_batch: 'auto' }).runtime.max_batch).toBe('auto');
    expect(config({ max_batch: 4 }).runtime.max_batch).toBe(4);
    const message = async (value: unknown) => (await configError(() => config({ max_batch: value }))).message;
    expect(await message(0)).toBe('runtime.max_batch: must be >= 1 (got 0)');
    expect(await message(-2)).toBe('runtime.max_batch: must be >= 1 (got -2)');
    for (const bad of [1.5, 'many', null, true]) {
      expect(await message(bad)).toMatch(/^runtime\.max_batch: must be auto or an integer >= 1 \(got /);
    }
  });

  it('planBatchSize: the number as given, 16 for auto (every CPU auto batch divides it)', () => {
    expect(planBatchSize(config({ max_batch: 3 }))).toBe(3);
    expect(planBatchSize(config())).toBe(AUTO_PLAN_BATCH);
    expect(AUTO_PLAN_BATCH).toBe(16);
  });

  it('a lone worker gets one request of every item, saying auto', () => {
    const cfg = config();
    const work = buildWork(cfg, planOf(cfg), () => false);
    expect(work?.request.items).toHaveLength(36);
    expect(work?.request.max_batch).toBe('auto');
    expect(generateRequestSchema.safeParse(work?.request).success).toBe(true);
    const fixed = config({ max_batch: 5 });
    expect(buildWork(fixed, planOf(fixed), () => false)?.request.max_batch).toBe(5);
  });

  it('pools and shards cut the plan into batches of planBatchSize; their requests still say auto', () => {
    const cfg = config();
    const plan = planOf(cfg);
    const batches = planBatches(plan, planBatchSize(cfg));
    expect(batches.map((batch) => batch.items.length)).toEqual([16, 16, 4]);
    const work = buildWork(cfg, plan, () => false, batches[1]?.items);
    expect(work?.request.items).toHaveLength(16);
    expect(work?.request.max_batch).toBe('auto');
    const { plan: own, record } = selectShard(plan, planBatchSize(cfg), { index: 1, count: 2 });
    expect(record).toMatchObject({ batch_size: 16, plan_batches: 3, batches: [1] });
    expect(own.jobs).toHaveLength(16);
    const fixed = config({ max_batch: 5 });
    expect(selectShard(planOf(fixed), planBatchSize(fixed), { index: 0, count: 2 }).record).toMatchObject({
      batch_size: 5,
      plan_batches: 8,
    });
  });

  it('the protocol takes auto or a positive integer, nothing else', () => {
    const job = smallJob();
    expect(generateRequestSchema.safeParse({ ...job, max_batch: 'auto' }).success).toBe(true);
    expect(generateRequestSchema.safeParse({ ...job, max_batch: 64 }).success).toBe(true);
    for (const bad of [0, 'Auto', 2.5, null]) {
      expect(generateRequestSchema.safeParse({ ...job, max_batch: bad }).success, String(bad)).toBe(false);
    }
    const schema = protocolJsonSchema() as {
      requests: { generate: { properties: { max_batch: unknown } } };
    };
    expect(JSON.stringify(schema.requests.generate.properties.max_batch)).toContain('"auto"');
  });
});

describe('the lens options', () => {
  const lens = (options: Record<string, unknown>) => lensConfig('a cat', { out: 'o', ...options });

  it('--max-batch takes auto or a number', async () => {
    expect(lens({}).runtime.max_batch).toBe('auto');
    expect(lens({ maxBatch: 'auto' }).runtime.max_batch).toBe('auto');
    expect(lens({ maxBatch: ' 12 ' }).runtime.max_batch).toBe(12);
    expect((await configError(() => lens({ maxBatch: '0' }))).message).toBe(
      '--max-batch: must be >= 1 (got 0)',
    );
    expect((await configError(() => lens({ maxBatch: 'all' }))).message).toBe(
      '--max-batch: must be auto or an integer in plain digits (got "all")',
    );
  });

  it('--compile compiles; off by default', () => {
    expect(lens({}).model.compile).toBe(false);
    expect(lens({ compile: true }).model.compile).toBe(true);
  });
});

describe('model.compile', () => {
  it('is a boolean in the config and a required boolean of the load request', async () => {
    expect(parseConfig({ prompts: ['a'], model: { compile: true } }).model.compile).toBe(true);
    const error = await configError(() => parseConfig({ prompts: ['a'], model: { compile: 'yes' } }));
    expect(error.message).toMatch(/^model\.compile: /);
    const load = fixtureLoad('m');
    expect(loadRequestSchema.safeParse(load).success).toBe(true);
    expect(loadRequestSchema.safeParse({ ...load, compile: true }).success).toBe(true);
    const { compile: _, ...without } = load;
    expect(loadRequestSchema.safeParse(without).success).toBe(false);
  });
});
