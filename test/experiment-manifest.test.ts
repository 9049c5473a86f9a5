// Manifest records and grids of a two-stage (IF) plan, without a worker: one grid per (prompt, stage),
// image records that say their stage, resolved stage I and stage II settings.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import type { LoadedMessage } from '../src/bridge/index.js';
import { parseConfig } from '../src/config/index.js';
import { familyOptionsFor } from '../src/experiment/family.js';
import { gridLegend, writeGrids } from '../src/experiment/grids.js';
import {
  buildManifest,
  gridTitle,
  imageSettings,
  imagesCsv,
  type Plan,
  planExperiment,
} from '../src/experiment/index.js';
import { gridLayout } from '../src/render/index.js';
import { ifCapabilities, oneEncoder } from './capabilities.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-manifest-');

const loaded: LoadedMessage = {
  v: 1,
  id: 'r1',
  type: 'loaded',
  model: '/models/tiny-if',
  family: 'if',
  capabilities: ifCapabilities,
  encoders: oneEncoder('T5EncoderModel', 4, 'encoder.final_layer_norm'),
  num_layers: 4,
  stock_layer: 4,
  pipeline_class: 'IFPipeline',
  revision: null,
  device: 'cpu',
  dtype: 'fp32',
  defaults: { steps: 100, guidance: 7, height: 16, width: 16, scheduler: 'DDPMScheduler' },
  lens: { norm: 'T5 final_layer_norm on every index but L', uncond: 'final layer of ""' },
  family_options: { clean_caption: false },
  notices: ['caption cleaning is off'],
  config: null,
  lora: [],
  stage2: {
    model: '/models/tiny-if-sr',
    pipeline_class: 'IFSuperResolutionPipeline',
    revision: null,
    dtype: 'fp32',
    defaults: { steps: 50, guidance: 4, height: 32, width: 32, scheduler: 'DDPMScheduler' },
  },
};

const info = {
  worker: '0.1.0',
  python: '3.12',
  torch: '2.13.0',
  diffusers: '0.42.1',
  transformers: '5.24.0',
  device: 'cpu',
} as const;

function ifPlan(stages: 'both' | 'one' = 'both') {
  const config = parseConfig({
    model: { id: '/models/tiny-if' },
    sampler: { steps: 2 },
    prompts: ['a red cube', 'a blue ball'],
    seeds: [0, 1],
    ...(stages === 'both' ? { stage2: { model: '/models/tiny-if-sr', noise_level: 100 } } : {}),
  });
  const settings = imageSettings(
    config,
    stages === 'both' ? loaded : { ...loaded, stage2: null },
    '/models/tiny-if',
    stages === 'both' ? '/models/tiny-if-sr' : undefined,
  );
  const plan = planExperiment({
    settings,
    familyOptions: familyOptionsFor(config, loaded),
    prompts: ['a red cube', 'a blue ball'],
    layers: [0, 4],
    seeds: [0, 1],
    stages: stages === 'both' ? [1, 2] : [1],
    numLayers: 4,
  });
  return { config, plan };
}

function manifestOf(config: ReturnType<typeof ifPlan>['config'], plan: Plan, done: Set<string>) {
  return buildManifest({
    config,
    name: 'tiny-if',
    promptSet: {
      prompts: plan.prompts,
      columns: ['category'],
      rows: plan.prompts.map((prompt) => ({ category: prompt.split(' ').at(-1) ?? '' })),
      set: null,
    },
    truncated: new Map([[1, { tokens: 90, max_tokens: 77 }]]),
    plan,
    loaded: plan.stages.includes(2) ? loaded : { ...loaded, stage2: null },
    modelId: '/models/tiny-if',
    worker: info,
    done,
    grids: [],
    complete: false,
    startedAt: new Date(),
    seconds: 1,
    generated: done.size,
    skipped: 0,
  });
}

