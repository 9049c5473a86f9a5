// readModelDepth / resolveHubCommit: L and the cached commit from config files, without Python; L checked
// against what the Python worker reports as num_layers for the embedded model and the test fixtures.
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LensWorker } from '../src/bridge/index.js';
import { readModelDepth, resolveHubCommit } from '../src/config/index.js';
import { EMBEDDED_MODEL_DIR } from '../src/paths.js';
import { fixtureLoad } from './bridge/jobs.js';

const COMMIT = 'a'.repeat(40);
const OTHER = '0123456789abcdef0123456789abcdef01234567';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'dlens-model-info-'));
}

function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(value));
}

const CLIP_INDEX = {
  _class_name: 'StableDiffusionPipeline',
  text_encoder: ['transformers', 'CLIPTextModel'],
};
const T5_INDEX = { _class_name: 'IFPipeline', text_encoder: ['transformers', 'T5EncoderModel'] };

/** A diffusers folder with a text encoder config. */
function checkpoint(dir: string, index: unknown, encoder?: unknown): string {
  writeJson(join(dir, 'model_index.json'), index);
  if (encoder !== undefined) writeJson(join(dir, 'text_encoder', 'config.json'), encoder);
  return dir;
}

/** A model in a hub cache: refs/<name> → commit, snapshots/<commit>/ holding a checkpoint. */
function cached(
  cache: string,
  id: string,
  refs: Record<string, string>,
  snapshots: Record<string, number>,
): void {
  const repo = join(cache, `models--${id.replace('/', '--')}`);
  for (const [name, commit] of Object.entries(refs)) {
    mkdirSync(dirname(join(repo, 'refs', name)), { recursive: true });
    writeFileSync(join(repo, 'refs', name), `${commit}\n`);
  }
  for (const [commit, layers] of Object.entries(snapshots)) {
    checkpoint(join(repo, 'snapshots', commit), CLIP_INDEX, {
      model_type: 'clip_text_model',
      num_hidden_layers: layers,
    });
  }
}

