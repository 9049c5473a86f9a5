// `diffusion-lens worker [model options] [--bind ENDPOINT] [--keys DIR | --insecure]`: a worker kept warm in
// the foreground (and its model loaded) for `lens`/`run --worker ENDPOINT` to attach to, here or, with
// CURVE keys, from other hosts. Also the `--worker`/`--keys` options of `lens` and `run`.
import { existsSync, lstatSync, rmSync } from 'node:fs';
import { hostname, tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { findPython, KeysError, loadClientKeys, loadWorkerKeys, WorkerError } from '../bridge/index.js';
import { describeExit, type ExitInfo, spawnWorkerProcess, type WorkerProcess } from '../bridge/process.js';
import { unixSocketAnswers } from '../bridge/worker.js';
import { ConfigError } from '../config/index.js';
import { resolveInputs } from '../experiment/inputs.js';
import { LENS_OPTIONS, type LensOptionSpec, optionKey, optionLabel } from './lens-options.js';
import { optionHelp } from './option-help.js';
import { type LensCommandOptions, lensConfig } from './options.js';

/** The environment variables `lens` and `run` read the worker to attach to (and its keys) from. */
export const WORKER_ENV = 'DIFFUSION_LENS_WORKER';
export const KEYS_ENV = 'DIFFUSION_LENS_KEYS';

const ENDPOINT = /^(tcp|ipc):\/\/\S+$/;
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;
/** Time from spawn to the listening line (imports only: the model loads after it). */
const LISTEN_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 5_000;

/**
 * The default endpoint of `worker` (and of a bare `--worker`): an ipc socket private to this user,
 * in $XDG_RUNTIME_DIR when there is one, else in the temp folder with the user id in its name.
 */
export function defaultWorkerEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime && existsSync(runtime)) return `ipc://${join(runtime, 'diffusion-lens-worker.sock')}`;
  let user: string;
  try {
    user = String(userInfo().uid >= 0 ? userInfo().uid : userInfo().username);
  } catch {
    user = 'user';
  }
  return `ipc://${join(tmpdir(), `diffusion-lens-worker-${user}.sock`)}`;
}

/** Whether a tcp endpoint listens on every interface (then clients need the host's name). */
function attachEndpoint(endpoint: string): string {
  const match = /^tcp:\/\/(0\.0\.0\.0|\*|\[::\]|\[\*\]):(\d+)$/.exec(endpoint);
  return match ? `tcp://${hostname()}:${match[2]}` : endpoint;
}

// ---------------------------------------------------------------------------------------------------
// `lens` and `run`: --worker [ENDPOINT], --no-worker, --keys DIR.

/** What commander gives for the attach options. */
export interface AttachFlags {
  /** An endpoint; true for a bare --worker (the default endpoint); false for --no-worker. */
  worker?: string | boolean;
  keys?: string;
}

function endpointArg(value: string): string {
  if (!ENDPOINT.test(value)) {
    throw new InvalidArgumentError('must be a ZeroMQ endpoint such as tcp://gpu-host:5555 or ipc:///path');
  }
  return value;
}

/** Adds --worker [endpoint], --no-worker and --keys <dir> to a command that runs the lens. */
export function addAttachOptions(command: Command): Command {
  return command
    .addOption(
      new Option(
        '--worker [endpoint]',
        'use the running worker at ENDPOINT (`diffusion-lens worker`; alone: its default endpoint, ' +
          `${defaultWorkerEndpoint()}) instead of starting one (default: $${WORKER_ENV}, else start one)`,
      ).argParser(endpointArg),
    )
    .addOption(new Option('--no-worker', `start a worker of our own even if $${WORKER_ENV} is set`))
    .option(
      '--keys <dir>',
      `this client's CURVE keys for --worker: a folder with client.key_secret and worker.key ` +
        `(\`diffusion-lens keys\`) (default: $${KEYS_ENV}, else none)`,
    );
}

/**
 * The workers to attach to, from --worker/--keys or the environment; undefined for none (start a local
 * one). Checks the keys folder, so that a bad one fails before the run starts.
 */
