// `diffusion-lens slurm CONFIG --array N`: writes the sbatch scripts that run CONFIG as N shards and merge
// them (src/experiment/slurm.ts writes them).
import { basename, extname, resolve } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { loadConfigFile } from '../config/index.js';
import { defaultOutDir } from '../experiment/index.js';
import { type SlurmOptions, shellQuote, slurmJobName, writeSlurmScripts } from '../experiment/slurm.js';

/** The library's options as flags: the config is the argument, the folder is --out. */
type SlurmFlags = Omit<SlurmOptions, 'configPath' | 'outDir' | 'command'> & { out?: string };

function wholeNumber(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min) {
      throw new InvalidArgumentError(`must be a whole number, ${min} or more`);
    }
    return n;
  };
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Adds `slurm` to the program. */
export function addSlurmCommand(program: Command): void {
  program
    .command('slurm')
    .summary('write Slurm scripts that run a config as N shards, then merge them')
    .description(
      'Write an sbatch array script that runs CONFIG as N shards (task I: `diffusion-lens run CONFIG ' +
        '--out OUT/shards/I --shard I/N`, one GPU each by default), a merge script (`diffusion-lens merge ' +
        '... --out OUT`) and submit.sh, which submits the array and then the merge with ' +
        "--dependency=afterok on it. The scripts go to OUT/slurm/ (or --script-dir), the jobs' output to " +
        'its logs/. A shard that fails or runs out of time resumes when submitted again (submit.sh I,J). ' +
        'Nothing is submitted.',
    )
    .argument('<config>', 'experiment file (.yaml, .yml or .json); no sweep')
    .requiredOption('--array <n>', 'how many shards (array tasks)', wholeNumber(1))
    .option('--gpus-per-task <n>', 'GPUs per shard; 0 asks for none', wholeNumber(0), 1)
    .option('--cpus-per-task <n>', "CPUs per shard (default: the cluster's)", wholeNumber(1))
    .option('--mem <size>', "memory per shard, e.g. 32G (default: the cluster's)")
    .option('--partition <name>', "the partition (default: the cluster's)")
    .option('--time <limit>', "time limit of each job, e.g. 4:00:00 (default: the partition's)")
    .option('--account <name>', 'the account to charge')
    .option('--job-name <name>', "the jobs' name (default: dlens-<config name>; the merge adds -merge)")
    .option(
      '-o, --out <dir>',
      'the merged run folder; the shards write to OUT/shards/I (default: runs/<name>, as `run`)',
    )
    .option('--script-dir <dir>', 'where the scripts go (default: OUT/slurm)')
    .option(
      '--sbatch <option>',
      'another #SBATCH option for both jobs, e.g. --sbatch=--qos=high (repeatable)',
      collect,
    )
    .option(
      '--setup <line>',
      'a shell line each job runs first, e.g. --setup "module load cuda" (repeatable)',
      collect,
    )
    .addHelpText(
      'after',
      '\nExample:\n' +
        '  diffusion-lens slurm configs/paper/sd21-two-colors.yaml --array 8 --partition gpu --time 4:00:00\n' +
        '  runs/sd21-two-colors/slurm/submit.sh',
    )
    .action(async (file: string, flags: SlurmFlags) => {
      const config = await loadConfigFile(file);
      if (config.sweep !== undefined) {
        throw new Error(
          `${file} has a sweep: (a study of several runs); shards split one run: write a config per variant`,
        );
      }
      const { out, ...options } = flags;
      const outDir = out === undefined ? defaultOutDir(config) : resolve(out);
      const scripts = await writeSlurmScripts({
        ...options,
        configPath: file,
        outDir,
        jobName: flags.jobName ?? slurmJobName(config.name ?? basename(file, extname(file))),
      });
      process.stdout.write(
        `wrote ${scripts.shards.path} (${flags.array} shards), ${scripts.merge.path} and ${scripts.submit.path}\n` +
          `submit with:\n  ${shellQuote(scripts.submit.path)}\n` +
          `the shards write to ${outDir}/shards/I, the merge to ${outDir}; logs in ${scripts.logs}/\n`,
      );
    });
}
