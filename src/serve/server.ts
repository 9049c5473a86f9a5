// `diffusion-lens serve`: the report of a run folder over a local HTTP server (node:http), with
// annotation mode. Bound to 127.0.0.1 and a free port unless told otherwise. It serves:
//
//   GET  /                      the report page (re-read from the run folders on every load)
//   GET  /runs/<i>/<path>       an image of run i (images and thumbnails only; see paths.ts)
//   GET  /api/next?run&annotator&from      the next image to annotate at or after position `from`
//   GET  /api/image?run&annotator&key      one image with the annotator's answers
//   GET  /api/progress?run&annotator       images done, answers given
//   GET  /api/annotators?run               who has annotated the run
//   POST /api/answer {annotator, run, key, question, answer: 0|1}   saved (synced) before the reply
//   POST /api/undo   {annotator, run}      takes the last answer back
//   GET  /api/export?run&annotator         the annotator's paper-layout CSV files
//   GET  /api/export.csv?run&annotator&name   one of them
//
// Requests must name this server in Host (a page on another site cannot reach it through a DNS name
// it controls); POSTs must be JSON and come from this server's own page (Origin), so another site
// cannot submit answers. Every response forbids sniffing, framing and referrers.
import { createReadStream } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { listAnnotators } from '../eval/index.js';
import { renderReport, reportResults, reportRuns } from '../render/report/index.js';
import {
  AnswerRequestSchema,
  type ReportData,
  type ReportResults,
  UndoRequestSchema,
} from '../render/report/model.js';
import type { RunFolder } from '../render/report/run-folder.js';
import { AnnotationService } from './annotation.js';
import { HttpError } from './errors.js';
import { annotatorCsvFiles } from './export.js';
import { resolveInside } from './paths.js';

export const DEFAULT_HOST = '127.0.0.1';
const MAX_BODY = 64 * 1024;

export interface ServeOptions {
  /** A run folder, or a study folder (its variants). */
  dir: string;
  /** Another run or study folder, shown beside it. */
  compare?: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** The results panel (default: reportResults of the runs, computed on each page load). */
  results?: (runs: readonly RunFolder[]) => Promise<ReportResults>;
}

export interface ReportServer {
  /** `http://127.0.0.1:PORT/` */
  url: string;
  host: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

/** Whether a host name or address is this machine's loopback. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function hostUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
}

interface State {
  runs: RunFolder[];
  /** Real paths of the run folders. */
  roots: string[];
  data: ReportData;
  html: string;
  csp: string;
}

const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cross-Origin-Opener-Policy': 'same-origin',
};

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, headers = {}): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type))
    throw new HttpError(415, 'send JSON (Content-Type: application/json)');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, 'request body too large');
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'the body is not JSON');
  }
}

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    throw new HttpError(
      400,
      parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
    );
  }
  return parsed.data;
}

const RunParam = z.coerce.number().int().nonnegative();

function params(query: URLSearchParams): { run: number; annotator: string } {
  const run = RunParam.safeParse(query.get('run') ?? '0');
  if (!run.success) throw new HttpError(400, 'run must be a run index');
  return { run: run.data, annotator: query.get('annotator') ?? '' };
}

