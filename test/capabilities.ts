// What the worker reports of its families (python/diffusion_lens/families), for tests without a worker.
// The runner and bridge tests check the real worker's report; these copies only need to be plausible.
import type { EncoderInfo, FamilyCapabilities } from '../src/bridge/index.js';

const none = { type: 'object', properties: {}, additionalProperties: false };

export const sdCapabilities: FamilyCapabilities = {
  name: 'sd',
  pipeline_classes: ['StableDiffusionPipeline'],
  stages: 1,
  guidance: 'cfg',
  schedulers: [
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
  ],
  options: { load: none, sample: none, stage2: none },
};

export const ifCapabilities: FamilyCapabilities = {
  name: 'if',
  pipeline_classes: ['IFPipeline'],
  stages: 2,
  guidance: 'cfg',
  schedulers: ['default', 'dpm-multistep', 'dpm-singlestep', 'ddpm'],
  options: {
    load: {
      type: 'object',
      properties: { clean_caption: { type: ['boolean', 'null'], default: null } },
      additionalProperties: false,
    },
    sample: none,
    stage2: {
      type: 'object',
      properties: { noise_level: { type: 'integer', minimum: 0, default: 250 } },
      additionalProperties: false,
    },
  },
};

export const pixartCapabilities: FamilyCapabilities = {
  name: 'pixart',
  pipeline_classes: ['PixArtAlphaPipeline', 'PixArtSigmaPipeline'],
  stages: 1,
  guidance: 'cfg',
  schedulers: sdCapabilities.schedulers,
  options: {
    load: {
      type: 'object',
      properties: {
        clean_caption: { type: ['boolean', 'null'], default: null },
        max_sequence_length: { type: ['integer', 'null'], minimum: 1, default: null },
      },
      additionalProperties: false,
    },
    sample: {
      type: 'object',
      properties: { use_resolution_binning: { type: 'boolean', default: true } },
      additionalProperties: false,
    },
    stage2: none,
  },
};

export const sdxlCapabilities: FamilyCapabilities = {
  ...sdCapabilities,
  name: 'sdxl',
  pipeline_classes: ['StableDiffusionXLPipeline'],
};

export const fluxCapabilities: FamilyCapabilities = {
  name: 'flux',
  pipeline_classes: ['FluxPipeline'],
  stages: 1,
  guidance: 'distilled',
  schedulers: ['default'],
  options: {
    load: {
      type: 'object',
      properties: { max_sequence_length: { type: 'integer', minimum: 1, maximum: 512, default: 512 } },
      additionalProperties: false,
    },
    sample: none,
    stage2: none,
  },
};

export const sd3Capabilities: FamilyCapabilities = {
  ...fluxCapabilities,
  name: 'sd3',
  pipeline_classes: ['StableDiffusion3Pipeline'],
  guidance: 'cfg',
  options: {
    ...fluxCapabilities.options,
    load: {
      type: 'object',
      properties: { max_sequence_length: { type: 'integer', minimum: 1, maximum: 512, default: 256 } },
      additionalProperties: false,
    },
  },
};

export const sanaCapabilities: FamilyCapabilities = {
  name: 'sana',
  pipeline_classes: ['SanaPipeline'],
  stages: 1,
  guidance: 'cfg',
  // Flow matching: the schedulers that run the checkpoints' flow-prediction config.
  schedulers: ['default', 'dpm-multistep', 'dpm-singlestep', 'unipc'],
  options: {
    load: {
      type: 'object',
      properties: {
        clean_caption: { type: ['boolean', 'null'], default: false },
        max_sequence_length: { type: 'integer', minimum: 1, default: 300 },
        // default: the stock SanaPipeline's instruction (8 lines), not copied here
        complex_human_instruction: { type: ['array', 'null'], items: { type: 'string' } },
      },
      additionalProperties: false,
    },
    sample: pixartCapabilities.options.sample,
    stage2: none,
  },
};

/** A one-encoder model's `loaded.encoders` (SD, IF, PixArt): layer l takes hidden state l, through `norm`. */
export function oneEncoder(class_name: string, layers: number, norm: string | null): EncoderInfo[] {
  const indices = Array.from({ length: layers + 1 }, (_, layer) => layer);
  return [
    {
      name: 'text_encoder',
      class_name,
      layers,
      stock_index: layers,
      indices,
      norm,
      sequence: true,
      pooled: false,
      pooled_indices: null,
    },
  ];
}