export function remoteWorkers(
  flags: AttachFlags,
  env: NodeJS.ProcessEnv = process.env,
): { endpoint: string; keys?: string }[] | undefined {
  let endpoint: string | undefined;
  if (typeof flags.worker === 'string') endpoint = flags.worker;
  else if (flags.worker === true) endpoint = defaultWorkerEndpoint(env);
  else if (flags.worker === undefined && env[WORKER_ENV]) {
    endpoint = env[WORKER_ENV];
    if (!ENDPOINT.test(endpoint)) {
      throw new KeysError(
        `$${WORKER_ENV} is ${JSON.stringify(endpoint)}, not a ZeroMQ endpoint such as tcp://gpu-host:5555 ` +
          'or ipc:///path (unset it, or give --no-worker, to start a worker of our own)',
      );
    }
  }
  if (endpoint === undefined) {
    if (flags.keys !== undefined && flags.worker !== false) {
      throw new KeysError(
        `--keys is for a worker to attach to: give --worker ENDPOINT (or set $${WORKER_ENV}) too`,
      );
    }
    return undefined;
  }
  const keysDir = flags.keys ?? (env[KEYS_ENV] || undefined);
  if (keysDir === undefined) return [{ endpoint }];
  const keys = resolve(keysDir);
  loadClientKeys(keys);
  return [{ endpoint, keys }];
}

// ---------------------------------------------------------------------------------------------------
// `worker`

interface WorkerFlags extends Partial<LensCommandOptions> {
  bind?: string;
  keys?: string;
  insecure?: boolean;
  heartbeat?: number;
  json?: boolean;
  verbose?: boolean;
}

/** The `lens` options that say what to load: the model's, and stage II's model. */
const MODEL_OPTIONS: readonly LensOptionSpec[] = LENS_OPTIONS.filter(
  (spec) =>
    spec.path[0] === 'model' ||
    spec.path[0] === 'stages' ||
    (spec.path[0] === 'stage2' && (spec.path[1] === 'model' || spec.path[1] === 'revision')),
);

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number of seconds');
  return n;
}

/** The worker's load announcement, its stdout line after the listening one (`lens_server.py --load`). */
type LoadLine =
  | { event: 'loaded'; model?: string; family?: string; num_layers?: number; [key: string]: unknown }
  | { event: 'load_failed'; message?: string; [key: string]: unknown };

function parseLoadLine(line: string): LoadLine | null {
  try {
    const json = JSON.parse(line) as { event?: unknown };
    if (json && (json.event === 'loaded' || json.event === 'load_failed')) return json as LoadLine;
  } catch {
    // Not JSON: a stray print.
  }
  return null;
}

class UsageProblem extends Error {}

/** Checks the flags; returns lens_server.py's arguments (but --load) and the endpoint to bind. */
async function workerArgs(flags: WorkerFlags): Promise<{ bind: string; args: string[]; keysNote: string }> {
  const bind = flags.bind ?? defaultWorkerEndpoint();
  const args = ['--bind', bind];
  if (flags.keys !== undefined && flags.insecure) {
    throw new UsageProblem('--keys and --insecure exclude each other: choose one');
  }
  let keysNote = '';
  if (flags.keys !== undefined) {
    const keys = loadWorkerKeys(flags.keys);
    args.push('--keys', keys.dir);
    keysNote = `CURVE keys from ${keys.dir}, ${keys.authorized.length} authorized client${keys.authorized.length === 1 ? '' : 's'}`;
  } else if (bind.startsWith('tcp://')) {
    if (!flags.insecure) {
      throw new UsageProblem(
        `a tcp endpoint without keys lets anyone who reaches ${bind} use this machine: give --keys DIR ` +
          '(make them with `diffusion-lens keys DIR`), or --insecure on a network you trust',
      );
    }
    args.push('--insecure');
    keysNote = 'no keys (--insecure): anyone who reaches this port can use the worker';
  }
  if (flags.heartbeat !== undefined) args.push('--heartbeat', String(flags.heartbeat));
  if (bind.startsWith('ipc://')) {
    const path = bind.slice('ipc://'.length);
    if (!existsSync(dirname(resolve(path)))) {
      throw new UsageProblem(`cannot bind ${bind}: the folder ${dirname(resolve(path))} does not exist`);
    }
    if (existsSync(path) && (await unixSocketAnswers(path))) {
      throw new UsageProblem(
        `something listens on ${bind} already (another \`diffusion-lens worker\`?): stop it, or give ` +
          '--bind ENDPOINT',
      );
    }
  }
  return { bind, args, keysNote };
}

/** The load request of the model options, as a run would send it (resolveInputs); null without --model. */
async function loadRequest(flags: WorkerFlags): Promise<{ json: string; loading: string } | null> {
  const given = MODEL_OPTIONS.filter(
    (spec) => (flags as Record<string, unknown>)[optionKey(spec)] !== undefined,
  );
  if (flags.model === undefined) {
    if (given.length > 0) {
      throw new UsageProblem(
        `${given.map(optionLabel).join(', ')} say${given.length === 1 ? 's' : ''} how to load a model: give --model too`,
      );
    }
    return null;
  }
  let inputs: Awaited<ReturnType<typeof resolveInputs>>;
  try {
    const modelFlags = Object.fromEntries(
      MODEL_OPTIONS.map(optionKey).map((key) => [key, (flags as Record<string, unknown>)[key]]),
    );
    inputs = await resolveInputs(lensConfig('worker', modelFlags), {});
  } catch (error) {
    if (error instanceof ConfigError) throw new UsageProblem(error.message);
    throw error;
  }
  return { json: JSON.stringify(inputs.load), loading: inputs.loading };
}

