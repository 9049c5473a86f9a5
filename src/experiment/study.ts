// Sweeps: a config's `sweep:` block (dotted fields → lists of values) expands into the Cartesian product
// of its values, one variant each (expandSweep, pure), and runStudy runs the variants in turn with
// runExperiment, one worker for all, each into OUT/<variant>/, recording OUT/study.json.
//
//   OUT/study.json                 the study: its sweep and, per variant, its values, folder and counts
//   OUT/<variant>/manifest.json    a run's usual folder; its manifest carries `variant: {name, values}`
//
// Images are shared where settings coincide: each variant folder is its own cache (a rerun reuses it),
// and before a variant runs, the images of its plan that an earlier variant's folder holds with the same
// content key (the key hashes every setting that changes an image) are hard-linked (or copied) into its
// folder with their journal entries. The run then finds them through its normal cache check (hashes
// verified), so a swept field that changes no image (grid.min_cell, runtime.max_batch, model.offload)
// makes no image twice.
import { copyFile, link, lstat, mkdir } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { z } from 'zod';
import { LensWorker } from '../bridge/index.js';
import {
  ConfigError,
  type ConfigIssue,
  type ConfigSource,
  configSource,
  type ExperimentConfig,
  type FieldPath,
  formatIssue,
  type Locator,
  parseConfig,
} from '../config/index.js';
import type { RunEvent } from './events.js';
import { resolveInputs } from './inputs.js';
import { type VariantTag, VariantTagSchema } from './manifest.js';
import { openOutputFolder } from './outdir.js';
import { canonicalJson, imageSettings, type Job, planExperiment } from './plan.js';
import { readResolution, writeResolution } from './resolution.js';
import { type RunOptions, runExperiment } from './runner.js';
import { Journal, sha256Hex, writeFileAtomic } from './store.js';
import { Aborted, untilAborted } from './supervisor.js';

export const STUDY_FILE = 'study.json';
export const STUDY_VERSION = 1;

/** A variant of a study: its name (its folder), the swept values, and the config with them set. */
export interface SweepVariant extends VariantTag {
  config: ExperimentConfig;
}

/** One variant in OUT/study.json. Paths are relative to the study folder, with '/'. */
export const StudyVariantRecordSchema = VariantTagSchema.extend({
  /** The variant's output folder. */
  folder: z.string(),
  /** Its manifest.json; null while it has not run (or stopped before planning). */
  manifest: z.string().nullable(),
  complete: z.boolean(),
  images_generated: z.number().int().nonnegative(),
  images_skipped: z.number().int().nonnegative(),
  /** Images linked in from earlier variants with the same settings before it ran (counted in skipped). */
  images_shared: z.number().int().nonnegative(),
  /** The variants those images came from. */
  shared_from: z.array(z.string()),
});
export type StudyVariantRecord = z.infer<typeof StudyVariantRecordSchema>;

/** OUT/study.json: written atomically when the study starts and after each variant. */
export const StudyRecordSchema = z.object({
  version: z.literal(STUDY_VERSION),
  name: z.string(),
  /** True when every variant ran to completion. */
  complete: z.boolean(),
  /** The config's sweep, as written. */
  sweep: z.record(z.string(), z.array(z.unknown())),
  /** In run order: the product of the sweep's values, the first field varying slowest. */
  variants: z.array(StudyVariantRecordSchema),
});
export type StudyRecord = z.infer<typeof StudyRecordSchema>;

const NAME_MAX = 100;

/** A value as a name part: its text (a path's last part), filesystem-safe. */
function valueText(value: unknown): string {
  let text: string;
  if (typeof value === 'string') text = value.split(/[\\/]/).filter(Boolean).pop() ?? value;
  else if (typeof value === 'number' || typeof value === 'boolean' || value === null) text = String(value);
  else text = canonicalJson(value);
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9.+-]+/g, '-')
    .replace(typeof value === 'number' ? /$^/ : /^[-.]+/, '')
    .slice(0, 40)
    .replace(/[-.]+$/, '');
}

