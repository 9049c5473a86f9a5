// `diffusion-lens slurm CONFIG --array N`: scripts that run a config's N shards as a Slurm array job and
// then merge them, in a job that waits for every shard to succeed:
//
//   SCRIPTS/shards.sbatch   the array job (#SBATCH --array=0-(N-1)): task I runs
//                           `diffusion-lens run CONFIG --out OUT/shards/I --shard I/N`
//   SCRIPTS/merge.sbatch    `diffusion-lens merge OUT/shards/0 ... OUT/shards/(N-1) --out OUT`
//   SCRIPTS/submit.sh       sbatch the array, then the merge with --dependency=afterok:<array job>;
//                           `submit.sh 3,5` resubmits shards 3 and 5 (they resume) and a new merge
//   SCRIPTS/logs/           the jobs' output (shard-<array job>_<I>.out, merge-<job>.out)
//
// SCRIPTS is OUT/slurm unless given. Paths are absolute and shell-quoted; the scripts run with
// `set -euo pipefail`. The generation is pure (slurmScripts) so that tests read the text.
import { chmod, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { packageRoot } from '../paths.js';
import { writeFileAtomic } from './store.js';

export class SlurmError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SlurmError';
  }
}

export interface SlurmOptions {
  /** The experiment config (made absolute). */
  configPath: string;
  /** The merged run's folder (made absolute); the shards run into OUT/shards/I. */
  outDir: string;
  /** How many shards (array tasks). */
  array: number;
  /** Where the scripts go (default OUT/slurm). */
  scriptDir?: string;
  /** GPUs per shard (default 1; 0 asks for none). */
  gpusPerTask?: number;
  cpusPerTask?: number;
  /** Memory per shard, as sbatch takes it (e.g. 32G). */
  mem?: string;
  partition?: string;
  /** Time limit per shard, as sbatch takes it (e.g. 4:00:00 or 1-00:00:00). */
  time?: string;
  account?: string;
  /** The jobs' name (default dlens-<config name>); the merge is <name>-merge. */
  jobName?: string;
  /** More #SBATCH options for both jobs, e.g. `--qos=high`. */
  sbatch?: string[];
  /** Shell lines run before diffusion-lens in both jobs (e.g. `module load cuda`). */
  setup?: string[];
  /** How to run diffusion-lens (default: this Node and this package's dist/cli.js, absolute). */
  command?: string[];
}

export interface SlurmFile {
  path: string;
  text: string;
}

export interface SlurmScripts {
  dir: string;
  logs: string;
  shards: SlurmFile;
  merge: SlurmFile;
  submit: SlurmFile;
}

/** A word for a POSIX shell: as is when safe, else in single quotes (' as '\''). */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

const shellLine = (words: readonly string[]): string => words.map(shellQuote).join(' ');

/**
 * A file in `dir` for an #SBATCH line: double-quoted, a `%` of the folder doubled (Slurm reads `%j`, `%A`
 * and `%a` in the file name as the job's numbers).
 */
