// configs/paper/: the committed presets are exactly what scripts/paper-presets.mjs writes; each one loads,
// reads its prompt set's file, resolves its layers on the checkpoint's encoder and plans offline to the
// image count its header gives; the twins of the hand-written presets keep their settings.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  configSource,
  type ExperimentConfig,
  loadConfigFile,
  loadPromptSet,
  loadPromptSets,
  resolveLayers,
} from '../src/config/index.js';
import { estimateRun, KNOWN_CHECKPOINTS } from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const paper = join(root, 'configs', 'paper');
const tempDir = tempDirs('dlens-paper-');
const MODELS = ['sd21', 'if', 'sdxl', 'flux'];

const presetFiles = (): string[] =>
  readdirSync(paper)
    .filter((name) => name.endsWith('.yaml'))
    .sort();

describe('configs/paper/', () => {
  it('holds exactly what scripts/paper-presets.mjs writes (else run it)', () => {
    const check = spawnSync('node', [join(root, 'scripts', 'paper-presets.mjs'), '--check'], {
      encoding: 'utf8',
    });
    expect(check.stderr).toBe('');
    expect(check.status).toBe(0);
    expect(check.stdout).toMatch(/36 presets in configs\/paper are up to date/);
  });

  it('has one preset per model and prompt set', async () => {
    const sets = await loadPromptSets();
    const expected = MODELS.flatMap((model) =>
      sets.map((set) => `${model}-${set.file.replace(/\.csv$/, '.yaml')}`),
    );
    expect(presetFiles()).toEqual(expected.sort());
    expect(presetFiles()).toContain('sd21-objects.yaml');
    expect(presetFiles()).toContain('if-two-colors.yaml');
    expect(presetFiles()).toContain('sdxl-relations.yaml');
    expect(presetFiles()).toContain('flux-celebrities.yaml');
  });

  it('each loads, reads its set, resolves its layers and plans offline to its stated size', async () => {
    const sets = await loadPromptSets();
    const env = { ...process.env, HF_HUB_CACHE: tempDir(), HF_HUB_OFFLINE: '1' };
    for (const name of presetFiles()) {
      const file = join(paper, name);
      const stem = name.replace(/\.yaml$/, '');
      const config = await loadConfigFile(file);
      expect(config.name, name).toBe(stem);
      const set = sets.find((s) => stem.endsWith(`-${s.file.replace(/\.csv$/, '')}`));
      expect(set, name).toBeDefined();
      expect(config.prompts, name).toEqual({ file: `../prompts/${set?.file}`, column: 'prompt' });
      const prompts = await loadPromptSet(config.prompts, { configDir: paper });
      expect(prompts.prompts, name).toEqual(set?.rows.map((row) => row.prompt));

      const known = KNOWN_CHECKPOINTS[config.model.id ?? ''];
      expect(known, name).toBeDefined();
      const depth = known?.numLayers ?? 0;
      const layers = resolveLayers(
        config.lens.layers,
        depth,
        config.model.family === 'sdxl' ? depth - 1 : depth,
      );

      const header = readFileSync(file, 'utf8');
      const stated = /= ([\d,]+) images/.exec(header)?.[1]?.replaceAll(',', '');
      expect(header, name).toMatch(new RegExp(`x ${layers.length} layers x 4 seeds`));
      const plan = await estimateRun(config, { outDir: join(tempDir(), 'out'), env });
      expect(plan.source, name).toBe('offline');
      expect(plan.layers, name).toEqual(layers);
      expect(plan.images, name).toBe(Number(stated));
      expect(plan.time.basis, name).toBe('table');
      expect(header, name).toMatch(/^# Needs the /m);
      expect(header.replace(/\n# /g, ' '), name).toMatch(/and a GPU/);
    }
  });

  /** A config's settings, without its name and with its prompt file resolved. */
  function settings(config: ExperimentConfig) {
    const { name: _name, prompts, ...rest } = config;
    const dir = configSource(config)?.dir ?? '';
    return {
      ...rest,
      prompts: Array.isArray(prompts) ? prompts : { ...prompts, file: resolve(dir, prompts.file) },
    };
  }

  it('keeps the settings of the presets they follow', async () => {
    const twins = [
      ['sd21-two-colors.yaml', 'sd21-two-colors.yaml'],
      ['if-two-colors.yaml', 'if-paper.yaml'],
      ['sdxl-objects.yaml', 'sdxl-base.yaml'],
      ['flux-objects.yaml', 'flux-dev.yaml'],
    ];
    for (const [generated, original] of twins) {
      const a = await loadConfigFile(join(paper, generated ?? ''));
      const b = await loadConfigFile(join(root, 'configs', original ?? ''));
      expect(settings(a), generated).toEqual(settings(b));
    }
  });
});