/** Starts the server; resolves once it listens. */
export async function startReportServer(options: ServeOptions): Promise<ReportServer> {
  const host = options.host ?? DEFAULT_HOST;
  const results = options.results ?? reportResults;

  const load = async (): Promise<State> => {
    const { runs } = await reportRuns(options.dir, options.compare);
    const rendered = await renderReport(runs, { mode: 'serve', results: await results(runs) });
    return { runs, roots: await Promise.all(runs.map((run) => realpath(run.dir))), ...rendered };
  };
  let state = await load();
  let reloading: Promise<State> | null = null;
  const reload = (): Promise<State> => {
    reloading ??= load()
      .then((next) => {
        state = next;
        return next;
      })
      .finally(() => {
        reloading = null;
      });
    return reloading;
  };

  const service = new AnnotationService(() =>
    state.runs.map((run, i) => ({ dir: run.dir, run: state.data.runs[i] as ReportData['runs'][number] })),
  );
  let allowedHosts: Set<string> | null = null;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = req.url ?? '';
    if (!url.startsWith('/')) throw new HttpError(400, 'bad request target');
    if (allowedHosts && !allowedHosts.has((req.headers.host ?? '').toLowerCase())) {
      throw new HttpError(421, 'this server answers only to its own address');
    }
    const queryAt = url.indexOf('?');
    const path = queryAt < 0 ? url : url.slice(0, queryAt);
    const query = new URLSearchParams(queryAt < 0 ? '' : url.slice(queryAt + 1));
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';

    if (method === 'POST') {
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== `http://${req.headers.host}`) {
        throw new HttpError(403, 'answers are taken only from this server’s own page');
      }
      const site = req.headers['sec-fetch-site'];
      if (site !== undefined && site !== 'same-origin' && site !== 'none') {
        throw new HttpError(403, 'answers are taken only from this server’s own page');
      }
      if (path === '/api/answer') {
        sendJson(res, 200, await service.answer(parseBody(AnswerRequestSchema, await readBody(req))));
        return;
      }
      if (path === '/api/undo') {
        sendJson(res, 200, await service.undo(parseBody(UndoRequestSchema, await readBody(req))));
        return;
      }
      throw new HttpError(404, 'no such endpoint');
    }
    if (!get) throw new HttpError(405, 'method not allowed');

    if (path === '/' || path === '/index.html') {
      const current = await reload();
      send(res, 200, 'text/html; charset=utf-8', current.html, {
        'Content-Security-Policy': `${current.csp}; frame-ancestors 'none'`,
      });
      return;
    }
    const runMatch = /^\/runs\/(\d{1,6})\/(.*)$/.exec(path);
    if (runMatch) {
      const root = state.roots[Number(runMatch[1])];
      if (root === undefined) throw new HttpError(404, 'no such run');
      const found = await resolveInside(root, runMatch[2] ?? '');
      if (!found.ok) throw new HttpError(found.status, found.reason);
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        'Content-Type': found.type,
        'Content-Length': found.size,
        'Cache-Control': 'no-cache',
      });
      if (method === 'HEAD') {
        res.end();
        return;
      }
      await new Promise<void>((resolveStream, reject) => {
        const stream = createReadStream(found.file);
        stream.on('error', reject);
        res.on('close', () => {
          stream.destroy();
          resolveStream();
        });
        stream.pipe(res);
      });
      return;
    }
    if (path === '/api/next') {
      const { run, annotator } = params(query);
      sendJson(res, 200, await service.next(run, annotator, Number(query.get('from') ?? 0) || 0));
      return;
    }
    if (path === '/api/image') {
      const { run, annotator } = params(query);
      sendJson(res, 200, await service.image(run, annotator, query.get('key') ?? ''));
      return;
    }
    if (path === '/api/progress') {
      const { run, annotator } = params(query);
      sendJson(res, 200, await service.progress(run, annotator));
      return;
    }
    if (path === '/api/annotators') {
      const { run } = params(query);
      const folder = state.runs[run];
      if (!folder) throw new HttpError(400, `run ${run} is not in this report`);
      sendJson(res, 200, { annotators: await listAnnotators(folder.dir) });
      return;
    }
    if (path === '/api/export' || path === '/api/export.csv') {
      const { run, annotator } = params(query);
      await service.progress(run, annotator); // checks the run and the name
      const folder = state.runs[run] as RunFolder;
      const files = await annotatorCsvFiles(folder.dir, annotator);
      if (path === '/api/export') {
        sendJson(res, 200, {
          files: files.map((file) => ({
            name: file.name,
            question: file.question,
            stage: file.stage,
            images: file.images,
            url: `api/export.csv?${new URLSearchParams({ run: String(run), annotator, name: file.name })}`,
          })),
        });
        return;
      }
      const file = files.find((f) => f.name === query.get('name'));
      if (!file) throw new HttpError(404, 'no such export file');
      send(res, 200, 'text/csv; charset=utf-8', file.text, {
        'Content-Disposition': `attachment; filename="${file.name.replace(/[^A-Za-z0-9._-]/g, '_')}"`,
      });
      return;
    }
    throw new HttpError(404, 'not found');
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : 500;
      const message =
        error instanceof HttpError ? error.message : `internal error: ${(error as Error)?.message ?? error}`;
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(res, status, { error: message });
    });
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const { port } = server.address() as AddressInfo;
  if (isLoopback(host)) {
    allowedHosts = new Set(
      ['127.0.0.1', 'localhost', '[::1]', host.includes(':') ? `[${host}]` : host].map((h) => `${h}:${port}`),
    );
  }
  return {
    url: hostUrl(host, port),
    host,
    port,
    server,
    close: () =>
      new Promise<void>((resolveClose) => {
        server.close(() => resolveClose());
        server.closeAllConnections();
      }),
  };
}
