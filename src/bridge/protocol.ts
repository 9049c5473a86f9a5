// Worker protocol v1 as zod schemas: the one definition of the wire format. Every TS type here is
// inferred from a schema; python/diffusion_lens/protocol.schema.json is generated from them
// (`npm run protocol-schema`, see protocolJsonSchema below) and the Python worker validates what it
// receives against that file; its tests check everything it sends against it. docs/protocol.md
// describes the protocol; these schemas define it.
//
// Every message object is strict both ways: a field that is not declared here is an error, never
// dropped silently. Integers are JSON-safe (|n| <= 2^53 - 1, what a JS number holds exactly); numbers
// are finite (NaN and the infinities are refused).
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

/** msgpack `bin` decodes to a Buffer in Node, to `bytes` in Python. */
const binaryPng = z.custom<Uint8Array>((value) => value instanceof Uint8Array, {
  message: 'expected binary PNG bytes',
});
/** Normalises any Uint8Array view to a Buffer. */
const pngBytes = binaryPng.transform((bytes) =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
);

/** Where model weights wait while not in use: `encoder` keeps the text encoder on the CPU between
 *  encodings (frees ~9.5 GB for IF's T5-XXL); `model` is diffusers' model CPU offload. */
export const OFFLOAD_MODES = ['none', 'encoder', 'model'] as const;

/** The stage II (super-resolution) checkpoint of a two-stage family (IF); loaded without a text encoder. */
export const stage2LoadSchema = z.strictObject({
  model: z.string().min(1),
  revision: z.string().nullable(),
});

/**
 * A family's own settings, by name: checked by the family against the JSON Schema it reports
 * (`capabilities.options`), not by the protocol. Sampling options are named as the stock pipeline's
 * `__call__` arguments (IF's stage II `noise_level`).
 */
export const familyOptionsSchema = z.record(z.string(), z.unknown());

/** LoRA weights loaded into the pipeline: a local file (or a folder holding one), applied at `scale`
 *  (1 = as trained, 0 = not at all; any finite number). */
export const loraLoadSchema = z.strictObject({
  path: z.string().min(1),
  scale: z.number(),
});

export const loadRequestSchema = z.strictObject({
  model: z.string().min(1),
  family: z.string().nullable(),
  dtype: z.enum(['auto', 'fp32', 'fp16', 'bf16']),
  device: z.enum(['auto', 'cpu', 'cuda', 'mps']),
  revision: z.string().nullable(),
  offload: z.enum(OFFLOAD_MODES),
  // The second stage's checkpoint, for a family of two stages (capabilities.stages = 2).
  stage2: stage2LoadSchema.nullable(),
  allow_pickle: z.boolean(),
  // Weight files to read, e.g. 'fp16' (*.fp16.safetensors), for every stage; null = the default files.
  variant: z.string().min(1).nullable(),
  // The family's load options (capabilities.options.load), e.g. IF's clean_caption.
  family_options: familyOptionsSchema,
  // A single-file `model`'s pipeline configuration: a local diffusers folder or a hub id; null = the hub
  // repo its weights look like. Must be null for a folder or hub id.
  config: z.string().min(1).nullable(),
  // LoRA weights for the (stage I) pipeline, each its own adapter at its scale; [] = none.
  lora: z.array(loraLoadSchema),
  // torch.compile each stage's denoiser; it compiles during the first generate at each shape (reported
  // in that request's timings.compile_ms).
  compile: z.boolean(),
});

/** A generator seed: a non-negative integer (torch seeds are < 2^63; JSON-safe integers are far below). */
const seedSchema = z.int().nonnegative();

export const generateItemSchema = z.strictObject({
  prompt: z.int().nonnegative(),
  layer: z.int().nonnegative(),
  seed: seedSchema,
});

/** A height or width in pixels: the VAE and the UNets need multiples of 8. */
const imageSide = z.int().positive().multipleOf(8);

/** Classifier-free guidance scale. Beyond about 100 images saturate; 1e308 or infinity overflows the
 *  guided noise to NaN (an all-black image). The experiment config has the same bound. */
