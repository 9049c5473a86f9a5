// The lens ablations on the TypeScript side (src/experiment/ablation.ts and where they go): lens.tokens,
// lens.mix and lens.embeds in the config and on the command line, lens.mix resolved and the run's layers
// under it, the settings (and so the keys) they add only when used, the generate request, the manifest,
// the grid legend, sweeps over them and `plan`. None of this needs the worker.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LoadedMessage } from '../src/bridge/index.js';
import { lensConfig } from '../src/cli/options.js';
import {
  type ExperimentConfigInput,
  loadConfigFile,
  parseConfig,
  toJsonSchema,
} from '../src/config/index.js';
import { ablationSettings, resolveMix, runLayers } from '../src/experiment/ablation.js';
import { familyOptionsFor } from '../src/experiment/family.js';
import { gridLegend } from '../src/experiment/grids.js';
import {
  buildManifest,
  buildWork,
  contentKey,
  estimateRun,
  expandSweep,
  imageSettings,
  type LoadedForSettings,
  planExperiment,
} from '../src/experiment/index.js';
import { resolveInputs } from '../src/experiment/inputs.js';
import { oneEncoder, sdCapabilities } from './capabilities.js';
import { configError, write } from './config-helpers.js';
import { safetensors } from './safetensors.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-ablation-');

const config = (lens: ExperimentConfigInput['lens'], extra: Record<string, unknown> = {}) =>
  parseConfig({ model: { id: 'org/m' }, prompts: ['a cat', 'a dog'], lens, ...extra });

/** The fields and messages of the ConfigError parsing `lens` gives. */
async function issues(lens: unknown): Promise<string[]> {
  const error = await configError(() => parseConfig({ prompts: ['a cat'], lens }));
  return error.message.split('\n');
}

const loaded: LoadedForSettings = {
  revision: 'abc123',
  family: 'sd',
  dtype: 'fp32',
  defaults: { steps: 50, guidance: 7.5, height: 64, width: 64, scheduler: 'PNDMScheduler' },
  capabilities: sdCapabilities,
  family_options: {},
  encoders: oneEncoder('CLIPTextModel', 12, 'final_layer_norm'),
  stage2: null,
  num_layers: 12,
  stock_layer: 11,
};

/** The worker's whole `loaded` reply for `loaded`, as the manifest takes it. */
const loadedMessage: LoadedMessage = {
  ...loaded,
  v: 1,
  id: 'r1',
  type: 'loaded',
  model: 'org/m',
  num_layers: 12,
  stock_layer: 11,
  pipeline_class: 'StableDiffusionPipeline',
  device: 'cpu',
  lens: { norm: 'final_layer_norm', uncond: 'final layer of ""' },
  notices: [],
  config: null,
  lora: [],
};
const worker = {
  worker: '0.1.0',
  python: '3.12',
  torch: '2',
  diffusers: '0',
  transformers: '5',
  device: 'cpu',
} as const;

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);
const at = { prompt: 'a cat', layer: 4, seed: 1, stage: 1 } as const;

function keyOf(lens: ExperimentConfigInput['lens'], embeds: string | null = null): string {
  return contentKey(
    imageSettings(config(lens), loaded, 'org/m', undefined, undefined, embeds ? { sha256: embeds } : null),
    at,
  );
}

