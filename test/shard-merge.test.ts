// Shards (`--shard I/N`) and `merge` (issue 14, item 4): a run split into two shards and merged equals the
// unsharded run byte for byte (images, keys, grids, manifest records, images.csv), the merged folder is a
// normal run folder (a rerun makes nothing and starts no worker), and merge refuses shards that do not
// make one run, writing nothing. Real worker, tiny SD fixture.
import { cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { type ExperimentConfig, parseConfig } from '../src/config/index.js';
import { planBatches } from '../src/experiment/batches.js';
import { familyOptionsFor } from '../src/experiment/family.js';
import {
  canonicalJson,
  FolderConflictError,
  imageSettings,
  JOURNAL_FILE,
  type Manifest,
  MergeError,
  mergeShards,
  parseShard,
  planExperiment,
  type RunEvent,
  runExperiment,
  ShardError,
  selectShard,
} from '../src/experiment/index.js';
import { buildWork } from '../src/experiment/request.js';
import { ifCapabilities, oneEncoder } from './capabilities.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const fixture = inject('sdFixture');
const tempDir = tempDirs('dlens-shard-');
const noPython = '/nonexistent/python3';

/** 2 prompts x 3 layers x 2 seeds = 12 items; batches of 4 cross the prompt boundary (items 4..7). */
function config(overrides: Record<string, unknown> = {}): ExperimentConfig {
  return parseConfig({
    name: 'shards',
    model: { id: fixture },
    sampler: { steps: 3, size: 32 },
    lens: { layers: [0, 2, 5] },
    seeds: [0, 1],
    prompts: ['a red apple', 'a blue car'],
    runtime: { max_batch: 4 },
    ...overrides,
  });
}

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const journalPaths = (dir: string): string[] =>
  readFileSync(join(dir, JOURNAL_FILE), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line).path as string)
    .sort();

