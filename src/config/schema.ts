// The experiment config: defined once here with zod; the TS types are inferred from it.
// A field's `.describe()` text is its description in the JSON Schema and the help of its `lens` option
// (src/cli/lens-options.ts); where its default is not a `.default()` value, the text ends `; default: ...`.
import { z } from 'zod';
import { ConfigError, listIndexes, nearest, repeats, timesListed } from './errors.js';
import { type LayerRange, parseLayerSpec, resolveLayers } from './layers.js';

/** Where weights wait while unused: see ModelSchema's `offload`. Same values as the protocol's. */
export const OFFLOAD_MODES = ['none', 'encoder', 'model'] as const;
/** 1 = the base image; 2 = the second stage (IF's super-resolution) of it. */
export const STAGES = [1, 2] as const;
export const DTYPES = ['auto', 'fp32', 'fp16', 'bf16'] as const;
export const DEVICES = ['auto', 'cpu', 'cuda', 'mps'] as const;
export const UNCOND_MODES = ['final', 'same-layer'] as const;
export const NOISE_MODES = ['shared', 'per-layer'] as const;
export const POOLED_MODES = ['final', 'same-layer', 'empty'] as const;
/** `lens.tokens` besides one position: every position, the prompt's tokens, the padding after them. */
export const TOKEN_MODES = ['all', 'prompt', 'padding'] as const;

const MAX_SEED = 2 ** 32 - 1;
/** Classifier-free guidance scales beyond this make black or saturated images (the worker has the same bound). */
export const MAX_GUIDANCE = 100;
/** Bounds of `grid.min_cell`, the smallest side of a grid cell in pixels. */
export const GRID_MIN_CELL = { min: 16, max: 2048, default: 128 } as const;

/**
 * Reports each value that a list holds more than once, as `3 is listed twice` on the list, located at the
 * value's second occurrence (params.at, used by parseConfig for the YAML line).
 */
function refuseDuplicates<T>(show: (value: T) => string, where?: (indexes: number[]) => string) {
  return (list: readonly T[], ctx: z.core.$RefinementCtx<T[]>): void => {
    for (const [value, at] of repeats(list)) {
      ctx.addIssue({
        code: 'custom',
        message: `${show(value)} is listed ${timesListed(at.length)}${where ? ` (${where(at)})` : ''}`,
        params: { at: [at[1]] },
      });
    }
  };
}

/**
 * A family's own options by name (the worker reports which each family takes, with their types and
 * defaults, and the run checks them against that before loading); `diffusion-lens doctor` lists them.
 */
const FamilyOptionsSchema = z.record(z.string(), z.unknown());

/**
 * Config fields that are named shortcuts for a family option (IF's): `model.clean_caption` is
 * `model.family_options.clean_caption`. A shortcut at its `unset` value (or absent) says nothing.
 */
export const FAMILY_OPTION_SHORTCUTS = [
  { path: ['model', 'clean_caption'], options: ['model', 'family_options'], unset: 'auto' },
  { path: ['stage2', 'noise_level'], options: ['stage2', 'family_options'], unset: undefined },
] as const;

/** A number as written after `PATH:` in a LoRA entry. */
const SCALE = /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

/**
 * `PATH[:SCALE]` → {path, scale}: the scale is what follows the last `:`, unless that holds a path
 * separator (a Windows drive, `C:\loras\x.safetensors`); without one the scale is 1.
 */
export function parseLoraSpec(text: string): { path: string; scale: number } | { error: string } {
  const colon = text.lastIndexOf(':');
  const tail = colon < 0 ? '' : text.slice(colon + 1);
  if (colon < 0 || /[\\/]/.test(tail)) return { path: text, scale: 1 };
  const path = text.slice(0, colon);
  if (path === '') return { error: `${JSON.stringify(text)} has no path before ":"` };
  if (!SCALE.test(tail.trim()) || !Number.isFinite(Number(tail))) {
    return {
      error: `${JSON.stringify(text)}: the scale after ":" must be a number (PATH[:SCALE], e.g. style.safetensors:0.8)`,
    };
  }
  return { path, scale: Number(tail) };
}

