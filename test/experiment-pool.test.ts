// Worker pools (runtime.workers) against real Python workers and the tiny SD fixture: batches handed out
// as workers free up make the same bytes as one worker; a member that dies mid-batch or is slow loses
// and duplicates nothing.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { type ExperimentConfig, parseConfig } from '../src/config/index.js';
import { type Manifest, type RunEvent, runExperiment } from '../src/experiment/index.js';
import { localWorkerEnv } from '../src/experiment/pool.js';
import { tempDirs } from './temp-dirs.js';

const fixture = inject('sdFixture');
const tempDir = tempDirs('dlens-pool-');

function config(runtime: Record<string, unknown>, overrides: Record<string, unknown> = {}): ExperimentConfig {
  return parseConfig({
    model: { id: fixture },
    sampler: { steps: 4, size: 32 },
    lens: { layers: 'all' },
    seeds: [0, 1],
    prompts: ['a red apple', 'a blue cube'],
    runtime: { max_batch: 2, ...runtime },
    ...overrides,
  });
}

function readManifest(dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
}

/** Each image's path and PNG bytes (hex of the bytes' hash would hide nothing more). */
function imageBytes(dir: string): Map<string, string> {
  const manifest = readManifest(dir);
  return new Map(
    manifest.images.map((image) => [image.path, readFileSync(join(dir, image.path)).toString('base64')]),
  );
}

// torch's CPU kernels round differently with another number of threads, and a CPU pool gives each worker
// a share of the cores: every run here uses one thread per worker, so that bytes can be compared.
const env = { ...process.env, OMP_NUM_THREADS: '1' };

const images = (events: RunEvent[]) => events.filter((e) => e.type === 'image') as { path: string }[];

