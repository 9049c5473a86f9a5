// How the bridge fails: start-up problems, bad replies, hangs and crashes. Fake workers stand in
// where the real one cannot be made to misbehave.
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { LensWorker } from '../src/bridge/index.js';
import { fakePython, removeFakePythons } from './bridge/fake-python.js';
import { fixtureLoad, longJob, rejection } from './bridge/jobs.js';
import { isAlive, pidOf, waitUntil } from './bridge/processes.js';

const workers: LensWorker[] = [];
async function started(worker: Promise<LensWorker>): Promise<LensWorker> {
  const ready = await worker;
  workers.push(ready);
  return ready;
}
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.close()));
});
afterAll(removeFakePythons);

/** The private folder of a worker's default ipc endpoint. */
function endpointFolder(worker: LensWorker): string {
  return dirname(worker.endpoint.replace(/^ipc:\/\//, ''));
}

describe('start-up failures', () => {
  it('names the missing interpreter and the fix', async () => {
    const error = await rejection(LensWorker.start({ python: '/nonexistent/python3' }));
    expect(error.code).toBe('start_failed');
    expect(error.message).toContain('/nonexistent/python3');
    expect(error.message).toContain('DIFFUSION_LENS_PYTHON');
    expect(error.message).toContain('npx diffusion-lens doctor');
  });

  it('includes the stderr of a worker that dies on start', async () => {
    const error = await rejection(LensWorker.start({ python: fakePython('crash-on-start') }));
    expect(error.code).toBe('start_failed');
    expect(error.message).toContain('exited with code 1');
    expect(error.message).toContain("No module named 'torch'");
  });

  it('gives up on a worker that never announces its endpoint', async () => {
    const error = await rejection(LensWorker.start({ python: fakePython('mute'), startTimeoutMs: 1_500 }));
    expect(error.code).toBe('start_failed');
    expect(error.message).toContain('no endpoint line');
    expect(error.message).toContain('starting very slowly');
  });

  it('refuses a worker that speaks another protocol version, naming both', async () => {
    const error = await rejection(LensWorker.start({ python: fakePython('protocol2') }));
    expect(error.code).toBe('version_mismatch');
    expect(error.message).toContain('protocol 2');
    expect(error.message).toContain('protocol 1');
  });
});

describe('bad replies and hangs', () => {
  it('fails a request whose reply is invalid with bad_message, and logs it', async () => {
    const logs: string[] = [];
    const worker = await started(
      LensWorker.start({ python: fakePython('bad-reply'), onLog: (l) => logs.push(l) }),
    );
    const error = await rejection(worker.ping());
    expect(error.code).toBe('bad_message');
    expect(logs.join('\n')).toMatch(/invalid message from the worker \(id "r\d+"\)/);
  });

  it('logs an undecodable frame without an id and carries on', async () => {
    const logs: string[] = [];
    const worker = await started(
      LensWorker.start({ python: fakePython('garbage'), onLog: (l) => logs.push(l) }),
    );
    expect(await worker.ping()).toBeGreaterThanOrEqual(0);
    expect(logs.join('\n')).toContain('not msgpack');
  });

  it('treats a worker without heartbeats as hung and kills it', async () => {
    const worker = await started(
      LensWorker.start({ python: fakePython('silent'), heartbeatTimeoutMs: 1_000 }),
    );
    const pid = pidOf(worker);
    const startedAt = Date.now();
    const error = await rejection(worker.ping());
    expect(error.code).toBe('worker_hung');
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(900);
    expect(await waitUntil(() => !isAlive(pid), 5_000)).toBe(true);
  });

  it('kills a real worker that stops responding (SIGSTOP) as hung', async () => {
    const worker = await started(
      LensWorker.start({ extraArgs: ['--heartbeat', '0.25'], heartbeatTimeoutMs: 2_000 }),
    );
    const pid = pidOf(worker);
    process.kill(pid, 'SIGSTOP');
    const error = await rejection(worker.ping());
    expect(error.code).toBe('worker_hung');
    expect(error.message).toContain('killing it');
    expect(await waitUntil(() => !isAlive(pid), 10_000)).toBe(true);
    await worker.exited;
    expect(existsSync(endpointFolder(worker))).toBe(false);
  });
});

describe('a worker that dies mid-job', () => {
  it('rejects the job with worker_exited, naming the signal', async () => {
    const worker = await started(LensWorker.start());
    await worker.load(fixtureLoad(inject('sdFixture')));
    const pid = pidOf(worker);
    const error = await rejection(
      worker.generate(longJob(), { onProgress: () => process.kill(pid, 'SIGKILL') }),
    );
    expect(error.code).toBe('worker_exited');
    expect(error.message).toContain('SIGKILL');
    expect(error.message).toContain('Last stderr lines');
    expect(await worker.exited).toEqual({ code: null, signal: 'SIGKILL' });
    // The killed worker could not remove its ipc folder; the bridge did.
    expect(existsSync(endpointFolder(worker))).toBe(false);
    expect((await rejection(worker.ping())).code).toBe('worker_exited');
  });

  it('close() during a job rejects it with closed and still stops the worker promptly', async () => {
    const worker = await started(LensWorker.start());
    await worker.load(fixtureLoad(inject('sdFixture')));
    const pid = pidOf(worker);
    let closing: Promise<void> | undefined;
    const job = worker.generate(longJob(), {
      onProgress: () => {
        closing ??= worker.close();
      },
    });
    const error = await rejection(job);
    expect(error.code).toBe('closed');
    const startedAt = Date.now();
    await closing;
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    expect(isAlive(pid)).toBe(false);
  });
});
