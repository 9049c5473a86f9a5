// The tables behind `diffusion-lens plan`'s estimates, each entry with its source: what a family's stock
// pipeline does (CFG or distilled guidance, encoder depth, defaults), the depth and native size of known
// checkpoints, seconds per denoiser evaluation on an A100 from published benchmarks, other GPUs relative
// to it, and the size of a PNG per pixel. ESTIMATES, none measured in this project: a plan names every
// number it takes from here (`estimated`), and `plan --measure` times the device instead.
import { ConfigError, type Stage } from '../config/index.js';

/** What a family's stock pipeline does, as far as a plan needs it before the worker has said so. */
export interface FamilyFacts {
  /**
   * `cfg`: the stock pipeline evaluates the denoiser for the conditional and the unconditional branch at
   * every step when guidance > 1 (diffusers' `do_classifier_free_guidance` of StableDiffusion(XL)Pipeline,
   * IFPipeline and its super-resolution, PixArt, StableDiffusion3Pipeline and SanaPipeline is exactly
   * `guidance_scale > 1`); `distilled`: once (Flux embeds its guidance; this tool gives it no negative
   * prompt, so FluxPipeline's `true_cfg_scale` branch never runs).
   */
  guidance: 'cfg' | 'distilled';
  /** model_index.json `_class_name`s of the family (what `family: auto` detects; the worker decides). */
  pipelineClasses: readonly string[];
  /** The depth L of the family's usual text encoder, and what it is. */
  numLayers: number;
  encoder: string;
  /** The stock layer's distance from L (SDXL's penultimate: 1). */
  stockOffset: number;
  denoiser: 'UNet' | 'transformer';
  /** The stock pipeline's defaults (the worker reports the checkpoint's own). */
  steps: number;
  guidanceScale: number;
  size: number;
  stage2?: { steps: number; guidance: number; size: number };
}

export const FAMILY_FACTS: Readonly<Record<string, FamilyFacts>> = {
  sd: {
    guidance: 'cfg',
    pipelineClasses: ['StableDiffusionPipeline'],
    numLayers: 12,
    encoder: "SD 1.x's CLIP ViT-L, 12 layers (SD 2.x's OpenCLIP-H has 23)",
    stockOffset: 0,
    denoiser: 'UNet',
    steps: 50,
    guidanceScale: 7.5,
    size: 512,
  },
  if: {
    guidance: 'cfg',
    pipelineClasses: ['IFPipeline'],
    numLayers: 24,
    encoder: 'T5-XXL, 24 blocks',
    stockOffset: 0,
    denoiser: 'UNet',
    steps: 100,
    guidanceScale: 7,
    size: 64,
    stage2: { steps: 50, guidance: 4, size: 256 },
  },
  sdxl: {
    guidance: 'cfg',
    pipelineClasses: ['StableDiffusionXLPipeline'],
    numLayers: 32,
    encoder: 'OpenCLIP bigG, 32 layers (stock: the penultimate)',
    stockOffset: 1,
    denoiser: 'UNet',
    steps: 50,
    guidanceScale: 5,
    size: 1024,
  },
  flux: {
    guidance: 'distilled',
    pipelineClasses: ['FluxPipeline'],
    numLayers: 24,
    encoder: 'T5-XXL, 24 blocks',
    stockOffset: 0,
    denoiser: 'transformer',
    steps: 28,
    guidanceScale: 3.5,
    size: 1024,
  },
  sd3: {
    guidance: 'cfg',
    pipelineClasses: ['StableDiffusion3Pipeline'],
    numLayers: 24,
    encoder: 'T5-XXL, 24 blocks',
    stockOffset: 0,
    denoiser: 'transformer',
    steps: 28,
    guidanceScale: 7,
    size: 1024,
  },
  pixart: {
    guidance: 'cfg',
    pipelineClasses: ['PixArtAlphaPipeline', 'PixArtSigmaPipeline'],
    numLayers: 24,
    encoder: 'T5-XXL, 24 blocks',
    stockOffset: 0,
    denoiser: 'transformer',
    steps: 20,
    guidanceScale: 4.5,
    size: 1024,
  },
  sana: {
    guidance: 'cfg',
    pipelineClasses: ['SanaPipeline'],
    numLayers: 26,
    encoder: 'Gemma-2-2B, 26 layers',
    stockOffset: 0,
    denoiser: 'transformer',
    steps: 20,
    guidanceScale: 4.5,
    size: 1024,
  },
};

/** Checkpoints whose family, encoder depth L and native size are known without their config files. */
export const KNOWN_CHECKPOINTS: Readonly<
  Record<string, { family: string; numLayers: number; size: number }>
