// The experiment config: defined once here with zod; the TS types are inferred from it.
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { parseLayerSpec } from './layers.js';

/** Scheduler names; the same list as the worker's `ready.schedulers` (a test checks it). */
export const SCHEDULERS = [
  'default',
  'dpm-multistep',
  'dpm-singlestep',
  'euler',
  'euler-ancestral',
  'ddim',
  'ddpm',
  'pndm',
  'heun',
  'unipc',
  'lms',
] as const;
export type SchedulerName = (typeof SCHEDULERS)[number];

export const FAMILIES = ['auto', 'sd'] as const;
export const DTYPES = ['auto', 'fp32', 'fp16', 'bf16'] as const;
export const DEVICES = ['auto', 'cpu', 'cuda', 'mps'] as const;
export const UNCOND_MODES = ['final', 'same-layer'] as const;
export const NOISE_MODES = ['shared', 'per-layer'] as const;

const MAX_SEED = 2 ** 32 - 1;

const ModelSchema = z
  .strictObject({
    id: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Hugging Face hub id or local folder of a diffusers checkpoint; default: the embedded shapes model',
      ),
    family: z.enum(FAMILIES).default('auto').describe('pipeline family; auto detects it'),
    revision: z.string().min(1).optional().describe('hub revision (branch, tag or commit)'),
    dtype: z.enum(DTYPES).default('auto').describe('weights dtype; auto = fp16 on GPU, fp32 on CPU'),
    device: z.enum(DEVICES).default('auto').describe('where to run; auto = best available'),
    offload: z.boolean().default(false).describe('CPU-offload model parts to save GPU memory'),
    allow_pickle: z.boolean().default(false).describe('allow pickled (.bin/.ckpt) weights; unsafe'),
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
    steps: z.number().int().min(1).default(50).describe('denoising steps'),
    guidance: z.number().min(0).default(7.5).describe('classifier-free guidance scale'),
    size: SizeSchema.optional().describe("image size; default: the model's native size"),
    scheduler: z
      .enum(SCHEDULERS)
      .default('default')
      .describe("sampling scheduler; 'default' keeps the checkpoint's own"),
    negative: z.string().default('').describe('negative prompt ("" = the stock unconditional)'),
  })
  .describe('sampling settings');

/** A layer spec: "all", "start:end[:step]" (inclusive), "0,4,8", one integer, or a list of integers. */
export const LayerSpecSchema = z
  .union(
    [
      z.string().superRefine((value, ctx) => {
        try {
          parseLayerSpec(value);
        } catch (error) {
          const message = error instanceof ConfigError ? (error.issues[0]?.message ?? '') : String(error);
          ctx.addIssue({ code: 'custom', message });
        }
      }),
      z.number().int(),
      z.array(z.number().int()).min(1),
    ],
    { error: 'must be "all", "start:end[:step]", a comma list like "0,4,8", or a list of integers' },
  )
  .describe(
    'encoder layers (hidden-state indices 0..L): "all", "start:end[:step]" (inclusive), "0,4,8", ' +
      'or a list of integers; negative counts from the end (-1 = L, the final layer)',
  );

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
  })
  .describe('what the lens does');

const SeedsSchema = z
  .array(z.number().int().min(0).max(MAX_SEED))
  .min(1)
  .superRefine((seeds, ctx) => {
    const seen = new Map<number, number>();
    seeds.forEach((seed, i) => {
      const first = seen.get(seed);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: [i], message: `duplicate seed ${seed} (also seeds[${first}])` });
      } else {
        seen.set(seed, i);
      }
    });
  })
  .describe('random seeds; one image per (prompt, layer, seed)');

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
        .min(1, { error: 'must list at least one prompt' }),
      PromptFileSchema,
    ],
    { error: 'must be a list of prompts or {file, column}' },
  )
  .describe('the prompts: a list, or {file, column}');

const RuntimeSchema = z
  .strictObject({
    max_batch: z.number().int().min(1).default(8).describe('items per UNet batch (halved on out-of-memory)'),
  })
  .describe('execution settings (do not change the images)');

export const ExperimentConfigSchema = z
  .strictObject({
    name: z
      .string()
      .min(1)
      .optional()
      .describe('run name; default: the config file name or the first prompt'),
    model: ModelSchema.prefault({}),
    sampler: SamplerSchema.prefault({}),
    lens: LensSchema.prefault({}),
    seeds: SeedsSchema.default([0, 1, 2, 3]),
    prompts: PromptsSchema,
    runtime: RuntimeSchema.prefault({}),
  })
  .describe('A Diffusion Lens experiment: prompts x encoder layers x seeds');

/** A validated config, defaults filled in (what the runner takes). */
export type ExperimentConfig = z.infer<typeof ExperimentConfigSchema>;
/** What a user may write (defaults optional). */
export type ExperimentConfigInput = z.input<typeof ExperimentConfigSchema>;
export type ModelConfig = ExperimentConfig['model'];
export type SamplerConfig = ExperimentConfig['sampler'];
export type LensConfig = ExperimentConfig['lens'];
export type LayerSpecInput = LensConfig['layers'];
export type PromptFileSpec = z.infer<typeof PromptFileSchema>;
export type UncondMode = (typeof UNCOND_MODES)[number];
export type NoiseMode = (typeof NOISE_MODES)[number];

/** The JSON Schema of the config file (what `diffusion-lens schema` prints), for editor completion. */
export function toJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(ExperimentConfigSchema, { io: 'input', unrepresentable: 'any' });
  return { ...schema, title: 'diffusion-lens experiment' };
}