const guidanceSchema = z.number().min(0).max(100);

/** Stage II sampling of every item (a family of two stages); null in a generate request = stage I only. */
export const stage2GenerateSchema = z.strictObject({
  steps: z.int().positive(),
  guidance: guidanceSchema,
  height: imageSide,
  width: imageSide,
  scheduler: z.string().nullable(),
  // null = go on with each item's stage-I generator; an integer = that seed for every stage-II run.
  seed: seedSchema.nullable(),
  // The family's stage II options (capabilities.options.stage2), e.g. IF's noise_level.
  family_options: familyOptionsSchema,
});

/** Items per denoiser batch (halved on out-of-memory), or `auto`: the worker resolves it per request. */
export const maxBatchSchema = z.union([z.int().positive(), z.literal('auto')]);

export const generateRequestSchema = z
  .strictObject({
    // The distinct prompts of the request; a prompt may be "" (the unconditional image).
    prompts: z.array(z.string()).min(1),
    items: z.array(generateItemSchema).min(1),
    negative: z.string(),
    steps: z.int().positive(),
    guidance: guidanceSchema,
    height: imageSide,
    width: imageSide,
    scheduler: z.string().nullable(),
    uncond: z.enum(['final', 'same-layer']),
    noise: z.enum(['shared', 'per-layer']),
    // The sequence encoders that follow the layer (the others stay at their stock index); null = all.
    encoders: z.array(z.string().min(1)).min(1).nullable(),
    // The pooled vector (families with one): the whole encoder's, the same depth's, the empty prompt's.
    pooled: z.enum(['final', 'same-layer', 'empty']),
    // Ablations of the prompt's conditioning (the unconditional branch follows `uncond` alone).
    // Which positions of the sequence embedding follow the layer, the others taking the stock layer's:
    // all; the prompt's tokens through its end-of-sequence token; the padding after it; one position.
    tokens: z.union([z.enum(['all', 'prompt', 'padding']), z.int().nonnegative()]),
    // (1 - alpha) × layer a's conditioning + alpha × layer b's, for items whose layer is a (all must be).
    mix: z
      .strictObject({
        layers: z.tuple([z.int().nonnegative(), z.int().nonnegative()]),
        alpha: z.number().min(0).max(1),
      })
      .nullable(),
    // Tensors that replace the prompt's conditioning arguments of their names (`prompt_embeds`, ...): a
    // safetensors file the worker reads, with the sha256 of its bytes (the worker refuses other bytes).
    embeds: z
      .strictObject({ path: z.string().min(1), sha256: z.string().regex(/^[0-9a-f]{64}$/) })
      .nullable(),
    // Items per denoiser batch, or 'auto': the worker sizes its batches itself (docs/protocol.md).
    max_batch: maxBatchSchema,
    stage2: stage2GenerateSchema.nullable(),
    // The family's sampling options (capabilities.options.sample).
    family_options: familyOptionsSchema,
  })
  // Not in the JSON Schema (it cannot compare two fields): the worker answers it with bad_request.
  .refine((req) => req.items.every((item) => item.prompt < req.prompts.length), {
    message: 'every item.prompt must index `prompts`',
    path: ['items'],
  });

/** The automatic scorers the worker runs (`score`): CLIP similarity, a VQA model, the shapes world's
 *  ground-truth scorer. */
export const SCORER_KINDS = ['clip', 'vqa', 'shapes'] as const;

/** Which scorer answers, and where it runs. Loaded on first use and kept (a diffusion model stays loaded). */
export const scorerSpecSchema = z.strictObject({
  kind: z.enum(SCORER_KINDS),
  // clip: a CLIPModel with its processor; vqa: a BLIP VQA model (BlipForQuestionAnswering) with its
  // processor: a hub id or a local folder. null for shapes, which needs no model (and only there).
  model: z.string().min(1).nullable(),
  // The hub revision of `model`; null = the default branch (or a local folder).
  revision: z.string().min(1).nullable(),
  device: z.enum(['auto', 'cpu', 'cuda', 'mps']),
  dtype: z.enum(['auto', 'fp32', 'fp16', 'bf16']),
});

