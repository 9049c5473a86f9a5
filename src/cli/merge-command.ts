// `diffusion-lens merge SHARD_DIR... --out DIR`: the shards of a run (`run`/`lens --shard I/N`) combined
// into one run folder, as an unsharded run writes it (src/experiment/merge.ts does the work).
import type { Command } from 'commander';
import { type MergeResult, mergeShards } from '../experiment/merge.js';

interface MergeFlags {
  out: string;
  copy?: boolean;
  json?: boolean;
}

const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** The summary line of a merge. */
export function mergeText(result: MergeResult): string {
  const how = [
    result.linked > 0 ? `${result.linked} hard-linked` : '',
    result.copied > 0 ? `${result.copied} copied` : '',
    result.reused > 0 ? `${result.reused} there already` : '',
  ].filter(Boolean);
  return (
    `merged ${plural(result.shards.length, 'shard')}: ${plural(result.images, 'image')}` +
    `${how.length > 0 ? ` (${how.join(', ')})` : ''}, ${plural(result.manifest.grids.length, 'grid')} -> ` +
    `${result.manifestPath}\n`
  );
}

/** Adds `merge` to the program. */
export function addMergeCommand(program: Command): void {
  program
    .command('merge')
    .summary('combine the shards of a run (--shard I/N) into one run folder')
    .description(
      'Combine the folders of the N shards of one run (made by run or lens with --shard I/N, e.g. by the ' +
        'scripts of `diffusion-lens slurm`) into one run folder: the same images, keys, grids, manifest.json ' +
        'and images.csv as the run without shards, and a journal, so that a rerun of the config into it ' +
        'makes nothing. Every shard 0..N-1 must be given once and be complete, and all must be of the same ' +
        'config; nothing is written otherwise. Images are hard-linked where the file system allows (else ' +
        'copied). Needs no worker.',
    )
    .argument('<shards...>', 'the shard folders (any order)')
    .requiredOption(
      '-o, --out <dir>',
      'the merged run folder (required; a run folder of the same settings is fine)',
    )
    .option('--copy', 'copy the images instead of hard-linking them')
    .option('--json', 'print the run events and a final {"type":"merged"} as JSON lines on stdout')
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  diffusion-lens run exp.yaml --shard 0/2 --out runs/exp/shards/0\n' +
        '  diffusion-lens run exp.yaml --shard 1/2 --out runs/exp/shards/1\n' +
        '  diffusion-lens merge runs/exp/shards/0 runs/exp/shards/1 --out runs/exp',
    )
    .action(async (dirs: string[], flags: MergeFlags) => {
      const json = (value: object) => process.stdout.write(`${JSON.stringify(value)}\n`);
      const result = await mergeShards(dirs, {
        outDir: flags.out,
        link: !flags.copy,
        onEvent: flags.json ? json : undefined,
      });
      if (flags.json) {
        const { manifest: _manifest, ...summary } = result;
        json({ type: 'merged', ...summary });
      } else {
        process.stdout.write(mergeText(result));
      }
    });
}