/** `uncond-same-layer_noise-per-layer_guidance-7.5`: each field's last part and value, '_' between. */
function variantNames(paths: readonly string[], combos: readonly unknown[][]): string[] {
  const last = paths.map((path) => path.split('.').pop() ?? path);
  // A last part that two paths share (sampler.guidance, stage2.guidance) is spelled out in full.
  const labels = paths.map((path, i) =>
    last.filter((name) => name === last[i]).length > 1 ? path.replaceAll('.', '-') : last[i],
  );
  const hash = (values: unknown[]) => sha256Hex(canonicalJson(values)).slice(0, 8);
  const names = combos.map((values) => {
    const name = values
      .map((value, i) => `${labels[i]}-${valueText(value)}`.replace(/^[-.]+|[-.]+$/g, ''))
      .join('_');
    return name.length > NAME_MAX
      ? `${name.slice(0, NAME_MAX - 9).replace(/[-._]+$/, '')}_${hash(values)}`
      : name;
  });
  // Names equal but for case (or for what the text dropped) get their values' hash: unique everywhere.
  const counts = new Map<string, number>();
  for (const name of names) counts.set(name, (counts.get(name) ?? 0) + 1);
  return names.map((name, i) =>
    (counts.get(name) ?? 0) > 1 ? `${name}_${hash(combos[i] as unknown[])}` : name,
  );
}

/** Sets `value` at a dotted path in a plain object, making sections that are missing. */
function setPath(target: Record<string, unknown>, parts: readonly string[], value: unknown): void {
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const child = node[part];
    if (child === null || typeof child !== 'object' || Array.isArray(child)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1) as string] = structuredClone(value);
}

/**
 * The variants of a config's sweep: the Cartesian product of its values, in order (the first field
 * varies slowest), each named by its values and validated as a whole config. Pure. Throws ConfigError:
 * when the config has no sweep, or for each issue of a variant (located at the sweep value that made
 * it, and naming the variant).
 */
export function expandSweep(config: ExperimentConfig): { variants: SweepVariant[] } {
  const source = configSource(config);
  const locateBase = (path: FieldPath, key?: boolean) => source?.locate?.(path, key) ?? {};
  const sweep = config.sweep;
  if (sweep === undefined || Object.keys(sweep).length === 0) {
    throw new ConfigError({
      path: ['sweep'],
      ...locateBase(['sweep']),
      message: 'is required for a study: a mapping of dotted config fields to lists of values',
    });
  }
  const paths = Object.keys(sweep);
  const lists = paths.map((path) => sweep[path] ?? []);
  const combos: number[][] = lists.reduce<number[][]>(
    (acc, list) => acc.flatMap((prefix) => list.map((_, i) => [...prefix, i])),
    [[]],
  );
  const names = variantNames(
    paths,
    combos.map((combo) => combo.map((index, i) => lists[i]?.[index])),
  );
  const { sweep: _sweep, ...base } = config;
  const variants: SweepVariant[] = [];
  const issues = new Map<string, ConfigIssue>();
  combos.forEach((combo, n) => {
    const name = names[n] as string;
    const values: Record<string, unknown> = {};
    const input = structuredClone(base) as Record<string, unknown>;
    paths.forEach((path, i) => {
      const value = lists[i]?.[combo[i] as number];
      values[path] = value;
      setPath(input, path.split('.'), value);
    });
    // An issue inside a swept field is located at the value the variant took; others where written.
    const locate: Locator = (path, key) => {
      for (const [i, swept] of paths.entries()) {
        const parts = swept.split('.');
        if (parts.every((part, j) => path[j] === part)) {
          return locateBase(['sweep', swept, combo[i] as number, ...path.slice(parts.length)], key);
        }
      }
      return locateBase(path, key);
    };
    const variantSource: ConfigSource = { ...source, locate };
    try {
      variants.push({ name, values, config: parseConfig(input, { source: variantSource }) });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      for (const issue of error.issues) {
        const text = formatIssue(issue);
        if (!issues.has(text))
          issues.set(text, { ...issue, message: `${issue.message} (sweep variant ${name})` });
      }
    }
  });
  if (issues.size > 0) {
    throw new ConfigError([...issues.values()].sort((a, b) => (a.line ?? 0) - (b.line ?? 0)));
  }
  return { variants };
}

/** What a study reports: its own events, and each variant's run events tagged with the variant. */
export type StudyEvent =
  | { type: 'study-start'; name: string; out_dir: string; variants: number; fields: string[] }
  | {
      type: 'variant-start';
      variant: string;
      /** 1-based. */
      index: number;
      count: number;
      values: Record<string, unknown>;
      out_dir: string;
    }
  | (RunEvent & { variant: string })
  | {
      type: 'study-done';
      complete: boolean;
      aborted: boolean;
      /** Path of study.json. */
      study: string;
      variants: number;
      images_generated: number;
      images_skipped: number;
    };

export interface StudyOptions extends Omit<RunOptions, 'outDir' | 'onEvent' | 'variant'> {
  /** The study folder: OUT/study.json and OUT/<variant>/. */
  outDir: string;
  onEvent?: (event: StudyEvent) => void;
}

export interface StudyResult {
  outDir: string;
  /** Path of study.json. */
  studyPath: string;
  study: StudyRecord;
  complete: boolean;
  aborted: boolean;
  generated: number;
  skipped: number;
}

