// Worker protocol v1 (docs/protocol.md) as zod schemas. Every type here is inferred from a schema, so
// the wire format is written down exactly once.
import { z } from 'zod';

export const PROTOCOL_VERSION = 1;

/** Error codes the worker may send (docs/protocol.md, "Errors"). */
export const PROTOCOL_ERROR_CODES = [
  'bad_message',
  'version_mismatch',
  'not_loaded',
  'load_failed',
  'bad_request',
  'cancelled',
  'oom',
  'internal',
] as const;

// ---------------------------------------------------------------------------------------------
// Requests (orchestrator → worker). The `*RequestSchema`s hold a request's own fields; the
// `*MessageSchema`s add the envelope and are what goes on the wire.

const envelope = { v: z.literal(PROTOCOL_VERSION), id: z.string() };

/** Where model weights wait while not in use: `encoder` keeps the text encoder on the CPU between
 *  encodings (frees ~9.5 GB for IF's T5-XXL); `model` is diffusers' model CPU offload. */
export const OFFLOAD_MODES = ['none', 'encoder', 'model'] as const;

/** The stage II (super-resolution) checkpoint of a two-stage family (IF); loaded without a text encoder. */
export const stage2LoadSchema = z.object({
  model: z.string().min(1),
  revision: z.string().nullable(),
});

export const loadRequestSchema = z.object({
  model: z.string().min(1),
  family: z.string().nullable(),
  dtype: z.enum(['auto', 'fp32', 'fp16', 'bf16']),
  device: z.enum(['auto', 'cpu', 'cuda', 'mps']),
  revision: z.string().nullable(),
  offload: z.enum(OFFLOAD_MODES),
  // IF's caption cleaning; null = on when its packages are installed.
  clean_caption: z.boolean().nullable(),
  stage2: stage2LoadSchema.nullable(),
  allow_pickle: z.boolean(),
  // Weight files to read, e.g. 'fp16' (*.fp16.safetensors), for every stage; null = the default files.
  variant: z.string().min(1).nullable(),
});

export const generateItemSchema = z.object({
  prompt: z.int().nonnegative(),
  layer: z.int().nonnegative(),
  seed: z.int(),
});

const imageSide = z.int().positive().multipleOf(8);

/** Stage II sampling of every item (IF); null in a generate request = stage I only. */
export const stage2GenerateSchema = z.object({
  steps: z.int().positive(),
  guidance: z.number().min(0).max(100),
  height: imageSide,
  width: imageSide,
  noise_level: z.int().nonnegative(),
  scheduler: z.string().nullable(),
  // null = go on with each item's stage-I generator; an integer = that seed for every stage-II run.
  seed: z.int().nonnegative().nullable(),
});

export const generateRequestSchema = z
  .object({
    prompts: z.array(z.string()),
    items: z.array(generateItemSchema),
    negative: z.string(),
    steps: z.int().positive(),
    guidance: z.number().min(0).max(100),
    height: z.int().positive(),
    width: z.int().positive(),
    scheduler: z.string().nullable(),
    uncond: z.enum(['final', 'same-layer']),
    noise: z.enum(['shared', 'per-layer']),
    max_batch: z.int().positive(),
    stage2: stage2GenerateSchema.nullable(),
  })
  .refine((req) => req.items.every((item) => item.prompt < req.prompts.length), {
    message: 'every item.prompt must index `prompts`',
    path: ['items'],
  });

export const helloMessageSchema = z.object({
  ...envelope,
  type: z.literal('hello'),
  protocol: z.int(),
  client: z.string(),
});
export const loadMessageSchema = z.object({
  ...envelope,
  type: z.literal('load'),
  ...loadRequestSchema.shape,
});
export const generateMessageSchema = z.object({
  ...envelope,
  type: z.literal('generate'),
  ...generateRequestSchema.shape,
});
export const cancelMessageSchema = z.object({ ...envelope, type: z.literal('cancel'), target: z.string() });
export const pingMessageSchema = z.object({ ...envelope, type: z.literal('ping') });
export const shutdownMessageSchema = z.object({ ...envelope, type: z.literal('shutdown') });

export const outgoingMessageSchema = z.discriminatedUnion('type', [
  helloMessageSchema,
  loadMessageSchema,
  generateMessageSchema,
  cancelMessageSchema,
  pingMessageSchema,
  shutdownMessageSchema,
]);

// ---------------------------------------------------------------------------------------------
// Replies and streamed messages (worker → orchestrator).

/** msgpack `bin` decodes to a Buffer in Node; normalise any other Uint8Array view to one. */
const pngBytes = z
  .custom<Uint8Array>((value) => value instanceof Uint8Array, { message: 'expected binary PNG bytes' })
  .transform((bytes) =>
    Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  );

export const readyMessageSchema = z.object({
  ...envelope,
  type: z.literal('ready'),
  // Checked against PROTOCOL_VERSION by the bridge (a clear error beats a schema failure).
  protocol: z.int(),
  worker: z.string(),
  python: z.string(),
  torch: z.string(),
  diffusers: z.string(),
  transformers: z.string(),
  device: z.enum(['cuda', 'mps', 'cpu']),
  families: z.array(z.string()),
  schedulers: z.array(z.string()),
  heartbeat_s: z.number().positive(),
});

