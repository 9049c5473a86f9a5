// runExperiment against the real Python worker and the tiny SD fixture: resume after an abort, recovery
// from a crashed or hung worker, reuse of a worker, errors before anything is written.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LensWorker } from '../src/bridge/index.js';
import { ConfigError, type ExperimentConfig, parseConfig } from '../src/config/index.js';
import { type Manifest, type RunEvent, runExperiment } from '../src/experiment/index.js';
import {
  fluxCapabilities,
  ifCapabilities,
  pixartCapabilities,
  sanaCapabilities,
  sd3Capabilities,
  sdCapabilities,
  sdxlCapabilities,
} from './capabilities.js';
import { tempDirs } from './temp-dirs.js';

const fixture = inject('sdFixture');
const tempDir = tempDirs('dlens-run-');

function config(overrides: Record<string, unknown> = {}): ExperimentConfig {
  return parseConfig({
    model: { id: fixture },
    sampler: { steps: 3, size: 32 },
    lens: { layers: 'all' },
    seeds: [0, 1],
    prompts: ['a red apple'],
    runtime: { max_batch: 2 },
    ...overrides,
  });
}

/** Live lens_server.py processes started by this test process. */
function childWorkers(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (Number(ppid) === process.pid && state !== 'Z' && cmdline.includes('lens_server'))
        pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (condition()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return condition();
}

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));

/**
 * The worker as if it stopped the moment `signal` aborted: images it made after are never delivered. A
 * tiny model can make the rest of a request while the cancel is on its way, so a test of resuming an
 * aborted run would otherwise find it complete.
 */
