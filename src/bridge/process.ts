// Starts the Python worker as a managed subprocess and reads the endpoint it announces.

import { rmdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { execa } from 'execa';
import { WorkerError } from './errors.js';
import { signalGroup, trackGroup, untrackGroup } from './process-group.js';
import { describeIssues, type ListeningLine, listeningLineSchema } from './protocol.js';
import { findPython, pythonDir } from './python.js';

export interface ExitInfo {
  code: number | null;
  signal: string | null;
}

export interface SpawnOptions {
  python?: string;
  env?: NodeJS.ProcessEnv;
  startTimeoutMs: number;
  onLog: (line: string) => void;
  extraArgs: string[];
  /**
   * Receives the stdout lines after the listening line (`lens_server.py --load` announces the load on
   * one). Default: each is logged as a stray `[stdout]` line.
   */
  onStdout?: (line: string) => void;
}

const STDERR_TAIL_LINES = 50;

export const START_FIX =
  'Fix: run `npm install` (it sets up python/.venv), or set DIFFUSION_LENS_PYTHON to a Python that has ' +
  'python/requirements.txt installed. `npx diffusion-lens doctor` checks the set-up.';

/**
 * ANSI escape sequences: CSI (colours, cursor moves, erasing: `ESC [ 31 m`), OSC (titles, links:
 * `ESC ] ... BEL` or `ESC ] ... ESC \`), the 8-bit CSI, and the other two-byte escapes (`ESC 7`).
 */
const ESC = '\u001b';
const BEL = '\u0007';
const ANSI_ESCAPE = new RegExp(
  [
    `${ESC}\\[[0-?]*[ -/]*[@-~]`,
    `${ESC}\\][^${BEL}${ESC}]*(?:${BEL}|${ESC}\\\\)`,
    '\u009b[0-?]*[ -/]*[@-~]',
    `${ESC}[ -~]`,
  ].join('|'),
  'g',
);

/** Drops the control characters left over (backspaces, bells, lone escapes), tabs apart. */
function dropControls(text: string): string {
  let out = '';
  for (const ch of text) {
    const code = ch.charCodeAt(0);
    if (code === 9 || (code >= 32 && code !== 127)) out += ch;
  }
  return out;
}
/** An unfinished line (no '\n' yet) is cut to its last this many characters. */
const MAX_PARTIAL_LINE = 64 * 1024;

/**
 * One stderr line as a terminal would leave it, for error messages: ANSI escapes removed, and of a line
 * that carriage returns overwrite (progress bars such as tqdm's), only the text after the last '\r'.
 */
export function cleanStderrLine(line: string): string {
  const text = line.replace(ANSI_ESCAPE, '');
  return dropControls(text.slice(text.lastIndexOf('\r') + 1)).trimEnd();
}

/**
 * The last lines a stream produced, for error messages. Lines are cleaned (cleanStderrLine); those left
 * empty (progress-bar residue, blank lines) are dropped.
 */
export class LineTail {
  private readonly lines: string[] = [];
  private partial = '';
  constructor(private readonly capacity: number) {}

  /** Adds one complete line, which may hold '\r' updates and ANSI escapes. */
  push(line: string): void {
    const clean = cleanStderrLine(line);
    if (clean.trim() === '') return;
    this.lines.push(clean);
    if (this.lines.length > this.capacity) this.lines.shift();
  }

  /**
   * Adds text as the stream delivers it. Lines end at '\n' (or '\r\n') only: a lone '\r' is an update of
   * the same line, not a new one.
   */
  write(text: string): void {
    this.partial += text;
    for (let end = this.partial.indexOf('\n'); end >= 0; end = this.partial.indexOf('\n')) {
      const line = this.partial.slice(0, end);
      this.partial = this.partial.slice(end + 1);
      this.push(line.endsWith('\r') ? line.slice(0, -1) : line);
    }
    // What comes before a '\r' that does not end the text is overwritten: a bar that is never finished by
    // a newline does not grow. (A last '\r' may be the start of '\r\n'.)
    const overwritten =
      this.partial.length >= 2 ? this.partial.lastIndexOf('\r', this.partial.length - 2) : -1;
    if (overwritten >= 0) this.partial = this.partial.slice(overwritten + 1);
    if (this.partial.length > MAX_PARTIAL_LINE) this.partial = this.partial.slice(-MAX_PARTIAL_LINE);
  }

  /** The kept lines, oldest first, the unfinished one included. */
  snapshot(): string[] {
    const last = cleanStderrLine(this.partial.endsWith('\r') ? this.partial.slice(0, -1) : this.partial);
    const lines = last.trim() === '' ? [...this.lines] : [...this.lines, last];
    return lines.slice(-this.capacity);
  }

  format(): string {
    const lines = this.snapshot();
    return lines.length === 0 ? '(no stderr output)' : lines.map((line) => `  ${line}`).join('\n');
  }
}

/** A running worker process that has announced its endpoint. */
export class WorkerProcess {
  private exitInfo: ExitInfo | null = null;
  readonly exited: Promise<ExitInfo>;

  constructor(
    readonly python: string,
    private readonly subprocess: ReturnType<typeof execa>,
    readonly listening: ListeningLine,
    private readonly stderr: LineTail,
    exited: Promise<ExitInfo>,
  ) {
    this.exited = exited.then((info) => {
      this.exitInfo = info;
      return info;
    });
  }

  get pid(): number | undefined {
    return this.subprocess.pid;
  }

  get hasExited(): boolean {
    return this.exitInfo !== null;
  }

  /** The worker's last stderr lines, indented, for error messages. */
  stderrTail(): string {
    return this.stderr.format();
  }

  /** Signals the worker's whole process group (the worker and anything it started). */
  signal(signal: NodeJS.Signals): void {
    if (this.pid !== undefined && !this.hasExited) signalGroup(this.pid, signal);
  }

  /**
   * Stops the process and its pipes from keeping this event loop alive, so a forgotten worker does
   * not hang a script; the exit hook in process-group.ts still kills it when this process exits.
   */
  release(): void {
    this.subprocess.unref();
    for (const stream of [this.subprocess.stdin, this.subprocess.stdout, this.subprocess.stderr]) {
      (stream as { unref?: () => void } | null)?.unref?.();
    }
  }
}

/** Describes how a process ended, e.g. "exited with code 1" or "was killed by SIGKILL". */
export function describeExit(info: ExitInfo): string {
  if (info.signal) return `was killed by ${info.signal}`;
  return `exited with code ${info.code ?? 'unknown'}`;
}

/**
 * Spawns `python lens_server.py` in its own process group and waits for its `listening` line.
 * Throws WorkerError 'start_failed' (with the stderr tail and the fix) when that does not happen.
 */
export async function spawnWorkerProcess(opts: SpawnOptions): Promise<WorkerProcess> {
  const python = opts.python ?? findPython(opts.env ?? process.env);
  const stderr = new LineTail(STDERR_TAIL_LINES);
  const fail = (reason: string, cause?: unknown): WorkerError =>
    new WorkerError(
      'start_failed',
      `The diffusion-lens Python worker did not start: ${reason}.\n` +
        `Python: ${python}\nLast stderr lines:\n${stderr.format()}\n${START_FIX}`,
      { cause },
    );

  let subprocess: ReturnType<typeof execa>;
  try {
    subprocess = execa(python, [join(pythonDir, 'lens_server.py'), ...opts.extraArgs], {
      cwd: pythonDir,
      env: opts.env,
      // Own process group: Ctrl-C in a terminal reaches only us, and we close the worker cleanly.
      detached: true,
      // Kept open: the worker exits when its stdin hits EOF, i.e. when we die, even by SIGKILL.
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'pipe',
      buffer: false,
      reject: false,
      cleanup: false,
    });
  } catch (error) {
    throw fail(`could not run ${python}: ${(error as Error).message}`, error);
  }

  // A killed worker cannot remove its private ipc folder; we do, once its endpoint is known.
  let privateSocket: string | null = null;
  const removePrivateSocket = (): void => {
    if (privateSocket) removeSocketAndFolder(privateSocket);
  };
  const pid = subprocess.pid;
  if (pid !== undefined) trackGroup(pid, removePrivateSocket);
  let spawnError: string | null = null;
  const exited: Promise<ExitInfo> = subprocess.then(
    (result) => {
      if (pid !== undefined) untrackGroup(pid);
      if (result.signal !== undefined) removePrivateSocket();
      if (result.failed && result.exitCode === undefined && result.signal === undefined) {
        spawnError = result.originalMessage ?? result.shortMessage ?? 'unknown error';
      }
      return { code: result.exitCode ?? null, signal: result.signal ?? null };
    },
    (error: unknown) => {
      if (pid !== undefined) untrackGroup(pid);
      spawnError = (error as Error).message;
      return { code: null, signal: null };
    },
  );

  // The log gets each line as it comes (a progress bar's every update); the tail, for error messages,
  // reads the raw text, so that it knows a '\r' update from a new line.
  followLines(subprocess.stderr, (line) => opts.onLog(line));
  followText(subprocess.stderr, (text) => stderr.write(text));
  const firstStdoutLine = new Promise<string>((resolve) => {
    let first = true;
    followLines(subprocess.stdout, (line) => {
      if (first) {
        first = false;
        resolve(line);
      } else if (opts.onStdout) {
        opts.onStdout(line);
      } else {
        // The protocol keeps stdout for the one listening line; anything else is a stray print.
        opts.onLog(`[stdout] ${line}`);
      }
    });
  });

  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), opts.startTimeoutMs);
  });
  const outcome = await Promise.race([firstStdoutLine, exited, timedOut]);
  clearTimeout(timer);

  const killAndFail = async (reason: string): Promise<never> => {
    if (pid !== undefined) signalGroup(pid, 'SIGKILL');
    await exited;
    throw fail(reason);
  };

  if (outcome === 'timeout') {
    return killAndFail(`no endpoint line on stdout within ${Math.round(opts.startTimeoutMs / 1000)} s`);
  }
  if (typeof outcome !== 'string') {
    if (spawnError !== null) throw fail(`could not run ${python}: ${spawnError}`);
    throw fail(`it ${describeExit(outcome)} before announcing its endpoint`);
  }
  const listening = parseListeningLine(outcome);
  if (typeof listening === 'string') return killAndFail(listening);
  privateSocket = privateSocketPath(listening.endpoint, opts.extraArgs);
  return new WorkerProcess(python, subprocess, listening, stderr, exited);
}

