// Every path through the output folder's cache, against the real worker and the tiny fixtures: an image
// is reused only when its bytes are the ones its key produced; a folder holds one set of settings (other
// settings are refused, go to a variant, or overwrite); a fully cached rerun starts no worker; one run
// at a time.
import {
  cpSync,
  existsSync,
  readFileSync,
  truncateSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LensWorker } from '../src/bridge/index.js';
import { type ExperimentConfig, parseConfig } from '../src/config/index.js';
import {
  FolderBusyError,
  FolderConflictError,
  JOURNAL_FILE,
  type Manifest,
  type RunEvent,
  type RunOptions,
  runExperiment,
} from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const fixture = inject('sdFixture');
const tempDir = tempDirs('dlens-cache-');

function config(overrides: Record<string, unknown> = {}): ExperimentConfig {
  const { sampler, lens, model, ...rest } = overrides as {
    sampler?: object;
    lens?: object;
    model?: object;
  };
  return parseConfig({
    model: { id: fixture, ...model },
    sampler: { steps: 2, size: 32, ...sampler },
    lens: { layers: '0,5', ...lens },
    seeds: [0],
    prompts: ['a red circle'],
    runtime: { max_batch: 4 },
    ...rest,
  });
}

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const bytesOf = (dir: string): string[] =>
  readManifest(dir).images.map((image) => readFileSync(join(dir, image.path)).toString('base64'));

interface Run {
  events: RunEvent[];
  made: number;
  skipped: number;
  /** Whether the run loaded a model (a fully cached rerun does not). */
  loaded: boolean;
}