function sbatchPath(dir: string, pattern: string): string {
  if (/["\n\r\\]/.test(dir)) {
    throw new SlurmError(
      `${JSON.stringify(dir)} cannot be written in an #SBATCH line (it has a double quote, backslash or ` +
        'line break): choose a --script-dir without one',
    );
  }
  return `"${join(dir.replaceAll('%', '%%'), pattern)}"`;
}

const INTEGER = (min: number) => (value: number) => Number.isSafeInteger(value) && value >= min;
/** sbatch values written into #SBATCH lines as they are: no spaces, quotes or shell characters. */
const SBATCH_VALUE = /^[A-Za-z0-9_.,:@+-]+$/;

function check(options: SlurmOptions): void {
  if (!INTEGER(1)(options.array)) {
    throw new SlurmError(`--array must be a whole number of shards, 1 or more (got ${options.array})`);
  }
  if (options.gpusPerTask !== undefined && !INTEGER(0)(options.gpusPerTask)) {
    throw new SlurmError(`--gpus-per-task must be a whole number, 0 or more (got ${options.gpusPerTask})`);
  }
  if (options.cpusPerTask !== undefined && !INTEGER(1)(options.cpusPerTask)) {
    throw new SlurmError(`--cpus-per-task must be a whole number, 1 or more (got ${options.cpusPerTask})`);
  }
  if (options.mem !== undefined && !/^\d+[KMGT]?$/i.test(options.mem)) {
    throw new SlurmError(`--mem must be a size such as 32G or 16000M (got ${JSON.stringify(options.mem)})`);
  }
  if (options.time !== undefined && !/^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$/.test(options.time)) {
    throw new SlurmError(
      `--time must be a Slurm time limit such as 30, 4:00:00 or 1-00:00:00 (got ${JSON.stringify(options.time)})`,
    );
  }
  for (const [flag, value] of [
    ['--partition', options.partition],
    ['--account', options.account],
    ['--job-name', options.jobName],
  ] as const) {
    if (value !== undefined && !SBATCH_VALUE.test(value)) {
      throw new SlurmError(`${flag} must be letters, digits and _.,:@+- only (got ${JSON.stringify(value)})`);
    }
  }
  for (const option of options.sbatch ?? []) {
    if (!/^--?[A-Za-z]/.test(option) || /[\n\r]/.test(option)) {
      throw new SlurmError(
        `--sbatch takes an sbatch option such as --qos=high (got ${JSON.stringify(option)})`,
      );
    }
  }
  for (const line of options.setup ?? []) {
    if (/[\n\r]/.test(line)) throw new SlurmError('--setup takes one shell line at a time');
  }
}

/** The default job name: dlens-<name>, from a config name or file name. */
export function slurmJobName(name: string): string {
  const slug = name
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  return `dlens-${slug || 'run'}`;
}

/** The scripts' text (nothing is written). */
export function slurmScripts(options: SlurmOptions): SlurmScripts {
  check(options);
  const configPath = resolve(options.configPath);
  const outDir = resolve(options.outDir);
  const dir = resolve(options.scriptDir ?? join(outDir, 'slurm'));
  const logs = join(dir, 'logs');
  const count = options.array;
  const name = options.jobName ?? slurmJobName('run');
  const command = options.command ?? [process.execPath, join(packageRoot, 'dist', 'cli.js')];
  const gpus = options.gpusPerTask ?? 1;

  const common = [
    ...(options.partition ? [`#SBATCH --partition=${options.partition}`] : []),
    ...(options.account ? [`#SBATCH --account=${options.account}`] : []),
    ...(options.time ? [`#SBATCH --time=${options.time}`] : []),
    ...(options.sbatch ?? []).map((option) => `#SBATCH ${option}`),
  ];
  const setup = options.setup ?? [];
  const header = (what: string[]) => ['#!/bin/bash', ...what.map((line) => `# ${line}`)];

  const shards = [
    ...header([
      `The ${count} shards of ${configPath} as a Slurm array job: task I runs shard I/${count} into`,
      `${join(outDir, 'shards', 'I')}. Written by \`diffusion-lens slurm\`; submit.sh submits it with`,
      'the merge. A failed or timed-out shard resumes when resubmitted: sbatch --array=I shards.sbatch',
    ]),
    `#SBATCH --job-name=${name}`,
    `#SBATCH --array=0-${count - 1}`,
    '#SBATCH --ntasks=1',
    ...(gpus > 0 ? [`#SBATCH --gpus-per-task=${gpus}`] : []),
    ...(options.cpusPerTask ? [`#SBATCH --cpus-per-task=${options.cpusPerTask}`] : []),
    ...(options.mem ? [`#SBATCH --mem=${options.mem}`] : []),
    ...common,
    `#SBATCH --output=${sbatchPath(logs, 'shard-%A_%a.out')}`,
    'set -euo pipefail',
    ...setup,
    `shard="\${SLURM_ARRAY_TASK_ID:?run this script with sbatch: it is an array job}"`,
    `${shellLine([...command, 'run', configPath, '--out'])} ${shellQuote(join(outDir, 'shards'))}/"$shard" ` +
      `--shard "$shard/${count}"`,
    '',
  ].join('\n');

  const merge = [
    ...header([
      `Merges the ${count} shards of ${configPath} into ${outDir} (grids, manifest.json,`,
      'images.csv), once every shard has succeeded (submit.sh submits it with --dependency=afterok).',
    ]),
    `#SBATCH --job-name=${name}-merge`,
    '#SBATCH --ntasks=1',
    ...common,
    `#SBATCH --output=${sbatchPath(logs, 'merge-%j.out')}`,
    'set -euo pipefail',
    ...setup,
    `out=${shellQuote(outDir)}`,
    'shards=()',
    `for ((i = 0; i < ${count}; i++)); do shards+=("$out/shards/$i"); done`,
    `${shellLine([...command, 'merge'])} "\${shards[@]}" --out "$out"`,
    '',
  ].join('\n');

  const submit = [
    '#!/usr/bin/env bash',
    `# Submits the ${count} shards of ${configPath} as an array job, then their merge into`,
    `# ${outDir}, which runs once every shard has succeeded. Written by \`diffusion-lens slurm\`.`,
    '#   ./submit.sh          all shards, then the merge',
    '#   ./submit.sh 3,5      shards 3 and 5 again (a rerun resumes), then the merge',
    'set -euo pipefail',
    `dir=${shellQuote(dir)}`,
    'array=()',
    'if [ $# -gt 0 ]; then array=(--array="$1"); fi',
    // --parsable prints "jobid" or "jobid;cluster".
    // ${a[@]+"${a[@]}"}: an empty array under set -u in bash before 4.4.
    `shards_job="$(sbatch --parsable \${array[@]+"\${array[@]}"} "$dir/shards.sbatch")"`,
    `shards_job="\${shards_job%%;*}"`,
    'merge_job="$(sbatch --parsable --dependency="afterok:$shards_job" "$dir/merge.sbatch")"',
    `merge_job="\${merge_job%%;*}"`,
    'echo "$shards_job" >"$dir/shards.jobid"',
    'echo "$merge_job" >"$dir/merge.jobid"',
    'echo "submitted the shards as job $shards_job and the merge as job $merge_job (after the shards succeed)"',
    'echo "logs: $dir/logs/; watch with: squeue -j $shards_job,$merge_job"',
    '',
  ].join('\n');

  return {
    dir,
    logs,
    shards: { path: join(dir, 'shards.sbatch'), text: shards },
    merge: { path: join(dir, 'merge.sbatch'), text: merge },
    submit: { path: join(dir, 'submit.sh'), text: submit },
  };
}

/** Writes the scripts (executable) and the logs folder; returns what it wrote. */
export async function writeSlurmScripts(options: SlurmOptions): Promise<SlurmScripts> {
  const scripts = slurmScripts(options);
  await mkdir(scripts.logs, { recursive: true });
  for (const file of [scripts.shards, scripts.merge, scripts.submit]) {
    await writeFileAtomic(file.path, file.text);
    await chmod(file.path, 0o755);
  }
  return scripts;
}
