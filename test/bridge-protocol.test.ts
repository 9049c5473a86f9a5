// Protocol v1 on both sides: the bridge's schemas, and the real worker's answers to bad frames.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeMessage } from '../src/bridge/codec.js';
import { connectWorker, LensWorker, PROTOCOL_VERSION } from '../src/bridge/index.js';
import {
  generateRequestSchema,
  incomingMessageSchema,
  loadRequestSchema,
  outgoingMessageSchema,
} from '../src/bridge/protocol.js';
import { fixtureLoad, smallJob } from './bridge/jobs.js';
import { RawClient } from './bridge/raw-client.js';
import { ifCapabilities, oneEncoder } from './capabilities.js';

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
    const pong = { v: 1, id: 'r1', type: 'pong', busy: false };
    expect(incomingMessageSchema.safeParse(pong).success).toBe(true);
    expect(incomingMessageSchema.safeParse({ ...pong, v: 2 }).success).toBe(false);
    expect(incomingMessageSchema.safeParse({ ...pong, type: 'pongg' }).success).toBe(false);
    expect(incomingMessageSchema.safeParse({ ...pong, id: 7 }).success).toBe(false);
    const error = { v: 1, id: 'r1', type: 'error', code: 'oom', message: 'x', traceback: null };
    expect(incomingMessageSchema.safeParse(error).success).toBe(true);
    expect(incomingMessageSchema.safeParse({ ...error, traceback: undefined }).success).toBe(false);
    expect(incomingMessageSchema.safeParse({ ...error, code: 'exploded' }).success).toBe(false);
  });

  it('keeps every field the worker sends, and refuses the ones it does not declare', () => {
    // What server.py sends besides the envelope: ack names the cancelled request, pong and heartbeat
    // say whether a job is running.
    const sent: Array<[Record<string, unknown>, string]> = [
      [{ v: 1, id: 'c1', type: 'ack', target: 'g1' }, 'target'],
      [{ v: 1, id: 'p1', type: 'pong', busy: true }, 'busy'],
      [{ v: 1, id: '', type: 'heartbeat', busy: false }, 'busy'],
    ];
    for (const [message, field] of sent) {
      expect(incomingMessageSchema.parse(message)).toEqual(message);
      const { [field]: _, ...without } = message;
      expect(incomingMessageSchema.safeParse(without).success).toBe(false);
    }
    const bye = { v: 1, id: 's1', type: 'bye' };
    expect(incomingMessageSchema.safeParse(bye).success).toBe(true);
    const extra = incomingMessageSchema.safeParse({ ...bye, surprise: 1 });
    expect(extra.success).toBe(false);
    if (!extra.success) expect(extra.error.issues[0]?.code).toBe('unrecognized_keys');
  });

  it('holds requests to what the worker accepts', () => {
    const job = smallJob();
    const refused: Array<[string, object]> = [
      ['no prompts', { prompts: [] }],
      ['no items', { items: [] }],
      ['a negative seed', { items: [{ prompt: 0, layer: 0, seed: -1 }] }],
      ['a negative layer', { items: [{ prompt: 0, layer: -1, seed: 0 }] }],
      ['a seed beyond the safe integers', { items: [{ prompt: 0, layer: 0, seed: 2 ** 53 }] }],
      ['a fractional seed', { items: [{ prompt: 0, layer: 0, seed: 0.5 }] }],
      ['an item with an extra key', { items: [{ prompt: 0, layer: 0, seed: 0, stage: 1 }] }],
      ['a height that is not a multiple of 8', { height: 30 }],
      ['a width that is not a multiple of 8', { width: 36 }],
      ['a negative guidance', { guidance: -0.5 }],
      ['a guidance over 100', { guidance: 100.5 }],
      ['an infinite guidance', { guidance: Number.POSITIVE_INFINITY }],
      ['a NaN guidance', { guidance: Number.NaN }],
      ['zero steps', { steps: 0 }],
      ['a fractional max_batch', { max_batch: 1.5 }],
      ['an unknown field', { seeds: [0] }],
    ];
    for (const [what, change] of refused) {
      expect(generateRequestSchema.safeParse({ ...job, ...change }).success, what).toBe(false);
    }
    for (const guidance of [0, 7.5, 100]) {
      expect(generateRequestSchema.safeParse({ ...job, guidance }).success).toBe(true);
    }
    // An empty prompt is a prompt (the unconditional image).
    expect(generateRequestSchema.safeParse({ ...job, prompts: ['', 'x'] }).success).toBe(true);
    const load = fixtureLoad('m');
    expect(loadRequestSchema.safeParse({ ...load, variant: '' }).success).toBe(false);
    expect(loadRequestSchema.safeParse({ ...load, dtype: 'fp64' }).success).toBe(false);
    expect(
      loadRequestSchema.safeParse({ ...load, stage2: { model: 'x', revision: null, v: 1 } }).success,
    ).toBe(false);
    const cancel = { v: 1, id: 'c1', type: 'cancel', target: 'g1' };
    expect(outgoingMessageSchema.safeParse(cancel).success).toBe(true);
    expect(outgoingMessageSchema.safeParse({ ...cancel, target: 7 }).success).toBe(false);
    expect(outgoingMessageSchema.safeParse({ v: 1, id: 'p', type: 'ping', busy: true }).success).toBe(false);
  });

  it('validates the stage II fields of load, loaded, generate and image', () => {
    const job = smallJob();
    const stage2 = {
      steps: 2,
      guidance: 4,
      height: 32,
      width: 32,
      scheduler: null,
      seed: null,
      family_options: { noise_level: 250 },
    };
    expect(generateRequestSchema.safeParse({ ...job, stage2 }).success).toBe(true);
    expect(generateRequestSchema.safeParse({ ...job, stage2: { ...stage2, seed: 7 } }).success).toBe(true);
    for (const bad of [
      { height: 30 },
      { family_options: null },
      { noise_level: 250 },
      { steps: 0 },
      { seed: -1 },
      { guidance: -1 },
      { guidance: 101 },
      { extra: 1 },
    ]) {
      expect(generateRequestSchema.safeParse({ ...job, stage2: { ...stage2, ...bad } }).success).toBe(false);
    }
    // Required on the wire: absent is not the same as null.
    const { stage2: _, ...withoutStage2 } = job;
    expect(generateRequestSchema.safeParse(withoutStage2).success).toBe(false);

    const load = fixtureLoad('m');
    const cleaning = { family_options: { clean_caption: true } };
    expect(loadRequestSchema.safeParse({ ...load, offload: 'encoder', ...cleaning }).success).toBe(true);
    // IF's options are the family's to check, not the protocol's.
    expect(loadRequestSchema.safeParse({ ...load, clean_caption: true }).success).toBe(false);
    expect(loadRequestSchema.safeParse({ ...load, stage2: { model: 'x/ii', revision: null } }).success).toBe(
      true,
    );
    expect(loadRequestSchema.safeParse({ ...load, offload: true }).success).toBe(false);
    // A single file's configuration and LoRA weights: required fields, a finite scale.
    const lora = [{ path: '/loras/style.safetensors', scale: 0.5 }];
    expect(loadRequestSchema.safeParse({ ...load, config: '/configs/sd', lora }).success).toBe(true);
    for (const bad of [
      { config: '' },
      { lora: [{ path: 'x' }] },
      { lora: [{ path: 'x', scale: Infinity }] },
    ]) {
      expect(loadRequestSchema.safeParse({ ...load, ...bad }).success).toBe(false);
    }
    const { lora: ___, ...withoutLora } = load;
    expect(loadRequestSchema.safeParse(withoutLora).success).toBe(false);
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
      capabilities: ifCapabilities,
      encoders: oneEncoder('T5EncoderModel', 24, 'encoder.final_layer_norm'),
      num_layers: 24,
      stock_layer: 24,
      pipeline_class: 'IFPipeline',
      revision: null,
      device: 'cuda',
      dtype: 'fp16',
      defaults: { steps: 100, guidance: 7, height: 64, width: 64, scheduler: 'DDPMScheduler' },
      lens: { norm: 'n', uncond: 'u', tokenization: 't' },
      family_options: { clean_caption: true },
      notices: [],
      config: null,
      lora: [],
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
    const capabilities = (change: object) => ({ ...loaded, capabilities: { ...ifCapabilities, ...change } });
    expect(incomingMessageSchema.safeParse(capabilities({ stages: 3 })).success).toBe(false);
    expect(incomingMessageSchema.safeParse(capabilities({ guidance: 'none' })).success).toBe(false);
    expect(incomingMessageSchema.safeParse(capabilities({ schedulers: [] })).success).toBe(false);
    expect(incomingMessageSchema.safeParse({ ...loaded, encoders: [] }).success).toBe(false);
    const reported = [{ path: '/l.safetensors', scale: 1, components: ['text_encoder', 'unet'] }];
    expect(incomingMessageSchema.safeParse({ ...loaded, config: '/c', lora: reported }).success).toBe(true);
    const none = [{ path: '/l.safetensors', scale: 1, components: [] }];
    expect(incomingMessageSchema.safeParse({ ...loaded, lora: none }).success).toBe(false);
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

  it.each([
    [{ height: 30 }, "generate: field 'height' must be a positive multiple of 8"],
    [{ guidance: 1e308 }, 'generate: guidance = 1e+308 is out of range 0..100'],
    [{ prompts: [] }, "generate: field 'prompts' must be a non-empty list, each a string"],
    [
      { items: [{ prompt: 0, layer: 0, seed: -1 }] },
      "generate: field 'items[0].seed' must be a non-negative integer",
    ],
    [{ seeds: [0] }, "generate: unknown field 'seeds'"],
  ])('refuses what the bridge refuses (%o), naming the field', async (change, message) => {
    const request = { v: 1, id: 'f1', type: 'generate', ...smallJob(), ...change };
    expect(outgoingMessageSchema.safeParse(request).success).toBe(false);
    const reply = await raw.exchange(request);
    expect(reply).toMatchObject({ id: 'f1', type: 'error', code: 'bad_message', message });
  });

  it('answers ping with pong and whether it is busy', async () => {
    expect(await raw.exchange({ v: 1, id: 'p0', type: 'ping' })).toEqual({
      v: 1,
      id: 'p0',
      type: 'pong',
      busy: false,
    });
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