describe('lens.tokens, lens.mix and lens.embeds in the config', () => {
  it('take the documented values', () => {
    expect(config({}).lens).toMatchObject({ tokens: 'all' });
    expect(config({}).lens.mix).toBeUndefined();
    expect(config({}).lens.embeds).toBeUndefined();
    for (const tokens of ['all', 'prompt', 'padding', 0, 76] as const) {
      expect(config({ tokens }).lens.tokens).toBe(tokens);
    }
    expect(config({ mix: { layers: [4, 8], alpha: 0.5 } }).lens.mix).toEqual({ layers: [4, 8], alpha: 0.5 });
    expect(config({ mix: { layers: [-1, 'stock'], alpha: 0 } }).lens.mix).toEqual({
      layers: [-1, 'stock'],
      alpha: 0,
    });
    expect(config({ mix: { layers: [0, 8], alpha: 1 } }).lens.mix?.alpha).toBe(1);
    expect(config({ embeds: 'e.safetensors', uncond: 'same-layer' }).lens.embeds).toBe('e.safetensors');
    // tokens and mix combine.
    expect(config({ tokens: 'padding', mix: { layers: [2, 6], alpha: 0.3 } }).lens.tokens).toBe('padding');
  });

  it('refuses bad tokens, naming lens.tokens', async () => {
    const must = 'must be all, prompt, padding or a position (a non-negative integer)';
    expect(await issues({ tokens: 'prompts' })).toEqual([`lens.tokens: ${must} (got "prompts")`]);
    expect(await issues({ tokens: -1 })).toEqual(['lens.tokens: must be >= 0 (got -1)']);
    expect(await issues({ tokens: 1.5 })).toEqual([`lens.tokens: ${must} (got 1.5)`]);
    expect(await issues({ tokens: true })).toEqual([`lens.tokens: ${must} (got true)`]);
  });

  it('refuses a bad mix, naming the field', async () => {
    expect(await issues({ mix: { layers: [4, 8], alpha: 1.5 } })).toEqual([
      'lens.mix.alpha: must be <= 1 (got 1.5)',
    ]);
    expect(await issues({ mix: { layers: [4, 8], alpha: -0.1 } })).toEqual([
      'lens.mix.alpha: must be >= 0 (got -0.1)',
    ]);
    expect(await issues({ mix: { layers: [4, 8], alpha: 'half' } })).toEqual([
      'lens.mix.alpha: must be a number (got "half")',
    ]);
    expect(await issues({ mix: { layers: [4, 8] } })).toEqual(['lens.mix.alpha: is required']);
    expect(await issues({ mix: { layers: [4], alpha: 0.5 } })).toEqual([
      'lens.mix.layers: must be two layers [a, b], e.g. [4, 8]',
    ]);
    expect(await issues({ mix: { layers: [4, 8, 9], alpha: 0.5 } })).toEqual([
      'lens.mix.layers: must be two layers [a, b], e.g. [4, 8]',
    ]);
    expect(await issues({ mix: { layers: [4, 'last'], alpha: 0.5 } })).toEqual([
      'lens.mix.layers[1]: must be a layer: an integer (-1 = L) or "stock" (got "last")',
    ]);
    expect(await issues({ mix: { layers: [4, 4], alpha: 0.5 } })).toEqual([
      'lens.mix.layers: a and b are both 4: mix two different layers',
    ]);
    expect(await issues({ mix: { layers: ['stock', 'stock'], alpha: 0.5 } })).toEqual([
      'lens.mix.layers: a and b are both "stock": mix two different layers',
    ]);
    expect(await issues({ mix: { layers: [4, 8], alpha: 0.5, beta: 1 } })).toEqual([
      'lens.mix: unexpected key "beta" (allowed: layers, alpha)',
    ]);
  });

  it('refuses embeds with a mix or tokens other than all, naming lens.embeds', async () => {
    expect(await issues({ embeds: 'e.safetensors', mix: { layers: [4, 8], alpha: 0.5 } })).toEqual([
      "lens.embeds: replaces the prompt's conditioning, so it does not combine with a mix; leave one of them out",
    ]);
    expect(await issues({ embeds: 'e.safetensors', tokens: 'prompt' })).toEqual([
      "lens.embeds: replaces the prompt's conditioning, so it does not combine with tokens prompt (only all); " +
        'leave one of them out',
    ]);
    expect(await issues({ embeds: 'e.safetensors', tokens: 3, mix: { layers: [4, 8], alpha: 0.5 } })).toEqual(
      [
        "lens.embeds: replaces the prompt's conditioning, so it does not combine with a mix or tokens 3 (only " +
          'all); leave one of them out',
      ],
    );
    expect(await issues({ embeds: '' })).toEqual(['lens.embeds: must not be empty']);
  });

  it('locates a bad value at its line in a config file', async () => {
    const file = write(
      tempDir(),
      'mix.yaml',
      'prompts: [a cat]\nlens:\n  mix:\n    layers: [4, 8]\n    alpha: 2\n  tokens: everything\n',
    );
    const error = await configError(loadConfigFile(file));
    expect(error.message.split('\n')).toEqual([
      `${file}:5: lens.mix.alpha: must be <= 1 (got 2)`,
      `${file}:6: lens.tokens: must be all, prompt, padding or a position (a non-negative integer) (got "everything")`,
    ]);
  });

  it('are in the JSON Schema, described', () => {
    const lens = (toJsonSchema().properties as Record<string, { properties: Record<string, unknown> }>).lens;
    expect(Object.keys(lens?.properties ?? {})).toEqual(expect.arrayContaining(['tokens', 'mix', 'embeds']));
    expect(JSON.stringify(lens?.properties.mix)).toMatch(/alpha/);
  });
});

