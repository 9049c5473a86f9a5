// Run folders written by hand for the report and server tests: a manifest.json of the CLI's shape and
// one PNG per (prompt, layer, seed), each a flat colour that says its layer, made with sharp. No worker.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { promptQuestions } from '../src/config/index.js';
import { imagePath, sha256Hex } from '../src/experiment/index.js';

export interface FakeRunOptions {
  name?: string;
  prompts?: string[];
  /** Extra prompt columns, per prompt. */
  columns?: Record<string, string>[];
  /** Questions per prompt (default: the generic one). */
  questions?: { id: string; text: string; expected?: 'yes' | 'no' }[][];
  numLayers?: number;
  layers?: number[];
  seeds?: number[];
  /** Image side in pixels. */
  size?: number;
  modelId?: string;
  promptSet?: { id: string; category: string } | null;
}

/** Writes a run folder into `dir`; returns its manifest. */
export async function writeFakeRun(dir: string, options: FakeRunOptions = {}) {
  const prompts = options.prompts ?? ['a red circle', 'two blue squares'];
  const numLayers = options.numLayers ?? 4;
  const layers = options.layers ?? Array.from({ length: numLayers + 1 }, (_, i) => i);
  const seeds = options.seeds ?? [0, 1];
  const size = options.size ?? 32;
  const modelId = options.modelId ?? 'test/tiny-model';
  const images = [];
  const pngs = new Map<string, Buffer>();
  const colour = async (layer: number, seed: number): Promise<Buffer> => {
    const id = `${layer}:${seed}`;
    const known = pngs.get(id);
    if (known) return known;
    const shade = Math.round((layer / Math.max(1, numLayers)) * 255);
    const png = await sharp({
      create: {
        width: size,
        height: size,
        channels: 3,
        background: { r: shade, g: (40 * seed) % 256, b: 255 - shade },
      },
    })
      .png()
      .toBuffer();
    pngs.set(id, png);
    return png;
  };
  for (const [p, prompt] of prompts.entries()) {
    for (const layer of layers) {
      for (const seed of seeds) {
        const path = imagePath(prompt, layer, seed, numLayers);
        const png = await colour(layer, seed);
        mkdirSync(dirname(join(dir, path)), { recursive: true });
        writeFileSync(join(dir, path), png);
        images.push({
          prompt,
          prompt_index: p,
          layer,
          depth: Math.round((layer / numLayers) * 1000) / 10,
          seed,
          stage: 1,
          path,
          key: sha256Hex(`${modelId}|${prompt}|${layer}|${seed}`),
        });
      }
    }
  }
  const columnNames = [...new Set((options.columns ?? []).flatMap((row) => Object.keys(row)))];
  const manifest = {
    version: 1,
    tool: { name: 'diffusion-lens', version: '0.1.0', lens_algorithm: 1 },
    complete: true,
    config: {
      name: options.name ?? 'fake-run',
      model: { id: modelId },
      sampler: {
        steps: 2,
        guidance: 5,
        size: [size, size],
        height: size,
        width: size,
        scheduler: 'default',
        negative: '',
      },
      lens: { layers, layer_spec: 'all', uncond: 'final', noise: 'shared' },
      seeds,
      prompts,
      runtime: { max_batch: 8 },
      stages: [1],
      stage2: null,
    },
    model: {
      id: modelId,
      family: 'sd',
      num_layers: numLayers,
      revision: null,
      pipeline_class: 'StableDiffusionPipeline',
    },
    prompt_columns: columnNames,
    prompt_set: options.promptSet ?? null,
    prompts: prompts.map((prompt, i) => ({
      prompt,
      columns: options.columns?.[i] ?? {},
      truncated: null,
      lensed_tokens: null,
      questions:
        options.questions?.[i]?.map((q) => ({ expected: 'yes', ...q })) ?? promptQuestions(null, prompt, {}),
    })),
    images,
    grids: [],
  };
  writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}
