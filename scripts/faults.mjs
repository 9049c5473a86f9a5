#!/usr/bin/env node
// Fault figures for docs/reliability.md, on loopback only, in bounded loops, against real workers and a
// tiny random-weight SD pipeline:
//   local   SIGKILL of the worker at random points of runs; every image exactly once
//   pool    the same with two workers, a random one killed each time
//   hang    SIGSTOP of the worker; caught by the heartbeat limit, replaced
//   signal  SIGINT / SIGTERM of the CLI mid-run; the run is resumable and a rerun completes it
//   network a remote worker behind a loopback proxy whose traffic stops: noticed within the heartbeat
//           limit, and the run goes on on the local worker
// Every finished run is checked against a fault-free reference run: the same images (paths, keys, bytes),
// none missing, none made twice, every file's bytes the ones its journal line records.
//
//   npm run build && node scripts/faults.mjs [--kills 20] [--hangs 3] [--signals 3] [--network 2]
//       [--seed 1] [--json]
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { findPython } from '../dist/bridge/python.js';
import { parseConfig, runExperiment } from '../dist/index.js';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, 'dist', 'cli.js');
const { values: args } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
    hangs: { type: 'string', default: '3' },
    signals: { type: 'string', default: '3' },
    network: { type: 'string', default: '2' },
    seed: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
  },
});
const count = (name) => {
  const value = Number(args[name]);
  if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} must be a whole number >= 0`);
  return value;
};

// A small seeded generator (mulberry32): the kill points are the same for the same --seed.
let state = Number(args.seed) >>> 0;
function random() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const between = (low, high) => low + Math.floor(random() * (high - low + 1));

const log = (line) => {
  if (!args.json) process.stderr.write(`${line}\n`);
};
const scratch = mkdtempSync(join(tmpdir(), 'dlens-faults-'));
let folders = 0;
const folder = () => join(scratch, `run-${++folders}`);
// One thread per worker everywhere: torch's CPU results depend on the thread count, and the bytes of
// every run are compared with the reference run's.
const env = { ...process.env, OMP_NUM_THREADS: '1' };

log('building the tiny SD fixture ...');
const fixture = join(scratch, 'tiny-sd');
execFileSync(findPython(), ['-m', 'diffusion_lens.fixtures', 'sd', fixture], {
  cwd: join(root, 'python'),
  stdio: 'ignore',
});

/** 2 prompts x 6 layers x 4 seeds = 48 images in 24 batches of 2. */
const experiment = {
  model: { id: fixture },
  sampler: { steps: 4, size: 32 },
  lens: { layers: 'all' },
  seeds: [0, 1, 2, 3],
  prompts: ['a red apple', 'a blue cube'],
  runtime: { max_batch: 2 },
};
function config(runtime = {}) {
  return parseConfig({ ...experiment, runtime: { ...experiment.runtime, ...runtime } });
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

function readManifest(dir) {
  return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
}

/** The run folder's images: path -> sha256 of the bytes on disk; checks each against its journal line. */
function imagesOf(dir) {
  const journal = new Map();
  for (const line of readFileSync(join(dir, '.diffusion-lens', 'journal.jsonl'), 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const entry = JSON.parse(line);
    if (entry.key !== undefined) journal.set(entry.path, entry.sha256);
  }
  const images = new Map();
  let unrecorded = 0;
  for (const image of readManifest(dir).images) {
    const file = join(dir, image.path);
    const hash = existsSync(file) ? sha256(readFileSync(file)) : 'missing';
    if (journal.get(image.path) !== hash) unrecorded++;
    images.set(image.path, hash);
  }
  return { images, unrecorded };
}

log('reference run (no faults) ...');
const referenceDir = folder();
await runExperiment(config(), { outDir: referenceDir, env });
const reference = imagesOf(referenceDir).images;

const totals = {
  runs: 0,
  runs_complete: 0,
  images_expected: 0,
  images_lost: 0,
  images_duplicated: 0,
  images_differing: 0,
  images_unrecorded: 0,
};

/** Compares a finished run with the reference; `made` counts image events per path across its attempts. */
function check(dir, made, complete) {
  totals.runs++;
  if (complete) totals.runs_complete++;
  const { images, unrecorded } = imagesOf(dir);
  totals.images_expected += reference.size;
  totals.images_unrecorded += unrecorded;
  for (const [path, hash] of reference) {
    const got = images.get(path);
    if (got === undefined || got === 'missing') totals.images_lost++;
    else if (got !== hash) totals.images_differing++;
  }
  for (const times of made.values()) if (times > 1) totals.images_duplicated += times - 1;
}

/**
 * Runs the experiment with `runtime`, killing a worker `kills` times: each time a worker has loaded, it
 * (or, in a pool, a random one that has) is killed after a random number of progress events.
 */
async function killLoop(kills, runtime, signal = 'SIGKILL') {
  const outcomes = { kills: 0, detect_ms: [] };
  while (outcomes.kills < kills) {
    const dir = folder();
    const made = new Map();
    const pids = new Map(); // worker slot -> pid
    let countdown = between(1, 6);
    let killedAt = null;
    const result = await runExperiment(config(runtime), {
      outDir: dir,
      env,
      maxRestarts: kills + 2,
      onEvent: (event) => {
        if (event.type === 'image') made.set(event.path, (made.get(event.path) ?? 0) + 1);
        if (event.type === 'worker-ready' && event.pid) pids.set(event.worker ?? 0, event.pid);
        if (event.type === 'worker-lost' && killedAt !== null) {
          outcomes.detect_ms.push(performance.now() - killedAt);
          killedAt = null;
        }
        if (event.type !== 'progress' || outcomes.kills >= kills || killedAt !== null) return;
        if (--countdown > 0) return;
        const slots = [...pids.keys()];
        const pid = pids.get(slots[between(0, slots.length - 1)]);
        if (pid === undefined) return;
        try {
          process.kill(pid, signal);
          killedAt = performance.now();
          outcomes.kills++;
        } catch {
          // exited meanwhile
        }
        countdown = between(1, 6);
      },
    });
    check(dir, made, result.complete);
  }
  return outcomes;
}

/** The CLI stopped by `signal` after its first image, then run again; checks exit codes and the result. */
async function signalLoop(trials, signal) {
  const outcomes = { trials: 0, exit_codes: [], resumed_complete: 0 };
  const configFile = join(scratch, 'faults.json');
  writeFileSync(configFile, JSON.stringify(experiment));
  for (let trial = 0; trial < trials; trial++) {
    const dir = folder();
    const made = new Map();
    const count = (stdout) => {
      for (const line of stdout.split('\n')) {
        if (!line.includes('"type":"image"')) continue;
        const { path } = JSON.parse(line);
        made.set(path, (made.get(path) ?? 0) + 1);
      }
    };
    const wait = between(1, 10);
    const child = execa('node', [cli, 'run', configFile, '--out', dir, '--json'], { reject: false, env });
    let seen = 0;
    child.stdout.on('data', (chunk) => {
      seen += chunk.toString().split('"type":"image"').length - 1;
      if (seen >= wait) child.kill(signal);
    });
    const stopped = await child;
    count(stopped.stdout);
    outcomes.exit_codes.push(stopped.exitCode);
    const resumed = await execa('node', [cli, 'run', configFile, '--out', dir, '--json'], {
      reject: false,
      env,
    });
    count(resumed.stdout);
    const complete = resumed.exitCode === 0 && readManifest(dir).complete === true;
    if (complete) outcomes.resumed_complete++;
    outcomes.trials++;
    check(dir, made, complete);
  }
  return outcomes;
}

/** A TCP proxy to `target` whose traffic can be stopped (connections kept open, nothing passes). */
async function blackholeProxy(target) {
  const sockets = new Set();
  let open = true;
  const server = createServer((client) => {
    const upstream = tcpConnect(target, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const forward = (from, to) =>
      from.on('data', (data) => {
        if (open) to.write(data);
      });
    forward(client, upstream);
    forward(upstream, client);
    for (const socket of [client, upstream]) socket.on('error', () => undefined);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    cut: () => {
      open = false;
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** A remote worker (tcp, loopback) reached through a proxy that goes silent mid-run, beside a local one. */
async function networkLoop(trials) {
  const outcomes = { trials: 0, detect_ms: [], runs_complete_elsewhere: 0 };
  for (let trial = 0; trial < trials; trial++) {
    const port = 20000 + between(0, 20000);
    const remote = execa(
      findPython(),
      [join(root, 'python', 'lens_server.py'), '--bind', `tcp://127.0.0.1:${port}`, '--insecure'],
      { env, reject: false, stdin: 'pipe', stderr: 'ignore' },
    );
    await new Promise((resolve) => remote.stdout.once('data', resolve));
    const proxy = await blackholeProxy(port);
    const dir = folder();
    const made = new Map();
    let countdown = between(2, 8);
    let cutAt = null;
    try {
      const result = await runExperiment(
        config({ workers: 1, remote: [{ endpoint: `tcp://127.0.0.1:${proxy.port}` }] }),
        {
          outDir: dir,
          env,
          maxRestarts: 1,
          onEvent: (event) => {
            if (event.type === 'image') made.set(event.path, (made.get(event.path) ?? 0) + 1);
            if (event.type === 'worker-lost' && event.worker === 1 && cutAt !== null) {
              outcomes.detect_ms.push(performance.now() - cutAt);
              cutAt = null;
            }
            if (event.type === 'image' && cutAt === null && outcomes.detect_ms.length === trial) {
              if (--countdown === 0) {
                proxy.cut();
                cutAt = performance.now();
              }
            }
          },
        },
      );
      if (result.complete) outcomes.runs_complete_elsewhere++;
      check(dir, made, result.complete);
    } finally {
      proxy.close();
      remote.kill('SIGKILL');
      await remote;
    }
    outcomes.trials++;
  }
  return outcomes;
}

