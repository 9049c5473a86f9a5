// `diffusion-lens worker` and `keys` end to end (the built CLI, the real Python worker, the tiny SD
// fixture): a persistent worker on tcp with CURVE keys that clients with the right key attach to (and
// reuse its loaded model), that refuses clients without the right key, and that stops cleanly; a tcp
// bind without keys is refused unless --insecure; `lens --worker` runs on it.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LensWorker, type LoadRequest, makeKeys, WorkerError } from '../src/bridge/index.js';
import { findPython, pythonDir } from '../src/bridge/python.js';
import { lensConfig } from '../src/cli/options.js';
import { resolveInputs } from '../src/experiment/inputs.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const fixture = inject('sdFixture');
const tempDir = tempDirs('dlens-cli-worker-');
/** The Python worker reuses a loaded model for the same load request (python/diffusion_lens/engine.py). */
const loadReuse = /_same_load|same (model|load)|already loaded/i.test(
  readFileSync(join(pythonDir, 'diffusion_lens', 'engine.py'), 'utf8'),
);

beforeAll(() => {
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
});

function dlens(args: string[], env: NodeJS.ProcessEnv = {}) {
  return execa('node', [cli, ...args], { reject: false, cwd: root, env: { ...process.env, ...env } });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A `diffusion-lens worker --json` in the background, its stdout events read as they come. */
class BackgroundWorker {
  readonly events: Record<string, unknown>[] = [];
  private waiters: (() => void)[] = [];
  readonly process: ResultPromise;

  constructor(args: string[]) {
    this.process = execa('node', [cli, 'worker', '--json', ...args], { reject: false, cwd: root });
    if (this.process.stdout) {
      createInterface({ input: this.process.stdout }).on('line', (line) => {
        try {
          this.events.push({ ...(JSON.parse(line) as Record<string, unknown>), at: performance.now() });
        } catch {
          this.events.push({ event: 'text', line, at: performance.now() });
        }
        for (const wake of this.waiters.splice(0)) wake();
      });
    }
    void this.process.then(() => {
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** The first event named `name`; rejects when the process ends first, with its stderr. */
  async event(name: string, timeoutMs = 120_000): Promise<Record<string, unknown>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.event === name);
      if (found) return found;
      if (this.process.exitCode !== null || performance.now() > deadline) {
        const result = await Promise.race([this.process, new Promise((r) => setTimeout(r, 100))]);
        throw new Error(
          `no ${name} event; events: ${JSON.stringify(this.events)}; stderr: ${(result as { stderr?: string })?.stderr ?? '(running)'}`,
        );
      }
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 500);
      });
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM') {
    this.process.kill(signal);
    return this.process;
  }
}