describe('--tokens, --mix and --embeds', () => {
  it('set lens.tokens, lens.mix and lens.embeds', () => {
    expect(lensConfig('a cat', { tokens: 'prompt' }).lens.tokens).toBe('prompt');
    expect(lensConfig('a cat', { tokens: ' 5 ' }).lens.tokens).toBe(5);
    expect(lensConfig('a cat', { mix: '4,8,0.5' }).lens.mix).toEqual({ layers: [4, 8], alpha: 0.5 });
    expect(lensConfig('a cat', { mix: ' stock , -1 , 1 ' }).lens.mix).toEqual({
      layers: ['stock', -1],
      alpha: 1,
    });
    expect(lensConfig('a cat', { mix: '0,8,.25' }).lens.mix?.alpha).toBe(0.25);
    expect(lensConfig('a cat', { embeds: 'e.safetensors' }).lens.embeds).toBe('e.safetensors');
  });

  it('name the option in their errors', async () => {
    const refused = async (options: Parameters<typeof lensConfig>[1]) =>
      (await configError(() => lensConfig('a cat', options))).message.split('\n');
    const form =
      'must be A,B,ALPHA: two layers (integers, -1 = L, or stock) and the weight of the second, 0..1, like 4,8,0.5';
    expect(await refused({ mix: '4,8' })).toEqual([`--mix: ${form} (got "4,8")`]);
    expect(await refused({ mix: '4,x,0.5' })).toEqual([`--mix: ${form} (got "4,x,0.5")`]);
    expect(await refused({ mix: '4,8,half' })).toEqual([`--mix: ${form} (got "4,8,half")`]);
    expect(await refused({ mix: '4.5,8,0.5' })).toEqual([`--mix: ${form} (got "4.5,8,0.5")`]);
    expect(await refused({ mix: '4,8,1.5' })).toEqual(['--mix: must be <= 1 (got 1.5)']);
    expect(await refused({ mix: '4,4,0.5' })).toEqual([
      '--mix: a and b are both 4: mix two different layers',
    ]);
    expect(await refused({ tokens: 'prompts' })).toEqual([
      '--tokens: must be all, prompt, padding or a position (a non-negative integer) (got "prompts")',
    ]);
    expect(await refused({ tokens: '-2' })).toEqual(['--tokens: must be >= 0 (got -2)']);
    expect(await refused({ embeds: 'e.safetensors', mix: '4,8,0.5' })).toEqual([
      "--embeds: replaces the prompt's conditioning, so it does not combine with a mix; leave one of them out",
    ]);
  });
});

