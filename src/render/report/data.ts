// The page's data (model.ts) from run folders: per run its model, settings, layers, seeds, prompts with
// their questions, images (with thumbnails where the images are large) and the annotators' answer counts.
import { basename, join, relative, sep } from 'node:path';
import sharp from 'sharp';
import { layerDepth } from '../../config/index.js';
import { manifestQuestions, readAllAnnotations } from '../../eval/index.js';
import { layerLabel, shortModelId } from '../../experiment/grids.js';
import { TOOL_NAME, TOOL_VERSION } from '../../version.js';
import {
  type AnswerCounts,
  EMPTY_RESULTS,
  REPORT_DATA_VERSION,
  type ReportData,
  type ReportImage,
  type ReportResults,
  type ReportRun,
} from './model.js';
import { type ReportManifest, type RunFolder, safeRelativePath } from './run-folder.js';
import { makeThumbnails, THUMB_MIN_SOURCE, type ThumbStats } from './thumbs.js';

export interface ReportDataOptions {
  /** `static`: image URLs relative to `pageDir`; `serve`: under `runs/<index>/` of the server. */
  mode: 'static' | 'serve';
  /** The folder the page is written to (static mode). */
  pageDir?: string;
  /** The page's title (default: the run's name, or the runs' names). */
  title?: string;
  /** The results panel (default: empty). */
  results?: ReportResults;
  /** Make thumbnails of large images (default true). */
  thumbnails?: boolean;
  onThumbProgress?: (done: number, total: number) => void;
}

/** A folder as a URL prefix relative to the page's folder: each part encoded, '/' at the end ('' for the same). */
export function folderUrl(pageDir: string, dir: string): string {
  const rel = relative(pageDir, dir);
  if (rel === '') return '';
  return `${rel
    .split(sep)
    .map((part) => (part === '..' ? part : encodeURIComponent(part)))
    .join('/')}/`;
}

/** The run's settings as short items, as a grid's legend names them. */
function settingsItems(manifest: ReportManifest): string[] {
  const { sampler, lens } = manifest.config;
  const items: string[] = [];
  if (sampler.steps !== undefined) items.push(`${sampler.steps} steps`);
  if (sampler.guidance !== undefined) items.push(`guidance ${sampler.guidance}`);
  if (sampler.width !== undefined && sampler.height !== undefined)
    items.push(`${sampler.width}×${sampler.height}`);
  if (sampler.scheduler !== undefined) items.push(sampler.scheduler);
  if (lens.uncond !== undefined) items.push(`uncond ${lens.uncond}`);
  if (lens.noise !== undefined) items.push(`noise ${lens.noise}`);
  if (lens.tokens !== undefined && lens.tokens !== 'all') items.push(`tokens ${lens.tokens}`);
  if (sampler.negative) items.push(`negative "${sampler.negative}"`);
  if (manifest.variant) {
    for (const [field, value] of Object.entries(manifest.variant.values)) {
      items.push(`${field} = ${JSON.stringify(value)}`);
    }
  }
  return items;
}

/** Each stage's image size ([height, width]): from the manifest, else from its first image's file. */
async function stageSizes(run: RunFolder): Promise<Record<string, [number, number]>> {
  const { config, images } = run.manifest;
  const sizes: Record<string, [number, number]> = {};
  if (config.sampler.height && config.sampler.width)
    sizes['1'] = [config.sampler.height, config.sampler.width];
  if (config.stage2) sizes['2'] = [config.stage2.height, config.stage2.width];
  for (const stage of config.stages) {
    if (sizes[String(stage)]) continue;
    const first = images.find((image) => image.stage === stage && safeRelativePath(image.path) !== null);
    if (!first) continue;
    const meta = await sharp(join(run.dir, first.path))
      .metadata()
      .catch(() => null);
    if (meta?.height && meta.width) sizes[String(stage)] = [meta.height, meta.width];
  }
  return sizes;
}

/** Per image key and question: [yes, no] over every annotator's current answers. */
async function answerCounts(dir: string): Promise<{ annotators: string[]; counts: AnswerCounts }> {
  const all = await readAllAnnotations(dir);
  const counts: AnswerCounts = {};
  for (const { answers } of all) {
    for (const answer of answers) {
      if (answer.answer === null) continue;
      const byQuestion = counts[answer.key] ?? {};
      counts[answer.key] = byQuestion;
      const pair = byQuestion[answer.question] ?? [0, 0];
      byQuestion[answer.question] = pair;
      pair[answer.answer === 1 ? 0 : 1]++;
    }
  }
  return { annotators: all.map((a) => a.annotator), counts };
}