/** LoRA weights: `PATH[:SCALE]`, or {path, scale}. */
const LoraSchema = z.union(
  [
    z
      .string()
      .min(1, { error: 'must not be empty' })
      .transform((text, ctx) => {
        const parsed = parseLoraSpec(text);
        if ('error' in parsed) {
          ctx.addIssue({ code: 'custom', message: parsed.error });
          return z.NEVER;
        }
        return parsed;
      }),
    z.strictObject({
      path: z.string().min(1),
      scale: z.number().default(1).describe('its weight: 1 = as trained, 0 = off'),
    }),
  ],
  { error: 'must be "PATH[:SCALE]" or {path, scale}' },
);

const ModelSchema = z
  .strictObject({
    id: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Hugging Face hub id, local diffusers checkpoint folder, or single-file checkpoint (.safetensors; ' +
          '.ckpt with model.allow_pickle; see model.config); default: the embedded shapes model',
      ),
    config: z
      .string()
      .min(1)
      .optional()
      .describe(
        "a single-file model.id's pipeline configuration (model_index.json, component configs, tokenizers): " +
          'a local diffusers folder of the same architecture, or a hub id; in a config file, relative paths ' +
          'are relative to it; default: the hub repo the weights look like, from the local Hugging Face ' +
          'cache when offline',
      ),
    lora: z
      .array(LoraSchema)
      .superRefine((loras, ctx) => {
        for (const [path, at] of repeats(loras.map((lora) => lora.path))) {
          ctx.addIssue({
            code: 'custom',
            message: `${JSON.stringify(path)} is listed ${timesListed(at.length)} (${listIndexes('model.lora', at)})`,
            params: { at: [at[1]] },
          });
        }
      })
      .optional()
      .describe(
        'LoRA weights to load, each a local .safetensors file (or a folder holding one) with its scale: ' +
          'PATH[:SCALE] or {path, scale} (1 = as trained, 0 = off); repeatable; a LoRA of the text encoder ' +
          'changes the hidden states the lens reads; in a config file, relative paths are relative to it; ' +
          'default: none',
      ),
    family: z
      .string()
      .min(1)
      .default('auto')
      .describe(
        'pipeline family (sd, if, pixart, sdxl, flux, sd3; `diffusion-lens doctor` lists them); auto detects it',
      ),
    revision: z.string().min(1).optional().describe('hub revision: branch, tag or commit; default: main'),
    dtype: z
      .enum(DTYPES)
      .default('auto')
      .describe('weights dtype; auto = fp16 on GPU (bf16 for Flux and SD3), fp32 on CPU'),
    device: z.enum(DEVICES).default('auto').describe('where to run; auto = best available'),
    offload: z
      .union([
        z.enum(OFFLOAD_MODES, { error: 'must be none, encoder or model (or true = model, false = none)' }),
        // A boolean is the older form: true meant model CPU offload.
        z.boolean().transform((on): OffloadMode => (on ? 'model' : 'none')),
      ])
      .default('none')
      .describe(
        'GPU memory saving: none; encoder = the text encoder waits on the CPU and visits the GPU only to ' +
          'encode (frees ~9.5 GB for T5-XXL, fits IF on 24 GB cards); model = diffusers model CPU offload ' +
          '(below 24 GB, slower); ignored on the CPU',
      ),
    clean_caption: z
      .union([z.literal('auto', { error: 'must be auto, true or false' }), z.boolean()])
      .default('auto')
      .describe(
        "IF's caption cleaning as in the stock pipeline (needs beautifulsoup4 and ftfy): auto = on when " +
          'they are installed (the run says when it is off), true = required, false = off',
      ),
    family_options: FamilyOptionsSchema.optional().describe(
      "the family's own load options by name, e.g. {clean_caption: false} for IF (`diffusion-lens doctor` lists them)",
    ),
    allow_pickle: z.boolean().default(false).describe('allow pickled (.bin/.ckpt) weights; unsafe'),
    compile: z
      .boolean()
      .default(false)
      .describe(
        "torch.compile the denoiser (UNet or transformer, each stage's): faster sampling on a GPU after a " +
          'compile of minutes on the first batch of each shape; images equal within float rounding',
      ),
    variant: z
      .string()
      .min(1)
      .optional()
      .describe(
        'weight files to load, e.g. fp16: the *.fp16.safetensors copies hub checkpoints such as DeepFloyd IF ' +
          'ship (half the download); applies to the stage II checkpoint too; default: the full files',
      ),
  })
  .describe('the checkpoint to load');