describe('the output folder cache', () => {
  let shared: LensWorker;
  beforeAll(async () => {
    shared = await LensWorker.start();
  });
  afterAll(async () => {
    await shared?.close();
  });

  async function run(out: string, cfg: ExperimentConfig, options: Partial<RunOptions> = {}): Promise<Run> {
    const events: RunEvent[] = [];
    const result = await runExperiment(cfg, {
      outDir: out,
      worker: shared,
      onEvent: (e) => events.push(e),
      ...options,
    });
    expect(result.complete).toBe(true);
    return {
      events,
      made: result.generated,
      skipped: result.skipped,
      loaded: events.some((e) => e.type === 'model-loaded'),
    };
  }

  it('never serves an image made with other settings: the steps 6 / 8 / 6 sequence gives image A', async () => {
    const fresh = join(tempDir(), 'fresh');
    await run(fresh, config({ sampler: { steps: 6 } }));
    const imageA = bytesOf(fresh);

    const out = join(tempDir(), 'x');
    await run(out, config({ sampler: { steps: 6 } }));
    expect(bytesOf(out)).toEqual(imageA);
    const refused = runExperiment(config({ sampler: { steps: 8 } }), { outDir: out, worker: shared });
    await expect(refused).rejects.toThrow(FolderConflictError);
    await expect(refused).rejects.toThrow(/sampler\.steps 6 -> 8/);
    await expect(refused).rejects.toThrow(/--new-variant.*variants\/steps-8.*--overwrite/s);
    expect(bytesOf(out)).toEqual(imageA);

    const third = await run(out, config({ sampler: { steps: 6 } }));
    expect(third).toMatchObject({ made: 0, skipped: 2, loaded: false });
    expect(bytesOf(out)).toEqual(imageA);
  });

  it('--new-variant writes to its own folder; switching back and forth reuses both without loading', async () => {
    const out = tempDir();
    await run(out, config({ sampler: { steps: 6 } }));
    const a = bytesOf(out);
    const variant = await run(out, config({ sampler: { steps: 8 } }), { newVariant: true });
    expect(variant.made).toBe(2);
    const variantDir = join(out, 'variants', 'steps-8');
    const b = bytesOf(variantDir);
    expect(b).not.toEqual(a);
    expect(variant.events.find((e) => e.type === 'done')).toMatchObject({
      manifest: join(variantDir, 'manifest.json'),
    });
    for (let i = 0; i < 2; i++) {
      expect(await run(out, config({ sampler: { steps: 6 } }), { newVariant: true })).toMatchObject({
        made: 0,
        loaded: false,
      });
      expect(await run(out, config({ sampler: { steps: 8 } }), { newVariant: true })).toMatchObject({
        made: 0,
        loaded: false,
      });
    }
    expect(bytesOf(out)).toEqual(a);
    expect(bytesOf(variantDir)).toEqual(b);
  });

  it('--overwrite deletes the images of other settings, including those outside the new plan', async () => {
    const out = tempDir();
    await run(out, config({ sampler: { steps: 6 }, lens: { layers: '0,3,5' } }));
    const old = readManifest(out).images.map((image) => image.path);
    const second = await run(out, config({ sampler: { steps: 8 } }), { overwrite: true });
    expect(second.made).toBe(2);
    expect(second.events).toContainEqual(
      expect.objectContaining({ type: 'notice', message: expect.stringMatching(/removed 3 images/) }),
    );
    const layer3 = old.find((path) => /L3-/.test(path)) ?? '';
    expect(existsSync(join(out, layer3))).toBe(false);
    // Now the folder is steps 8: steps 6 is refused again.
    await expect(
      runExperiment(config({ sampler: { steps: 6 } }), { outDir: out, worker: shared }),
    ).rejects.toThrow(/sampler\.steps 8 -> 6/);
  });

  it('more prompts, layers and seeds with the same settings extend the folder', async () => {
    const out = tempDir();
    await run(out, config());
    const more = await run(out, config({ seeds: [0, 1], lens: { layers: '0,3,5' } }));
    expect(more).toMatchObject({ made: 4, skipped: 2 });
    expect(await run(out, config({ seeds: [0] }))).toMatchObject({ made: 0, loaded: false });
  });

  // Each setting that enters the key: a change is refused, its variant is made, and going back reuses.
  const changes: [string, Record<string, unknown>][] = [
    ['sampler.guidance', { sampler: { guidance: 3 } }],
    ['sampler.height', { sampler: { size: 48 } }],
    ['sampler.scheduler', { sampler: { scheduler: 'euler' } }],
    ['sampler.negative', { sampler: { negative: 'blurry' } }],
    ['lens.uncond', { lens: { uncond: 'same-layer' } }],
    ['lens.noise', { lens: { noise: 'per-layer' } }],
    ['model.dtype', { model: { dtype: 'bf16' } }],
  ];
  it.each(changes)(
    'a change of %s is refused, goes to a variant, and back is reused',
    async (field, change) => {
      const out = tempDir();
      await run(out, config());
      const base = bytesOf(out);
      await expect(runExperiment(config(change), { outDir: out, worker: shared })).rejects.toThrow(
        new RegExp(`other settings \\(.*${field.replace('.', '\\.')} `),
      );
      const variant = await run(out, config(change), { newVariant: true });
      expect(variant.made).toBe(2);
      expect(await run(out, config())).toMatchObject({ made: 0, loaded: false });
      expect(bytesOf(out)).toEqual(base);
    },
  );

  it('a seed is part of the image, not of the settings: seeds 0 -> 1 -> 0 reuses', async () => {
    const out = tempDir();
    await run(out, config({ seeds: [0] }));
    expect(await run(out, config({ seeds: [1] }))).toMatchObject({ made: 2 });
    expect(await run(out, config({ seeds: [0] }))).toMatchObject({ made: 0, loaded: false });
  });

  it('another model, or the same folder changed in place, is other settings', async () => {
    const copy = join(tempDir(), 'copy');
    cpSync(fixture, copy, { recursive: true });
    const out = tempDir();
    await run(out, config({ model: { id: copy } }));
    await expect(runExperiment(config(), { outDir: out, worker: shared })).rejects.toThrow(/model\.id/);
    // "Retrained" in place: a weight file with a new time.
    const weights = join(copy, 'unet', 'diffusion_pytorch_model.safetensors');
    utimesSync(weights, new Date(), new Date(Date.now() + 5_000));
    await expect(
      runExperiment(config({ model: { id: copy } }), { outDir: out, worker: shared }),
    ).rejects.toThrow(/model\.files/);
  });

  it('remakes images edited, deleted, emptied or truncated by hand, and nothing else', async () => {
    const out = tempDir();
    await run(out, config({ seeds: [0, 1, 2], lens: { layers: '0,5' } }));
    const images = readManifest(out).images;
    const original = bytesOf(out);
    const [edited, deleted, empty, cut] = images.map((image) => join(out, image.path));
    if (!edited || !deleted || !empty || !cut) throw new Error('expected 6 images');
    writeFileSync(
      edited,
      await sharp({ create: { width: 32, height: 32, channels: 3, background: 'red' } })
        .png()
        .toBuffer(),
    );
    unlinkSync(deleted);
    writeFileSync(empty, '');
    truncateSync(cut, 40);
    const again = await run(out, config({ seeds: [0, 1, 2], lens: { layers: '0,5' } }));
    expect(again).toMatchObject({ made: 4, skipped: 2 });
    expect(again.events).toContainEqual(
      expect.objectContaining({
        type: 'notice',
        message: expect.stringMatching(/4 images changed or deleted/),
      }),
    );
    expect(bytesOf(out)).toEqual(original);
    expect(readManifest(out).grids).toHaveLength(1);
  });

  it('a torn last journal line loses only its image; a corrupt line is skipped with a notice', async () => {
    const out = tempDir();
    await run(out, config({ seeds: [0, 1] }));
    const journal = join(out, JOURNAL_FILE);
    const lines = readFileSync(journal, 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    const last = lines.at(-1) ?? '';
    writeFileSync(journal, `${lines.slice(0, 3).join('\n')}\n${last.slice(0, 30)}`);
    const torn = await run(out, config({ seeds: [0, 1] }));
    expect(torn).toMatchObject({ made: 1, skipped: 3 });
    expect(readFileSync(journal, 'utf8').trimEnd().split('\n')).toHaveLength(4);

    const now = readFileSync(journal, 'utf8').split('\n');
    now[0] = '{"key": "not json';
    writeFileSync(journal, now.join('\n'));
    const corrupt = await run(out, config({ seeds: [0, 1] }));
    expect(corrupt).toMatchObject({ made: 1, skipped: 3 });
    expect(corrupt.events).toContainEqual(
      expect.objectContaining({
        type: 'notice',
        message: expect.stringMatching(/1 unreadable journal line/),
      }),
    );
  });

  it('refuses a second run into a folder in use, and the journal has each image once', async () => {
    const out = tempDir();
    const cfg = config({ seeds: [0, 1, 2] });
    let locked: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
      locked = resolve;
    });
    // 'start' comes once the folder is locked.
    const first = runExperiment(cfg, {
      outDir: out,
      worker: shared,
      onEvent: (e) => e.type === 'start' && locked(),
    });
    await started;
    const second = runExperiment(cfg, { outDir: out });
    await expect(second).rejects.toThrow(FolderBusyError);
    await expect(second).rejects.toThrow(/in use by another diffusion-lens run \(pid \d+/);
    await first;
    const keys = readFileSync(join(out, JOURNAL_FILE), 'utf8')
      .trimEnd()
      .split('\n')
      .map((line) => (JSON.parse(line) as { key: string }).key);
    expect(keys).toHaveLength(6);
    expect(new Set(keys).size).toBe(6);
    // The lock is released: a later run goes ahead.
    expect(await run(out, cfg)).toMatchObject({ made: 0 });
  });

  it('says once per prompt, and in the manifest, that the encoder cut a long prompt', async () => {
    const out = tempDir();
    const long = `a red circle ${'and a blue square '.repeat(30)}`.trim();
    const result = await run(out, config({ prompts: ['a red circle', long] }));
    const notices = result.events.filter((e) => e.type === 'notice');
    expect(notices).toEqual([
      expect.objectContaining({
        message: expect.stringMatching(/^prompt 2 has \d+ tokens; the text encoder reads 77/),
      }),
    ]);
    const [short, cut] = readManifest(out).prompts;
    expect(short?.truncated).toBeNull();
    expect(cut?.truncated).toMatchObject({ max_tokens: 77 });
    expect(cut?.truncated?.tokens).toBeGreaterThan(77);
  });

  describe('stage II settings (tiny IF)', () => {
    const ifConfig = (stage2: Record<string, unknown> = {}): ExperimentConfig =>
      parseConfig({
        model: { id: inject('ifFixture') },
        sampler: { steps: 2 },
        lens: { layers: '0,4' },
        stage2: { model: inject('ifSrFixture'), steps: 2, ...stage2 },
        seeds: [0],
        prompts: ['a red cube'],
        runtime: { max_batch: 2 },
      });

    it('a stage II change is refused, goes to a variant, and back is reused; stage I alone is not a change', async () => {
      const out = tempDir();
      await run(out, ifConfig());
      const base = bytesOf(out);
      for (const change of [{ steps: 3 }, { noise_level: 100 }, { guidance: 2 }]) {
        const field = Object.keys(change)[0] ?? '';
        await expect(runExperiment(ifConfig(change), { outDir: out, worker: shared })).rejects.toThrow(
          new RegExp(`other settings \\(stage2\\.${field} `),
        );
        // A variant is a folder of its own: both stages are made there.
        expect((await run(out, ifConfig(change), { newVariant: true })).made).toBe(4);
      }
      expect(await run(out, ifConfig())).toMatchObject({ made: 0, loaded: false });
      expect(bytesOf(out)).toEqual(base);
      // A stage I run in the same folder keeps the stage II images and makes nothing.
      const stage1 = parseConfig({ ...ifConfig(), stages: [1], stage2: {} });
      expect(await run(out, stage1)).toMatchObject({ made: 0, skipped: 2 });
    });
  });

  it('a stale lock of a process that is gone is taken over', async () => {
    const out = tempDir();
    await run(out, config());
    writeFileSync(
      join(out, '.diffusion-lens', 'lock'),
      JSON.stringify({ pid: 2 ** 22 + 12345, host: (await import('node:os')).hostname(), started: 'then' }),
    );
    expect(await run(out, config())).toMatchObject({ made: 0 });
  });
});
