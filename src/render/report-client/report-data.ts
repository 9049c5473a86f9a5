// The page's data (read from its JSON element) and the lookups the views share.
import type { ReportData, ReportImage, ReportLayer, ReportPrompt, ReportRun } from '../report/model.js';

export type { ReportData, ReportImage, ReportLayer, ReportPrompt, ReportRun };

export const DATA_ELEMENT_ID = 'report-data';

export function readData(): ReportData {
  const element = document.getElementById(DATA_ELEMENT_ID);
  if (!element?.textContent) throw new Error('the page has no report data');
  return JSON.parse(element.textContent) as ReportData;
}

/** A run with its images indexed. */
export interface RunIndex {
  run: ReportRun;
  /** Position of the run in ReportData.runs. */
  index: number;
  byKey: Map<string, ReportImage>;
  /** By `prompt:stage:layer:seed`. */
  byCell: Map<string, ReportImage>;
  /** The stages each prompt has images of, by prompt index. */
  promptStages: Map<number, number[]>;
}

const cellId = (prompt: number, stage: number, layer: number, seed: number) =>
  `${prompt}:${stage}:${layer}:${seed}`;

export function indexRun(run: ReportRun, index: number): RunIndex {
  const byKey = new Map<string, ReportImage>();
  const byCell = new Map<string, ReportImage>();
  const stages = new Map<number, Set<number>>();
  for (const image of run.images) {
    byKey.set(image.k, image);
    byCell.set(cellId(image.p, image.st, image.l, image.s), image);
    const set = stages.get(image.p) ?? new Set<number>();
    stages.set(image.p, set);
    set.add(image.st);
  }
  const promptStages = new Map([...stages].map(([p, set]) => [p, [...set].sort()]));
  return { run, index, byKey, byCell, promptStages };
}

export function imageAt(
  index: RunIndex,
  prompt: number,
  stage: number,
  layer: number,
  seed: number,
): ReportImage | undefined {
  return index.byCell.get(cellId(prompt, stage, layer, seed));
}

/** An image's URL from the page: the run folder's prefix and the path, each part encoded. */
export function fileUrl(run: ReportRun, path: string): string {
  return run.base + path.split('/').map(encodeURIComponent).join('/');
}

/** The run's layer nearest to a depth (percent of L); ties go to the shallower one. */
export function nearestLayer(run: ReportRun, depth: number): ReportLayer | undefined {
  let best: ReportLayer | undefined;
  for (const layer of run.layers) {
    if (!best || Math.abs(layer.depth - depth) < Math.abs(best.depth - depth)) best = layer;
  }
  return best;
}

/** `stage II` for the upscaled images; '' for a run with one stage. */
export function stageName(run: ReportRun, stage: number): string {
  if (run.stages.length < 2) return '';
  return stage === 2 ? 'stage II' : 'stage I';
}