/** A question about an image. clip compares the image with `right` against the `contrast` texts (both
 *  needed); vqa asks `text`; shapes answers its own questions from the item's prompt (send none). */
export const scoreQuestionSchema = z.strictObject({
  id: z.string().min(1),
  text: z.string(),
  right: z.string().min(1).nullable(),
  contrast: z.array(z.string().min(1)),
});

export const scoreItemSchema = z.strictObject({
  png: binaryPng,
  // The prompt the image was made from (what shapes parses; the others ignore it).
  prompt: z.string(),
  questions: z.array(scoreQuestionSchema),
});

export const scoreRequestSchema = z.strictObject({
  scorer: scorerSpecSchema,
  items: z.array(scoreItemSchema).min(1),
});

export const helloMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('hello'),
  // Checked against PROTOCOL_VERSION by the worker (version_mismatch, not bad_message).
  protocol: z.int(),
  client: z.string(),
});
export const loadMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('load'),
  ...loadRequestSchema.shape,
});
export const generateMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('generate'),
  ...generateRequestSchema.shape,
});
export const scoreMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('score'),
  ...scoreRequestSchema.shape,
});
export const cancelMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('cancel'),
  // The id of a generate, score (or load) request; an unknown or finished one is acknowledged and ignored.
  target: z.string(),
});
export const pingMessageSchema = z.strictObject({ ...envelope, type: z.literal('ping') });
export const shutdownMessageSchema = z.strictObject({ ...envelope, type: z.literal('shutdown') });

export const outgoingMessageSchema = z.discriminatedUnion('type', [
  helloMessageSchema,
  loadMessageSchema,
  generateMessageSchema,
  scoreMessageSchema,
  cancelMessageSchema,
  pingMessageSchema,
  shutdownMessageSchema,
]);

// ---------------------------------------------------------------------------------------------
// Replies and streamed messages (worker → orchestrator).

/** The keyword that stands for msgpack `bin` in the JSON Schema, which has no binary type: the worker's
 *  validator (python/diffusion_lens/protocol.py) checks it as `bytes`; other validators ignore it. */
export const BINARY_KEYWORD = 'x-msgpack-bin';

/** A JSON Schema (draft 2020-12) object, as a family reports its options. */
const jsonSchemaObject = z.record(z.string(), z.unknown());

/** What a family can do, as the worker reports it (`ready.families`, `loaded.capabilities`); the
 *  orchestrator checks a run's settings against it instead of constants of its own. */
export const familyCapabilitiesSchema = z.strictObject({
  name: z.string(),
  /** model_index.json `_class_name`s the family loads (what `family: auto` detects). */
  pipeline_classes: z.array(z.string()),
  /** The most stages it runs: 2 = a second stage from its own checkpoint (IF's super-resolution). */
  stages: z.literal([1, 2]),
  /** `cfg`: classifier-free guidance with a negative branch; `distilled`: a guidance input, no negative. */
  guidance: z.enum(['cfg', 'distilled']),
  /** The scheduler names its stock pipelines run with ('default' = the checkpoint's own). */
  schedulers: z.array(z.string()).min(1),
  /** JSON Schemas of its own options: at load time, for sampling, for stage II. */
  options: z.strictObject({ load: jsonSchemaObject, sample: jsonSchemaObject, stage2: jsonSchemaObject }),
});

/** A text encoder of the loaded pipeline, as the lens reads it. */
export const encoderSchema = z.strictObject({
  /** The pipeline component, e.g. `text_encoder_2`. */
  name: z.string(),
  class_name: z.string(),
  /** Its depth: hidden states 0..layers. */
  layers: z.int().nonnegative(),
  /** The hidden state the stock pipeline's sequence embedding takes from it. */
  stock_index: z.int().nonnegative(),
  /** The hidden state each lens layer 0..L takes from it when it is lensed (`lens.encoders`). */
  indices: z.array(z.int().nonnegative()).min(1),
  /** The norm (a module path inside the encoder) that every state the lens takes has been through; null = none. */
  norm: z.string().nullable(),
  /** It gives the sequence embedding (so it can follow the layer). */
  sequence: z.boolean(),
  /** It gives (part of) the pooled vector. */
  pooled: z.boolean(),
  /** The hidden state the pooled vector is pooled from at each lens layer for `lens.pooled: same-layer`
   *  (its last one gives the stock vector); null when it gives no pooled vector. */
  pooled_indices: z.array(z.int().nonnegative()).min(1).nullable(),
});