const SizeSide = z.number().int().min(8).multipleOf(8);
const SizeSchema = z
  .union([SizeSide, z.tuple([SizeSide, SizeSide])], {
    error: 'must be one side (a multiple of 8) or [height, width]',
  })
  .describe('image size: one side for a square, or [height, width]; multiples of 8');

const SamplerSchema = z
  .strictObject({
    steps: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe("denoising steps; default: the model's: SD 50, IF 100, PixArt 20, SDXL 50, Flux 28, SD3 28"),
    guidance: z
      .number()
      .min(0)
      .max(MAX_GUIDANCE)
      .optional()
      .describe(
        "classifier-free guidance scale, 0..100; default: the model's: SD 7.5, IF 7.0, PixArt 4.5, SDXL 5.0, Flux 3.5 embedded, SD3 7.0",
      ),
    size: SizeSchema.optional().describe(
      "image size in pixels, multiples of 8: one side (a square), or height and width; default: the model's native size",
    ),
    scheduler: z
      .string()
      .min(1)
      .default('default')
      .describe(
        "sampling scheduler: default (the checkpoint's own); SD, SDXL, PixArt: also dpm-multistep, " +
          'dpm-singlestep, euler, euler-ancestral, ddim, ddpm, pndm, heun, unipc, lms; IF: also dpm-multistep, ' +
          'dpm-singlestep, ddpm; Flux and SD3: only default (`diffusion-lens doctor` lists them per family)',
      ),
    negative: z.string().default('').describe('negative prompt ("" = the stock unconditional)'),
    family_options: FamilyOptionsSchema.optional().describe(
      "the family's own sampling options by name, as its stock pipeline's arguments",
    ),
  })
  .describe('sampling settings');

/** Layer specs reaching deeper than this are checked against the model's depth only. */
const MAX_CHECKED_LAYER = 10_000;

/**
 * Checks a layer spec as far as it can be without L: its syntax, and, when every bound is written out and
 * not negative, that no layer is listed twice and no range is empty (else resolveLayers says so later).
 */
function checkLayerSpec(value: string | number[], ctx: z.core.$RefinementCtx<string | number[]>): void {
  // An item beyond the safe integers is reported as such, on the item.
  if (Array.isArray(value) && !value.every((n) => Number.isSafeInteger(n))) return;
  try {
    const spec = parseLayerSpec(value);
    const plain = (r: LayerRange) => !r.relative && !r.stock && r.start >= 0 && r.end >= 0;
    if (spec.kind === 'ranges' && spec.ranges.every(plain)) {
      // Deeper than any encoder: resolveLayers says so against the model's depth (not worth listing here).
      const deepest = spec.ranges.reduce((max, r) => Math.max(max, r.end), 0);
      if (deepest <= MAX_CHECKED_LAYER) resolveLayers(value, deepest);
    }
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    for (const issue of error.issues) ctx.addIssue({ code: 'custom', message: issue.message });
  }
}