async function refusal(connecting: Promise<LensWorker>): Promise<{ error: WorkerError; ms: number }> {
  const startedAt = performance.now();
  const error = await connecting.then(
    async (worker) => {
      await worker.close();
      throw new Error('connected, but should have been refused');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(WorkerError);
  return { error: error as WorkerError, ms: performance.now() - startedAt };
}

describe('diffusion-lens keys', () => {
  it('makes the layout, says what to copy where, and refuses to replace keys', async () => {
    const dir = join(tempDir(), 'keys');
    const made = await dlens(['keys', dir]);
    expect(made.exitCode).toBe(0);
    expect(readdirSync(dir).sort()).toEqual([
      'authorized',
      'client.key',
      'client.key_secret',
      'worker.key',
      'worker.key_secret',
    ]);
    expect(made.stdout).toContain(`The worker host needs ${dir}/worker.key_secret and ${dir}/authorized/`);
    expect(made.stdout).toContain(`Each client needs ${dir}/client.key_secret and ${dir}/worker.key`);
    const again = await dlens(['keys', dir]);
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toMatch(/^error: keys already exist: .*give --force to replace them\.$/);
    const added = await dlens(['keys', dir, '--add-client', 'laptop']);
    expect(added.exitCode).toBe(0);
    expect(readdirSync(join(dir, 'authorized')).sort()).toEqual(['client.key', 'laptop.key']);
    expect(readdirSync(join(dir, 'clients', 'laptop')).sort()).toEqual([
      'client.key',
      'client.key_secret',
      'worker.key',
    ]);
  });
});

describe('diffusion-lens worker: tcp with CURVE keys', () => {
  const keys = join(tempDir(), 'keys');
  let worker: BackgroundWorker;
  let endpoint = '';
  let firstLoadMs = 0;
  let load: LoadRequest;

  beforeAll(async () => {
    makeKeys(keys);
    endpoint = `tcp://127.0.0.1:${await freePort()}`;
    worker = new BackgroundWorker(['--bind', endpoint, '--keys', keys, '--model', fixture]);
    const listening = await worker.event('listening');
    expect(listening).toMatchObject({ endpoint, attach: endpoint, secure: true });
    const loaded = await worker.event('loaded');
    firstLoadMs = (loaded.at as number) - (listening.at as number);
    // The request a run sends for the same options (lens --model FIXTURE), as the worker command made it.
    load = (await resolveInputs(lensConfig('x', { model: fixture }), {})).load;
  });
  afterAll(async () => {
    if (worker.process.exitCode === null) await worker.stop();
  });

  it('loads the model at start and announces it', async () => {
    const loaded = await worker.event('loaded');
    expect(loaded).toMatchObject({ event: 'loaded', family: 'sd', num_layers: expect.any(Number) });
    expect(String(loaded.model)).toContain('tiny-sd');
  });

  it('answers a client with the right keys, and reuses its loaded model', async () => {
    const client = await LensWorker.connect(endpoint, { keys });
    try {
      expect(client.info.type).toBe('ready');
      expect(await client.ping()).toBeGreaterThan(0);
      const startedAt = performance.now();
      const loaded = await client.load(load);
      const loadMs = performance.now() - startedAt;
      expect(loaded.family).toBe('sd');
      if (loadReuse) {
        expect(loadMs).toBeLessThan(500);
        expect(loadMs).toBeLessThan(firstLoadMs / 2);
      }
    } finally {
      await client.close();
    }
  });

  it('refuses a client whose key pair it does not know, at once', async () => {
    const stranger = join(tempDir(), 'stranger');
    makeKeys(stranger);
    // The stranger holds the worker's public key (worker.key is public), but its pair is not authorized.
    copyFileSync(join(keys, 'worker.key'), join(stranger, 'worker.key'));
    const { error, ms } = await refusal(LensWorker.connect(endpoint, { keys: stranger }));
    expect(error.code).toBe('start_failed');
    expect(error.message).toContain(`the worker at ${endpoint} refused our key`);
    expect(error.message).toContain('do the keys match?');
    expect(error.message).toContain('DIR/authorized/');
    expect(ms).toBeLessThan(5_000);
  });

  it('gives a client with fresh keys of its own nothing: no answer within the short timeout', async () => {
    const stranger = join(tempDir(), 'stranger');
    makeKeys(stranger);
    const { error, ms } = await refusal(LensWorker.connect(endpoint, { keys: stranger }));
    expect(error.code).toBe('start_failed');
    expect(error.message).toMatch(
      /^no answer from tcp:\/\/127\.0\.0\.1:\d+ within 10 s: is a worker running there, and do the keys match\? A worker started with --keys DIR answers only clients whose public key is in its DIR\/authorized\//,
    );
    expect(ms).toBeGreaterThan(9_000);
    expect(ms).toBeLessThan(13_000);
  });

  it('gives a client without keys nothing', async () => {
    const { error, ms } = await refusal(LensWorker.connect(endpoint));
    expect(error.message).toContain('do the keys match?');
    expect(error.message).toContain('--keys DIR');
    expect(ms).toBeLessThan(13_000);
  });

  it('lens --worker ENDPOINT --keys DIR runs on it (and $DIFFUSION_LENS_WORKER / $DIFFUSION_LENS_KEYS)', async () => {
    const args = ['a red apple', '--model', fixture, '--layers', '1,3', '--seeds', '0', '--steps', '2'];
    const out = join(tempDir(), 'apple');
    const result = await dlens([
      'lens',
      ...args,
      '--size',
      '32',
      '--out',
      out,
      '--worker',
      endpoint,
      '--keys',
      keys,
    ]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/done: 2 images made/);
    const fromEnv = await dlens(['lens', ...args, '--size', '32', '--out', join(tempDir(), 'env')], {
      DIFFUSION_LENS_WORKER: endpoint,
      DIFFUSION_LENS_KEYS: keys,
    });
    expect(fromEnv.exitCode).toBe(0);
    expect(fromEnv.stdout).toMatch(/done: 2 images made/);
    // Without keys the run fails with the keys error, and makes nothing.
    const refused = await dlens(['lens', ...args, '--out', join(tempDir(), 'nokeys'), '--worker', endpoint]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('do the keys match?');
  });

  it('stops cleanly on SIGTERM (exit 0)', async () => {
    const result = await worker.stop('SIGTERM');
    expect(result.exitCode).toBe(0);
    expect(worker.events.at(-1)).toMatchObject({ event: 'stopped', by: 'SIGTERM' });
  });
});

describe('diffusion-lens worker: what it refuses', () => {
  it('refuses a tcp bind without keys, unless --insecure (then warns)', async () => {
    const endpoint = `tcp://127.0.0.1:${await freePort()}`;
    const refused = await dlens(['worker', '--bind', endpoint]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(/^error: a tcp endpoint without keys .* give --keys DIR .* or --insecure/);

    // The Python worker refuses it too, on its own.
    const python = await execa(findPython(), ['lens_server.py', '--bind', endpoint], {
      cwd: pythonDir,
      reject: false,
      timeout: 60_000,
    });
    expect(python.exitCode).not.toBe(0);
    expect(python.stdout).toBe('');
    expect(python.stderr).toMatch(/--keys|--insecure/);

    const insecure = new BackgroundWorker(['--bind', endpoint, '--insecure']);
    try {
      expect(await insecure.event('listening')).toMatchObject({ endpoint, secure: false });
      const client = await LensWorker.connect(endpoint);
      expect(await client.ping()).toBeGreaterThan(0);
      await client.close();
    } finally {
      const result = await insecure.stop('SIGINT');
      expect(result.exitCode).toBe(130);
      expect(result.stderr).toMatch(/warning: no keys \(--insecure\)/);
    }
  });

  it('refuses --keys with --insecure, a keys folder without authorized clients, model options without --model', async () => {
    const both = await dlens(['worker', '--keys', tempDir(), '--insecure']);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toContain('--keys and --insecure exclude each other');
    const empty = await dlens(['worker', '--bind', 'tcp://127.0.0.1:1', '--keys', tempDir()]);
    expect(empty.exitCode).toBe(1);
    expect(empty.stderr).toMatch(/worker\.key_secret is missing/);
    const noModel = await dlens(['worker', '--dtype', 'fp32']);
    expect(noModel.exitCode).toBe(2);
    expect(noModel.stderr).toContain('--dtype says how to load a model: give --model too');
  });

  it('reports a model that cannot be loaded (exit 1)', async () => {
    const dir = tempDir();
    const result = await execa(
      'node',
      [cli, 'worker', '--bind', `ipc://${join(dir, 'w.sock')}`, '--model', 'nobody/no-such-model-xyz'],
      { reject: false, cwd: root, env: { ...process.env, HF_HUB_OFFLINE: '1' }, timeout: 120_000 },
    );
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/error: the worker could not load nobody\/no-such-model-xyz: \S/);
  });
});
