// One labelled layer × seed grid per prompt and stage, from the image files on disk: the prompt as title,
// a legend with the model and settings, rows labelled by layer (the final one marked), columns by seed.
import { basename, join } from 'node:path';
import { layerDepth, looksLikePath, type Stage } from '../config/index.js';
import { buildGrid } from '../render/grid.js';
import { describeOptions } from './family.js';
import type { ManifestGrid } from './manifest.js';
import type { Job, Plan } from './plan.js';
import { gridPath, writeFileAtomic } from './store.js';

export type GridRecord = ManifestGrid;

/** The grid's title: the prompt, with the stage named when the run has stage II. */
export function gridTitle(prompt: string, stage: Stage, stages: readonly Stage[]): string {
  if (stages.length < 2) return prompt;
  return `${prompt} (stage ${stage === 1 ? 'I' : 'II'})`;
}

/**
 * A row label: `L3 · 12.5%` (the layer and its depth in percent of L); `L24 (final)` for the last, and
 * `L31 · 96.9% (stock)` for the stock pipeline's layer where that is not the last (SDXL).
 */
export function layerLabel(layer: number, numLayers: number, stockLayer: number = numLayers): string {
  if (layer === numLayers) return `L${layer} (final)`;
  return `L${layer} · ${layerDepth(layer, numLayers)}%${layer === stockLayer ? ' (stock)' : ''}`;
}

/** A model id for display: a local path becomes its last folder name; hub ids (`owner/name`) stay. */
export function shortModelId(id: string): string {
  if (!looksLikePath(id)) return id;
  const parts = id.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
  return parts[parts.length - 1] ?? id;
}

/** A weight shown to 3 decimals at most (1 - 0.7 is 0.30000000000000004). */
const round3 = (value: number): number => Math.round(value * 1000) / 1000;

function shortText(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}

/**
 * The legend of a grid, as items (shown joined by ' · '): the model and sampler settings, the lens
 * settings, which row is the final layer; for a stage II grid also stage II's model and settings.
 */
export function gridLegend(plan: Plan, stage: Stage): string[] {
  const { model, sampler, lens, stage2 } = plan.settings;
  const items = [
    `model ${shortModelId(model.id)}${model.variant ? ` (${model.variant})` : ''}`,
    `${sampler.steps} steps`,
    `guidance ${sampler.guidance}`,
    `${sampler.width}×${sampler.height}`,
    sampler.scheduler,
    `uncond ${lens.uncond}`,
    `noise ${lens.noise}`,
  ];
  if (lens.encoders) items.push(`encoders ${lens.encoders.join(', ')}`);
  if (lens.pooled) items.push(`pooled ${lens.pooled}`);
  if (lens.tokens !== undefined) items.push(`tokens ${lens.tokens}`);
  if (lens.mix) {
    const [a, b] = lens.mix.layers;
    items.push(`mix ${round3(1 - lens.mix.alpha)}×L${a} + ${lens.mix.alpha}×L${b}`);
  }
  if (plan.embeds) items.push(`embeds ${basename(plan.embeds.path)}`);
  if (sampler.negative) items.push(`negative "${shortText(sampler.negative, 40)}"`);
  items.push(...describeOptions(plan.familyOptions.sample));
  if (stage === 2 && stage2) {
    items.push(
      `stage II: model ${shortModelId(stage2.model.id)}`,
      `${stage2.steps} steps`,
      `guidance ${stage2.guidance}`,
      `${stage2.width}×${stage2.height}`,
      ...describeOptions(plan.familyOptions.stage2),
    );
  }
  items.push(`rows: layers (L${plan.numLayers} = final)`, 'columns: seeds');
  return items;
}

/** The size of a stage's images, as planned. */
function cellSize(plan: Plan, stage: Stage): { width: number; height: number } {
  const { sampler, stage2 } = plan.settings;
  return stage === 2 && stage2 ? { width: stage2.width, height: stage2.height } : sampler;
}

export async function writeGrids(input: {
  outDir: string;
  plan: Plan;
  prompts: string[];
  layers: number[];
  seeds: number[];
  /**
   * Small images are upscaled (nearest neighbour, integer factor) until a cell's shorter side is at least
   * this many pixels; default 128, 0 never upscales.
   */
  minCell?: number;
  /** Whether a job's image is there to show; a cell whose job is not done is a placeholder. Default: all are. */
  isDone?: (job: Job) => boolean;
  onGrid?: (grid: GridRecord) => void;
}): Promise<GridRecord[]> {
  const { outDir, plan, layers, seeds } = input;
  const grids: GridRecord[] = [];
  for (const [promptIndex, prompt] of input.prompts.entries()) {
    for (const stage of plan.stages) {
      const jobs = new Map<string, Job>();
      for (const job of plan.jobs) {
        if (job.promptIndex === promptIndex && job.stage === stage) jobs.set(`${job.layer}/${job.seed}`, job);
      }
      const cells = layers.map((layer) =>
        seeds.map((seed) => {
          const job = jobs.get(`${layer}/${seed}`);
          if (!job || (input.isDone && !input.isDone(job))) return null;
          return join(outDir, job.path);
        }),
      );
      const png = await buildGrid({
        title: gridTitle(prompt, stage, plan.stages),
        legend: gridLegend(plan, stage),
        rowLabels: layers.map((layer) => layerLabel(layer, plan.numLayers, plan.stockLayer)),
        colLabels: seeds.map((seed) => `s${seed}`),
        cells,
        minCell: input.minCell,
        emptyCellSize: cellSize(plan, stage),
      });
      const path = gridPath(prompt, stage);
      await writeFileAtomic(join(outDir, path), png);
      const grid: GridRecord = { prompt, stage, path };
      grids.push(grid);
      input.onGrid?.(grid);
    }
  }
  return grids;
}
