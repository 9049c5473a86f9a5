// The bridge's `score` call against the real Python worker, with the shapes scorer (no model to load):
// answers streamed per item, a skipped item, requests refused before they are sent, cancellation.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LensWorker, type ScoredMessage, type ScoreRequest, WorkerError } from '../src/bridge/index.js';

const SHAPES = { kind: 'shapes', model: null, revision: null, device: 'cpu', dtype: 'auto' } as const;

describe('LensWorker.score', () => {
  let worker: LensWorker;
  let white: Buffer;

  beforeAll(async () => {
    worker = await LensWorker.start();
    white = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#ffffff' } })
      .png()
      .toBuffer();
  });
  afterAll(async () => {
    await worker?.close();
  });

  it('streams each item its answers, then names the scorer, with no diffusion model loaded', async () => {
    const scored: ScoredMessage[] = [];
    const done = await worker.score(
      {
        scorer: SHAPES,
        items: [
          { png: white, prompt: 'three large green crosses', questions: [] },
          { png: white, prompt: 'a red apple', questions: [] },
        ],
      },
      { onScored: (message) => scored.push(message) },
    );
    expect(done).toMatchObject({ type: 'score_done', items: 2, scorer: { kind: 'shapes', model: null } });
    expect(scored.map((m) => m.item)).toEqual([0, 1]);
    // A blank image shows none of it.
    expect(scored[0]?.answers.map((a) => [a.question, a.answer])).toEqual([
      ['object_correct', 0],
      ['colour_correct', 0],
      ['shape_correct', 0],
      ['size_correct', 0],
      ['count_correct', 0],
      ['matches_prompt', 0],
    ]);
    expect(scored[1]).toMatchObject({
      answers: [],
      skipped: expect.stringContaining('not a prompt of the shapes'),
    });
  });

  it('refuses a malformed request before sending it, and the worker refuses what it cannot serve', async () => {
    const empty = { scorer: SHAPES, items: [] } as ScoreRequest;
    await expect(worker.score(empty)).rejects.toMatchObject({ code: 'bad_request', message: /items/ });
    const withModel = {
      scorer: { ...SHAPES, model: 'x' },
      items: [{ png: white, prompt: '', questions: [] }],
    };
    await expect(worker.score(withModel)).rejects.toMatchObject({
      code: 'bad_request',
      message: expect.stringContaining('the shapes scorer has no model'),
    });
  });

  it('rejects with cancelled when its signal is aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    const request = { scorer: SHAPES, items: [{ png: white, prompt: 'a red apple', questions: [] }] };
    const error = await worker.score(request, {}, controller.signal).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkerError);
    expect((error as WorkerError).code).toBe('cancelled');
    expect(await worker.ping()).toBeGreaterThan(0); // the worker goes on
  });
});