/** A layer spec: "all", "start:end[:step]" (inclusive), "0,4,8", one integer, or a list of integers. */
export const LayerSpecSchema = z
  .union(
    [
      z.string().superRefine(checkLayerSpec),
      z.number().int(),
      z.array(z.number().int()).min(1).superRefine(checkLayerSpec),
    ],
    { error: 'must be "all", "start:end[:step]", a comma list like "0,4,8", or a list of integers' },
  )
  .describe(
    'encoder layers (hidden-state indices 0..L): "all", "start:end[:step]" (inclusive), "0,4,8", ' +
      'or a list of integers; negative counts from the end (-1 = L, the final layer); relative depths ' +
      'such as "0%:100%:25%" map onto the encoder\'s own depth (the nearest layer, halves up); "stock" ' +
      'is the layer the stock pipeline uses (L, or L - 1 for SDXL)',
  );

/** A layer of `lens.mix`: an integer (negative counts from the end, -1 = L) or `stock`. */
const MIX_LAYER = 'must be a layer: an integer (-1 = L) or "stock"';
const MixLayerSchema = z.union([z.number().int(), z.literal('stock', { error: MIX_LAYER })], {
  error: MIX_LAYER,
});

/** `lens.mix`: the prompt's conditioning mixed from two layers. */
const MixSchema = z.strictObject({
  layers: z
    .tuple([MixLayerSchema, MixLayerSchema], { error: 'must be two layers [a, b], e.g. [4, 8]' })
    .describe('[a, b]: the layer the images are of, and the layer mixed into it'),
  alpha: z.number().min(0).max(1).describe("b's weight, 0..1: 0 = layer a's conditioning, 1 = layer b's"),
});

const LensSchema = z
  .strictObject({
    layers: LayerSpecSchema.default('all'),
    uncond: z
      .enum(UNCOND_MODES)
      .default('final')
      .describe('unconditional branch: final-layer output, or the same layer (ablation)'),
    noise: z
      .enum(NOISE_MODES)
      .default('shared')
      .describe('initial noise: shared by all layers of a (prompt, seed), or fresh per layer'),
    encoders: z
      .union(
        [
          z.literal('all'),
          z
            .array(z.string().min(1))
            .min(1)
            .superRefine(refuseDuplicates((name) => name)),
        ],
        {
          error: 'must be "all" or a list of text encoder names, e.g. [text_encoder_2]',
        },
      )
      .default('all')
      .describe(
        'the text encoders whose hidden states follow the layer (pipeline component names, e.g. ' +
          'text_encoder_2); the others stay at their stock layer. For models with several (SDXL, SD3)',
      ),
    pooled: z
      .enum(POOLED_MODES)
      .default('final')
      .describe(
        "pooled text vector (SDXL, SD3, Flux): the whole encoder's, the same depth's, or the empty prompt's",
      ),
    tokens: z
      .union([
        z.enum(TOKEN_MODES, {
          error: 'must be all, prompt, padding or a position (a non-negative integer)',
        }),
        z.number().int().min(0),
      ])
      .default('all')
      .describe(
        "ablation: which positions of the prompt's sequence embedding follow the layer, the others taking " +
          "the stock layer's: all; prompt (its tokens through the end-of-sequence token, the padding from " +
          'the stock layer); padding (the reverse); or one position (an integer)',
      ),
    mix: MixSchema.optional().describe(
      "ablation: the prompt's conditioning is (1 - alpha) x layer a's + alpha x layer b's, {layers: [a, b], " +
        'alpha}: a and b are layers (-1 = L, or stock), alpha 0..1; the run makes images of layer a only ' +
        '(lens.layers: all, or a); default: none',
    ),
    embeds: z
      .string()
      .min(1)
      .optional()
      .describe(
        'ablation: a .safetensors file whose tensors (prompt_embeds, pooled_prompt_embeds, ...) replace the ' +
          "prompt's conditioning arguments of those names at every layer: one row for every prompt, or one " +
          'per prompt listed in its "prompts" metadata; not with lens.mix or lens.tokens; in a config file, ' +
          'relative paths are relative to it; default: none',
      ),
  })
  .superRefine((lens, ctx) => {
    const [a, b] = lens.mix?.layers ?? [];
    if (a !== undefined && a === b) {
      ctx.addIssue({
        code: 'custom',
        path: ['mix', 'layers'],
        message: `a and b are both ${JSON.stringify(a)}: mix two different layers`,
      });
    }
    if (lens.embeds === undefined) return;
    const also = [
      ...(lens.mix === undefined ? [] : ['a mix']),
      ...(lens.tokens === 'all' ? [] : [`tokens ${lens.tokens} (only all)`]),
    ];
    if (also.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['embeds'],
        message:
          `replaces the prompt's conditioning, so it does not combine with ${also.join(' or ')}; ` +
          'leave one of them out',
      });
    }
  })
  .describe('what the lens does');