async function missing(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return false;
  } catch {
    return true;
  }
}

/**
 * Before a variant runs: links into its folder the images of its plan that earlier variants' folders
 * hold (same content key, same path, bytes verified), with their journal entries. The plan needs what
 * the worker resolves for the variant's load request: a record of it in the variant's folder or in an
 * earlier one's (written by their runs); without one nothing is shared. `todo`: the images still to
 * make, or null when that is not known without the worker.
 */
async function shareImages(
  variant: SweepVariant,
  dir: string,
  earlier: readonly { name: string; dir: string }[],
  options: Pick<RunOptions, 'configDir' | 'env'>,
): Promise<{ shared: number; from: string[]; todo: number | null }> {
  const none = { shared: 0, from: [], todo: null };
  let jobs: Job[];
  let inputs: Awaited<ReturnType<typeof resolveInputs>>;
  let resolution = null;
  let own = false;
  try {
    inputs = await resolveInputs(variant.config, options);
    resolution = await readResolution(dir, inputs.load, inputs.fingerprints);
    own = resolution !== null;
    for (const other of earlier) {
      resolution ??= await readResolution(other.dir, inputs.load, inputs.fingerprints);
    }
    if (resolution === null) return none;
    const { loaded } = resolution;
    const settings = imageSettings(
      variant.config,
      loaded,
      inputs.modelId,
      inputs.stage2ModelId,
      inputs.fingerprints,
      inputs.embeds,
    );
    jobs = planExperiment({
      settings,
      prompts: inputs.promptSet.prompts,
      layers: inputs.layersFor(loaded.num_layers, loaded.stock_layer),
      seeds: variant.config.seeds,
      stages: inputs.stages,
      numLayers: loaded.num_layers,
      stockLayer: loaded.stock_layer,
      embeds: inputs.embeds,
    }).jobs;
  } catch {
    // The run itself reports what is wrong with the variant.
    return none;
  }
  const journal = await Journal.open(dir);
  let todo: Job[] = [];
  for (const job of jobs) if (!(await journal.verify(job.key, dir, job.path))) todo.push(job);
  // Found in an earlier folder: [job, folder, variant name], for paths free in this one.
  const found: [Job, string, string][] = [];
  for (const other of earlier) {
    if (todo.length === 0) break;
    const theirs = await Journal.open(other.dir);
    const left: Job[] = [];
    for (const job of todo) {
      const free = await missing(join(dir, job.path));
      if (free && (await theirs.verify(job.key, other.dir, job.path)))
        found.push([job, other.dir, other.name]);
      else left.push(job);
    }
    todo = left;
  }
  if (found.length === 0) return { ...none, todo: own ? todo.length : null };
  const folder = await openOutputFolder(dir);
  let shared = 0;
  const from = new Set<string>();
  try {
    const ours = await Journal.open(dir);
    const journals = new Map<string, Journal>();
    for (const [job, otherDir, otherName] of found) {
      let theirs = journals.get(otherDir);
      if (!theirs) {
        theirs = await Journal.open(otherDir);
        journals.set(otherDir, theirs);
      }
      const entry = theirs.get(job.key);
      const target = join(dir, job.path);
      if (!entry || !(await missing(target))) {
        todo.push(job);
        continue;
      }
      await mkdir(dirname(target), { recursive: true });
      await link(join(otherDir, job.path), target).catch(() => copyFile(join(otherDir, job.path), target));
      // Appended after the file is in place, as the run itself does; the run re-verifies the bytes.
      await ours.append(entry);
      shared++;
      from.add(otherName);
    }
    // The variant's run plans from this record without a worker when nothing is left to make.
    await writeResolution(dir, inputs.load, inputs.fingerprints, resolution);
  } finally {
    await folder.close(false);
  }
  return { shared, from: [...from], todo: todo.length };
}

/**
 * Runs a config's sweep (expandSweep) as one study: each variant with runExperiment into
 * OUT/<variant>/, in order, sharing one worker (started when the first variant needs it, unless
 * `worker` is given; the worker loads each variant's model in turn), with images shared between
 * variants whose settings coincide (see the module comment). Writes OUT/study.json. A variant that
 * fails stops the study (study.json records how far it got) and its error is thrown; an abort stops it
 * cleanly (`aborted`). A rerun resumes: each folder is its own cache.
 */
