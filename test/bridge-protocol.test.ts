// Protocol v1 on both sides: the bridge's schemas, and the real worker's answers to bad frames.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeMessage } from '../src/bridge/codec.js';
import { connectWorker, LensWorker, PROTOCOL_VERSION } from '../src/bridge/index.js';
import { generateRequestSchema, incomingMessageSchema, loadRequestSchema } from '../src/bridge/protocol.js';
import { fixtureLoad, smallJob } from './bridge/jobs.js';
import { RawClient } from './bridge/raw-client.js';

describe('protocol schemas', () => {
  it('decodes an image message with its PNG as a Buffer', () => {
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47]);
    const parsed = incomingMessageSchema.parse({
      v: 1,
      id: 'r3',
      type: 'image',
      item: 0,
      prompt: 0,
      layer: 4,
      seed: 1,
      stage: 2,
      png,
      width: 32,
      height: 32,
      elapsed_ms: 12.5,
    });
    expect(parsed.type).toBe('image');
    if (parsed.type === 'image') expect(Buffer.isBuffer(parsed.png)).toBe(true);
  });

  it('rejects incoming messages with a wrong version, type or field', () => {
    const pong = { v: 1, id: 'r1', type: 'pong' };
    expect(incomingMessageSchema.safeParse(pong).success).toBe(true);
    expect(incomingMessageSchema.safeParse({ ...pong, v: 2 }).success).toBe(false);
    expect(incomingMessageSchema.safeParse({ ...pong, type: 'pongg' }).success).toBe(false);
    expect(incomingMessageSchema.safeParse({ ...pong, id: 7 }).success).toBe(false);
    const error = { v: 1, id: 'r1', type: 'error', code: 'oom', message: 'x', traceback: null };
    expect(incomingMessageSchema.safeParse(error).success).toBe(true);
    expect(incomingMessageSchema.safeParse({ ...error, traceback: undefined }).success).toBe(false);
  });

  it('validates the stage II fields of load, loaded, generate and image', () => {
    const job = smallJob();
    const stage2 = {
      steps: 2,
      guidance: 4,
      height: 32,
      width: 32,
      noise_level: 250,
      scheduler: null,
      seed: null,
    };
    expect(generateRequestSchema.safeParse({ ...job, stage2 }).success).toBe(true);
    expect(generateRequestSchema.safeParse({ ...job, stage2: { ...stage2, seed: 7 } }).success).toBe(true);
    for (const bad of [{ height: 30 }, { noise_level: -1 }, { steps: 0 }, { seed: -1 }, { guidance: -1 }]) {
      expect(generateRequestSchema.safeParse({ ...job, stage2: { ...stage2, ...bad } }).success).toBe(false);
    }
    // Required on the wire: absent is not the same as null.
    const { stage2: _, ...withoutStage2 } = job;
    expect(generateRequestSchema.safeParse(withoutStage2).success).toBe(false);

    const load = fixtureLoad('m');
    expect(loadRequestSchema.safeParse({ ...load, offload: 'encoder', clean_caption: true }).success).toBe(
      true,
    );
    expect(loadRequestSchema.safeParse({ ...load, stage2: { model: 'x/ii', revision: null } }).success).toBe(
      true,
    );
    expect(loadRequestSchema.safeParse({ ...load, offload: true }).success).toBe(false);
    expect(loadRequestSchema.safeParse({ ...load, stage2: { model: '', revision: null } }).success).toBe(
      false,
    );

    const image = { v: 1, id: 'r3', type: 'image', item: 0, prompt: 0, layer: 0, seed: 0 };
    const rest = { png: new Uint8Array([1]), width: 16, height: 16, elapsed_ms: 1 };
    expect(incomingMessageSchema.safeParse({ ...image, ...rest, stage: 1 }).success).toBe(true);
    expect(incomingMessageSchema.safeParse({ ...image, ...rest, stage: 3 }).success).toBe(false);
    expect(incomingMessageSchema.safeParse({ ...image, ...rest }).success).toBe(false);

    const loaded = {
      v: 1,
      id: 'r2',
      type: 'loaded',
      model: 'm',
      family: 'if',
      pipeline_class: 'IFPipeline',
      revision: null,
      num_layers: 24,
      device: 'cuda',
      dtype: 'fp16',
      defaults: { steps: 100, guidance: 7, height: 64, width: 64, scheduler: 'DDPMScheduler' },
      lens: { norm: 'n', uncond: 'u', tokenization: 't' },
      clean_caption: null,
      notices: [],
      stage2: {
        model: 'x/ii',
        pipeline_class: 'IFSuperResolutionPipeline',
        revision: null,
        dtype: 'fp16',
        defaults: {
          steps: 50,
          guidance: 4,
          height: 256,
          width: 256,
          noise_level: 250,
          scheduler: 'DDPMScheduler',
        },
      },
    };
    const parsed = incomingMessageSchema.safeParse(loaded);
    expect(parsed.success).toBe(true);
    if (parsed.success && parsed.data.type === 'loaded') expect(parsed.data.lens.tokenization).toBe('t');
    expect(incomingMessageSchema.safeParse({ ...loaded, stage2: null, notices: ['x'] }).success).toBe(true);
    const { notices: __, ...withoutNotices } = loaded;
    expect(incomingMessageSchema.safeParse(withoutNotices).success).toBe(false);
  });

  it('checks that every item indexes the prompts', () => {
    const job = smallJob();
    expect(generateRequestSchema.safeParse(job).success).toBe(true);
    const result = generateRequestSchema.safeParse({ ...job, items: [{ prompt: 2, layer: 0, seed: 0 }] });
    expect(result.success).toBe(false);
  });
});

