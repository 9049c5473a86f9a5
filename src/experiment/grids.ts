// One labelled layer × seed grid per prompt and stage, from the image files on disk.
import { join } from 'node:path';
import type { Stage } from '../config/index.js';
import { buildGrid } from '../render/grid.js';
import type { ManifestGrid } from './manifest.js';
import type { Plan } from './plan.js';
import { gridPath, writeFileAtomic } from './store.js';

export type GridRecord = ManifestGrid;

/** The grid's title: the prompt, with the stage named when the run has stage II. */
export function gridTitle(prompt: string, stage: Stage, stages: readonly Stage[]): string {
  if (stages.length < 2) return prompt;
  return `${prompt} (stage ${stage === 1 ? 'I' : 'II'})`;
}

export async function writeGrids(input: {
  outDir: string;
  plan: Plan;
  prompts: string[];
  layers: number[];
  seeds: number[];
  onGrid?: (grid: GridRecord) => void;
}): Promise<GridRecord[]> {
  const { outDir, plan, layers, seeds } = input;
  const grids: GridRecord[] = [];
  for (const [promptIndex, prompt] of input.prompts.entries()) {
    for (const stage of plan.stages) {
      const jobs = plan.jobs.filter((job) => job.promptIndex === promptIndex && job.stage === stage);
      const cells = layers.map((layer) =>
        seeds.map((seed) => {
          const job = jobs.find((j) => j.layer === layer && j.seed === seed);
          return job ? join(outDir, job.path) : null;
        }),
      );
      const png = await buildGrid({
        title: gridTitle(prompt, stage, plan.stages),
        rowLabels: layers.map((layer) => `L${layer}`),
        colLabels: seeds.map((seed) => `s${seed}`),
        cells,
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