const SeedsSchema = z
  .array(z.number().int().min(0).max(MAX_SEED))
  .min(1)
  .superRefine(refuseDuplicates((seed) => String(seed)))
  .describe('random seeds, 0 <= seed < 2^32: one image per prompt, layer and seed');

export const PromptFileSchema = z
  .strictObject({
    file: z.string().min(1).describe('a .csv or .txt file, relative to the config file'),
    column: z.string().min(1).default('prompt').describe('the CSV column holding the prompts'),
  })
  .describe('prompts read from a file');

const PromptsSchema = z
  .union(
    [
      z
        .array(z.string().trim().min(1, { error: 'must not be empty' }))
        .min(1, { error: 'must list at least one prompt' })
        .superRefine(
          refuseDuplicates(
            (prompt) => JSON.stringify(prompt),
            (at) => listIndexes('prompts', at),
          ),
        ),
      PromptFileSchema,
    ],
    { error: 'must be a list of prompts or {file, column}' },
  )
  .describe('the prompts: a list, or {file, column}');

const Stage2Schema = z
  .strictObject({
    model: z
      .string()
      .min(1)
      .optional()
      .describe(
        'IF: hub id or local folder of the stage II checkpoint (IFSuperResolutionPipeline, e.g. ' +
          'DeepFloyd/IF-II-L-v1.0), loaded without a text encoder; in a config file, relative paths are ' +
          'relative to it; default: none',
      ),
    revision: z
      .string()
      .min(1)
      .optional()
      .describe('IF: hub revision of the stage II checkpoint; default: main'),
    steps: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe("IF: stage II denoising steps; default: the checkpoint's, IF-II 50"),
    guidance: z
      .number()
      .min(0)
      .max(MAX_GUIDANCE)
      .optional()
      .describe("IF: stage II classifier-free guidance scale, 0..100; default: the checkpoint's, IF-II 4.0"),
    size: SizeSchema.optional().describe(
      'IF: stage II image size in pixels, multiples of 8: one side (a square), or height and width; ' +
        "default: the checkpoint's native size, IF-II 256",
    ),
    noise_level: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe("IF: noise added to the stage I image before upscaling; default: the pipeline's, 250"),
    scheduler: z
      .string()
      .min(1)
      .default('default')
      .describe(
        "IF: stage II scheduler, as sampler.scheduler; 'default' keeps the stage II checkpoint's own",
      ),
    seed: z
      .union([
        z.literal('same', { error: `must be "same" or an integer seed 0..${MAX_SEED}` }),
        z.number().int().min(0).max(MAX_SEED),
      ])
      .default('same')
      .describe(
        "IF: stage II noise: 'same' = go on with each image's stage I generator (its seed and noise mode), " +
          'or one integer seed for all',
      ),
    family_options: FamilyOptionsSchema.optional().describe(
      "the family's own stage II options by name, e.g. {noise_level: 100} for IF",
    ),
  })
  .describe('stage II (super-resolution) of a two-stage model (DeepFloyd IF), conditioned on the same layer');