describe('manifest with stages', () => {
  it('records each image with its stage and the resolved settings of both stages', () => {
    const { config, plan } = ifPlan();
    const done = new Set(plan.jobs.map((job) => job.key));
    const manifest = manifestOf(config, plan, done);
    expect(manifest.images).toHaveLength(16);
    expect(manifest.images.filter((image) => image.stage === 2)).toHaveLength(8);
    expect(manifest.images[1]).toMatchObject({ prompt: 'a red cube', layer: 0, seed: 0, stage: 2 });
    expect(manifest.images[1]?.path).toMatch(/\/L0-s0-stage2\.png$/);
    expect(manifest.config.sampler).toMatchObject({ steps: 2, guidance: 7, size: [16, 16] });
    expect(manifest.config.stages).toEqual([1, 2]);
    expect(manifest.config.stage2).toEqual({
      model: '/models/tiny-if-sr',
      revision: null,
      steps: 50,
      guidance: 4,
      size: [32, 32],
      height: 32,
      width: 32,
      scheduler: 'default',
      scheduler_class: 'DDPMScheduler',
      seed: 'same',
      family_options: { noise_level: 100 },
    });
    expect(manifest.config.sampler.family_options).toEqual({});
    expect(manifest.config.model).toMatchObject({ offload: 'none', clean_caption: 'auto' });
    expect(manifest.model).toMatchObject({
      family: 'if',
      family_options: { clean_caption: false },
      stage2: { id: '/models/tiny-if-sr', revision: null, pipeline_class: 'IFSuperResolutionPipeline' },
    });
  });

  it("keeps the prompt file's extra columns and truncation per prompt, and images.csv has them per image", () => {
    const { config, plan } = ifPlan();
    const manifest = manifestOf(config, plan, new Set(plan.jobs.slice(0, 3).map((job) => job.key)));
    expect(manifest.prompt_columns).toEqual(['category']);
    // No prompt set: each prompt has the generic question.
    const generic = (prompt: string) => [
      { id: 'matches_prompt', text: `Does the image show "${prompt}"?`, expected: 'yes' },
    ];
    expect(manifest.prompt_set).toBeNull();
    expect(manifest.prompts).toEqual([
      {
        prompt: 'a red cube',
        columns: { category: 'cube' },
        truncated: null,
        lensed_tokens: null,
        questions: generic('a red cube'),
      },
      {
        prompt: 'a blue ball',
        columns: { category: 'ball' },
        truncated: { tokens: 90, max_tokens: 77 },
        lensed_tokens: null,
        questions: generic('a blue ball'),
      },
    ]);
    const csv = imagesCsv(manifest).trimEnd().split('\n');
    expect(csv[0]).toBe('prompt,category,layer,depth,stage,seed,path,key');
    expect(csv.slice(1).map((line) => line.split(',').slice(0, 6).join(','))).toEqual([
      'a red cube,cube,0,0,1,0',
      'a red cube,cube,0,0,2,0',
      'a red cube,cube,0,0,1,1',
    ]);
  });

  it('quotes CSV fields and renames extra columns that clash with its own', () => {
    const csv = imagesCsv({
      prompt_columns: ['layer', 'note'],
      prompts: [
        {
          prompt: 'a "quoted", prompt',
          columns: { layer: 'x', note: 'two\nlines' },
          truncated: null,
          lensed_tokens: null,
          questions: [],
        },
      ],
      images: [
        {
          prompt: 'a "quoted", prompt',
          prompt_index: 0,
          layer: 3,
          depth: 75,
          seed: 1,
          stage: 1,
          path: 'p',
          key: 'k',
          readout: { encoders: [], pooled: null },
        },
      ],
    });
    expect(csv).toBe(
      'prompt,prompt_layer,note,layer,depth,stage,seed,path,key\n"a ""quoted"", prompt",x,"two\nlines",3,75,1,1,p,k\n',
    );
  });

  it('has no stage II records for a stage I run', () => {
    const { config, plan } = ifPlan('one');
    const manifest = manifestOf(config, plan, new Set(plan.jobs.slice(0, 3).map((job) => job.key)));
    expect(manifest.images.map((image) => image.stage)).toEqual([1, 1, 1]);
    expect(manifest.config.stages).toEqual([1]);
    expect(manifest.config.stage2).toBeNull();
    expect(manifest.model.stage2).toBeNull();
  });
});

describe('grids with stages', () => {
  it('titles say the stage only when there are two', () => {
    expect(gridTitle('a cat', 1, [1])).toBe('a cat');
    expect(gridTitle('a cat', 1, [1, 2])).toBe('a cat (stage I)');
    expect(gridTitle('a cat', 2, [1, 2])).toBe('a cat (stage II)');
  });

  it('writes one layer x seed grid per prompt and stage, from images of that stage', async () => {
    const out = tempDir();
    const { plan } = ifPlan();
    for (const job of plan.jobs) {
      const side = job.stage === 1 ? 16 : 32;
      const png = await sharp({
        create: { width: side, height: side, channels: 3, background: { r: 10 * job.layer, g: 0, b: 0 } },
      })
        .png()
        .toBuffer();
      mkdirSync(dirname(join(out, job.path)), { recursive: true });
      writeFileSync(join(out, job.path), png);
    }
    const events: unknown[] = [];
    const grids = await writeGrids({
      outDir: out,
      plan,
      prompts: plan.prompts,
      layers: plan.layers,
      seeds: plan.seeds,
      onGrid: (grid) => events.push(grid),
    });
    expect(grids.map((grid) => [grid.prompt, grid.stage])).toEqual([
      ['a red cube', 1],
      ['a red cube', 2],
      ['a blue ball', 1],
      ['a blue ball', 2],
    ]);
    expect(grids[0]?.path).toMatch(/^grids\/a-red-cube-[0-9a-f]{8}\.png$/);
    expect(grids[1]?.path).toMatch(/^grids\/a-red-cube-[0-9a-f]{8}-stage2\.png$/);
    expect(events).toEqual(grids);
    // Each grid has the layout of its stage's cells: 16 px for stage I, 32 px for stage II.
    for (const grid of grids) {
      const side = grid.stage === 1 ? 16 : 32;
      const layout = gridLayout({
        title: gridTitle(grid.prompt, grid.stage, plan.stages),
        legend: gridLegend(plan, grid.stage),
        rowLabels: ['L0 · 0%', 'L4 (final)'],
        colLabels: ['s0', 's1'],
        cellWidth: side,
        cellHeight: side,
      });
      const meta = await sharp(join(out, grid.path)).metadata();
      expect([meta.width, meta.height]).toEqual([layout.width, layout.height]);
    }
  });
});
