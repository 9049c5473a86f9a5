// What the runner asks the worker for, without a worker: one request item per (prompt, layer, seed) with
// an image missing, stage II only when one of its images is missing, images matched to their jobs, and
// progress that goes on across requests.
import { describe, expect, it } from 'vitest';
import type { ImageMessage, LoadedMessage } from '../src/bridge/index.js';
import { WorkerError } from '../src/bridge/index.js';
import { parseConfig } from '../src/config/index.js';
import { planBatches } from '../src/experiment/batches.js';
import { familyOptionsFor } from '../src/experiment/family.js';
import { buildWork, imageSettings, type Job, jobOfImage, planExperiment } from '../src/experiment/index.js';
import { layersInFlight } from '../src/experiment/request.js';
import { ifCapabilities, oneEncoder } from './capabilities.js';

const stage2: NonNullable<LoadedMessage['stage2']> = {
  model: '/m/if-ii',
  pipeline_class: 'IFSuperResolutionPipeline',
  revision: null,
  dtype: 'fp32',
  defaults: { steps: 50, guidance: 4, height: 32, width: 32, scheduler: 'DDPMScheduler' },
};
const loaded = {
  revision: null,
  family: 'if',
  dtype: 'fp32',
  defaults: { steps: 100, guidance: 7, height: 16, width: 16, scheduler: 'DDPMScheduler' },
  capabilities: ifCapabilities,
  family_options: { clean_caption: false },
  encoders: oneEncoder('T5EncoderModel', 4, 'encoder.final_layer_norm'),
  stage2,
};

const config = parseConfig({
  model: { id: '/m/if-i' },
  sampler: { steps: 3, negative: 'blurry', scheduler: 'dpm-multistep' },
  lens: { uncond: 'same-layer' },
  stage2: { model: '/m/if-ii', steps: 2, seed: 9 },
  seeds: [0, 1],
  prompts: ['a cat', 'a dog'],
  runtime: { max_batch: 3 },
});
const plan = planExperiment({
  settings: imageSettings(config, loaded, '/m/if-i', '/m/if-ii'),
  familyOptions: familyOptionsFor(config, loaded),
  prompts: ['a cat', 'a dog'],
  layers: [0, 4],
  seeds: [0, 1],
  stages: [1, 2],
  numLayers: 4,
});
const none = (): boolean => false;

function image(work: NonNullable<ReturnType<typeof buildWork>>, item: number, stage: 1 | 2): ImageMessage {
  const { prompt, layer, seed } = work.request.items[item] ?? { prompt: 0, layer: 0, seed: 0 };
  return {
    v: 1,
    id: 'r',
    type: 'image',
    item,
    prompt,
    layer,
    seed,
    stage,
    png: Buffer.from('png'),
    width: 16,
    height: 16,
    elapsed_ms: 1,
  };
}

describe('buildWork', () => {
  it('asks for every (prompt, layer, seed) once, with the resolved settings and stage II', () => {
    const work = buildWork(config, plan, none);
    if (!work) throw new Error('expected work');
    expect(work.items).toHaveLength(8);
    expect(work.missing).toHaveLength(16);
    expect(work.request).toMatchObject({
      prompts: ['a cat', 'a dog'],
      negative: 'blurry',
      steps: 3,
      guidance: 7,
      height: 16,
      width: 16,
      scheduler: 'dpm-multistep',
      uncond: 'same-layer',
      noise: 'shared',
      max_batch: 3,
      stage2: {
        steps: 2,
        guidance: 4,
        height: 32,
        width: 32,
        scheduler: null,
        seed: 9,
        family_options: { noise_level: 250 },
      },
      family_options: {},
    });
    expect(work.request.items.slice(0, 3)).toEqual([
      { prompt: 0, layer: 0, seed: 0 },
      { prompt: 0, layer: 0, seed: 1 },
      { prompt: 0, layer: 4, seed: 0 },
    ]);
    expect(work.units).toBe(8 * (3 + 2));
  });

  it('leaves out what is done, and stage II when none of its images is missing', () => {
    const stage2Done = (job: Job): boolean => job.stage === 2;
    const work = buildWork(config, plan, stage2Done);
    expect(work?.request.stage2).toBeNull();
    expect(work?.units).toBe(8 * 3);
    // Only one image missing: one item, with stage II because that image is a stage II one.
    const last = plan.jobs.at(-1) as Job;
    const one = buildWork(config, plan, (job) => job.key !== last.key);
    expect(one?.request.items).toEqual([{ prompt: 1, layer: 4, seed: 1 }]);
    expect(one?.missing).toEqual([last]);
    expect(one?.request.stage2).not.toBeNull();
    expect(buildWork(config, plan, () => true)).toBeNull();
  });
});

describe('jobOfImage', () => {
  it('matches an image to its job and refuses one that was not asked for', () => {
    const work = buildWork(config, plan, (job) => job.stage === 2);
    if (!work) throw new Error('expected work');
    expect(jobOfImage(work, image(work, 2, 1))).toMatchObject({
      promptIndex: 0,
      layer: 4,
      seed: 0,
      stage: 1,
    });
    expect(() => jobOfImage(work, image(work, 2, 2))).toThrow(WorkerError);
    expect(() => jobOfImage(work, { ...image(work, 2, 1), layer: 0 })).toThrow(/does not match the request/);
    expect(() => jobOfImage(work, image(work, 99, 1))).toThrow(/item 99/);
  });
});

describe('progress', () => {
  it('names the layers of the batch in flight', () => {
    const work = buildWork(config, plan, none);
    if (!work) throw new Error('expected work');
    expect(layersInFlight(work, { images_done: 0, batch_items: 3 })).toEqual([0, 4]);
    expect(layersInFlight(work, { images_done: 0, batch_items: 2 })).toEqual([0]);
    expect(layersInFlight(work, { images_done: 6, batch_items: 0 })).toEqual([4]);
  });

  it('cuts the plan into the batches the worker samples, and a batch into its request', () => {
    const batches = planBatches(plan, 3);
    const items = batches.flatMap((batch) => batch.items);
    expect(batches.map((batch) => batch.items.length)).toEqual([3, 3, 2]);
    expect(items.map((item) => `${item.promptIndex}/${item.layer}/${item.seed}`)).toEqual(
      buildWork(config, plan, none)?.request.items.map((item) => `${item.prompt}/${item.layer}/${item.seed}`),
    );
    const second = batches[1];
    if (!second) throw new Error('expected a second batch');
    const work = buildWork(config, plan, none, second.items);
    expect(work?.request.items).toHaveLength(3);
    // A batch whose images are all made asks for nothing.
    const made = new Set(second.items.flatMap((item) => Object.values(item.jobs).map((job) => job.key)));
    expect(buildWork(config, plan, (job) => made.has(job.key), second.items)).toBeNull();
  });
});