const StagesSchema = z
  .array(z.union([z.literal(1), z.literal(2)], { error: 'must be 1 or 2' }))
  .min(1)
  .superRefine(refuseDuplicates((stage) => String(stage)))
  .superRefine((stages, ctx) => {
    if (!stages.includes(1)) {
      ctx.addIssue({ code: 'custom', message: 'stage 2 upscales stage 1 images: use [1, 2], not [2]' });
    }
  })
  .describe(
    'IF: which stages to generate: 1 (the base images) or 1 and 2 (and their stage II upscales); ' +
      'default: 1 and 2 when stage2.model is set, else 1',
  );

const GridSchema = z
  .strictObject({
    min_cell: z
      .number()
      .int()
      .min(GRID_MIN_CELL.min)
      .max(GRID_MIN_CELL.max)
      .default(GRID_MIN_CELL.default)
      .describe(
        'smallest side of one grid cell in pixels (16..2048); smaller images are upscaled to it, without smoothing',
      ),
  })
  .describe('the layer x seed grid images');

const RuntimeSchema = z
  .strictObject({
    max_batch: z
      .union([z.literal('auto', { error: 'must be auto or an integer >= 1' }), z.number().int().min(1)], {
        error: 'must be auto or an integer >= 1',
      })
      .default('auto')
      .describe(
        'items per denoiser batch (halved on out-of-memory); auto = the worker decides per request: on a ' +
          "GPU as many as its free memory holds (at most 64), on the CPU enough images to fill 32768 pixels, never fewer than a layer's seeds (a power of two, at most 16)",
      ),
    workers: z
      .number()
      .int()
      .min(0)
      .max(256)
      .optional()
      .describe(
        'local workers sharing the run, batches handed out as they free up (default 1, or 0 when `remote` lists workers)',
      ),
    gpus: z
      .union([z.literal('auto'), z.array(z.string().regex(/^[A-Za-z0-9-]+$/, 'a GPU index or UUID')).min(1)])
      .default('auto')
      .describe(
        'GPUs for local workers, one each in turn through CUDA_VISIBLE_DEVICES; auto: those in CUDA_VISIBLE_DEVICES, else those nvidia-smi lists (none: CPU workers)',
      ),
    remote: z
      .array(
        z.strictObject({
          endpoint: z
            .string()
            .regex(/^(tcp|ipc):\/\/\S+$/, 'a ZeroMQ endpoint such as tcp://gpu-host:5555 or ipc:///path')
            .describe('where a `diffusion-lens worker` listens'),
          keys: z
            .string()
            .min(1)
            .optional()
            .describe(
              "folder with this client's keys (client.key_secret, worker.key; see `diffusion-lens keys`)",
            ),
        }),
      )
      .default([])
      .describe('running workers (e.g. on GPU hosts) to use, alongside `workers` local ones'),
  })
  .refine((runtime) => (runtime.workers ?? 1) + runtime.remote.length > 0, {
    message: 'no worker: set runtime.workers to 1 or more, or list runtime.remote workers',
    path: ['workers'],
  })
  .describe('execution settings (do not change the images)');

/** JSON with sorted object keys: equal values, equal text (for duplicate sweep values). */
function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** The most variants (combinations of swept values) a study may have: each is a whole run. */
export const MAX_SWEEP_VARIANTS = 10_000;

/** Config fields a sweep may not vary: the study's own name, and the sweep itself. */
export const UNSWEPT_FIELDS = ['name', 'sweep'] as const;

/**
 * A sweep: dotted config field paths, each with the values it takes; the study runs every combination
 * (see src/experiment/study.ts). The paths are checked against the config's fields below, each
 * combination (a variant) against the whole schema by expandSweep.
 */