> = {
  'stabilityai/stable-diffusion-2-1': { family: 'sd', numLayers: 23, size: 768 },
  'stabilityai/stable-diffusion-2': { family: 'sd', numLayers: 23, size: 768 },
  'stabilityai/stable-diffusion-2-1-base': { family: 'sd', numLayers: 23, size: 512 },
  'stabilityai/stable-diffusion-2-base': { family: 'sd', numLayers: 23, size: 512 },
  'stable-diffusion-v1-5/stable-diffusion-v1-5': { family: 'sd', numLayers: 12, size: 512 },
  'runwayml/stable-diffusion-v1-5': { family: 'sd', numLayers: 12, size: 512 },
  'CompVis/stable-diffusion-v1-4': { family: 'sd', numLayers: 12, size: 512 },
  'DeepFloyd/IF-I-XL-v1.0': { family: 'if', numLayers: 24, size: 64 },
  'DeepFloyd/IF-I-L-v1.0': { family: 'if', numLayers: 24, size: 64 },
  'DeepFloyd/IF-I-M-v1.0': { family: 'if', numLayers: 24, size: 64 },
  'stabilityai/stable-diffusion-xl-base-1.0': { family: 'sdxl', numLayers: 32, size: 1024 },
  'black-forest-labs/FLUX.1-dev': { family: 'flux', numLayers: 24, size: 1024 },
  'black-forest-labs/FLUX.1-schnell': { family: 'flux', numLayers: 24, size: 1024 },
  'stabilityai/stable-diffusion-3-medium-diffusers': { family: 'sd3', numLayers: 24, size: 1024 },
  'stabilityai/stable-diffusion-3.5-medium': { family: 'sd3', numLayers: 24, size: 1024 },
  'stabilityai/stable-diffusion-3.5-large': { family: 'sd3', numLayers: 24, size: 1024 },
  'PixArt-alpha/PixArt-XL-2-1024-MS': { family: 'pixart', numLayers: 24, size: 1024 },
  'PixArt-alpha/PixArt-XL-2-512x512': { family: 'pixart', numLayers: 24, size: 512 },
  'PixArt-alpha/PixArt-Sigma-XL-2-1024-MS': { family: 'pixart', numLayers: 24, size: 1024 },
  'Efficient-Large-Model/Sana_1600M_1024px_BF16_diffusers': { family: 'sana', numLayers: 26, size: 1024 },
  'Efficient-Large-Model/Sana_1600M_1024px_diffusers': { family: 'sana', numLayers: 26, size: 1024 },
  'Efficient-Large-Model/Sana_600M_1024px_diffusers': { family: 'sana', numLayers: 26, size: 1024 },
};

/** Seconds per denoiser evaluation of one image at `size` ([height, width]) on the reference GPU. */
interface DenoiserSpeed {
  seconds: number;
  size: readonly [number, number];
  source: string;
}

/** The GPU the speed table was measured on, by others; GPU_SPEED scales it to other cards. */
export const REFERENCE_GPU = 'a100';

/**
 * ESTIMATES, not measured here: seconds per denoiser evaluation (one UNet or transformer forward pass
 * for one image; classifier-free guidance makes two per step) on an A100 80GB with fp16/bf16 and PyTorch
 * SDPA attention, derived from published end-to-end benchmarks (text encoding and decoding included,
 * spread over the steps). Other sizes scale with the pixel count (attention grows faster than that, so
 * sizes above the reference's are underestimated). Per family and stage.
 */
export const DENOISER_SECONDS: Readonly<Record<string, Partial<Record<Stage, DenoiserSpeed>>>> = {
  sd: {
    1: {
      seconds: 0.0108,
      size: [512, 512],
      source:
        'SD 1.5 text-to-image at 512², batch 4, torch 2.0 without compile: 11.6 steps/s with CFG = 8 ' +
        'evaluations a step (diffusers docs, optimization/torch2.0, "Benchmark", A100 table)',
    },
  },
  if: {
    1: {
      seconds: 0.054,
      size: [64, 64],
      source:
        'IF-I-M at 64², batch 4: 25.02 steps/s with CFG (diffusers docs, optimization/torch2.0, A100), ' +
        'scaled by parameter count to IF-I-XL (4.3B / 0.4B): rough',
    },
    2: {
      seconds: 0.096,
      size: [256, 256],
      source:
        'IF-II-M at 256², batch 1: 13.84 steps/s with CFG (diffusers docs, optimization/torch2.0, A100), ' +
        'scaled by parameter count to IF-II-L (1.2B / 0.45B): rough',
    },
  },
  sdxl: {
    1: {
      seconds: 0.0552,
      size: [1024, 1024],
      source:
        'SDXL base at 1024², batch 1, 30 steps with CFG in 3.31 s, bf16 + SDPA (diffusers docs, ' +
        'tutorials/fast_diffusion, A100 80GB); fal-ai/stable-diffusion-benchmarks: 50 steps in 5.93 s',
    },
  },
  flux: {
    1: {
      seconds: 0.559,
      size: [1024, 1024],
      source:
        'FLUX.1-dev at 1024², batch 1, 28 steps (no CFG) in 15.65 s, bf16 (github.com/varadrane1707/' +
        'BenchmarkFlux, A100)',
    },
  },
  sd3: {
    1: {
      seconds: 0.0638,
      size: [1024, 1024],
      source:
        'SD3-medium at 1024²: 0.28 images/s on an A100 (Sana paper, arXiv 2410.10629, throughput table), ' +
        'read as 28 steps with CFG',
    },
  },
  pixart: {
    1: {
      seconds: 0.0625,
      size: [1024, 1024],
      source:
        'PixArt-Σ at 1024²: 0.4 images/s on an A100 (Sana paper, arXiv 2410.10629, throughput table), ' +
        'read as 20 steps with CFG',
    },
  },
  sana: {
    1: {
      seconds: 0.025,
      size: [1024, 1024],
      source:
        'Sana-1.6B at 1024²: 1.0 images/s on an A100 (Sana paper, arXiv 2410.10629, throughput table), ' +
        'read as 20 steps with CFG',
    },
  },
};

