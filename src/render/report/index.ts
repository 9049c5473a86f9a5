// `diffusion-lens report`: report.html for a run folder (or a study folder's variants, or two runs side
// by side): one self-contained page (data, script and styles inlined; the run's images by relative
// path, so it works from file://), with thumbnails of large images in RUN_DIR/report/thumbs/.
import { dirname, join, resolve } from 'node:path';
import { writeFileAtomic } from '../../experiment/index.js';
import { clientAssets } from './client-assets.js';
import { buildReportData, type ReportDataOptions } from './data.js';
import { contentSecurityPolicy, reportHtml } from './html.js';
import type { ReportData, ReportResults } from './model.js';
import { reportResults } from './results.js';
import { type ReportSource, type RunFolder, readReportSource } from './run-folder.js';
import type { ThumbStats } from './thumbs.js';

export { folderUrl } from './data.js';
export { contentSecurityPolicy, DATA_ELEMENT_ID, escapeHtml, jsonForScript, reportHtml } from './html.js';
export * from './model.js';
export { reportResults } from './results.js';
export {
  type ReportManifest,
  ReportManifestSchema,
  type ReportSource,
  type RunFolder,
  RunFolderError,
  readReportSource,
  readRunFolder,
  safeRelativePath,
} from './run-folder.js';
export { THUMB_SIDE, THUMBS_DIR, type ThumbStats, thumbPath } from './thumbs.js';

export const REPORT_FILE = 'report.html';

export interface ReportOptions {
  /** Another run folder (or study folder) whose runs are added, to compare side by side. */
  compare?: string;
  /** Where to write the page (default: DIR/report.html). */
  out?: string;
  /** The results panel (default: reportResults of the runs). */
  results?: ReportResults;
  /** Make thumbnails of large images (default true). */
  thumbnails?: boolean;
  onThumbProgress?: (done: number, total: number) => void;
}

export interface ReportResult {
  /** The page written (absolute). */
  path: string;
  runs: RunFolder[];
  images: number;
  thumbs: ThumbStats;
  /** Images of the manifests left out, with why. */
  skipped: string[];
}

/** The run folders of a report: DIR's (a run, or a study's variants), then those of `compare`. */
export async function reportRuns(
  dir: string,
  compare?: string,
): Promise<{ source: ReportSource; runs: RunFolder[] }> {
  const source = await readReportSource(dir);
  const runs = [...source.runs];
  if (compare !== undefined) {
    const other = await readReportSource(compare);
    for (const run of other.runs) if (!runs.some((known) => known.dir === run.dir)) runs.push(run);
  }
  return { source, runs };
}

/** The page for some runs, in memory. */
export async function renderReport(
  runs: readonly RunFolder[],
  options: ReportDataOptions,
): Promise<{ html: string; data: ReportData; csp: string; thumbs: ThumbStats }> {
  const [built, assets] = await Promise.all([buildReportData(runs, options), clientAssets()]);
  return {
    html: reportHtml(built.data, assets),
    data: built.data,
    csp: contentSecurityPolicy(assets, built.data.mode),
    thumbs: built.thumbs,
  };
}

/** Writes report.html (atomically) for a run or study folder, and another to compare with. */
export async function writeReport(dir: string, options: ReportOptions = {}): Promise<ReportResult> {
  const { source, runs } = await reportRuns(dir, options.compare);
  const path = resolve(options.out ?? join(source.dir, REPORT_FILE));
  const { html, data, thumbs } = await renderReport(runs, {
    mode: 'static',
    pageDir: dirname(path),
    title: source.study && options.compare === undefined ? source.study.name : undefined,
    results: options.results ?? (await reportResults(runs)),
    thumbnails: options.thumbnails,
    onThumbProgress: options.onThumbProgress,
  });
  await writeFileAtomic(path, html);
  return {
    path,
    runs,
    images: data.runs.reduce((n, run) => n + run.images.length, 0),
    thumbs,
    skipped: data.runs.flatMap((run) => run.skipped.map((why) => `${run.label}: ${why}`)),
  };
}