describe('worker pools', () => {
  let single: Map<string, string>;

  it('two workers make every image once, with the same bytes as one worker', async () => {
    const one = tempDir();
    await runExperiment(config({ workers: 1 }), { outDir: one, env });
    single = imageBytes(one);
    expect(single.size).toBe(12 * 2);

    const two = tempDir();
    const events: RunEvent[] = [];
    const result = await runExperiment(config({ workers: 2 }), {
      outDir: two,
      env,
      onEvent: (event) => events.push(event),
    });
    expect(result.complete).toBe(true);
    const ready = events.filter((e) => e.type === 'worker-ready') as { worker?: number }[];
    expect(ready.map((e) => e.worker).sort()).toEqual([0, 1]);
    const made = images(events);
    expect(made).toHaveLength(24);
    expect(new Set(made.map((e) => e.path)).size).toBe(24);
    expect(imageBytes(two)).toEqual(single);
  });

  it('under max_batch auto, two workers take plan batches of 16 and make the same bytes as one', async () => {
    // On the CPU auto samples 16 images of 32x32 at a time (batching.py): one plan batch of 16 each, the
    // batches one worker samples.
    const one = tempDir();
    await runExperiment(config({ workers: 1, max_batch: 'auto' }), { outDir: one, env });
    const out = tempDir();
    const result = await runExperiment(config({ workers: 2, max_batch: 'auto' }), { outDir: out, env });
    expect(result.complete).toBe(true);
    expect(imageBytes(out)).toEqual(imageBytes(one));
    expect(readManifest(out).config.runtime.max_batch).toBe('auto');
  });

  it('a member killed mid-batch is replaced; its images are made once, and the bytes do not change', async () => {
    const out = tempDir();
    const events: RunEvent[] = [];
    let killed = 0;
    const result = await runExperiment(config({ workers: 2 }), {
      outDir: out,
      env,
      onEvent: (event) => {
        events.push(event);
        // The second worker, killed at the first progress event after it loaded the model: it has taken
        // a batch at once (there are 12), so it dies in the middle of a request.
        const loaded = events.some((e) => e.type === 'model-loaded' && e.worker === 1);
        if (event.type === 'progress' && loaded && killed === 0) {
          const second = events.find((e) => e.type === 'worker-ready' && e.worker === 1);
          if (second?.type === 'worker-ready' && second.pid) {
            killed = second.pid;
            process.kill(second.pid, 'SIGKILL');
          }
        }
      },
    });
    expect(killed).not.toBe(0);
    expect(result.complete).toBe(true);
    const lost = events.find((e) => e.type === 'worker-lost');
    expect(lost).toMatchObject({ worker: 1, code: 'worker_exited', restarting: true });
    const made = images(events);
    expect(new Set(made.map((e) => e.path)).size).toBe(made.length);
    expect(made).toHaveLength(24);
    expect(imageBytes(out)).toEqual(single);
  });

  it('a slow member: an idle worker makes its batch too, the first copy wins, each image is written once', async () => {
    const out = tempDir();
    const events: RunEvent[] = [];
    // The second worker is made slow by letting it run 0.1 s of every 3.6 s (stopped for 3.5 s at a time,
    // under the 5 s heartbeat limit, so it is slow, not hung) from the moment it has loaded the model.
    let slowPid = 0;
    let cycling: NodeJS.Timeout | undefined;
    const signal = (pid: number, name: NodeJS.Signals): boolean => {
      try {
        process.kill(pid, name);
        return true;
      } catch {
        return false; // it has exited
      }
    };
    const stopAndGo = (pid: number): void => {
      if (!signal(pid, 'SIGSTOP')) return;
      cycling = setTimeout(() => {
        if (signal(pid, 'SIGCONT')) cycling = setTimeout(() => stopAndGo(pid), 100);
      }, 3_500);
    };
    try {
      // 48 steps: a batch needs about a second of CPU, so the slow worker's batch runs some 30 s, well past
      // the 10 s before a batch may be copied (at 16 steps it took 0.3 s of CPU, 11 s here: too close).
      const result = await runExperiment(config({ workers: 2 }, { sampler: { steps: 48, size: 32 } }), {
        outDir: out,
        env,
        onEvent: (event) => {
          events.push(event);
          if (event.type === 'model-loaded' && event.worker === 1 && slowPid === 0) {
            const ready = [...events].reverse().find((e) => e.type === 'worker-ready' && e.worker === 1);
            if (ready?.type === 'worker-ready' && ready.pid) {
              slowPid = ready.pid;
              stopAndGo(slowPid);
            }
          }
        },
      });
      expect(result.complete).toBe(true);
    } finally {
      clearTimeout(cycling);
      if (slowPid) signal(slowPid, 'SIGCONT');
    }
    expect(slowPid).not.toBe(0);
    const copied = events.filter((e) => e.type === 'notice' && /makes it too/.test(e.message));
    expect(copied.length).toBeGreaterThan(0);
    expect(events.filter((e) => e.type === 'worker-lost')).toHaveLength(0);
    const made = images(events);
    expect(new Set(made.map((e) => e.path)).size).toBe(made.length);
    expect(made).toHaveLength(24);
    expect(readManifest(out).images).toHaveLength(24);
  });

  it('a run whose only remote worker cannot be reached fails clearly and writes nothing', async () => {
    const out = tempDir();
    await expect(
      runExperiment(config({ remote: [{ endpoint: 'tcp://127.0.0.1:9' }] }), {
        outDir: out,
        maxRestarts: 0,
      }),
    ).rejects.toThrow(/127\.0\.0\.1:9/);
  });
});

describe('local worker environments', () => {
  it('gives each worker one GPU in turn, or an equal share of the cores', () => {
    const env = { PATH: '/bin' };
    expect(localWorkerEnv(env, 0, 1, ['0', '1'])).toBe(env);
    expect(localWorkerEnv(env, 2, 3, ['0', '1']).CUDA_VISIBLE_DEVICES).toBe('0');
    expect(localWorkerEnv(env, 1, 3, ['0', '1']).CUDA_VISIBLE_DEVICES).toBe('1');
    expect(localWorkerEnv(env, 1, 2, [], 8).OMP_NUM_THREADS).toBe('4');
    expect(localWorkerEnv(env, 1, 4, [], 2).OMP_NUM_THREADS).toBe('1');
    expect(localWorkerEnv({ OMP_NUM_THREADS: '3' }, 1, 2, [], 8).OMP_NUM_THREADS).toBe('3');
  });
});