export async function runStudy(config: ExperimentConfig, options: StudyOptions): Promise<StudyResult> {
  const { variants } = expandSweep(config);
  const outDir = resolve(options.outDir);
  const studyPath = join(outDir, STUDY_FILE);
  const { signal } = options;
  const emit = (event: StudyEvent): void => options.onEvent?.(event);
  const name = config.name ?? variants[0]?.config.name ?? 'study';
  const study: StudyRecord = {
    version: STUDY_VERSION,
    name,
    complete: false,
    sweep: config.sweep ?? {},
    variants: variants.map((variant) => ({
      name: variant.name,
      values: variant.values,
      folder: variant.name,
      manifest: null,
      complete: false,
      images_generated: 0,
      images_skipped: 0,
      images_shared: 0,
      shared_from: [],
    })),
  };
  const save = () => writeFileAtomic(studyPath, `${JSON.stringify(study, null, 2)}\n`);
  const posix = (path: string) => path.split('\\').join('/');
  emit({
    type: 'study-start',
    name,
    out_dir: outDir,
    variants: variants.length,
    fields: Object.keys(study.sweep),
  });

  let worker = options.worker;
  let owned: LensWorker | undefined;
  let closing = false;
  let aborted = false;
  let generated = 0;
  let skipped = 0;
  const done = (complete: boolean) =>
    emit({
      type: 'study-done',
      complete,
      aborted,
      study: studyPath,
      variants: variants.length,
      images_generated: generated,
      images_skipped: skipped,
    });
  const earlier: { name: string; dir: string }[] = [];
  try {
    await save();
    for (const [index, variant] of variants.entries()) {
      if (signal?.aborted) {
        aborted = true;
        break;
      }
      const record = study.variants[index] as StudyVariantRecord;
      const dir = join(outDir, variant.name);
      emit({
        type: 'variant-start',
        variant: variant.name,
        index: index + 1,
        count: variants.length,
        values: variant.values,
        out_dir: dir,
      });
      const tagged = (event: RunEvent): void => emit({ ...event, variant: variant.name });
      const sharing = await shareImages(variant, dir, earlier, options);
      if (sharing.shared > 0) {
        tagged({
          type: 'notice',
          message:
            `${sharing.shared} image${sharing.shared === 1 ? '' : 's'} with the same settings linked from ` +
            `${sharing.from.join(', ')}`,
        });
      }
      // One local worker serves every variant in turn; a pool or remote workers are each variant's own.
      const lone =
        (variant.config.runtime.workers ?? 1) === 1 &&
        variant.config.runtime.remote.length === 0 &&
        (options.remote ?? []).length === 0;
      if (sharing.todo !== 0 && worker === undefined && lone) {
        const started = LensWorker.start({ python: options.python, env: options.env, onLog: options.onLog });
        // A start the signal gave up on still owns the process: close it once it is up.
        started.then(
          (w) => {
            owned = w;
            if (closing) void w.close().catch(() => undefined);
          },
          () => undefined,
        );
        const current = await untilAborted(started, signal);
        worker = current;
        // A worker that dies is replaced by the run's supervisor; the next variant starts a fresh one.
        void current.exited.then(() => {
          if (worker === current) worker = undefined;
        });
        const { info } = current;
        tagged({
          type: 'worker-ready',
          pid: current.pid ?? null,
          python: info.python,
          torch: info.torch,
          diffusers: info.diffusers,
          transformers: info.transformers,
          device: info.device,
          restart: 0,
        });
      }
      let result: Awaited<ReturnType<typeof runExperiment>>;
      try {
        result = await runExperiment(variant.config, {
          ...options,
          outDir: dir,
          worker: lone ? worker : undefined,
          variant: { name: variant.name, values: variant.values },
          onEvent: tagged,
        });
      } catch (error) {
        record.folder = posix(relative(outDir, dir));
        await save();
        throw error;
      }
      generated += result.generated;
      skipped += result.skipped;
      Object.assign(record, {
        folder: posix(relative(outDir, result.outDir)),
        manifest: result.manifestPath === null ? null : posix(relative(outDir, result.manifestPath)),
        complete: result.complete,
        images_generated: result.generated,
        images_skipped: result.skipped,
        images_shared: sharing.shared,
        shared_from: sharing.from,
      });
      earlier.push({ name: variant.name, dir: result.outDir });
      study.complete = study.variants.every((v) => v.complete);
      await save();
      if (result.aborted) {
        aborted = true;
        break;
      }
    }
  } catch (error) {
    if (!(error instanceof Aborted)) {
      done(false);
      throw error;
    }
    aborted = true;
  } finally {
    closing = true;
    await owned?.close().catch(() => undefined);
  }
  study.complete = study.variants.every((v) => v.complete);
  await save();
  done(study.complete);
  return { outDir, studyPath, study, complete: study.complete, aborted, generated, skipped };
}