async function reportRun(
  run: RunFolder,
  index: number,
  label: string,
  options: ReportDataOptions,
): Promise<{ run: ReportRun; thumbs: ThumbStats }> {
  const { manifest } = run;
  const numLayers = manifest.model.num_layers;
  const sizes = await stageSizes(run);
  const large = (stage: number) => Math.max(...(sizes[String(stage)] ?? [0])) > THUMB_MIN_SOURCE;
  const skipped: string[] = [];
  const kept = manifest.images.filter((image) => {
    if (safeRelativePath(image.path) === null) {
      skipped.push(`${JSON.stringify(image.path)}: not a path inside the run folder`);
      return false;
    }
    if (image.prompt_index >= manifest.prompts.length) {
      skipped.push(`${JSON.stringify(image.path)}: prompt ${image.prompt_index} is not in the manifest`);
      return false;
    }
    return true;
  });
  const thumbJobs =
    options.thumbnails === false
      ? []
      : kept.filter((image) => large(image.stage)).map((image) => ({ key: image.key, src: image.path }));
  const { paths, stats } = await makeThumbnails(run.dir, thumbJobs, { onProgress: options.onThumbProgress });
  const images: ReportImage[] = kept.map((image) => ({
    k: image.key,
    p: image.prompt_index,
    l: image.layer,
    s: image.seed,
    st: image.stage,
    src: image.path,
    th: paths.get(image.key) ?? null,
  }));
  const layerSet = new Set([...(manifest.config.lens.layers ?? []), ...images.map((image) => image.l)]);
  const depthOf = new Map(kept.map((image) => [image.layer, image.depth]));
  const layers = [...layerSet]
    .sort((a, b) => a - b)
    .map((layer) => ({
      layer,
      depth: depthOf.get(layer) ?? layerDepth(layer, numLayers),
      label: layerLabel(layer, numLayers),
    }));
  const seeds = [...new Set([...(manifest.config.seeds ?? []), ...images.map((image) => image.s)])].sort(
    (a, b) => a - b,
  );
  const questions = manifestQuestions(manifest);
  return {
    thumbs: stats,
    run: {
      id: `run-${index}`,
      label,
      base: options.mode === 'serve' ? `runs/${index}/` : folderUrl(options.pageDir ?? run.dir, run.dir),
      dir: run.dir,
      complete: manifest.complete,
      model: {
        id: manifest.model.id,
        short: shortModelId(manifest.model.id),
        family: manifest.model.family,
        num_layers: numLayers,
      },
      prompt_set: manifest.prompt_set,
      variant: manifest.variant ?? null,
      settings: settingsItems(manifest),
      layers,
      seeds,
      stages: [...manifest.config.stages],
      sizes,
      pixelated: Object.values(sizes).every((size) => Math.max(...size) <= THUMB_MIN_SOURCE),
      columns: [...manifest.prompt_columns],
      prompts: manifest.prompts.map((prompt, i) => ({
        index: i,
        prompt: prompt.prompt,
        columns: { ...prompt.columns },
        questions: questions[i] ?? [],
        truncated: prompt.truncated,
      })),
      images,
      skipped,
      annotations: await answerCounts(run.dir),
    },
  };
}

/** Labels for the runs: each run's variant or config name; where two share one, with their folder's
 *  name, then numbered. */
export function runLabels(runs: readonly RunFolder[]): string[] {
  const names = runs.map((run) => run.manifest.variant?.name ?? run.manifest.config.name);
  const clash = (list: string[], i: number) => list.filter((other) => other === list[i]).length > 1;
  const withFolder = names.map((name, i) =>
    clash(names, i) ? `${name} (${basename(runs[i]?.dir ?? '') || i + 1})` : name,
  );
  return withFolder.map((name, i) =>
    clash(withFolder, i)
      ? `${name} ${withFolder.slice(0, i + 1).filter((other) => other === name).length}`
      : name,
  );
}

export interface BuiltReportData {
  data: ReportData;
  thumbs: ThumbStats;
}

/** The page's data for one or more run folders. */
export async function buildReportData(
  runs: readonly RunFolder[],
  options: ReportDataOptions,
): Promise<BuiltReportData> {
  if (runs.length === 0) throw new Error('a report needs at least one run folder');
  const labels = runLabels(runs);
  const thumbs: ThumbStats = { made: 0, reused: 0, failed: 0 };
  const built: ReportRun[] = [];
  for (const [i, run] of runs.entries()) {
    const one = await reportRun(run, i, labels[i] ?? `run ${i}`, options);
    built.push(one.run);
    thumbs.made += one.thumbs.made;
    thumbs.reused += one.thumbs.reused;
    thumbs.failed += one.thumbs.failed;
  }
  return {
    thumbs,
    data: {
      version: REPORT_DATA_VERSION,
      title: options.title ?? labels.join(' vs '),
      generated: new Date().toISOString(),
      tool: { name: TOOL_NAME, version: TOOL_VERSION },
      mode: options.mode,
      runs: built,
      results: options.results ?? EMPTY_RESULTS,
    },
  };
}