describe('lens.mix against the model', () => {
  const depth = { numLayers: 12, stockLayer: 11 };
  const mixed = (layers: [number | 'stock', number | 'stock'], lens: ExperimentConfigInput['lens'] = {}) =>
    config({ mix: { layers, alpha: 0.25 }, ...lens });

  it('resolves its layers as layer specs do: negative from the end, stock the stock layer', () => {
    expect(resolveMix(config({}), depth)).toBeNull();
    expect(resolveMix(mixed([4, 8]), depth)).toEqual({ layers: [4, 8], alpha: 0.25 });
    expect(resolveMix(mixed([-1, 'stock']), depth)).toEqual({ layers: [12, 11], alpha: 0.25 });
  });

  it('refuses a layer out of range, or two that are one layer, naming lens.mix.layers', async () => {
    const refused = async (layers: [number | 'stock', number | 'stock'], at = depth) =>
      (await configError(() => resolveMix(mixed(layers), at))).message;
    expect(await refused([4, 13])).toBe('lens.mix.layers[1]: layer 13 is out of range 0..12');
    expect(await refused([-14, 4])).toBe(
      'lens.mix.layers[0]: layer -14 is out of range 0..12; negative layers count from the end, -1 = 12, -13 = 0',
    );
    expect(await refused([-1, 12])).toBe(
      'lens.mix.layers: -1 and 12 are both layer 12 of 0..12: mix two different layers',
    );
    expect(await refused(['stock', 11])).toBe(
      'lens.mix.layers: "stock" and 11 are both layer 11 of 0..12: mix two different layers',
    );
    const cli = lensConfig('a cat', { mix: '4,20,0.5' });
    expect((await configError(() => resolveMix(cli, depth))).message).toBe(
      '--mix: layer 20 is out of range 0..12',
    );
  });

  it('makes the run of layer a alone: lens.layers left at all means [a], else it must be [a]', async () => {
    expect(runLayers(config({ layers: '0:4' }), depth)).toEqual([0, 1, 2, 3, 4]);
    expect(runLayers(mixed([4, 8]), depth)).toEqual([4]);
    expect(runLayers(mixed([-2, 8]), depth)).toEqual([11]);
    expect(runLayers(mixed(['stock', 0]), depth)).toEqual([11]);
    expect(runLayers(mixed([4, 8], { layers: 'ALL' }), depth)).toEqual([4]);
    expect(runLayers(mixed([4, 8], { layers: 4 }), depth)).toEqual([4]);
    expect(runLayers(mixed([4, 8], { layers: '-9' }), depth)).toEqual([4]);
    expect(runLayers(mixed([-2, 8], { layers: 'stock' }), depth)).toEqual([11]);
    const refused = async (layers: string | number | number[]) => {
      const error = await configError(() => runLayers(mixed([4, 8], { layers }), depth));
      expect(error.field).toBe('lens.layers');
      return error.message;
    };
    expect(await refused(5)).toBe(
      'lens.layers: gives layer 5, but with a mix the images are of its first layer, 4, alone: leave the layers ' +
        'at all, or set them to 4',
    );
    expect(await refused('0:8:4')).toBe(
      'lens.layers: gives layers 0, 4, 8, but with a mix the images are of its first layer, 4, alone: leave the ' +
        'layers at all, or set them to 4',
    );
    // A bad spec is reported as without a mix.
    expect(await refused('0:30')).toBe('lens.layers: layer 30 is out of range 0..12 (in "0:30")');
  });

  it('is checked before anything starts when the config files tell the depth (the shapes model: L = 12)', async () => {
    const refused = async (lens: ExperimentConfigInput['lens']) =>
      (await configError(resolveInputs(parseConfig({ prompts: ['a cat'], lens }), {}))).message;
    expect(await refused({ mix: { layers: [4, 13], alpha: 0.5 } })).toBe(
      'lens.mix.layers[1]: layer 13 is out of range 0..12',
    );
    expect(await refused({ mix: { layers: [4, 8], alpha: 0.5 }, layers: '0,4' })).toMatch(
      /^lens\.layers: gives layers 0, 4, but with a mix/,
    );
    const file = write(
      tempDir(),
      'mix.yaml',
      'prompts: [a cat]\nlens:\n  mix:\n    layers: [4, 13]\n    alpha: 0.5\n',
    );
    const located = await configError(async () => resolveInputs(await loadConfigFile(file), {}));
    expect(located.message).toBe(`${file}:4: lens.mix.layers[1]: layer 13 is out of range 0..12`);
    const inputs = await resolveInputs(
      parseConfig({ prompts: ['a cat'], lens: { mix: { layers: [-3, 8], alpha: 0.5 } } }),
      {},
    );
    expect(inputs.layersFor(8)).toEqual([6]);
  });
});