describe('readModelDepth of local folders', () => {
  it('the embedded shapes model: CLIP num_hidden_layers 12', async () => {
    expect(await readModelDepth(EMBEDDED_MODEL_DIR)).toBe(12);
  });

  it('CLIP num_hidden_layers, T5 num_layers', async () => {
    const dir = tempDir();
    const clip = checkpoint(join(dir, 'clip'), CLIP_INDEX, {
      model_type: 'clip_text_model',
      num_hidden_layers: 23,
    });
    const t5 = checkpoint(join(dir, 't5'), T5_INDEX, {
      model_type: 't5',
      num_layers: 24,
      num_decoder_layers: 24,
      d_model: 4096,
    });
    expect(await readModelDepth(clip)).toBe(23);
    expect(await readModelDepth(t5)).toBe(24);
  });

  it('T5 by its class when the config has no model_type', async () => {
    const dir = checkpoint(tempDir(), T5_INDEX, { num_layers: 4, num_hidden_layers: 99 });
    expect(await readModelDepth(dir)).toBe(4);
  });

  it('null when unknown', async () => {
    const dir = tempDir();
    const noEncoder = checkpoint(join(dir, 'sr'), {
      _class_name: 'IFSuperResolutionPipeline',
      text_encoder: [null, null],
    });
    const noConfig = checkpoint(join(dir, 'nocfg'), CLIP_INDEX);
    const noIndex = join(dir, 'noindex');
    writeJson(join(noIndex, 'text_encoder', 'config.json'), { num_hidden_layers: 3 });
    const badJson = checkpoint(join(dir, 'bad'), CLIP_INDEX);
    mkdirSync(join(badJson, 'text_encoder'));
    writeFileSync(join(badJson, 'text_encoder', 'config.json'), '{ not json');
    const noKey = checkpoint(join(dir, 'nokey'), CLIP_INDEX, { model_type: 'clip_text_model' });
    const float = checkpoint(join(dir, 'float'), CLIP_INDEX, { num_hidden_layers: 2.5 });
    // Several encoders (SDXL): which depth the lens addresses is the family's to say.
    const sdxl = { ...CLIP_INDEX, text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'] };
    const two = checkpoint(join(dir, 'two'), sdxl, { num_hidden_layers: 3 });
    const file = join(dir, 'model.safetensors');
    writeFileSync(file, '');
    for (const id of [noEncoder, noConfig, noIndex, badJson, noKey, float, two, file, join(dir, 'missing')]) {
      expect(await readModelDepth(id)).toBeNull();
    }
  });
});

describe('the hub cache', () => {
  let cache: string;
  const env = () => ({ HF_HUB_CACHE: cache });

  beforeAll(() => {
    cache = tempDir();
    cached(
      cache,
      'org/model',
      { main: COMMIT, fp16: OTHER, 'refs/pr/1': OTHER },
      { [COMMIT]: 12, [OTHER]: 6 },
    );
    // A ref to a commit that is not downloaded, and a model with refs but no snapshots.
    cached(cache, 'org/gone', { main: OTHER }, {});
    cached(cache, 'solo', { main: COMMIT }, { [COMMIT]: 3 });
  });

  it('resolves main, a branch, a pr ref, and a commit', async () => {
    expect(await resolveHubCommit('org/model', undefined, env())).toBe(COMMIT);
    expect(await resolveHubCommit('org/model', null, env())).toBe(COMMIT);
    expect(await resolveHubCommit('org/model', 'main', env())).toBe(COMMIT);
    expect(await resolveHubCommit('org/model', 'fp16', env())).toBe(OTHER);
    expect(await resolveHubCommit('org/model', 'refs/pr/1', env())).toBe(OTHER);
    expect(await resolveHubCommit('org/model', OTHER, env())).toBe(OTHER);
    expect(await resolveHubCommit('solo', null, env())).toBe(COMMIT);
  });

  it('null when not cached', async () => {
    expect(await resolveHubCommit('org/model', 'b'.repeat(40), env())).toBeNull();
    expect(await resolveHubCommit('org/model', 'v2', env())).toBeNull();
    expect(await resolveHubCommit('org/gone', null, env())).toBeNull();
    expect(await resolveHubCommit('org/other', null, env())).toBeNull();
    expect(await resolveHubCommit('org/model', '../../models--org--model/refs/main', env())).toBeNull();
    expect(await resolveHubCommit('./org/model', null, env())).toBeNull();
    expect(await resolveHubCommit('org/model', null, { HF_HUB_CACHE: tempDir() })).toBeNull();
  });

  it('reads L from the snapshot of the revision', async () => {
    expect(await readModelDepth('org/model', undefined, env())).toBe(12);
    expect(await readModelDepth('org/model', 'fp16', env())).toBe(6);
    expect(await readModelDepth('org/model', OTHER, env())).toBe(6);
    expect(await readModelDepth('solo', null, env())).toBe(3);
    expect(await readModelDepth('org/gone', null, env())).toBeNull();
    expect(await readModelDepth('org/other', null, env())).toBeNull();
  });

  it('finds the cache as huggingface_hub does: HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub', async () => {
    const home = tempDir();
    cached(join(home, 'hub'), 'org/m', { main: COMMIT }, { [COMMIT]: 7 });
    const xdg = tempDir();
    cached(join(xdg, 'huggingface', 'hub'), 'org/m', { main: COMMIT }, { [COMMIT]: 9 });
    expect(await readModelDepth('org/m', null, { HF_HOME: home })).toBe(7);
    expect(await readModelDepth('org/m', null, { HF_HOME: home, HF_HUB_CACHE: cache })).toBeNull();
    expect(await readModelDepth('org/m', null, { XDG_CACHE_HOME: xdg })).toBe(9);
    expect(await readModelDepth('org/m', null, { XDG_CACHE_HOME: xdg, HF_HOME: home })).toBe(7);
  });

  it('reads the shapes model’s own config files from a snapshot', async () => {
    const home = tempDir();
    const snapshot = join(home, 'hub', 'models--org--shapes', 'snapshots', COMMIT);
    mkdirSync(join(snapshot, 'text_encoder'), { recursive: true });
    copyFileSync(join(EMBEDDED_MODEL_DIR, 'model_index.json'), join(snapshot, 'model_index.json'));
    copyFileSync(
      join(EMBEDDED_MODEL_DIR, 'text_encoder', 'config.json'),
      join(snapshot, 'text_encoder', 'config.json'),
    );
    mkdirSync(join(home, 'hub', 'models--org--shapes', 'refs'));
    writeFileSync(join(home, 'hub', 'models--org--shapes', 'refs', 'main'), COMMIT);
    expect(await readModelDepth('org/shapes', null, { HF_HOME: home })).toBe(12);
  });
});

describe('readModelDepth equals the worker’s num_layers', () => {
  let worker: LensWorker;

  beforeAll(async () => {
    worker = await LensWorker.start({ onLog: () => {} });
  });
  afterAll(async () => {
    await worker?.close();
  });

  it.each([
    ['the embedded shapes model', () => EMBEDDED_MODEL_DIR],
    ['the SD fixture (CLIP)', () => inject('sdFixture')],
    ['the IF fixture (T5)', () => inject('ifFixture')],
  ])('%s', async (_, model) => {
    const depth = await readModelDepth(model());
    expect(depth).not.toBeNull();
    const loaded = await worker.load(fixtureLoad(model()));
    expect(depth).toBe(loaded.num_layers);
  });
});