describe('the worker answers malformed frames with errors and keeps serving', () => {
  let worker: LensWorker;
  let raw: RawClient;

  beforeAll(async () => {
    worker = await LensWorker.start();
    raw = new RawClient(worker.endpoint);
  });
  afterAll(async () => {
    raw?.close();
    await worker?.close();
  });

  it('refuses hello with another protocol version', async () => {
    const reply = await raw.exchange({ v: 1, id: 'h2', type: 'hello', protocol: 2, client: 'test' });
    expect(reply).toMatchObject({ v: 1, id: 'h2', type: 'error', code: 'version_mismatch' });
  });

  it('refuses an envelope with another version', async () => {
    const reply = await raw.exchange({ v: 2, id: 'v2', type: 'ping' });
    expect(reply).toMatchObject({ id: 'v2', type: 'error', code: 'version_mismatch' });
  });

  it.each([
    ['not msgpack', Buffer.from([0xc1]), ''],
    ['a msgpack array', encodeMessage([1, 2, 3]), ''],
    ['a map without id', encodeMessage({ v: 1, type: 'ping' }), ''],
    ['an unknown type', encodeMessage({ v: 1, id: 'u1', type: 'dance' }), 'u1'],
    ['a missing field', encodeMessage({ v: 1, id: 'm1', type: 'cancel' }), 'm1'],
    [
      'a wrong field type',
      encodeMessage({ v: 1, id: 'w1', type: 'generate', ...smallJob(), items: 'x' }),
      'w1',
    ],
  ])('answers %s with bad_message', async (_, frame, id) => {
    await raw.sendFrame(frame);
    const reply = await raw.next();
    expect(reply).toMatchObject({ v: PROTOCOL_VERSION, id, type: 'error', code: 'bad_message' });
    expect(reply.message).toMatch(/\S/);
  });

  it('still answers pings afterwards, raw and through the bridge', async () => {
    expect(await raw.exchange({ v: 1, id: 'p1', type: 'ping' })).toMatchObject({ id: 'p1', type: 'pong' });
    expect(await worker.ping()).toBeGreaterThanOrEqual(0);
  });

  it('lets a second client attach with connectWorker, and detach without stopping the worker', async () => {
    const attached = await connectWorker(worker.endpoint);
    expect(attached.pid).toBeUndefined();
    expect(attached.info.protocol).toBe(PROTOCOL_VERSION);
    expect(await attached.ping()).toBeGreaterThanOrEqual(0);
    await attached.close();
    expect(await attached.exited).toEqual({ code: null, signal: null });
    expect(await worker.ping()).toBeGreaterThanOrEqual(0);
  });
});