export const readyMessageSchema = z.strictObject({
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
  families: z.array(familyCapabilitiesSchema),
  heartbeat_s: z.number().positive(),
});

export const loadedMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('loaded'),
  model: z.string(),
  family: z.string(),
  capabilities: familyCapabilitiesSchema,
  encoders: z.array(encoderSchema).min(1),
  /** L, the depth the lens's layer indices address (hidden states 0..L). */
  num_layers: z.int().nonnegative(),
  /** The layer the stock pipeline conditions on: L, or L - 1 where it takes the penultimate (SDXL). */
  stock_layer: z.int().nonnegative(),
  pipeline_class: z.string(),
  revision: z.string().nullable(),
  device: z.string(),
  dtype: z.string(),
  defaults: z.strictObject({
    steps: z.int().positive(),
    guidance: z.number().nonnegative(),
    height: z.int().positive(),
    width: z.int().positive(),
    scheduler: z.string(),
  }),
  // What the lens does, for the manifest; families may add keys (strings, kept, not stripped).
  lens: z.object({ norm: z.string(), uncond: z.string() }).catchall(z.string()),
  // The load options as resolved (IF: whether captions are cleaned); {} for a family with none.
  family_options: familyOptionsSchema,
  // What the user must be told (e.g. that caption cleaning is off).
  notices: z.array(z.string()),
  // The local diffusers folder a single-file model took its configuration from (for a hub repo, its
  // snapshot in the cache); null for a folder or hub id.
  config: z.string().nullable(),
  // The LoRA weights loaded, with the pipeline components each changed (e.g. unet, text_encoder).
  lora: z.array(loraLoadSchema.extend({ components: z.array(z.string()).min(1) })),
  stage2: z
    .strictObject({
      model: z.string(),
      pipeline_class: z.string(),
      revision: z.string().nullable(),
      dtype: z.string(),
      defaults: z.strictObject({
        steps: z.int().positive(),
        guidance: z.number().nonnegative(),
        height: z.int().positive(),
        width: z.int().positive(),
        scheduler: z.string(),
      }),
    })
    .nullable(),
});

export const progressMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('progress'),
  done_units: z.int().nonnegative(),
  total_units: z.int().nonnegative(),
  images_done: z.int().nonnegative(),
  images_total: z.int().nonnegative(),
  /** Items in the batch being denoised: items[images_done .. images_done + batch_items). */
  batch_items: z.int().nonnegative(),
});

export const imageMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('image'),
  item: z.int().nonnegative(),
  prompt: z.int().nonnegative(),
  layer: z.int().nonnegative(),
  seed: seedSchema,
  /** 1 = the base image; 2 = its stage II (super-resolution) image, same item. */
  stage: z.literal([1, 2]),
  png: pngBytes,
  width: z.int().positive(),
  height: z.int().positive(),
  elapsed_ms: z.number().nonnegative(),
});

/** A generate request's time by part: encode the prompts, denoise (the stock pipeline's loop, less its VAE
 *  decode and any compiling), decode (the VAE's; 0 without one), png (the wall time PNGs were being encoded,
 *  on threads beside the others: it overlaps them), compile (torch.compile compiling during this request;
 *  else 0). encode + denoise + decode + compile <= elapsed_ms, and png <= elapsed_ms. */
export const timingsSchema = z.strictObject({
  encode_ms: z.number().nonnegative(),
  denoise_ms: z.number().nonnegative(),
  decode_ms: z.number().nonnegative(),
  png_ms: z.number().nonnegative(),
  compile_ms: z.number().nonnegative(),
});