/** Runs the worker in the foreground until a signal or its end; the exit code. */
async function runWorker(flags: WorkerFlags): Promise<number> {
  const json = flags.json === true;
  const out = (text: string): void => {
    if (!json) process.stdout.write(`${text}\n`);
  };
  const event = (value: Record<string, unknown>): void => {
    if (json) process.stdout.write(`${JSON.stringify(value)}\n`);
  };
  const note = (text: string): void => {
    process.stderr.write(`${text}\n`);
  };
  let setup: Awaited<ReturnType<typeof workerArgs>>;
  let load: Awaited<ReturnType<typeof loadRequest>>;
  try {
    setup = await workerArgs(flags);
    load = await loadRequest(flags);
  } catch (error) {
    if (!(error instanceof UsageProblem)) throw error;
    for (const line of error.message.split('\n')) note(`error: ${line}`);
    return EXIT_USAGE;
  }
  if (flags.insecure && setup.bind.startsWith('tcp://')) {
    note(`warning: ${setup.keysNote}`);
  }

  let loadLine: (line: LoadLine) => void = () => {};
  const loadAnnounced = new Promise<LoadLine>((resolvePromise) => {
    loadLine = resolvePromise;
  });
  const log = flags.verbose ? (line: string) => note(`worker: ${line}`) : () => {};
  const startedAt = performance.now();
  let worker: WorkerProcess;
  try {
    worker = await spawnWorkerProcess({
      python: findPython(),
      startTimeoutMs: LISTEN_TIMEOUT_MS,
      onLog: log,
      extraArgs: [...setup.args, ...(load ? ['--load', load.json] : [])],
      onStdout: (line) => {
        const parsed = parseLoadLine(line);
        if (parsed) loadLine(parsed);
        else log(`[stdout] ${line}`);
      },
    });
  } catch (error) {
    if (error instanceof WorkerError) {
      note(`error: ${error.message}`);
      return EXIT_ERROR;
    }
    throw error;
  }

  // Signals: the first stops the worker cleanly (it leaves its loop on SIGTERM), a second kills it.
  let stopping: NodeJS.Signals | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      worker.signal('SIGKILL');
      return;
    }
    stopping = signal;
    note(`${signal === 'SIGINT' ? 'Ctrl-C' : signal}: stopping the worker (again to kill it)`);
    worker.signal('SIGTERM');
    setTimeout(() => worker.signal('SIGKILL'), STOP_GRACE_MS).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const { endpoint } = worker.listening;
    const attach = attachEndpoint(endpoint);
    const keysFlag = flags.keys !== undefined ? ' --keys DIR' : '';
    // A bare --worker means the default endpoint.
    const workerFlag = endpoint === defaultWorkerEndpoint() ? '--worker' : `--worker ${attach}`;
    event({
      event: 'listening',
      endpoint,
      attach,
      pid: worker.pid ?? null,
      secure: flags.keys !== undefined,
    });
    out(
      `worker listening on ${endpoint} (pid ${worker.pid})${setup.keysNote ? `; ${setup.keysNote}` : ''}\n` +
        'Attach to it from other calls:\n' +
        `  diffusion-lens lens "a prompt" ${workerFlag}${keysFlag} --out runs/x\n` +
        `  export ${WORKER_ENV}=${attach}${flags.keys !== undefined ? ` ${KEYS_ENV}=DIR` : ''}\n` +
        (flags.keys !== undefined
          ? "  (DIR: a client's keys folder, with client.key_secret and worker.key)\n"
          : '') +
        'Ctrl-C stops it.',
    );

    const exited = worker.exited.then((info) => ({ exit: info }));
    if (load) {
      out(`loading ${load.loading} ...`);
      const outcome = await Promise.race([loadAnnounced.then((line) => ({ line })), exited]);
      if ('exit' in outcome) return ended(outcome.exit, stopping, worker, note, event);
      const { line } = outcome;
      const seconds = ((performance.now() - startedAt) / 1000).toFixed(1);
      if (line.event === 'load_failed') {
        event({ ...line });
        note(`error: the worker could not load ${load.loading}: ${line.message ?? '(no message)'}`);
        await worker.exited;
        return EXIT_ERROR;
      }
      event({ ...line, seconds: Number(seconds) });
      out(
        `model loaded: ${line.model ?? load.loading}` +
          `${line.family ? ` (family ${line.family}${line.num_layers === undefined ? '' : `, ${line.num_layers} encoder layers`})` : ''}` +
          ` ${seconds} s after start`,
      );
    }
    return ended((await exited).exit, stopping, worker, note, event);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (worker.hasExited) await removeStaleSocket(setup.bind);
  }
}

