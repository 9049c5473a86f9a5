// `diffusion-lens serve` without a browser: the server refuses every path outside the run folder (raw
// requests: '..', encoded traversal, absolute paths, a symlink out, the folder's own state), answers only
// to its own Host and takes answers only from its own page, and its annotation API appends every answer
// in order, takes answers back and exports them in the paper's layout.
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAnnotations } from '../src/eval/index.js';
import type { NextImage, Progress, UndoResponse } from '../src/render/report/index.js';
import { type ReportServer, startReportServer } from '../src/serve/index.js';
import { writeFakeRun } from './report-fixtures.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-serve-');
let server: ReportServer;
let runDir = '';
let secret = '';

/** Sends a request exactly as written (no client normalises its path); the status and body. */
function raw(request: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(server.port, '127.0.0.1');
    let data = '';
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1');
    });
    socket.on('end', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4) });
    });
    socket.on('error', reject);
    socket.write(request);
  });
}

const get = (target: string, host = `127.0.0.1:${server.port}`) =>
  raw(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);

async function api<T>(path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  const response = await fetch(new URL(path, server.url), {
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? headers : { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${JSON.stringify(json)}`);
  return json as T;
}

beforeAll(async () => {
  const base = tempDir();
  runDir = join(base, 'run');
  mkdirSync(runDir);
  await writeFakeRun(runDir, {
    prompts: ['a cat on a mat', 'a dog'],
    layers: [0, 2, 4],
    seeds: [0, 1],
    questions: [
      [
        { id: 'first_object', text: 'Is there a cat?' },
        { id: 'relation', text: 'Is the cat on the mat?' },
      ],
      [{ id: 'animal_correct', text: 'Is it a dog?' }],
    ],
  });
  secret = join(base, 'secret.png');
  writeFileSync(secret, 'not for the browser');
  symlinkSync(secret, join(runDir, 'images', 'link-out.png'));
  symlinkSync(base, join(runDir, 'images', 'dir-out'));
  server = await startReportServer({
    dir: runDir,
    results: async () => ({ plots: [], tables: [], note: null }),
  });
});

afterAll(async () => {
  await server?.close();
});

describe('serve: paths', () => {
  it('listens on 127.0.0.1 on a free port and serves the page and the images', async () => {
    expect(server.url).toBe(`http://127.0.0.1:${server.port}/`);
    const page = await fetch(server.url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(await page.text()).toContain('"mode":"serve"');
    const manifest = JSON.parse(readFileSync(join(runDir, 'manifest.json'), 'utf8'));
    const image = await fetch(new URL(`runs/0/${manifest.images[0].path}`, server.url));
    expect(image.status).toBe(200);
    expect(image.headers.get('content-type')).toBe('image/png');
    expect(image.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it('refuses every path outside the run folder', async () => {
    const refused = [
      '/runs/0/../../etc/passwd',
      '/runs/0/images/../../secret.png',
      '/runs/0/%2e%2e/secret.png',
      '/runs/0/%2E%2E%2Fsecret.png',
      '/runs/0/images%2f..%2f..%2fsecret.png',
      '/runs/0/..%5csecret.png',
      '/runs/0//etc/passwd.png',
      '/runs/0/%2Fetc%2Fpasswd.png',
      '/runs/0/images/link-out.png',
      '/runs/0/images/dir-out/secret.png',
      '/runs/0/manifest.json',
      '/runs/0/annotations/alice.jsonl',
      '/runs/0/.diffusion-lens/journal.jsonl',
      '/runs/0/%00.png',
      '/runs/0/%zz.png',
    ];
    for (const target of refused) {
      const { status, body } = await get(target);
      expect([403, 404], target).toContain(status);
      expect(body, target).not.toContain('not for the browser');
    }
    for (const target of [
      '//etc/passwd',
      '/etc/passwd',
      '/runs/1/x.png',
      '/runs/x/y.png',
      '/../../etc/passwd',
    ]) {
      expect((await get(target)).status, target).toBe(404);
    }
    // An absolute-form target is not a path of this server.
    expect((await get('http://127.0.0.1/etc/passwd')).status).toBe(400);
  });

  it('answers only to its own address', async () => {
    expect((await get('/', 'evil.example:80')).status).toBe(421);
    expect((await get('/', `localhost:${server.port}`)).status).toBe(200);
  });

  it('takes answers only as JSON from its own page', async () => {
    const body = JSON.stringify({ annotator: 'mallory', run: 0, key: 'x', question: 'q', answer: 1 });
    const post = (headers: string) =>
      raw(
        `POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\n${headers}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
    expect((await post('Content-Type: text/plain\r\n')).status).toBe(415);
    expect((await post('Content-Type: application/json\r\nOrigin: http://evil.example\r\n')).status).toBe(
      403,
    );
    expect((await post('Content-Type: application/json\r\nSec-Fetch-Site: cross-site\r\n')).status).toBe(403);
    expect((await readAnnotations(runDir, 'mallory')).history).toHaveLength(0);
  });
});

describe('serve on the command line', () => {
  it('prints its address, serves, and stops on Ctrl-C', async () => {
    const cli = join(import.meta.dirname, '..', 'dist', 'cli.js');
    const child = execa('node', [cli, 'serve', runDir], { reject: false });
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout?.on('data', (chunk: Buffer) => {
        const match = /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(chunk.toString());
        if (match?.[1]) resolve(match[1]);
      });
      child.once('exit', () => reject(new Error('serve exited')));
    });
    expect((await fetch(url)).status).toBe(200);
    child.kill('SIGINT');
    const result = await child;
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
  });

  it('warns when it listens beyond this machine', async () => {
    const cli = join(import.meta.dirname, '..', 'dist', 'cli.js');
    const child = execa('node', [cli, 'serve', runDir, '--host', '0.0.0.0'], { reject: false });
    const warning = await new Promise<string>((resolve) => {
      child.stderr?.on('data', (chunk: Buffer) => resolve(chunk.toString()));
    });
    expect(warning).toMatch(/^warning: listening on 0\.0\.0\.0, not this machine's loopback/);
    child.kill('SIGINT');
    expect((await child).exitCode).toBe(0);
    const bad = await execa('node', [cli, 'serve', runDir, '--port', 'http'], { reject: false });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/--port.*must be a port number/);
  });
});

describe('serve: annotation API', () => {
  it('walks the images, saves every answer in order, takes the last back, and exports them', async () => {
    const first = await api<NextImage>('api/next?run=0&annotator=alice&from=0');
    expect(first.position).toBe(0);
    expect(first.progress).toEqual({
      annotator: 'alice',
      images: 12,
      images_done: 0,
      questions: 18,
      answered: 0,
    });
    const manifest = JSON.parse(readFileSync(join(runDir, 'manifest.json'), 'utf8'));
    const image = manifest.images.find((i: { key: string }) => i.key === first.key);
    expect(image.prompt).toBe('a cat on a mat'); // prompt by prompt

    // Answers sent all at once land in the order sent, none lost.
    const answers = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1] as const;
    await Promise.all(
      answers.map((answer, i) =>
        api('api/answer', {
          annotator: 'alice',
          run: 0,
          key: first.key,
          question: i % 2 ? 'relation' : 'first_object',
          answer,
        }),
      ),
    );
    const stored = await readAnnotations(runDir, 'alice');
    expect(stored.history.map((a) => a.answer)).toEqual([...answers]);
    expect(stored.answers.map((a) => [a.question, a.answer])).toEqual([
      ['first_object', 1],
      ['relation', 1],
    ]);
    expect(stored.answers[0]).toMatchObject({
      key: first.key,
      prompt: image.prompt,
      layer: image.layer,
      seed: image.seed,
    });

    const next = await api<NextImage>('api/next?run=0&annotator=alice&from=0');
    expect(next.position).toBe(1); // the first image has all its answers
    expect(next.progress).toMatchObject({ images_done: 1, answered: 2 });

    const undo = await api<UndoResponse>('api/undo', { annotator: 'alice', run: 0 });
    expect(undo.undone).toEqual({ key: first.key, question: 'relation', position: 0 });
    expect(undo.progress).toMatchObject({ images_done: 0, answered: 1 });
    const again = await api<NextImage>(`api/image?run=0&annotator=alice&key=${first.key}`);
    expect(again.answers).toEqual({ first_object: 1 });

    const { files } = await api<{ files: { name: string; url: string; question: string }[] }>(
      'api/export?run=0&annotator=alice',
    );
    expect(files.map((f) => f.question)).toEqual(['first_object']);
    const csv = await (await fetch(new URL(files[0]?.url ?? '', server.url))).text();
    expect(csv.trim().split('\n')).toEqual([`prompt,${image.layer},seed`, `a cat on a mat,1,${image.seed}`]);
  });

  it('refuses bad names, unknown images and questions the prompt does not ask', async () => {
    const first = await api<NextImage>('api/next?run=0&annotator=bob&from=0');
    await expect(api('api/next?run=0&annotator=../../x&from=0')).rejects.toThrow(/400.*annotator name/);
    await expect(
      api('api/answer', { annotator: 'bob', run: 0, key: 'nope', question: 'relation', answer: 1 }),
    ).rejects.toThrow(/400.*no such image/);
    await expect(
      api('api/answer', { annotator: 'bob', run: 0, key: first.key, question: 'animal_correct', answer: 1 }),
    ).rejects.toThrow(/400.*does not ask/);
    await expect(
      api('api/answer', { annotator: 'bob', run: 3, key: first.key, question: 'x', answer: 1 }),
    ).rejects.toThrow(/400.*run 3/);
    await expect(
      api('api/answer', { annotator: 'bob', run: 0, key: first.key, question: 'relation', answer: 2 }),
    ).rejects.toThrow(/400/);
    const progress = await api<Progress>('api/progress?run=0&annotator=bob');
    expect(progress.answered).toBe(0);
  });
});