export const doneMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('done'),
  images: z.int().nonnegative(),
  elapsed_ms: z.number().nonnegative(),
  max_batch_used: z.int().nonnegative(),
  /** With `tokens` other than all: per prompt of the items, the positions that followed the layer and
   *  their tokens as the tokenizer writes them (a position past the prompt's end-of-sequence is null). */
  lensed_tokens: z.array(
    z.strictObject({
      prompt: z.int().nonnegative(),
      positions: z.array(z.int().nonnegative()),
      tokens: z.array(z.string().nullable()),
    }),
  ),
  /** The request's prompts that the encoder's token limit cut (indexes into `prompts`). */
  truncated: z.array(
    z.strictObject({
      prompt: z.int().nonnegative(),
      tokens: z.int().positive(),
      max_tokens: z.int().positive(),
    }),
  ),
  /** Where the request's time went, in milliseconds (docs/protocol.md, "Timings"). */
  timings: timingsSchema,
  /** What the user must be told about this request (e.g. that the VAE decoded in tiles). */
  notices: z.array(z.string()),
});

/** One question's answer: 1 = yes, 0 = no; `score` in 0..1 is how sure of yes (clip: the softmax
 *  probability of the right text; vqa: P(yes) / (P(yes) + P(no)) of the first answer token; shapes: 0 or
 *  1); `note` says what the user should know (vqa: an answer that was neither yes nor no). */
export const scoreAnswerSchema = z.strictObject({
  question: z.string().min(1),
  answer: z.literal([0, 1]),
  score: z.number().min(0).max(1),
  note: z.string().nullable(),
});

/** The answers for one item of a score request (`item` indexes its items), streamed as they are known. */
export const scoredMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('scored'),
  item: z.int().nonnegative(),
  answers: z.array(scoreAnswerSchema),
  // Why the item got no answers (shapes: its prompt is not one of the shapes world's); else null.
  skipped: z.string().nullable(),
});

/** The end of a score request: the scorer that answered, as loaded. */
export const scoreDoneMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('score_done'),
  items: z.int().nonnegative(),
  elapsed_ms: z.number().nonnegative(),
  scorer: z.strictObject({
    kind: z.enum(SCORER_KINDS),
    model: z.string().nullable(),
    // The model's resolved hub commit (null for a local folder or no model).
    revision: z.string().nullable(),
    // What the answers depend on besides the model: the scorer's rule version and the libraries'.
    version: z.string().min(1),
    device: z.string(),
    dtype: z.string(),
  }),
});

export const errorMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('error'),
  code: z.enum(PROTOCOL_ERROR_CODES),
  message: z.string(),
  traceback: z.string().nullable(),
});

/** The answer to `cancel`, naming the request it was for. */
export const ackMessageSchema = z.strictObject({ ...envelope, type: z.literal('ack'), target: z.string() });
/** `busy`: a load, generate or score request is being served. */
export const pongMessageSchema = z.strictObject({ ...envelope, type: z.literal('pong'), busy: z.boolean() });
export const byeMessageSchema = z.strictObject({ ...envelope, type: z.literal('bye') });
/** Unsolicited (id ""), every `ready.heartbeat_s` seconds; `busy` as in `pong`. */
export const heartbeatMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('heartbeat'),
  busy: z.boolean(),
});

export const incomingMessageSchema = z.discriminatedUnion('type', [
  readyMessageSchema,
  loadedMessageSchema,
  progressMessageSchema,
  imageMessageSchema,
  doneMessageSchema,
  scoredMessageSchema,
  scoreDoneMessageSchema,
  errorMessageSchema,
  ackMessageSchema,
  pongMessageSchema,
  byeMessageSchema,
  heartbeatMessageSchema,
]);

// The line the worker prints on stdout once its socket is bound.
export const listeningLineSchema = z.strictObject({
  event: z.literal('listening'),
  endpoint: z.string().min(1),
  pid: z.int().positive().optional(),
  protocol: z.int(),
});

// ---------------------------------------------------------------------------------------------
// The JSON Schema the Python worker loads (python/diffusion_lens/protocol.schema.json).