/**
 * ESTIMATES: time on a GPU relative to the A100 of DENOISER_SECONDS (lower = faster), from published
 * benchmarks of one model on both cards; other models may scale differently.
 */
export const GPU_SPEED: Readonly<Record<string, { label: string; factor: number; source: string }>> = {
  a100: { label: 'an A100', factor: 1, source: 'the reference of the speed table' },
  h100: {
    label: 'an H100',
    factor: 0.454,
    source: 'FLUX.1-dev bf16, 1024², 28 steps: 7.11 s on an H100 against 15.65 s on an A100 (BenchmarkFlux)',
  },
  h200: {
    label: 'an H200',
    factor: 0.454,
    source:
      "assumed to be the H100's (the same compute, more memory bandwidth); no published benchmark found",
  },
  v100: {
    label: 'a V100',
    factor: 1.95,
    source: 'SD 1.5, batch 4: 5.96 steps/s against 11.6 on an A100 (diffusers docs, optimization/torch2.0)',
  },
  t4: {
    label: 'a T4',
    factor: 6.48,
    source: 'SD 1.5, batch 4: 1.79 steps/s against 11.6 on an A100 (diffusers docs, optimization/torch2.0)',
  },
  rtx3090: {
    label: 'an RTX 3090',
    factor: 1.8,
    source: 'SD 1.5, batch 4: 6.46 steps/s against 11.6 on an A100 (diffusers docs, optimization/torch2.0)',
  },
  rtx4090: {
    label: 'an RTX 4090',
    factor: 0.92,
    source: 'SD 1.5, batch 4: 12.62 steps/s against 11.6 on an A100 (diffusers docs, optimization/torch2.0)',
  },
};

/**
 * ESTIMATE: bytes per pixel of a generated image as PNG (8-bit RGB is 3 uncompressed); a rule of thumb
 * for photographic, detailed images such as these models make, not measured here. A folder that holds
 * images of the plan gives the measured figure instead.
 */
export const PNG_BYTES_PER_PIXEL = 1.5;

/** The key of GPU_SPEED for a name as a user writes it (`A100`, `rtx-4090`); throws for an unknown one. */
export function gpuKey(name: string | undefined): string {
  if (name === undefined) return REFERENCE_GPU;
  const key = name
    .toLowerCase()
    .replace(/^nvidia/, '')
    .replace(/[^a-z0-9]/g, '');
  if (key in GPU_SPEED) return key;
  throw new ConfigError({
    path: [],
    label: '--gpu',
    message: `unknown GPU "${name}"; the time table knows ${Object.keys(GPU_SPEED).join(', ')}`,
  });
}

/**
 * Pixel-count scaling of the speed table is trusted this far from the measured size (below it fixed costs
 * dominate, above it attention's quadratic cost does): a small test model is no full-size checkpoint.
 */
export const TABLE_SCALE_RANGE = [0.25, 4.5] as const;

/**
 * Seconds per denoiser evaluation of one image at a size on a GPU, from the tables; null when the table
 * has no entry, or the size is outside TABLE_SCALE_RANGE of the entry's.
 */
export function tableSeconds(
  family: string | null,
  stage: Stage,
  height: number,
  width: number,
  gpu: string = REFERENCE_GPU,
): { seconds: number; source: string } | null {
  const entry = family === null ? undefined : DENOISER_SECONDS[family]?.[stage];
  const device = GPU_SPEED[gpu];
  if (!entry || !device) return null;
  const scale = (height * width) / (entry.size[0] * entry.size[1]);
  if (scale < TABLE_SCALE_RANGE[0] || scale > TABLE_SCALE_RANGE[1]) return null;
  const seconds = entry.seconds * device.factor * scale;
  const sizeNote = scale === 1 ? '' : `, scaled x${round(scale, 3)} by pixel count to ${width}x${height}`;
  const gpuNote = gpu === REFERENCE_GPU ? '' : `, x${device.factor} for ${device.label} (${device.source})`;
  return { seconds, source: `${entry.source}${sizeNote}${gpuNote}` };
}

const round = (value: number, digits: number): number => {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};