describe('settings and keys', () => {
  const base = keyOf({});

  it('add nothing to the settings without an ablation, so keys stay as they were', () => {
    const settings = imageSettings(config({ tokens: 'all' }), loaded, 'org/m');
    expect(settings.lens).toEqual({ uncond: 'final', noise: 'shared' });
    expect(keyOf({ tokens: 'all' })).toBe(base);
    // The depth is needed only for a mix.
    const { num_layers: _n, stock_layer: _s, ...withoutDepth } = loaded;
    expect(imageSettings(config({ tokens: 'prompt' }), withoutDepth, 'org/m').lens).toEqual({
      uncond: 'final',
      noise: 'shared',
      tokens: 'prompt',
    });
    expect(() =>
      imageSettings(config({ mix: { layers: [4, 8], alpha: 0.5 } }), withoutDepth, 'org/m'),
    ).toThrow("lens.mix needs the model's depth");
    expect(() => imageSettings(config({ embeds: 'e.safetensors' }), loaded, 'org/m')).toThrow(
      'no sha256 for lens.embeds',
    );
  });

  it('record each ablation in the shape the Python API writes too', () => {
    const settings = (lens: ExperimentConfigInput['lens'], embeds: string | null = null) =>
      imageSettings(config(lens), loaded, 'org/m', undefined, undefined, embeds ? { sha256: embeds } : null)
        .lens;
    expect(settings({ tokens: 'padding' })).toEqual({ uncond: 'final', noise: 'shared', tokens: 'padding' });
    expect(settings({ tokens: 3 })).toMatchObject({ tokens: 3 });
    expect(settings({ mix: { layers: [-1, 'stock'], alpha: 0.5 } })).toEqual({
      uncond: 'final',
      noise: 'shared',
      mix: { layers: [12, 11], alpha: 0.5 },
    });
    expect(settings({ embeds: 'some/where.safetensors' }, SHA_A)).toEqual({
      uncond: 'final',
      noise: 'shared',
      embeds: { sha256: SHA_A },
    });
    expect(ablationSettings(config({}), {}, null)).toEqual({});
  });

  it('change the keys exactly when the image would', () => {
    const keys = [
      base,
      keyOf({ tokens: 'prompt' }),
      keyOf({ tokens: 'padding' }),
      keyOf({ tokens: 3 }),
      keyOf({ tokens: 4 }),
      keyOf({ mix: { layers: [4, 8], alpha: 0.5 } }),
      keyOf({ mix: { layers: [4, 8], alpha: 0.25 } }),
      keyOf({ mix: { layers: [4, 9], alpha: 0.5 } }),
      keyOf({ mix: { layers: [4, 8], alpha: 0.5 }, tokens: 'prompt' }),
      keyOf({ embeds: 'e.safetensors' }, SHA_A),
      keyOf({ embeds: 'e.safetensors' }, SHA_B),
    ];
    expect(new Set(keys).size).toBe(keys.length);
    // The same layers written another way, and the same bytes elsewhere, are the same images.
    expect(keyOf({ mix: { layers: [-9, -5], alpha: 0.5 } })).toBe(
      keyOf({ mix: { layers: [4, 8], alpha: 0.5 } }),
    );
    expect(keyOf({ mix: { layers: [4, 'stock'], alpha: 0.5 } })).toBe(
      keyOf({ mix: { layers: [4, 11], alpha: 0.5 } }),
    );
    expect(keyOf({ embeds: '/elsewhere/moved.safetensors' }, SHA_A)).toBe(
      keyOf({ embeds: 'e.safetensors' }, SHA_A),
    );
  });
});