export const loadedMessageSchema = z.object({
  ...envelope,
  type: z.literal('loaded'),
  model: z.string(),
  family: z.string(),
  pipeline_class: z.string(),
  revision: z.string().nullable(),
  num_layers: z.int().nonnegative(),
  device: z.string(),
  dtype: z.string(),
  defaults: z.object({
    steps: z.int(),
    guidance: z.number(),
    height: z.int(),
    width: z.int(),
    scheduler: z.string(),
  }),
  // What the lens does, for the manifest; families may add keys (kept, not stripped).
  lens: z.looseObject({ norm: z.string(), uncond: z.string() }),
  // Resolved caption cleaning; null for families that have none (sd).
  clean_caption: z.boolean().nullable(),
  // What the user must be told (e.g. that caption cleaning is off).
  notices: z.array(z.string()),
  stage2: z
    .object({
      model: z.string(),
      pipeline_class: z.string(),
      revision: z.string().nullable(),
      dtype: z.string(),
      defaults: z.object({
        steps: z.int(),
        guidance: z.number(),
        height: z.int(),
        width: z.int(),
        noise_level: z.int(),
        scheduler: z.string(),
      }),
    })
    .nullable(),
});

export const progressMessageSchema = z.object({
  ...envelope,
  type: z.literal('progress'),
  done_units: z.int().nonnegative(),
  total_units: z.int().nonnegative(),
  images_done: z.int().nonnegative(),
  images_total: z.int().nonnegative(),
  /** Items in the batch being denoised: items[images_done .. images_done + batch_items). */
  batch_items: z.int().nonnegative(),
});

export const imageMessageSchema = z.object({
  ...envelope,
  type: z.literal('image'),
  item: z.int().nonnegative(),
  prompt: z.int().nonnegative(),
  layer: z.int().nonnegative(),
  seed: z.int(),
  /** 1 = the base image; 2 = its stage II (super-resolution) image, same item. */
  stage: z.union([z.literal(1), z.literal(2)]),
  png: pngBytes,
  width: z.int().positive(),
  height: z.int().positive(),
  elapsed_ms: z.number(),
});

export const doneMessageSchema = z.object({
  ...envelope,
  type: z.literal('done'),
  images: z.int().nonnegative(),
  elapsed_ms: z.number(),
  max_batch_used: z.int(),
  /** The request's prompts that the encoder's token limit cut (indexes into `prompts`). */
  truncated: z.array(
    z.object({ prompt: z.int().nonnegative(), tokens: z.int().positive(), max_tokens: z.int().positive() }),
  ),
});

export const errorMessageSchema = z.object({
  ...envelope,
  type: z.literal('error'),
  code: z.string(),
  message: z.string(),
  traceback: z.string().nullable(),
});

export const ackMessageSchema = z.object({ ...envelope, type: z.literal('ack') });
export const pongMessageSchema = z.object({ ...envelope, type: z.literal('pong') });
export const byeMessageSchema = z.object({ ...envelope, type: z.literal('bye') });
export const heartbeatMessageSchema = z.object({ ...envelope, type: z.literal('heartbeat') });

export const incomingMessageSchema = z.discriminatedUnion('type', [
  readyMessageSchema,
  loadedMessageSchema,
  progressMessageSchema,
  imageMessageSchema,
  doneMessageSchema,
  errorMessageSchema,
  ackMessageSchema,
  pongMessageSchema,
  byeMessageSchema,
  heartbeatMessageSchema,
]);

// The line the worker prints on stdout once its socket is bound.
export const listeningLineSchema = z.object({
  event: z.literal('listening'),
  endpoint: z.string().min(1),
  pid: z.int().optional(),
  protocol: z.int(),
});

export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];
export type OffloadMode = (typeof OFFLOAD_MODES)[number];
export type Stage2Load = z.infer<typeof stage2LoadSchema>;
export type Stage2Generate = z.infer<typeof stage2GenerateSchema>;
export type LoadRequest = z.infer<typeof loadRequestSchema>;
export type GenerateItem = z.infer<typeof generateItemSchema>;
export type GenerateRequest = z.infer<typeof generateRequestSchema>;
export type OutgoingMessage = z.infer<typeof outgoingMessageSchema>;
export type RequestType = OutgoingMessage['type'];
export type ReadyMessage = z.infer<typeof readyMessageSchema>;
export type LoadedMessage = z.infer<typeof loadedMessageSchema>;
export type LoadedStage2 = NonNullable<LoadedMessage['stage2']>;
export type ProgressMessage = z.infer<typeof progressMessageSchema>;
export type ImageMessage = z.infer<typeof imageMessageSchema>;
export type DoneMessage = z.infer<typeof doneMessageSchema>;
export type ErrorMessage = z.infer<typeof errorMessageSchema>;
export type IncomingMessage = z.infer<typeof incomingMessageSchema>;
export type IncomingType = IncomingMessage['type'];
export type ListeningLine = z.infer<typeof listeningLineSchema>;

/** "items.0.layer: expected int" style summary of a zod failure, naming each field. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(message)'}: ${issue.message}`)
    .join('; ');
}