const SweepSchema = z
  .record(
    z.string(),
    z
      .array(z.unknown())
      .min(1, { error: 'must list at least one value' })
      .superRefine((values, ctx) => {
        for (const [text, at] of repeats(values.map(stableJson))) {
          ctx.addIssue({
            code: 'custom',
            message: `${text} is listed ${timesListed(at.length)}`,
            params: { at: [at[1]] },
          });
        }
      }),
    { error: 'must map dotted config fields to lists of values, e.g. {lens.uncond: [final, same-layer]}' },
  )
  .superRefine((sweep, ctx) => {
    const lists = Object.values(sweep);
    const variants = lists.reduce(
      (product, values) => product * (Array.isArray(values) ? values.length : 1),
      1,
    );
    if (lists.length > 0 && variants > MAX_SWEEP_VARIANTS) {
      ctx.addIssue({
        code: 'custom',
        message:
          `makes ${variants.toLocaleString('en-US')} variants (every combination of its values); ` +
          `at most ${MAX_SWEEP_VARIANTS.toLocaleString('en-US')}: sweep fewer fields or values`,
      });
    }
  })
  .describe(
    'a study: dotted config fields (lens.uncond, sampler.guidance, model.id, ...), each with a list of ' +
      'values; every combination runs as one variant, into OUT/<variant>/, with OUT/study.json listing them ' +
      '(not name or sweep); default: none, one run',
  );

type AnySchema = z.core.$ZodType;

/**
 * Where a dotted path leaves the config's fields: null when `parts` names a field (a section, a field,
 * or a key of a family_options mapping), else the index of the first unknown part and the keys there.
 */
export function unknownFieldAt(parts: readonly string[]): { index: number; keys: string[] } | null {
  const unwrap = (s: AnySchema): AnySchema[] => {
    const def = s._zod.def as unknown as Record<string, unknown>;
    if (def.innerType) return unwrap(def.innerType as AnySchema);
    if (def.type === 'pipe') return unwrap(def.in as AnySchema);
    if (def.type === 'union') return (def.options as AnySchema[]).flatMap(unwrap);
    return [s];
  };
  let schemas: AnySchema[] = [ConfigFields];
  for (const [index, part] of parts.entries()) {
    const here = schemas.flatMap(unwrap);
    const keys = here.flatMap((s) => Object.keys((s._zod.def as { shape?: object }).shape ?? {}));
    schemas = here.flatMap((s) => {
      const def = s._zod.def as unknown as {
        type: string;
        shape?: Record<string, AnySchema>;
        valueType?: AnySchema;
      };
      // Own keys only ("constructor" is no field); "__proto__" is no key of a mapping either.
      if (def.shape) return Object.hasOwn(def.shape, part) ? [def.shape[part] as AnySchema] : [];
      return def.type === 'record' && def.valueType && part !== '__proto__' ? [def.valueType] : [];
    });
    if (schemas.length === 0 || part === '') return { index, keys };
  }
  return null;
}

/** What is wrong with a sweep path (`lens.uncnd`), with a did-you-mean; null when it names a field. */
export function sweepPathProblem(path: string): string | null {
  const parts = path.split('.');
  const [first = ''] = parts;
  if ((UNSWEPT_FIELDS as readonly string[]).includes(first)) {
    return `${first} cannot be swept (the study's variants are named by their values)`;
  }
  const unknown = unknownFieldAt(parts);
  if (unknown === null) return null;
  const part = parts[unknown.index] ?? '';
  const parent = parts.slice(0, unknown.index).join('.');
  if (part === '') return 'is not a dotted config field path, e.g. lens.uncond';
  const keys = unknown.keys.filter(
    (key) => unknown.index > 0 || !(UNSWEPT_FIELDS as readonly string[]).includes(key),
  );
  const best = nearest(part, keys);
  const hint = best
    ? ` (did you mean "${[...parts.slice(0, unknown.index), best].join('.')}"?)`
    : keys.length > 0
      ? ` (${parent || 'the config'} has: ${keys.join(', ')})`
      : '';
  return `is not a config field: ${parent || 'the config'} has no "${part}"${hint}`;
}