describe('the generate request, the manifest and the grid legend', () => {
  const embedsFile = { path: '/data/e.safetensors', sha256: SHA_A };

  function planOf(lens: ExperimentConfigInput['lens'], embeds: typeof embedsFile | null = null) {
    const cfg = config(lens, { seeds: [0] });
    const settings = imageSettings(cfg, loaded, 'org/m', undefined, undefined, embeds);
    const plan = planExperiment({
      settings,
      familyOptions: familyOptionsFor(cfg, loaded),
      prompts: ['a cat', 'a dog'],
      layers: runLayers(cfg, { numLayers: 12, stockLayer: 11 }),
      seeds: [0],
      numLayers: 12,
      stockLayer: 11,
      encoders: loaded.encoders,
      embeds,
    });
    return { cfg, plan };
  }

  it('sends tokens, the resolved mix and the embeds file; all, null and null without them', () => {
    const request = (lens: ExperimentConfigInput['lens'], embeds: typeof embedsFile | null = null) => {
      const { cfg, plan } = planOf(lens, embeds);
      return buildWork(cfg, plan, () => false)?.request;
    };
    expect(request({})).toMatchObject({ tokens: 'all', mix: null, embeds: null });
    expect(request({ tokens: 7 })).toMatchObject({ tokens: 7, mix: null, embeds: null });
    const mixed = request({ tokens: 'prompt', mix: { layers: ['stock', -1], alpha: 0.75 } });
    expect(mixed).toMatchObject({ tokens: 'prompt', mix: { layers: [11, 12], alpha: 0.75 }, embeds: null });
    expect(mixed?.items.map((item) => item.layer)).toEqual([11, 11]);
    expect(request({ embeds: 'e.safetensors' }, embedsFile)).toMatchObject({
      tokens: 'all',
      mix: null,
      embeds: { path: '/data/e.safetensors', sha256: SHA_A },
    });
  });

  it('refuses a plan whose embeds file is not the one its settings name', () => {
    const cfg = config({ embeds: 'e.safetensors' });
    const settings = imageSettings(cfg, loaded, 'org/m', undefined, undefined, embedsFile);
    const plan = (embeds: typeof embedsFile | null) => () =>
      planExperiment({ settings, prompts: ['a cat'], layers: [4], seeds: [0], numLayers: 12, embeds });
    expect(plan(null)).toThrow(/the settings name a lens.embeds file/);
    expect(plan({ ...embedsFile, sha256: SHA_B })).toThrow(/the settings name a lens.embeds file/);
    expect(plan(embedsFile)).not.toThrow();
  });

  it('records the ablations in the config section and the lensed tokens per prompt', () => {
    const { cfg, plan } = planOf({ tokens: 'prompt', mix: { layers: [4, -1], alpha: 0.5 } });
    const manifest = buildManifest({
      config: cfg,
      name: 'x',
      promptSet: { prompts: plan.prompts, columns: [], rows: plan.prompts.map(() => ({})), set: null },
      truncated: new Map(),
      lensedTokens: new Map([
        [1, { positions: [0, 1, 2, 3], tokens: ['<|startoftext|>', 'a</w>', 'dog</w>', null] }],
      ]),
      plan,
      loaded: loadedMessage,
      modelId: 'org/m',
      worker,
      done: new Set(plan.jobs.map((job) => job.key)),
      grids: [],
      complete: true,
      startedAt: new Date(),
      seconds: 1,
      generated: 2,
      skipped: 0,
    });
    expect(manifest.config.lens).toMatchObject({
      layers: [4],
      layer_spec: 'all',
      tokens: 'prompt',
      mix: { layers: [4, 12], alpha: 0.5 },
      embeds: null,
    });
    expect(manifest.prompts.map((p) => p.lensed_tokens)).toEqual([
      null,
      { positions: [0, 1, 2, 3], tokens: ['<|startoftext|>', 'a</w>', 'dog</w>', null] },
    ]);
    const withEmbeds = planOf({ embeds: 'e.safetensors' }, embedsFile);
    const embedsManifest = buildManifest({
      config: withEmbeds.cfg,
      name: 'x',
      promptSet: { prompts: withEmbeds.plan.prompts, columns: [], rows: [{}, {}], set: null },
      truncated: new Map(),
      plan: withEmbeds.plan,
      loaded: loadedMessage,
      modelId: 'org/m',
      worker,
      done: new Set<string>(),
      grids: [],
      complete: true,
      startedAt: new Date(),
      seconds: 1,
      generated: 0,
      skipped: 0,
    });
    expect(embedsManifest.config.lens).toMatchObject({
      tokens: 'all',
      mix: null,
      embeds: { path: '/data/e.safetensors', sha256: SHA_A },
    });
    expect(embedsManifest.prompts[0]?.lensed_tokens).toBeNull();
  });

  it('names the ablations in the grid legend', () => {
    expect(gridLegend(planOf({}).plan, 1).join(' · ')).not.toMatch(/tokens|mix|embeds/);
    expect(gridLegend(planOf({ tokens: 'padding', mix: { layers: [4, 8], alpha: 0.7 } }).plan, 1)).toEqual(
      expect.arrayContaining(['tokens padding', 'mix 0.3×L4 + 0.7×L8']),
    );
    expect(gridLegend(planOf({ embeds: 'e.safetensors' }, embedsFile).plan, 1)).toContain(
      'embeds e.safetensors',
    );
  });
});