/** Removes the socket file of an ipc endpoint once no worker listens on it (ZeroMQ leaves it). */
async function removeStaleSocket(endpoint: string): Promise<void> {
  if (!endpoint.startsWith('ipc://')) return;
  const path = endpoint.slice('ipc://'.length);
  try {
    if (lstatSync(path).isSocket() && !(await unixSocketAnswers(path))) rmSync(path, { force: true });
  } catch {
    // Gone already.
  }
}

/** The exit code once the worker process ended: by our signal (0 / 130), or on its own (1). */
function ended(
  exit: ExitInfo,
  stopping: NodeJS.Signals | null,
  worker: WorkerProcess,
  note: (text: string) => void,
  event: (value: Record<string, unknown>) => void,
): number {
  event({ event: 'stopped', code: exit.code, signal: exit.signal, by: stopping });
  if (stopping) {
    note('worker stopped');
    return stopping === 'SIGINT' ? EXIT_INTERRUPTED : 0;
  }
  note(`error: the worker ${describeExit(exit)} unexpectedly.\nLast stderr lines:\n${worker.stderrTail()}`);
  return EXIT_ERROR;
}

/** Adds `worker` to the program; its exit code goes to `setExitCode`. */
export function addWorkerCommand(program: Command, setExitCode: (code: number) => void): void {
  const command = program
    .command('worker')
    .summary('keep a worker (and a model) warm for other calls to attach to')
    .description(
      'Start a worker in the foreground and keep it running, with the model of the options loaded, so ' +
        'that `lens`/`run --worker ENDPOINT` (or $DIFFUSION_LENS_WORKER) pay no Python start and no reload ' +
        'of the same model. On a GPU host: --bind tcp://0.0.0.0:PORT --keys DIR (`diffusion-lens keys DIR` ' +
        'makes them); clients then need --keys too. A tcp endpoint without keys is refused unless ' +
        '--insecure. Ctrl-C (exit 130) or SIGTERM (exit 0) stops the worker cleanly.',
    )
    .option(
      '--bind <endpoint>',
      `ZeroMQ endpoint to listen on: ipc:///path, or tcp://HOST:PORT (with --keys) (default: ${defaultWorkerEndpoint()})`,
    )
    .option(
      '--keys <dir>',
      "CURVE keys: DIR/worker.key_secret, and the clients' public keys in DIR/authorized/ (only they are answered) (default: none)",
    )
    .option('--insecure', 'allow a tcp endpoint without keys (anyone who reaches it can use the worker)')
    .addOption(
      new Option('--heartbeat <s>', 'seconds between heartbeats (default: 1)').argParser(positiveSeconds),
    )
    .option('--json', "print the worker's events as JSON lines on stdout (default: text)")
    .option('-v, --verbose', "show the worker's log lines (default: off)");
  for (const spec of MODEL_OPTIONS) {
    const help =
      spec.path.join('.') === 'model.id'
        ? 'the model to load at start, as `lens --model` takes it: a Hugging Face hub id, a local diffusers ' +
          'folder or a single-file checkpoint; the options below say how (default: none: each client loads ' +
          'what it needs, and a client asking for the loaded model again gets it at once)'
        : optionHelp(spec);
    const option = new Option(spec.flags, help);
    if (spec.repeatable) option.argParser((value: string, items?: string[]) => [...(items ?? []), value]);
    command.addOption(option);
    if (spec.negatable) {
      const label = optionLabel(spec);
      command.addOption(new Option(`--no-${label.slice(2)}`, `the opposite of ${label}: false`));
    }
  }
  command
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  diffusion-lens worker --model stabilityai/stable-diffusion-2-1\n' +
        '  diffusion-lens lens "a red apple" --worker --layers 3:23:4 --out runs/apple\n' +
        '  diffusion-lens worker --bind tcp://0.0.0.0:5555 --keys ~/.diffusion-lens/keys --model MODEL\n' +
        '  diffusion-lens lens "a red apple" --worker tcp://gpu-host:5555 --keys ~/keys --out runs/apple',
    )
    .action(async (flags: WorkerFlags) => {
      setExitCode(await runWorker(flags));
    });
}
