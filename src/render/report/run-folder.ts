// Reading what a report shows from a run folder: its manifest.json (the parts the report uses, checked
// with zod; manifests of older versions and of the Python API's save() have fewer fields), or, for a
// study folder, its study.json and the run folder of each variant that has run. The manifest is
// untrusted input: an image path that leaves the folder is left out, never followed.
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { RunFolderError } from '../../eval/index.js';
import { MANIFEST_FILE, STUDY_FILE, type StudyRecord, StudyRecordSchema } from '../../experiment/index.js';

export { RunFolderError };

const Stage = z.literal([1, 2]);
const Size = z.looseObject({ height: z.int().positive(), width: z.int().positive() });

/** The parts of manifest.json (src/experiment/manifest.ts) that the report and the server read (more than
 *  evaluation's RunManifestSchema in src/eval/run-labels.ts: settings, model depth, layers, stages). */
export const ReportManifestSchema = z.looseObject({
  version: z.literal(1),
  complete: z.boolean().default(true),
  variant: z.object({ name: z.string(), values: z.record(z.string(), z.unknown()) }).optional(),
  config: z.looseObject({
    name: z.string().default('run'),
    sampler: z
      .looseObject({
        steps: z.number().optional(),
        guidance: z.number().optional(),
        height: z.int().positive().optional(),
        width: z.int().positive().optional(),
        scheduler: z.string().optional(),
        negative: z.string().optional(),
      })
      .default({}),
    lens: z
      .looseObject({
        layers: z.array(z.int().nonnegative()).optional(),
        uncond: z.string().optional(),
        noise: z.string().optional(),
        tokens: z.union([z.string(), z.int()]).optional(),
      })
      .default({}),
    seeds: z.array(z.int()).optional(),
    stages: z.array(Stage).default([1]),
    stage2: Size.nullable().optional(),
  }),
  model: z.looseObject({ id: z.string(), family: z.string(), num_layers: z.int().nonnegative() }),
  prompt_columns: z.array(z.string()).default([]),
  prompt_set: z.object({ id: z.string(), category: z.string() }).nullable().default(null),
  prompts: z.array(
    z.looseObject({
      prompt: z.string(),
      columns: z.record(z.string(), z.string()).default({}),
      truncated: z.object({ tokens: z.int(), max_tokens: z.int() }).nullable().default(null),
      questions: z
        .array(z.object({ id: z.string(), text: z.string(), expected: z.enum(['yes', 'no']).default('yes') }))
        .optional(),
    }),
  ),
  images: z.array(
    z.looseObject({
      prompt_index: z.int().nonnegative(),
      layer: z.int().nonnegative(),
      depth: z.number().optional(),
      seed: z.int().nonnegative(),
      stage: Stage.default(1),
      path: z.string(),
      key: z.string().min(1),
    }),
  ),
});
export type ReportManifest = z.infer<typeof ReportManifestSchema>;

/** A run folder and its manifest. */
export interface RunFolder {
  /** Absolute. */
  dir: string;
  manifest: ReportManifest;
}

/** Whether text holds a control character (U+0000-U+001F, U+007F). */
export function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

/**
 * A manifest image path that stays inside its run folder: relative, '/'-separated, no '.', '..' or empty
 * segments, no backslashes, colons or control characters. Null for any other.
 */
export function safeRelativePath(path: string): string | null {
  if (path === '' || isAbsolute(path) || /[\\:]/.test(path) || hasControlCharacter(path)) return null;
  const parts = path.split('/');
  if (parts.some((part) => part === '' || part === '.' || part === '..')) return null;
  return path;
}

async function readJson(path: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new RunFolderError(`${path} is not valid JSON: ${(error as Error).message}`);
  }
}

function issuesText(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.join('.') || '(top level)'}: ${issue.message}`)
    .join('; ');
}

/** Reads a run folder's manifest.json; a clear error when the folder is not a run folder. */
export async function readRunFolder(dir: string): Promise<RunFolder> {
  const abs = resolve(dir);
  const info = await stat(abs).catch(() => null);
  if (info === null) throw new RunFolderError(`${dir} does not exist`);
  if (!info.isDirectory()) throw new RunFolderError(`${dir} is not a folder`);
  const raw = await readJson(join(abs, MANIFEST_FILE));
  if (raw === undefined) {
    const study = (await stat(join(abs, STUDY_FILE)).catch(() => null)) !== null;
    throw new RunFolderError(
      study
        ? `${dir} is a study folder (it has ${STUDY_FILE}), not a run folder: name one of its variant folders`
        : `${dir} has no ${MANIFEST_FILE}: not a run folder (diffusion-lens lens/run writes one, at the end ` +
            'of a run and when a run stops early)',
    );
  }
  const parsed = ReportManifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new RunFolderError(
      `${join(dir, MANIFEST_FILE)} is not a manifest this version reads: ${issuesText(parsed.error)}`,
    );
  }
  return { dir: abs, manifest: parsed.data };
}

/** What a report folder argument is: one run folder, or a study with the run folders of its variants. */
export interface ReportSource {
  /** Absolute: the folder given. */
  dir: string;
  /** The study record when `dir` is a study folder. */
  study: StudyRecord | null;
  runs: RunFolder[];
}

/**
 * Reads a run folder, or a study folder (study.json) with each variant that has a manifest. A study
 * with no variant run yet is an error.
 */
export async function readReportSource(dir: string): Promise<ReportSource> {
  const abs = resolve(dir);
  const studyRaw = await readJson(join(abs, STUDY_FILE));
  if (studyRaw === undefined || (await stat(join(abs, MANIFEST_FILE)).catch(() => null)) !== null) {
    return { dir: abs, study: null, runs: [await readRunFolder(abs)] };
  }
  const parsed = StudyRecordSchema.safeParse(studyRaw);
  if (!parsed.success) {
    throw new RunFolderError(`${join(dir, STUDY_FILE)} is not a study record: ${issuesText(parsed.error)}`);
  }
  const runs: RunFolder[] = [];
  for (const variant of parsed.data.variants) {
    if (variant.manifest === null) continue;
    const folder = safeRelativePath(variant.folder);
    if (folder === null)
      throw new RunFolderError(
        `${join(dir, STUDY_FILE)}: variant folder ${JSON.stringify(variant.folder)} is outside the study`,
      );
    runs.push(await readRunFolder(join(abs, folder)));
  }
  if (runs.length === 0) throw new RunFolderError(`${dir} is a study none of whose variants has run yet`);
  return { dir: abs, study: parsed.data, runs };
}