function parseListeningLine(line: string): ListeningLine | string {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return `its first stdout line is not the JSON listening line: ${JSON.stringify(line.slice(0, 200))}`;
  }
  const parsed = listeningLineSchema.safeParse(json);
  if (!parsed.success) return `its listening line is malformed (${describeIssues(parsed.error)}): ${line}`;
  return parsed.data;
}

/**
 * The socket file of the worker's default endpoint (an ipc socket in a `dlens-*` temp folder of its
 * own), or null for an endpoint the user chose with --bind: that one is not ours to delete.
 */
function privateSocketPath(endpoint: string, extraArgs: string[]): string | null {
  if (extraArgs.some((arg) => arg === '--bind' || arg.startsWith('--bind='))) return null;
  if (!endpoint.startsWith('ipc://')) return null;
  const socket = endpoint.slice('ipc://'.length);
  return basename(dirname(socket)).startsWith('dlens-') ? socket : null;
}

/** Removes the socket, then its folder only if that is now empty. Synchronous: runs at exit too. */
function removeSocketAndFolder(socket: string): void {
  try {
    rmSync(socket, { force: true });
    rmdirSync(dirname(socket));
  } catch {
    // Already gone, or the folder holds something else: leave it.
  }
}

function followText(stream: Readable | null, onText: (text: string) => void): void {
  if (!stream) return;
  const decoder = new StringDecoder('utf8');
  stream.on('data', (chunk: Buffer | string) =>
    onText(typeof chunk === 'string' ? chunk : decoder.write(chunk)),
  );
  stream.on('end', () => onText(decoder.end()));
}

function followLines(stream: Readable | null, onLine: (line: string) => void): void {
  if (!stream) return;
  createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on('line', onLine);
}