/** Every file under a folder (relative paths), the state folder left out. */
function files(dir: string, sub = ''): string[] {
  if (!existsSync(join(dir, sub))) return [];
  return readdirSync(join(dir, sub), { withFileTypes: true }).flatMap((entry) => {
    const path = sub ? `${sub}/${entry.name}` : entry.name;
    if (entry.name === '.diffusion-lens') return [];
    return entry.isDirectory() ? files(dir, path) : [path];
  });
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

describe('--shard I/N', () => {
  it('parses 0-based I of N and names what is wrong otherwise', () => {
    expect(parseShard('0/2')).toEqual({ index: 0, count: 2 });
    expect(parseShard(' 3 / 4 ')).toEqual({ index: 3, count: 4 });
    expect(() => parseShard('2/2')).toThrow(
      /index must be a whole number from 0 to 1 \(0-based; got 2 of 2\)/,
    );
    expect(() => parseShard('1/0')).toThrow(/count must be a whole number of at least 1/);
    for (const bad of ['1', 'a/b', '-1/2', '1.5/2', '1/2/3', '']) {
      expect(() => parseShard(bad), bad).toThrow(ShardError);
      expect(() => parseShard(bad), bad).toThrow(/expected I\/N/);
    }
  });

  it('splits the plan by whole batches, b mod N, and asks the worker for exactly those batches', () => {
    // IF with stage II: an item is a (prompt, layer, seed) with its two jobs.
    const loaded = {
      revision: null,
      family: 'if',
      dtype: 'fp32',
      defaults: { steps: 100, guidance: 7, height: 16, width: 16, scheduler: 'DDPMScheduler' },
      capabilities: ifCapabilities,
      family_options: { clean_caption: false },
      encoders: oneEncoder('T5EncoderModel', 4, 'encoder.final_layer_norm'),
      stage2: {
        model: '/m/if-ii',
        pipeline_class: 'IFSuperResolutionPipeline',
        revision: null,
        dtype: 'fp32',
        defaults: { steps: 50, guidance: 4, height: 32, width: 32, scheduler: 'DDPMScheduler' },
      },
    };
    const cfg = parseConfig({
      model: { id: '/m/if-i' },
      sampler: { steps: 3 },
      stage2: { model: '/m/if-ii', steps: 2 },
      seeds: [0, 1, 2],
      prompts: ['a', 'b', 'c'],
      runtime: { max_batch: 4 },
    });
    const plan = planExperiment({
      settings: imageSettings(cfg, loaded, '/m/if-i', '/m/if-ii'),
      familyOptions: familyOptionsFor(cfg, loaded),
      prompts: ['a', 'b', 'c'],
      layers: [0, 2, 4],
      seeds: [0, 1, 2],
      stages: [1, 2],
      numLayers: 4,
    }); // 27 items, 54 jobs
    const batches = planBatches(plan, 4); // 7 batches, the last one of 3
    expect(batches.map((b) => b.items.length)).toEqual([4, 4, 4, 4, 4, 4, 3]);
    const seen = new Map<string, number>();
    for (let index = 0; index < 3; index++) {
      const { plan: own, record } = selectShard(plan, 4, { index, count: 3 });
      expect(record).toMatchObject({ index, count: 3, batch_size: 4, plan_batches: 7, plan_images: 54 });
      expect(record?.batches).toEqual([0, 1, 2, 3, 4, 5, 6].filter((b) => b % 3 === index));
      for (const job of own.jobs) {
        expect(plan.jobs[job.index]).toEqual(job); // same keys, paths and indices as the whole plan
        seen.set(job.key, (seen.get(job.key) ?? 0) + 1);
      }
      // The request is the shard's batches in plan order: the worker, sampling 4 at a time, samples
      // exactly those batches.
      const work = buildWork(cfg, own, () => false);
      const requested = work?.request.items ?? [];
      const sampled = [];
      for (let start = 0; start < requested.length; start += 4)
        sampled.push(requested.slice(start, start + 4));
      expect(sampled).toEqual(
        (record?.batches ?? []).map((b) =>
          batches[b]?.items.map((item) => ({ prompt: item.promptIndex, layer: item.layer, seed: item.seed })),
        ),
      );
    }
    expect(seen.size).toBe(54);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(selectShard(plan, 4, undefined)).toEqual({ plan, record: null });
  });

  it('a bad shard is refused before anything is written', async () => {
    const out = join(tempDir(), 'never');
    const error = await rejection(runExperiment(config(), { outDir: out, shard: { index: 2, count: 2 } }));
    expect(error).toBeInstanceOf(ShardError);
    expect(error.message).toMatch(/from 0 to 1/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('two shards merged', () => {
  const base = tempDir();
  const whole = join(base, 'A');
  const shard0 = join(base, 'B0');
  const shard1 = join(base, 'B1');
  const merged = join(base, 'C');
  let mergeEvents: RunEvent[] = [];

  beforeAll(async () => {
    // The unsharded run and the two shards, each with its own worker, two at a time.
    const [a, b0] = await Promise.all([
      runExperiment(config(), { outDir: whole }),
      runExperiment(config(), { outDir: shard0, shard: { index: 0, count: 2 } }),
    ]);
    const b1 = await runExperiment(config(), { outDir: shard1, shard: { index: 1, count: 2 } });
    for (const result of [a, b0, b1]) expect(result.complete).toBe(true);
    expect([a.generated, b0.generated, b1.generated]).toEqual([12, 8, 4]);
    mergeEvents = [];
    await mergeShards([shard1, shard0], { outDir: merged, onEvent: (event) => mergeEvents.push(event) });
  }, 300_000);

  it("a shard's folder holds its batches' images only, with its manifest, images.csv and journal", () => {
    const manifest = readManifest(shard0);
    expect(manifest.complete).toBe(true);
    expect(manifest.shard).toEqual({
      index: 0,
      count: 2,
      batch_size: 4,
      plan_batches: 3,
      plan_images: 12,
      batches: [0, 2],
    });
    expect(manifest.grids).toEqual([]);
    expect(existsSync(join(shard0, 'grids'))).toBe(false);
    const wholeImages = readManifest(whole).images;
    // Batches 0 and 2 of the plan: items 0..3 and 8..11.
    expect(manifest.images).toEqual([...wholeImages.slice(0, 4), ...wholeImages.slice(8, 12)]);
    expect(readManifest(shard1).images).toEqual(wholeImages.slice(4, 8));
    expect(journalPaths(shard0)).toEqual(manifest.images.map((image) => image.path).sort());
    const csv = readFileSync(join(shard0, 'images.csv'), 'utf8').trim().split('\n');
    expect(csv).toHaveLength(1 + 8);
    expect(files(shard0).filter((f) => f.startsWith('images/'))).toHaveLength(8);
  });

  it('equals the unsharded run byte for byte: images, keys, grids, images.csv and the manifest', () => {
    const a = readManifest(whole);
    const c = readManifest(merged);
    expect(c.complete).toBe(true);
    expect(c.images).toEqual(a.images);
    expect(c.images).toHaveLength(12);
    expect(c.grids).toEqual(a.grids);
    expect(c.grids).toHaveLength(2);
    expect(c.merged_from).toEqual([shard0, shard1]);
    expect(c.shard).toBeUndefined();
    const { timings: _a, ...restA } = a;
    const { timings: _c, merged_from: _m, ...restC } = c;
    expect(canonicalJson(restC)).toBe(canonicalJson(restA));
    expect(readFileSync(join(merged, 'images.csv'), 'utf8')).toBe(
      readFileSync(join(whole, 'images.csv'), 'utf8'),
    );
    expect(files(merged).sort()).toEqual(files(whole).sort());
    for (const path of files(whole)) {
      if (path === 'manifest.json') continue;
      expect(readFileSync(join(merged, path)).equals(readFileSync(join(whole, path))), path).toBe(true);
    }
    expect(journalPaths(merged)).toEqual(journalPaths(whole));
  });

  it('hard-links the images and starts no worker', () => {
    const image = readManifest(shard1).images[0]?.path ?? '';
    expect(statSync(join(merged, image)).ino).toBe(statSync(join(shard1, image)).ino);
    expect(mergeEvents.some((event) => event.type === 'worker-ready')).toBe(false);
    expect(mergeEvents.at(-1)).toMatchObject({ type: 'done', complete: true, images_generated: 0 });
  });

  it('is a normal run folder: a rerun of the config makes nothing and starts no worker', async () => {
    const result = await runExperiment(config(), { outDir: merged, python: noPython });
    expect(result).toMatchObject({ complete: true, generated: 0, skipped: 12 });
    // So is a shard's: a rerun of shard 0 resumes with nothing to do.
    const again = await runExperiment(config(), {
      outDir: shard0,
      shard: { index: 0, count: 2 },
      python: noPython,
    });
    expect(again).toMatchObject({ complete: true, generated: 0, skipped: 8 });
  });

  it('merging again into the merged folder reuses what is there', async () => {
    const result = await mergeShards([shard0, shard1], { outDir: merged });
    expect(result).toMatchObject({ images: 12, linked: 0, copied: 0, reused: 12 });
    // And --copy copies.
    const copied = await mergeShards([shard0, shard1], { outDir: join(base, 'copied'), link: false });
    expect(copied).toMatchObject({ images: 12, linked: 0, copied: 12, reused: 0 });
  });

  describe('refuses, naming the folder and what is wrong, and writes nothing', () => {
    /** A copy of a shard folder with `edit` applied to its manifest (and shard.json). */
    function variantOf(
      shard: string,
      name: string,
      edit?: (manifest: Manifest, state: Record<string, unknown>) => void,
    ) {
      const dir = join(base, name);
      cpSync(shard, dir, { recursive: true });
      if (edit) {
        const manifest = readManifest(dir);
        const stateFile = join(dir, '.diffusion-lens', 'shard.json');
        const state = JSON.parse(readFileSync(stateFile, 'utf8'));
        edit(manifest, state);
        writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
        writeFileSync(stateFile, JSON.stringify(state));
      }
      return dir;
    }

    async function refused(dirs: string[], pattern: RegExp, outDir = join(tempDir(), 'out')) {
      const error = await rejection(mergeShards(dirs, { outDir }));
      expect(error.message).toMatch(pattern);
      expect(existsSync(outDir)).toBe(false);
      return error;
    }

    it('a missing shard', async () => {
      const error = await refused(
        [shard0],
        /shard 1\/2 is missing: give the folders of all 2 shards \(0\.\.1\)/,
      );
      expect(error).toBeInstanceOf(MergeError);
    });

    it('a shard given twice, or two folders of one index', async () => {
      await refused([shard0, shard1, shard0], /B0 is given twice/);
      const copy = variantOf(shard0, 'B0-copy');
      await refused([shard0, copy, shard1], new RegExp(`${shard0} and ${copy} are both shard 0/2`));
    });

    it('a folder that is not a shard, or not a run', async () => {
      await refused([whole, shard1], new RegExp(`${whole} is not a shard: its manifest has no shard record`));
      await refused([join(base, 'nowhere'), shard1], /nowhere: no such folder/);
      await refused([tempDir(), shard1], /has no manifest\.json: not a run folder/);
    });

    it('shards of another split or another experiment', async () => {
      const three = variantOf(shard1, 'B1-of-3', (manifest, state) => {
        if (manifest.shard) manifest.shard.count = 3;
        (state.shard as { count: number }).count = 3;
      });
      await refused([shard0, three], /are shards of different splits \(N = 3 and 2\)/);
      const other = variantOf(shard1, 'B1-steps', (manifest) => {
        manifest.config.sampler.steps = 4;
      });
      await refused(
        [shard0, other],
        new RegExp(
          `${other} \\(shard 1/2\\) is not a shard of the same run as ${shard0} \\(shard 0/2\\): its config differs \\(config.sampler.steps 3 -> 4\\)`,
        ),
      );
    });

    it('an incomplete shard, or one whose image changed since it was made', async () => {
      const incomplete = variantOf(shard1, 'B1-incomplete', (manifest) => {
        manifest.complete = false;
      });
      await refused(
        [shard0, incomplete],
        /\(shard 1\/2\) is incomplete \(4 images of 4\): run it again to finish it/,
      );
      const changed = variantOf(shard1, 'B1-changed');
      const path = readManifest(changed).images[1]?.path ?? '';
      writeFileSync(join(changed, path), 'not a png');
      await refused([shard0, changed], new RegExp(`${path} is missing or changed since the shard made it`));
    });

    it('the output folder is a shard, or holds images of other settings (as a run refuses it)', async () => {
      const error = await rejection(mergeShards([shard0, shard1], { outDir: shard0 }));
      expect(error.message).toMatch(/the output folder .*B0 is one of the shards/);
      const used = tempDir();
      cpSync(join(whole, 'images'), join(used, 'images'), { recursive: true });
      const image = readManifest(whole).images[0]?.path ?? '';
      const entry = readFileSync(join(whole, JOURNAL_FILE), 'utf8')
        .split('\n')
        .map((line) => (line ? JSON.parse(line) : null))
        .find((e) => e?.path === image);
      const { mkdirSync } = await import('node:fs');
      mkdirSync(join(used, '.diffusion-lens'), { recursive: true });
      writeFileSync(
        join(used, JOURNAL_FILE),
        `${JSON.stringify({ ...entry, key: 'k'.repeat(64), settings: 'feedfacefeedface' })}\n`,
      );
      const before = files(used).sort();
      const conflict = await rejection(mergeShards([shard0, shard1], { outDir: used }));
      expect(conflict).toBeInstanceOf(FolderConflictError);
      expect(conflict.message).toMatch(
        /holds 1 image made with other settings, e\.g\. images\/.*merge into another folder/,
      );
      expect(files(used).sort()).toEqual(before);
    });
  });

  it('the CLI: merge prints a summary; --shard names the flag when wrong', async () => {
    const cli = join(root, 'dist', 'cli.js');
    const out = join(tempDir(), 'cli merged');
    const result = await execa('node', [cli, 'merge', shard0, shard1, '--out', out], { reject: false });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      /^merged 2 shards: 12 images \(12 hard-linked\), 2 grids -> .*manifest\.json$/,
    );
    expect(readFileSync(join(out, 'images.csv'), 'utf8')).toBe(
      readFileSync(join(whole, 'images.csv'), 'utf8'),
    );
    const missing = await execa('node', [cli, 'merge', shard0, '--out', join(tempDir(), 'x')], {
      reject: false,
    });
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(/^error: shard 1\/2 is missing/);
    const bad = await execa(
      'node',
      [cli, 'lens', 'a red apple', '--model', fixture, '--shard', '2/2', '--out', join(tempDir(), 'y')],
      {
        reject: false,
      },
    );
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/option '--shard <i\/n>' argument '2\/2' is invalid.*from 0 to 1/);
    const sweep = join(tempDir(), 'sweep.yaml');
    writeFileSync(
      sweep,
      `model: { id: ${JSON.stringify(fixture)} }\nprompts: [a]\nseeds: [0]\nlens: { layers: [0] }\nsweep: { sampler.steps: [2, 3] }\n`,
    );
    const study = await execa('node', [cli, 'run', sweep, '--shard', '0/2', '--out', join(tempDir(), 'z')], {
      reject: false,
    });
    expect(study.exitCode).toBe(2);
    expect(study.stderr).toMatch(/--shard splits one run; .* has a sweep/);
  });
});