const started = performance.now();
const summary = (ms) =>
  ms.length === 0
    ? null
    : { max: Math.round(Math.max(...ms)), mean: Math.round(ms.reduce((a, b) => a + b) / ms.length) };

log(`local: ${count('kills')} SIGKILLs ...`);
const local = await killLoop(count('kills'), {});
log(`pool: ${count('kills')} SIGKILLs of one of two workers ...`);
const pool = await killLoop(count('kills'), { workers: 2 });
log(`hang: ${count('hangs')} SIGSTOPs ...`);
const hang = await killLoop(count('hangs'), {}, 'SIGSTOP');
log(`signal: ${count('signals')} SIGINTs and SIGTERMs of the CLI ...`);
const sigint = await signalLoop(count('signals'), 'SIGINT');
const sigterm = await signalLoop(count('signals'), 'SIGTERM');
log(`network: ${count('network')} remote workers cut off ...`);
const network = await networkLoop(count('network'));

const figures = {
  seed: Number(args.seed),
  seconds: Math.round((performance.now() - started) / 1000),
  node: process.versions.node,
  local: { kills: local.kills, detect_ms: summary(local.detect_ms) },
  pool: { kills: pool.kills, detect_ms: summary(pool.detect_ms) },
  hang: { stops: hang.kills, detect_ms: summary(hang.detect_ms) },
  sigint,
  sigterm,
  network: { ...network, detect_ms: summary(network.detect_ms) },
  ...totals,
};
rmSync(scratch, { recursive: true, force: true });
if (args.json) {
  process.stdout.write(`${JSON.stringify(figures)}\n`);
} else {
  const rows = [
    ['worker SIGKILLs survived (one worker)', local.kills],
    ['worker SIGKILLs survived (pool of two)', pool.kills],
    ['hung workers (SIGSTOP) caught and replaced', hang.kills],
    ['CLI SIGINTs, then resumed to completion', `${sigint.resumed_complete}/${sigint.trials}`],
    ['CLI SIGTERMs, then resumed to completion', `${sigterm.resumed_complete}/${sigterm.trials}`],
    [
      'remote workers cut off, run finished elsewhere',
      `${network.runs_complete_elsewhere}/${network.trials}`,
    ],
    ['runs checked / complete', `${totals.runs} / ${totals.runs_complete}`],
    ['images checked', totals.images_expected],
    ['images lost', totals.images_lost],
    ['images duplicated', totals.images_duplicated],
    ['images whose bytes differ from the fault-free run', totals.images_differing],
    ['images not matching their journal record', totals.images_unrecorded],
  ];
  process.stdout.write(
    `| fault | figure |\n|---|---|\n${rows.map(([a, b]) => `| ${a} | ${b} |`).join('\n')}\n`,
  );
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}
const bad =
  totals.images_lost + totals.images_duplicated + totals.images_differing + totals.images_unrecorded > 0 ||
  totals.runs !== totals.runs_complete;
process.exit(bad ? 1 : 0);
