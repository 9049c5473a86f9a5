// The worker's stderr tail in crash messages: what a terminal would show, not progress-bar fragments
// and escape codes.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { WorkerError } from '../src/bridge/errors.js';
import { cleanStderrLine, LineTail, spawnWorkerProcess } from '../src/bridge/process.js';

const ESC = '\u001b';

/** tqdm's output for a bar of `total` steps: '\r' + the bar at each update, '\n' when it closes. */
function tqdm(label: string, total: number, { colour = false, leave = true } = {}): string {
  let out = '';
  for (let i = 0; i <= total; i++) {
    const pct = Math.round((100 * i) / total);
    const filled = Math.round((10 * i) / total);
    const bar = `${'█'.repeat(filled)}${' '.repeat(10 - filled)}`;
    const text = `${label}: ${String(pct).padStart(3)}%|${colour ? `${ESC}[32m${bar}${ESC}[0m` : bar}| ${i}/${total} [00:0${i}<00:00, 1.5it/s]`;
    out += `\r${text}`;
  }
  // leave=False: tqdm clears its line ('\r', spaces, '\r') instead of ending it.
  return leave ? `${out}\n` : `${out}\r${' '.repeat(60)}\r`;
}

const TRACEBACK = [
  'Traceback (most recent call last):',
  '  File "/work/python/lens_server.py", line 88, in main',
  '    family = load_family(request)',
  'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB',
];

describe('cleanStderrLine', () => {
  it.each([
    ['plain text', 'plain text'],
    ['\r 10%|#  |\r 50%|#####|\r100%|##########| 10/10', '100%|##########| 10/10'],
    [`${ESC}[31mERROR${ESC}[0m: failed`, 'ERROR: failed'],
    [`${ESC}[1;33;40mwarn${ESC}[K ${ESC}[2K${ESC}[1A`, 'warn'],
    [`${ESC}]0;window title\u0007text ${ESC}]8;;https://x.y${ESC}\\link${ESC}]8;;${ESC}\\`, 'text link'],
    [`${ESC}7saved${ESC}8`, 'saved'],
    ['\tindented\ttabs  ', '\tindented\ttabs'],
    ['bell\u0007 and back\bspace', 'bell and backspace'],
    ['\r', ''],
    [`${ESC}[A${ESC}[2K\r`, ''],
    ['   ', ''],
  ])('%j → %j', (line, expected) => {
    expect(cleanStderrLine(line)).toBe(expected);
  });
});

describe('LineTail', () => {
  it('keeps the final state of tqdm bars, without colours, and the traceback', () => {
    const tail = new LineTail(50);
    tail.write('Loading pipeline components...\n');
    tail.write(tqdm('Loading checkpoint shards', 4, { colour: true }));
    tail.write(tqdm('Fetching 12 files', 3, { leave: false }));
    tail.write(`${TRACEBACK.join('\n')}\n`);
    expect(tail.snapshot()).toEqual([
      'Loading pipeline components...',
      'Loading checkpoint shards: 100%|██████████| 4/4 [00:04<00:00, 1.5it/s]',
      ...TRACEBACK,
    ]);
    expect(tail.format()).toBe(
      [
        '  Loading pipeline components...',
        '  Loading checkpoint shards: 100%|██████████| 4/4 [00:04<00:00, 1.5it/s]',
        ...TRACEBACK.map((line) => `  ${line}`),
      ].join('\n'),
    );
  });

  it('a cleared bar followed by text on the same line keeps the text', () => {
    const tail = new LineTail(10);
    tail.write(`${tqdm('steps', 2, { leave: false })}RuntimeError: boom\n`);
    expect(tail.snapshot()).toEqual(['RuntimeError: boom']);
  });

  it('takes text in any chunks: split escapes, split CRLF, split UTF-8 handled by the caller', () => {
    const text = `${tqdm('Downloading', 5, { colour: true })}${ESC}[33mwarning${ESC}[0m: slow\r\nlast line\n`;
    for (const size of [1, 2, 3, 7, 64]) {
      const tail = new LineTail(10);
      for (let i = 0; i < text.length; i += size) tail.write(text.slice(i, i + size));
      expect(tail.snapshot()).toEqual([
        'Downloading: 100%|██████████| 5/5 [00:05<00:00, 1.5it/s]',
        'warning: slow',
        'last line',
      ]);
    }
  });

  it('shows an unfinished bar in its latest state, and does not grow with it', () => {
    const tail = new LineTail(10);
    tail.write('starting\n');
    for (let i = 0; i < 20_000; i++) tail.write(`\r${ESC}[32mstep ${i}${ESC}[0m`);
    expect(tail.snapshot()).toEqual(['starting', 'step 19999']);
    expect((tail as unknown as { partial: string }).partial.length).toBeLessThan(100);
    tail.write('\n');
    expect(tail.snapshot()).toEqual(['starting', 'step 19999']);
  });

  it('drops blank and residue-only lines and keeps the last `capacity` lines', () => {
    const tail = new LineTail(3);
    expect(tail.format()).toBe('(no stderr output)');
    tail.write('\n\n   \n\r\n');
    tail.write(`${ESC}[2K\r\n`);
    expect(tail.format()).toBe('(no stderr output)');
    tail.write('one\ntwo\nthree\nfour\nfi');
    expect(tail.snapshot()).toEqual(['three', 'four', 'fi']);
    tail.write('ve\n');
    expect(tail.snapshot()).toEqual(['three', 'four', 'five']);
    tail.push('\r 50%\rsix');
    expect(tail.snapshot()).toEqual(['four', 'five', 'six']);
  });
});

describe('a worker that dies after a progress bar', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** A "python" that writes `text` to stderr in small chunks, then exits 1 without announcing itself. */
  function dyingPython(text: string): string {
    const dir = mkdtempSync(join(tmpdir(), 'dlens-stderr-'));
    dirs.push(dir);
    const script = join(dir, 'die.mjs');
    writeFileSync(
      script,
      `const text = ${JSON.stringify(text)};\n` +
        'const bytes = Buffer.from(text);\n' +
        'let i = 0;\n' +
        'const next = () => {\n' +
        '  if (i >= bytes.length) process.exit(1);\n' +
        '  process.stderr.write(bytes.subarray(i, i + 7), next);\n' +
        '  i += 7;\n' +
        '};\n' +
        'next();\n',
    );
    const python = join(dir, 'python');
    writeFileSync(python, `#!/bin/sh\nexec "${process.execPath}" "${script}"\n`);
    chmodSync(python, 0o755);
    return python;
  }

  it('quotes the last stderr lines as a terminal shows them; the log still gets every update', async () => {
    const text =
      `${tqdm('Loading checkpoint shards', 3, { colour: true })}` +
      `${tqdm('Fetching 4 files', 4, { leave: false })}` +
      `${ESC}[31m${TRACEBACK.join('\n')}${ESC}[0m\n` +
      'é, ü: the end\n';
    const logs: string[] = [];
    let error: unknown;
    try {
      await spawnWorkerProcess({
        python: dyingPython(text),
        startTimeoutMs: 20_000,
        onLog: (line) => logs.push(line),
        extraArgs: [],
      });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(WorkerError);
    const message = (error as WorkerError).message;
    const tail = message.slice(message.indexOf('Last stderr lines:\n') + 'Last stderr lines:\n'.length);
    expect(tail.split('\n').slice(0, 7)).toEqual([
      '  Loading checkpoint shards: 100%|██████████| 3/3 [00:03<00:00, 1.5it/s]',
      ...TRACEBACK.map((line) => `  ${line}`),
      '  é, ü: the end',
      expect.stringMatching(/^Fix: /),
    ]);
    expect(message).not.toContain(ESC);
    expect(message).not.toContain('\r');
    expect(message).not.toContain(' 33%');
    // The -v log is unchanged: one line per '\r' update, as they come.
    expect(logs.filter((line) => line.includes('Loading checkpoint shards'))).toHaveLength(4);
  });
});
