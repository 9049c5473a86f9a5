// One labelled layer × seed grid per prompt, from the image files on disk.
import { join } from 'node:path';
import { buildGrid } from '../render/grid.js';
import type { Manifest } from './manifest.js';
import type { Plan } from './plan.js';
import { gridPath, writeFileAtomic } from './store.js';

export type GridRecord = Manifest['grids'][number];

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
    const jobs = plan.jobs.filter((job) => job.promptIndex === promptIndex);
    const cells = layers.map((layer) =>
      seeds.map((seed) => {
        const job = jobs.find((j) => j.layer === layer && j.seed === seed);
        return job ? join(outDir, job.path) : null;
      }),
    );
    const png = await buildGrid({
      title: prompt,
      rowLabels: layers.map((layer) => `L${layer}`),
      colLabels: seeds.map((seed) => `s${seed}`),
      cells,
    });
    const path = gridPath(prompt);
    await writeFileAtomic(join(outDir, path), png);
    const grid = { prompt, path };
    grids.push(grid);
    input.onGrid?.(grid);
  }
  return grids;
}