/** Where `npm run protocol-schema` writes protocolJsonSchema(), relative to the package root. */
export const PROTOCOL_SCHEMA_PATH = 'python/diffusion_lens/protocol.schema.json';

function messageSchemas(
  union: typeof outgoingMessageSchema | typeof incomingMessageSchema,
  io: 'input' | 'output',
): Record<string, unknown> {
  const schemas: Record<string, unknown> = {};
  for (const option of union.options) {
    schemas[option.shape.type.value] = z.toJSONSchema(option, {
      io,
      unrepresentable: ({ zodSchema, message }) => {
        if (zodSchema === binaryPng) {
          return {
            description: 'PNG bytes as msgpack bin (a Buffer in Node, bytes in Python)',
            contentMediaType: 'image/png',
            [BINARY_KEYWORD]: true,
          };
        }
        throw new Error(`the protocol schema cannot represent a field: ${message}`);
      },
    });
  }
  return schemas;
}

/**
 * The protocol as JSON Schemas (draft 2020-12), one per message type: `requests` are what the worker
 * receives (the bridge's parsed output), `replies` what it sends (the bridge's accepted input),
 * `listening` its start-up line. Generated, never edited: a test fails when the committed file differs.
 */
export function protocolJsonSchema(): Record<string, unknown> {
  return {
    $comment:
      'Generated from src/bridge/protocol.ts by `npm run protocol-schema`; do not edit. The zod schemas there define protocol v1, docs/protocol.md describes it.',
    protocol: PROTOCOL_VERSION,
    binary_keyword: BINARY_KEYWORD,
    requests: messageSchemas(outgoingMessageSchema, 'output'),
    replies: messageSchemas(incomingMessageSchema, 'input'),
    listening: z.toJSONSchema(listeningLineSchema),
  };
}

/** protocolJsonSchema() as the committed file holds it (2-space JSON, final newline). */
export function protocolJsonSchemaText(): string {
  return `${JSON.stringify(protocolJsonSchema(), null, 2)}\n`;
}

export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];
export type OffloadMode = (typeof OFFLOAD_MODES)[number];
export type Stage2Load = z.infer<typeof stage2LoadSchema>;
export type Stage2Generate = z.infer<typeof stage2GenerateSchema>;
export type FamilyOptions = z.infer<typeof familyOptionsSchema>;
export type FamilyCapabilities = z.infer<typeof familyCapabilitiesSchema>;
export type FamilyOptionsKind = keyof FamilyCapabilities['options'];
export type EncoderInfo = z.infer<typeof encoderSchema>;
export type LoadRequest = z.infer<typeof loadRequestSchema>;
export type GenerateItem = z.infer<typeof generateItemSchema>;
export type GenerateRequest = z.infer<typeof generateRequestSchema>;
export type ScorerKind = (typeof SCORER_KINDS)[number];
export type ScorerSpec = z.infer<typeof scorerSpecSchema>;
export type ScoreQuestion = z.infer<typeof scoreQuestionSchema>;
export type ScoreItem = z.infer<typeof scoreItemSchema>;
export type ScoreRequest = z.infer<typeof scoreRequestSchema>;
export type ScoreAnswer = z.infer<typeof scoreAnswerSchema>;
export type ScoredMessage = z.infer<typeof scoredMessageSchema>;
export type ScoreDoneMessage = z.infer<typeof scoreDoneMessageSchema>;
export type OutgoingMessage = z.infer<typeof outgoingMessageSchema>;
export type RequestType = OutgoingMessage['type'];
export type ReadyMessage = z.infer<typeof readyMessageSchema>;
export type LoadedMessage = z.infer<typeof loadedMessageSchema>;
export type LoadedStage2 = NonNullable<LoadedMessage['stage2']>;
export type ProgressMessage = z.infer<typeof progressMessageSchema>;
export type ImageMessage = z.infer<typeof imageMessageSchema>;
export type DoneMessage = z.infer<typeof doneMessageSchema>;
export type Timings = z.infer<typeof timingsSchema>;
export type MaxBatch = z.infer<typeof maxBatchSchema>;
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