describe('sweeps and plan', () => {
  it('sweep lens.tokens and lens.mix.alpha, into variants named by their values', () => {
    const tokens = expandSweep(
      parseConfig({ prompts: ['a cat'], sweep: { 'lens.tokens': ['all', 'prompt', 'padding', 2] } }),
    );
    expect(tokens.variants.map((v) => v.name)).toEqual([
      'tokens-all',
      'tokens-prompt',
      'tokens-padding',
      'tokens-2',
    ]);
    expect(tokens.variants.map((v) => v.config.lens.tokens)).toEqual(['all', 'prompt', 'padding', 2]);
    const alpha = expandSweep(
      parseConfig({
        prompts: ['a cat'],
        lens: { mix: { layers: [4, 8], alpha: 0.5 } },
        sweep: { 'lens.mix.alpha': [0, 0.5, 1], 'lens.tokens': ['all', 'prompt'] },
      }),
    );
    expect(alpha.variants.map((v) => v.name)).toEqual([
      'alpha-0_tokens-all',
      'alpha-0_tokens-prompt',
      'alpha-0.5_tokens-all',
      'alpha-0.5_tokens-prompt',
      'alpha-1_tokens-all',
      'alpha-1_tokens-prompt',
    ]);
    expect(alpha.variants.map((v) => v.config.lens.mix)).toEqual(
      [0, 0, 0.5, 0.5, 1, 1].map((a) => ({ layers: [4, 8], alpha: a })),
    );
    // The mix's layers swept: each variant's images are of its own first layer.
    const layers = expandSweep(
      parseConfig({
        prompts: ['a cat'],
        lens: { mix: { layers: [4, 8], alpha: 0.5 } },
        sweep: {
          'lens.mix.layers': [
            [4, 8],
            [2, 8],
          ],
        },
      }),
    );
    expect(layers.variants.map((v) => v.name)).toEqual(['layers-4-8', 'layers-2-8']);
    expect(layers.variants.map((v) => runLayers(v.config, { numLayers: 8, stockLayer: 8 }))).toEqual([
      [4],
      [2],
    ]);
  });

  it('refuse a swept value that does not make a config, naming the variant', async () => {
    const noMix = await configError(() =>
      expandSweep(parseConfig({ prompts: ['a cat'], sweep: { 'lens.mix.alpha': [0, 1] } })),
    );
    // Reported once, for the first variant it is found in.
    expect(noMix.message).toBe('lens.mix.layers: is required (sweep variant alpha-0)');
    const tooMuch = await configError(() =>
      expandSweep(
        parseConfig({
          prompts: ['a cat'],
          lens: { mix: { layers: [4, 8], alpha: 0.5 } },
          sweep: { 'lens.mix.alpha': [0.5, 2] },
        }),
      ),
    );
    expect(tooMuch.message).toBe('lens.mix.alpha: must be <= 1 (got 2) (sweep variant alpha-2)');
  });

  it('plans each ablation offline (the shapes model)', async () => {
    const env = { ...process.env, HF_HUB_OFFLINE: '1' };
    const dir = tempDir();
    writeFileSync(
      join(dir, 'e.safetensors'),
      safetensors({ prompt_embeds: { dtype: 'F32', shape: [1, 77, 32] } }),
    );
    const plan = (lens: ExperimentConfigInput['lens']) =>
      estimateRun(parseConfig({ prompts: ['a cat', 'a dog'], seeds: [0, 1], lens }), {
        outDir: join(dir, 'out'),
        configDir: dir,
        env,
      });
    const plain = await plan({});
    expect(plain.notes.join('\n')).not.toMatch(/lens\.(tokens|mix|embeds)/);
    const tokens = await plan({ tokens: 'padding', layers: '0,8' });
    expect(tokens).toMatchObject({ images: 8, layers: [0, 8] });
    expect(tokens.notes).toContain(
      "lens.tokens: the padding after the prompt follows the layer; the other positions take the stock layer's",
    );
    const mixed = await plan({ mix: { layers: [4, -1], alpha: 0.5 } });
    expect(mixed).toMatchObject({ images: 4, layers: [4], evaluations: plain.evaluations / 13 });
    expect(mixed.notes).toContain(
      "lens.mix: each image's conditioning is (1 - 0.5) x layer 4's + 0.5 x layer 12's (the encoder is read at both)",
    );
    const embeds = await plan({ embeds: 'e.safetensors', layers: 8 });
    expect(embeds).toMatchObject({ images: 4, layers: [8] });
    expect(embeds.notes.join('\n')).toMatch(/lens\.embeds: the tensors of e\.safetensors replace/);
    await expect(plan({ mix: { layers: [4, 13], alpha: 0.5 } })).rejects.toThrow(
      'lens.mix.layers[1]: layer 13 is out of range 0..12',
    );
  });
});
