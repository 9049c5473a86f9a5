// The bridge against the real Python worker: handshake, load, generate, cancel, close.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type GenerateRequest,
  type ImageMessage,
  LensWorker,
  type ProgressMessage,
} from '../src/bridge/index.js';
import { fixtureLoad, longJob, rejection, smallJob } from './bridge/jobs.js';
import { isAlive, pidOf } from './bridge/processes.js';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

describe('LensWorker with the Python worker', () => {
  let worker: LensWorker;
  const logs: string[] = [];

  beforeAll(async () => {
    worker = await LensWorker.start({ onLog: (line) => logs.push(line) });
  });
  afterAll(async () => {
    await worker?.close();
  });

  it('completes the handshake and reports the environment', () => {
    const { info } = worker;
    expect(info.type).toBe('ready');
    expect(info.v).toBe(1);
    expect(info.protocol).toBe(1);
    expect(info.worker).toMatch(/\S/);
    expect(info.python).toMatch(/^3\.\d+/);
    expect(info.torch).toMatch(/\d/);
    expect(info.device).toBe('cpu');
    const families = Object.fromEntries(info.families.map((family) => [family.name, family]));
    expect(Object.keys(families)).toEqual(['sd', 'if', 'pixart', 'sdxl', 'flux', 'sd3', 'sana']);
    expect(families.sd).toMatchObject({
      stages: 1,
      guidance: 'cfg',
      pipeline_classes: ['StableDiffusionPipeline'],
    });
    expect(families.if?.stages).toBe(2);
    expect(families.sd?.schedulers).toContain('euler');
    expect(families.if?.schedulers).not.toContain('euler');
    expect(info.heartbeat_s).toBeGreaterThan(0);
    expect(worker.pid).toBeTypeOf('number');
    expect(worker.endpoint).toMatch(/^(ipc|tcp):\/\//);
  });

  it('answers ping with a round-trip time', async () => {
    const ms = await worker.ping();
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThan(5_000);
  });

  it('refuses generate before a model is loaded', async () => {
    const error = await rejection(worker.generate(smallJob()));
    expect(error.code).toBe('not_loaded');
  });

  it('validates requests before sending them, naming the field', async () => {
    const bad = { ...smallJob(), items: 'x' } as unknown as GenerateRequest;
    const error = await rejection(worker.generate(bad));
    expect(error.code).toBe('bad_request');
    expect(error.message).toContain('items');
  });

  it('loads the fixture model', async () => {
    const loaded = await worker.load(fixtureLoad(inject('sdFixture')));
    expect(loaded.type).toBe('loaded');
    expect(loaded.family).toBe('sd');
    expect(loaded.num_layers).toBeGreaterThan(3);
    expect(loaded.defaults.steps).toBeGreaterThan(0);
  });

  it('streams one PNG per (prompt, layer, seed), progress, then done', async () => {
    const progress: ProgressMessage[] = [];
    const images: ImageMessage[] = [];
    let handled = 0;
    const done = await worker.generate(smallJob(), {
      onProgress: (p) => progress.push(p),
      // Async and slow: generate must still wait for every call, made in order.
      onImage: async (image) => {
        images.push(image);
        await new Promise((resolve) => setTimeout(resolve, 50));
        handled += 1;
      },
    });
    expect(done.type).toBe('done');
    expect(done.images).toBe(4);
    expect(handled).toBe(4);
    expect(images.map((i) => [i.prompt, i.layer, i.seed]).sort()).toEqual([
      [0, 1, 0],
      [0, 3, 0],
      [1, 1, 7],
      [1, 3, 7],
    ]);
    expect(new Set(images.map((i) => i.item))).toEqual(new Set([0, 1, 2, 3]));
    for (const image of images) {
      expect(Buffer.isBuffer(image.png)).toBe(true);
      expect(image.png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
      expect([image.width, image.height]).toEqual([32, 32]);
    }
    expect(progress.length).toBeGreaterThan(0);
    let previous = { done_units: 0, images_done: 0 };
    for (const p of progress) {
      expect(p.total_units).toBe(4 * 2);
      expect(p.images_total).toBe(4);
      expect(p.done_units).toBeLessThanOrEqual(p.total_units);
      expect(p.done_units).toBeGreaterThanOrEqual(previous.done_units);
      expect(p.images_done).toBeGreaterThanOrEqual(previous.images_done);
      previous = p;
    }
    expect(previous).toMatchObject({ done_units: 8, images_done: 4 });
  });

  it('cancels a running job on abort, then serves the next request', async () => {
    const controller = new AbortController();
    const error = await rejection(
      worker.generate(longJob(), { onProgress: () => controller.abort() }, controller.signal),
    );
    expect(error.code).toBe('cancelled');
    expect(await worker.ping()).toBeGreaterThanOrEqual(0);
  });

  it('rejects with the error of a throwing onImage handler and cancels the job', async () => {
    const failure = new Error('disk full');
    let calls = 0;
    const promise = worker.generate(longJob(), {
      onImage: async () => {
        calls += 1;
        throw failure;
      },
    });
    await expect(promise).rejects.toBe(failure);
    expect(calls).toBe(1);
    // Cancelled, not run to the end: the worker is free again at once.
    expect(await worker.ping()).toBeLessThan(5_000);
  });

  it('close() stops the worker and its process; later calls fail with closed', async () => {
    const pid = pidOf(worker);
    await Promise.all([worker.close(), worker.close()]);
    expect(isAlive(pid)).toBe(false);
    expect(await worker.exited).toEqual({ code: 0, signal: null });
    expect((await rejection(worker.ping())).code).toBe('closed');
  });
});