const ConfigFields = z.strictObject({
  name: z
    .string()
    .min(1)
    .optional()
    .describe('run name in the manifest; default: the config file name, or the first prompt'),
  model: ModelSchema.prefault({}),
  sampler: SamplerSchema.prefault({}),
  lens: LensSchema.prefault({}),
  seeds: SeedsSchema.default([0, 1, 2, 3]),
  prompts: PromptsSchema,
  runtime: RuntimeSchema.prefault({}),
  stages: StagesSchema.optional(),
  stage2: Stage2Schema.prefault({}),
  grid: GridSchema.prefault({}),
  sweep: SweepSchema.optional(),
});

export const ExperimentConfigSchema = ConfigFields.superRefine((config, ctx) => {
  for (const path of Object.keys(config.sweep ?? {})) {
    const problem = sweepPathProblem(path);
    if (problem !== null) ctx.addIssue({ code: 'custom', path: ['sweep', path], message: problem });
  }
  const stages = resolveStages(config);
  if (stages.includes(2) && config.stage2.model === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['stage2', 'model'],
      message: 'is required when stages include 2 (the stage II checkpoint, e.g. DeepFloyd/IF-II-L-v1.0)',
    });
  }
  // Which families have a stage II, caption cleaning or a scheduler, the worker says (capabilities).
  for (const shortcut of FAMILY_OPTION_SHORTCUTS) {
    const [section, name] = shortcut.path;
    const options = (config[section] as { family_options?: Record<string, unknown> }).family_options ?? {};
    const value = (config[section] as Record<string, unknown>)[name];
    if (value !== shortcut.unset && value !== undefined && name in options) {
      ctx.addIssue({
        code: 'custom',
        path: [...shortcut.options, name],
        message: `is set twice: here and as ${shortcut.path.join('.')}; keep one`,
      });
    }
  }
}).describe('A Diffusion Lens experiment: prompts x encoder layers x seeds (x stages)');

/** The stages to run: `stages` as given (sorted), else [1, 2] when a stage II model is set, else [1]. */
export function resolveStages(config: {
  stages?: readonly Stage[] | undefined;
  stage2: { model?: string | undefined };
}): Stage[] {
  if (config.stages !== undefined) return [...new Set(config.stages)].sort((a, b) => a - b);
  return config.stage2.model === undefined ? [1] : [1, 2];
}

/** A validated config, defaults filled in (what the runner takes). */
export type ExperimentConfig = z.infer<typeof ExperimentConfigSchema>;
/** What a user may write (defaults optional). */
export type ExperimentConfigInput = z.input<typeof ExperimentConfigSchema>;
export type ModelConfig = ExperimentConfig['model'];
export type SamplerConfig = ExperimentConfig['sampler'];
export type LensConfig = ExperimentConfig['lens'];
export type LayerSpecInput = LensConfig['layers'];
export type PromptFileSpec = z.infer<typeof PromptFileSchema>;
export type Stage2Config = ExperimentConfig['stage2'];
export type GridConfig = ExperimentConfig['grid'];
export type RuntimeConfig = ExperimentConfig['runtime'];
/** A running worker to attach to: its endpoint and the folder of this client's keys. */
export type RemoteWorker = RuntimeConfig['remote'][number];
export type Stage = (typeof STAGES)[number];
export type OffloadMode = (typeof OFFLOAD_MODES)[number];
export type UncondMode = (typeof UNCOND_MODES)[number];
export type NoiseMode = (typeof NOISE_MODES)[number];
export type PooledMode = (typeof POOLED_MODES)[number];
/** `lens.tokens`: a mode (TOKEN_MODES) or one position. */
export type LensTokens = LensConfig['tokens'];

/** The JSON Schema of the config file (what `diffusion-lens schema` prints), for editor completion. */
export function toJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(ExperimentConfigSchema, { io: 'input', unrepresentable: 'any' });
  return { ...schema, title: 'diffusion-lens experiment' };
}