function stoppedOnAbort(worker: LensWorker, signal: AbortSignal): LensWorker {
  return new Proxy(worker, {
    get(target, property) {
      if (property === 'generate') {
        const generate: LensWorker['generate'] = (request, handlers = {}, stop) =>
          target.generate(
            request,
            { ...handlers, onImage: (image) => (signal.aborted ? undefined : handlers.onImage?.(image)) },
            stop,
          );
        return generate;
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

function fileIds(dir: string, manifest: Manifest): Map<string, string> {
  return new Map(
    manifest.images.map((image) => {
      const stat = statSync(join(dir, image.path));
      return [image.path, `${stat.ino}:${stat.mtimeMs}`];
    }),
  );
}

describe('runExperiment', () => {
  let shared: LensWorker;
  beforeAll(async () => {
    shared = await LensWorker.start();
  });
  afterAll(async () => {
    await shared?.close();
  });

  it("the tests' copies of the families' capabilities match what the worker reports", () => {
    expect(shared.info.families).toMatchObject([
      sdCapabilities,
      ifCapabilities,
      pixartCapabilities,
      sdxlCapabilities,
      fluxCapabilities,
      sd3Capabilities,
      sanaCapabilities,
    ]);
  });

  it('reuses a given worker and leaves it running', async () => {
    const out = tempDir();
    const events: RunEvent[] = [];
    const result = await runExperiment(config({ seeds: [0], lens: { layers: '0,-1' } }), {
      outDir: out,
      worker: shared,
      onEvent: (e) => events.push(e),
    });
    expect(result).toMatchObject({ complete: true, aborted: false, generated: 2, skipped: 0 });
    expect(events.some((e) => e.type === 'worker-ready')).toBe(false);
    // Where the time went: the worker's own timings and the writing, each within the run's wall time.
    const done = events.find((e) => e.type === 'done');
    if (done?.type !== 'done') throw new Error('no done event');
    const { timings } = done;
    for (const part of ['encode_ms', 'denoise_ms', 'decode_ms', 'png_ms', 'write_ms'] as const) {
      expect(timings[part]).toBeGreaterThan(0);
    }
    expect(timings.compile_ms).toBe(0);
    expect(timings.encode_ms + timings.denoise_ms + timings.decode_ms).toBeLessThan(done.seconds * 1000);
    expect(await shared.ping()).toBeGreaterThanOrEqual(0);
    const manifest = readManifest(out);
    expect(manifest.config.lens.layers).toEqual([0, 5]);
    expect(manifest.images.map((i) => i.path)).toEqual([
      expect.stringMatching(/\/L0-s0\.png$/),
      expect.stringMatching(/\/L5-s0\.png$/),
    ]);
  });

  it('resumes an aborted run, making exactly the missing images and leaving the others alone', async () => {
    const out = tempDir();
    const k = 3;
    const controller = new AbortController();
    const first: RunEvent[] = [];
    const result1 = await runExperiment(config(), {
      outDir: out,
      worker: stoppedOnAbort(shared, controller.signal),
      signal: controller.signal,
      onEvent: (event) => {
        first.push(event);
        if (event.type === 'image' && event.images_done === k) controller.abort();
      },
    });
    expect(result1).toMatchObject({ complete: false, aborted: true });
    const manifest1 = readManifest(out);
    expect(manifest1.complete).toBe(false);
    expect(manifest1.grids).toEqual([]);
    const made = manifest1.images.length;
    expect(made).toBe(k);
    expect(first.filter((e) => e.type === 'image')).toHaveLength(made);
    expect(first.at(-1)).toMatchObject({ type: 'done', complete: false, aborted: true });
    const before = fileIds(out, manifest1);
    await new Promise((r) => setTimeout(r, 20));

    const second: RunEvent[] = [];
    const result2 = await runExperiment(config(), {
      outDir: out,
      worker: shared,
      onEvent: (e) => second.push(e),
    });
    expect(result2).toMatchObject({ complete: true, generated: 12 - made, skipped: made });
    expect(second.find((e) => e.type === 'plan')).toMatchObject({
      total: 12,
      skipped: made,
      todo: 12 - made,
    });
    const images = second.filter((e) => e.type === 'image');
    expect(images).toHaveLength(12 - made);
    for (const image of images) expect(before.has(image.path)).toBe(false);
    const manifest2 = readManifest(out);
    expect(manifest2.complete).toBe(true);
    expect(manifest2.images).toHaveLength(12);
    const after = fileIds(out, manifest2);
    for (const [path, id] of before) expect(after.get(path)).toBe(id);
    expect(manifest2.timings).toMatchObject({ images_generated: 12 - made, images_skipped: made });
  });

  it('restarts a worker that crashes mid-run and loses no image', async () => {
    const out = tempDir();
    const events: RunEvent[] = [];
    let killedAt: RunEvent | undefined;
    // Killed at the run's first progress event, emitted as the worker's first denoising step arrives. (A
    // kill at the second image event, which waits for its file to be written, could land after `done`
    // under load: with 3 steps, five batches of 3 steps were left.) The worker is then in the first of its
    // six batches with about 6 x 25 steps to go, far more than the event can lag: the kill lands mid-run.
    const result = await runExperiment(config({ sampler: { steps: 25, size: 32 } }), {
      outDir: out,
      onEvent: (event) => {
        events.push(event);
        if (event.type === 'progress' && !killedAt) {
          killedAt = event;
          const ready = events.find((e) => e.type === 'worker-ready');
          if (ready?.type === 'worker-ready' && ready.pid) process.kill(ready.pid, 'SIGKILL');
        }
      },
    });
    expect(killedAt).toMatchObject({ type: 'progress', images_done: 0 });
    expect(result.complete).toBe(true);
    const lost = events.find((e) => e.type === 'worker-lost');
    expect(lost).toMatchObject({ type: 'worker-lost', code: 'worker_exited', restarting: true, restarts: 0 });
    if (lost?.type !== 'worker-lost') throw new Error('unreachable');
    expect(lost.lost).toBeGreaterThan(0);
    expect(lost.lost).toBe(lost.lost_images.length);
    expect(
      events.filter((e) => e.type === 'worker-ready').map((e) => (e as { restart: number }).restart),
    ).toEqual([0, 1]);
    const images = events.filter((e) => e.type === 'image');
    expect(images).toHaveLength(12);
    expect(new Set(images.map((e) => (e as { path: string }).path)).size).toBe(12);
    expect(readManifest(out).images).toHaveLength(12);
  });

  it('treats a silent (stopped) worker as hung, replaces it, and finishes', async () => {
    const out = tempDir();
    const events: RunEvent[] = [];
    let stopped = false;
    const result = await runExperiment(
      config({ seeds: [0], lens: { layers: '0:3' }, runtime: { max_batch: 1 } }),
      {
        outDir: out,
        onEvent: (event) => {
          events.push(event);
          if (event.type === 'image' && !stopped) {
            stopped = true;
            const ready = events.find((e) => e.type === 'worker-ready');
            if (ready?.type === 'worker-ready' && ready.pid) process.kill(ready.pid, 'SIGSTOP');
          }
        },
      },
    );
    expect(stopped).toBe(true);
    expect(result.complete).toBe(true);
    expect(events.find((e) => e.type === 'worker-lost')).toMatchObject({
      code: 'worker_hung',
      restarting: true,
    });
    expect(readManifest(out).images).toHaveLength(4);
  });

  it('gives up after two restarts, keeping what was made', async () => {
    const out = tempDir();
    const events: RunEvent[] = [];
    const killedPids = new Set<number>();
    const run = runExperiment(config({ seeds: [0], runtime: { max_batch: 1 } }), {
      outDir: out,
      onEvent: (event) => {
        events.push(event);
        if (event.type === 'image') {
          const ready = events.filter((e) => e.type === 'worker-ready').at(-1);
          if (ready?.type === 'worker-ready' && ready.pid && !killedPids.has(ready.pid)) {
            killedPids.add(ready.pid);
            process.kill(ready.pid, 'SIGKILL');
          }
        }
      },
    });
    await expect(run).rejects.toMatchObject({ code: 'worker_exited' });
    const lost = events.filter((e) => e.type === 'worker-lost');
    expect(lost.map((e) => (e as { restarting: boolean }).restarting)).toEqual([true, true, false]);
    expect(events.at(-2)).toMatchObject({ type: 'error', code: 'worker_exited', resumable: true });
    expect(events.at(-1)).toMatchObject({ type: 'done', complete: false, aborted: false });
    const manifest = readManifest(out);
    expect(manifest.complete).toBe(false);
    expect(manifest.images.length).toBe(events.filter((e) => e.type === 'image').length);
  });

  it('stops cleanly when aborted while the worker starts or the model loads, leaving no process', async () => {
    const others = (): number[] => childWorkers().filter((pid) => pid !== shared.pid);
    for (const at of ['start', 'worker-ready'] as const) {
      const out = join(tempDir(), 'run');
      const controller = new AbortController();
      const events: RunEvent[] = [];
      const result = await runExperiment(config(), {
        outDir: out,
        signal: controller.signal,
        onEvent: (event) => {
          events.push(event);
          if (event.type === at) controller.abort();
        },
      });
      expect(result).toMatchObject({ complete: false, aborted: true, manifestPath: null, generated: 0 });
      expect(events.at(-1)).toMatchObject({ type: 'done', aborted: true, manifest: null });
      expect(existsSync(out)).toBe(false);
      expect(await waitFor(() => others().length === 0, 15_000)).toBe(true);
    }
  });

  it('rejects out-of-range layers before loading (depth from the config files), writing nothing', async () => {
    const out = join(tempDir(), 'run');
    const events: RunEvent[] = [];
    const run = runExperiment(config({ lens: { layers: '0:30:10' } }), {
      outDir: out,
      worker: shared,
      onEvent: (e) => events.push(e),
    });
    await expect(run).rejects.toThrow(ConfigError);
    await expect(run).rejects.toThrow('lens.layers: layer 30 is out of range 0..5');
    expect(existsSync(out)).toBe(false);
    expect(events).toEqual([]);
  });

  describe('two stages (tiny IF)', () => {
    const ifConfig = (overrides: Record<string, unknown> = {}): ExperimentConfig =>
      parseConfig({
        model: { id: inject('ifFixture') },
        sampler: { steps: 2 },
        lens: { layers: 'all' },
        stage2: { model: inject('ifSrFixture'), steps: 2 },
        seeds: [0],
        prompts: ['a red cube'],
        runtime: { max_batch: 1 },
        ...overrides,
      });

    it('restarts a crashed worker and makes each missing image of either stage exactly once', async () => {
      const out = tempDir();
      const events: RunEvent[] = [];
      let killed = false;
      const result = await runExperiment(ifConfig(), {
        outDir: out,
        onEvent: (event) => {
          events.push(event);
          // After item 1's stage I image: its stage II image is lost, its stage I one is on disk.
          if (event.type === 'image' && event.images_done === 3 && !killed) {
            killed = true;
            const ready = events.find((e) => e.type === 'worker-ready');
            if (ready?.type === 'worker-ready' && ready.pid) process.kill(ready.pid, 'SIGKILL');
          }
        },
      });
      expect(killed).toBe(true);
      expect(result).toMatchObject({ complete: true, generated: 10 });
      const lost = events.find((e) => e.type === 'worker-lost');
      if (lost?.type !== 'worker-lost') throw new Error('no worker-lost event');
      expect(lost.lost_images.length).toBe(lost.lost);
      expect(lost.lost_images.some((image) => image.stage === 2)).toBe(true);
      const images = events.filter((e) => e.type === 'image');
      expect(images).toHaveLength(10);
      expect(new Set(images.map((e) => (e as { path: string }).path)).size).toBe(10);
      const manifest = readManifest(out);
      expect(manifest.images.map((image) => [image.layer, image.stage])).toEqual(
        [0, 1, 2, 3, 4].flatMap((layer) => [
          [layer, 1],
          [layer, 2],
        ]),
      );
      const plan = events.find((e) => e.type === 'plan');
      expect(plan).toMatchObject({ stages: [1, 2], height: 16, stage2: { height: 32, width: 32, steps: 2 } });
      const progress = events.filter((e) => e.type === 'progress');
      expect(progress.length).toBeGreaterThan(0);
      for (const p of progress) {
        if (p.type !== 'progress') continue;
        // One unit = one step of one item in either stage: 5 items x (2 + 2) steps.
        expect(p.units_total).toBe(20);
        expect(p.units_done).toBeLessThanOrEqual(20);
      }
    });

    it('resumes an aborted run per image, and a stage I run leaves the stage II images to a later one', async () => {
      const out = tempDir();
      const controller = new AbortController();
      const first = await runExperiment(ifConfig({ stages: [1] }), {
        outDir: out,
        worker: stoppedOnAbort(shared, controller.signal),
        signal: controller.signal,
        onEvent: (event) => {
          if (event.type === 'image' && event.images_done === 2) controller.abort();
        },
      });
      expect(first).toMatchObject({ aborted: true, complete: false });
      const made = readManifest(out).images.length;
      expect(made).toBe(2);

      const second = await runExperiment(ifConfig({ stages: [1] }), { outDir: out, worker: shared });
      expect(second).toMatchObject({ complete: true, generated: 5 - made, skipped: made });
      const stage1 = fileIds(out, readManifest(out));

      // Adding stage II keeps every stage I key (and file) and makes only the stage II images.
      const events: RunEvent[] = [];
      const third = await runExperiment(ifConfig(), {
        outDir: out,
        worker: shared,
        onEvent: (e) => events.push(e),
      });
      expect(third).toMatchObject({ complete: true, generated: 5, skipped: 5 });
      expect(
        events.filter((e) => e.type === 'image').every((e) => (e as { stage: number }).stage === 2),
      ).toBe(true);
      const all = fileIds(out, readManifest(out));
      for (const [path, id] of stage1) expect(all.get(path)).toBe(id);
      expect(readManifest(out).grids.map((grid) => grid.stage)).toEqual([1, 2]);
    });
  });

  it('rejects a missing local model before starting a worker', async () => {
    const events: RunEvent[] = [];
    const run = runExperiment(parseConfig({ model: { id: './no-such-model' }, prompts: ['x'] }), {
      outDir: tempDir(),
      onEvent: (e) => events.push(e),
    });
    await expect(run).rejects.toThrow(/model\.id: local model "\.\/no-such-model" does not exist/);
    expect(events).toEqual([]);
  });
});
