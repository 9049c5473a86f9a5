#!/usr/bin/env node
// The diffusion-lens command line: a thin layer over the library (src/index.ts).
import { join, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { WorkerError } from './bridge/index.js';
import { doctorText } from './cli/doctor-text.js';
import { addKeysCommand } from './cli/keys-command.js';
import { addMergeCommand } from './cli/merge-command.js';
import { addLensOptions } from './cli/option-help.js';
import { type LensCommandOptions, lensConfig } from './cli/options.js';
import { estimateText, totalsText } from './cli/plan-text.js';
import { addReportCommand } from './cli/report-command.js';
import { createReporter, describeEvent, type Reporter, type ReportMode } from './cli/reporter.js';
import { addScoreCommand } from './cli/score-command.js';
import { addServeCommand } from './cli/serve-command.js';
import { addSlurmCommand } from './cli/slurm-command.js';
import { addStatsCommands } from './cli/stats-command.js';
import { type AttachFlags, addAttachOptions, addWorkerCommand, remoteWorkers } from './cli/worker-command.js';
import { ConfigError, type ExperimentConfig, loadConfigFile, toJsonSchema } from './config/index.js';
import { runDoctor } from './doctor.js';
import {
  defaultOutDir,
  estimateRun,
  expandSweep,
  GPU_SPEED,
  gpuKey,
  parseShard,
  REFERENCE_GPU,
  type RunEstimate,
  type RunEvent,
  runExperiment,
  runStudy,
  type ShardSpec,
  type StudyEvent,
} from './experiment/index.js';
import { TOOL_VERSION } from './version.js';

const EXIT_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;

const debug = (): boolean => process.env.DIFFUSION_LENS_DEBUG === '1';

/** A ConfigError from command-line options is a usage error (exit 2). */
class UsageError extends Error {}

interface RunFlags extends AttachFlags {
  json?: boolean;
  verbose?: boolean;
  overwrite?: boolean;
  newVariant?: boolean;
  shard?: ShardSpec;
}

/** The options every command that runs the lens has. */
function addRunFlags(command: Command): Command {
  return addAttachOptions(command)
    .option(
      '--new-variant',
      'if the output folder holds images made with other settings, write this run to ' +
        'OUT/variants/<what changed>/ instead (default: refuse)',
    )
    .option(
      '--overwrite',
      'if the output folder holds images made with other settings, delete them and make these ' +
        '(default: refuse)',
    )
    .option(
      '--shard <i/n>',
      'make only shard I (0-based) of N: every Nth batch of the plan, with the same keys and bytes as the ' +
        'whole run; no grids. `diffusion-lens merge` combines the N shard folders (default: the whole run)',
      (text: string) => {
        try {
          return parseShard(text);
        } catch (error) {
          throw new InvalidArgumentError((error as Error).message);
        }
      },
    )
    .option('--json', 'print one JSON event per line on stdout (default: progress on stderr)')
    .option('-v, --verbose', "show the worker's log lines (default: off)");
}

function reportMode(flags: RunFlags): ReportMode {
  if (flags.json) return 'json';
  return process.stderr.isTTY ? 'tty' : 'plain';
}

async function runWithUi(config: ExperimentConfig, outDir: string, flags: RunFlags): Promise<number> {
  return withUi(flags, (reporter, signal) =>
    runExperiment(config, {
      outDir,
      overwrite: flags.overwrite,
      newVariant: flags.newVariant,
      remote: remoteWorkers(flags),
      shard: flags.shard,
      signal,
      onEvent: (event) => reporter.onEvent(event),
      onLog: flags.verbose ? (line) => reporter.note(`worker: ${line}`) : undefined,
    }),
  );
}

/** One line for a study's own events (its variants' run events are reported as a run's). */
function studyLine(event: Exclude<StudyEvent, { variant: string; type: RunEvent['type'] }>): string {
  switch (event.type) {
    case 'study-start':
      return `study "${event.name}": ${event.variants} variants (${event.fields.join(' x ')}) -> ${event.out_dir}`;
    case 'variant-start': {
      const values = Object.entries(event.values)
        .map(([field, value]) => `${field}=${JSON.stringify(value)}`)
        .join(', ');
      return `\nvariant ${event.index}/${event.count}: ${event.variant} (${values})`;
    }
    case 'study-done':
      return (
        `study ${event.aborted ? 'stopped' : event.complete ? 'done' : 'incomplete'}: ${event.images_generated} ` +
        `images made, ${event.images_skipped} already on disk -> ${event.study}`
      );
  }
}

/** A config with a `sweep:` block: its variants in turn, into OUT/<variant>/, with OUT/study.json. */
async function studyWithUi(config: ExperimentConfig, outDir: string, flags: RunFlags): Promise<number> {
  return withUi(flags, (reporter, signal) =>
    runStudy(config, {
      outDir,
      overwrite: flags.overwrite,
      newVariant: flags.newVariant,
      remote: remoteWorkers(flags),
      signal,
      onEvent: (event) => {
        if (event.type === 'study-start' || event.type === 'variant-start' || event.type === 'study-done') {
          if (flags.json) process.stdout.write(`${JSON.stringify(event)}\n`);
          else if (event.type === 'study-done') process.stdout.write(`${studyLine(event)}\n`);
          else reporter.note(studyLine(event));
          return;
        }
        reporter.onEvent(event);
      },
      onLog: flags.verbose ? (line) => reporter.note(`worker: ${line}`) : undefined,
    }),
  );
}

/** Runs `go` with a reporter; Ctrl-C aborts it (twice exits). The exit code from how it ended. */
async function withUi(
  flags: RunFlags,
  go: (reporter: Reporter, signal: AbortSignal) => Promise<{ aborted: boolean; complete: boolean }>,
): Promise<number> {
  const reporter = createReporter(reportMode(flags));
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupts++;
    if (interrupts === 1) {
      reporter.note(
        `${signal === 'SIGINT' ? 'Ctrl-C' : signal}: stopping; the batch being denoised is cancelled, ` +
          'finished images are kept and a rerun resumes (again to force)',
      );
      controller.abort();
    } else {
      reporter.stop();
      process.exit(signal === 'SIGINT' ? EXIT_INTERRUPTED : 143);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (flags.overwrite && flags.newVariant) {
    const message = '--overwrite and --new-variant exclude each other: choose one';
    process.stderr.write(`error: ${message}\n`);
    throw new UsageError(message);
  }
  try {
    const result = await go(reporter, controller.signal);
    if (result.aborted) return EXIT_INTERRUPTED;
    return result.complete ? 0 : EXIT_ERROR;
  } finally {
    reporter.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

interface PlanFlags {
  out?: string;
  load?: boolean;
  measure?: boolean;
  gpu?: string;
  json?: boolean;
  verbose?: boolean;
}

async function planCommand(files: string[], flags: PlanFlags): Promise<number> {
  if (flags.out !== undefined && files.length > 1) {
    const message = '--out names the output folder of one config; plan several without it';
    process.stderr.write(`error: ${message}\n`);
    throw new UsageError(message);
  }
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once('SIGINT', onSignal);
  const estimates: RunEstimate[] = [];
  let failed = 0;
  try {
    for (const file of files) {
      try {
        const options = {
          load: flags.load,
          measure: flags.measure,
          gpu: flags.gpu,
          signal: controller.signal,
          onEvent: (event: RunEvent) => {
            const line = flags.json ? null : describeEvent(event);
            if (line) process.stderr.write(`${line}\n`);
          },
          onLog: flags.verbose ? (line: string) => process.stderr.write(`worker: ${line}\n`) : undefined,
        };
        const config = await loadConfigFile(file);
        const outDir = flags.out === undefined ? defaultOutDir(config) : resolve(flags.out);
        // A sweep is planned variant by variant, each in its folder of the study (as `run` writes them).
        const planned =
          config.sweep === undefined
            ? [{ ...(await estimateRun(config, { ...options, outDir })), config: file }]
            : await expandSweep(config).variants.reduce<Promise<RunEstimate[]>>(
                async (acc, variant) => [
                  ...(await acc),
                  {
                    ...(await estimateRun(variant.config, {
                      ...options,
                      outDir: join(outDir, variant.name),
                    })),
                    config: `${file} [${variant.name}]`,
                  },
                ],
                Promise.resolve([]),
              );
        for (const estimate of planned) {
          estimates.push(estimate);
          process.stdout.write(
            flags.json
              ? `${JSON.stringify(estimate)}\n`
              : `${estimates.length > 1 ? '\n' : ''}${estimateText(estimate)}`,
          );
        }
      } catch (error) {
        if (controller.signal.aborted) return EXIT_INTERRUPTED;
        if (files.length === 1) throw error;
        failed++;
        process.stderr.write(`${file}:\n`);
        printError(error);
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
  }
  if (estimates.length > 1 && !flags.json) process.stdout.write(`\n${totalsText(estimates)}`);
  return failed > 0 ? EXIT_ERROR : 0;
}

function printError(error: unknown): void {
  if (error instanceof ConfigError) {
    for (const issue of error.message.split('\n')) process.stderr.write(`error: ${issue}\n`);
  } else if (error instanceof WorkerError) {
    process.stderr.write(`error: ${error.message}\n`);
    if (debug() && error.traceback) process.stderr.write(`${error.traceback}\n`);
    else if (error.traceback) process.stderr.write('(set DIFFUSION_LENS_DEBUG=1 for the Python traceback)\n');
  } else {
    process.stderr.write(`error: ${(error as Error)?.message ?? String(error)}\n`);
  }
  if (debug() && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
}

function buildProgram(setExitCode: (code: number) => void): Command {
  const program = new Command('diffusion-lens')
    .description(
      "Diffusion Lens: see what a text-to-image model's text encoder knows, layer by layer.\n" +
        'Each image is generated from the hidden state of one encoder layer in place of the final output.',
    )
    .version(TOOL_VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help for a command')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureHelp({ showGlobalOptions: false });

  const lens = program
    .command('lens')
    .summary('run the lens on one prompt')
    .description(
      'Generate one image per (encoder layer, seed) for PROMPT, then a labelled grid and a manifest.',
    )
    .argument('<prompt>', 'the text prompt')
    .requiredOption('-o, --out <dir>', 'output folder; a rerun into it skips images already made (required)');
  addLensOptions(lens);
  addRunFlags(lens)
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  diffusion-lens lens "a red apple" --model stabilityai/stable-diffusion-2-1 --layers 3:23:4 --out runs/apple\n' +
        '  diffusion-lens lens "a red apple" --model DeepFloyd/IF-I-XL-v1.0 --stage2-model DeepFloyd/IF-II-L-v1.0 \\\n' +
        '      --layers 0:24:4 --offload encoder --out runs/apple-if',
    )
    .action(async (prompt: string, options: LensCommandOptions & RunFlags) => {
      let config: ExperimentConfig;
      try {
        config = lensConfig(prompt, options);
      } catch (error) {
        if (error instanceof ConfigError) {
          printError(error);
          throw new UsageError(error.message);
        }
        throw error;
      }
      setExitCode(await runWithUi(config, resolve(options.out), options));
    });

  const run = program
    .command('run')
    .summary('run an experiment from a YAML config')
    .description(
      'Run the experiment in CONFIG (YAML; see `diffusion-lens schema`). Images already made in the ' +
        'output folder with the same settings are skipped, so an interrupted run resumes where it stopped. ' +
        'A config with a `sweep:` block runs as a study: each combination of the swept values into ' +
        'OUT/<variant>/, one worker for all, with OUT/study.json listing the variants.',
    )
    .argument('<config>', 'experiment file (.yaml, .yml or .json)')
    .option(
      '-o, --out <dir>',
      'output folder, or the study folder of a sweep (default: runs/<name>, name from the config or its file name)',
    );
  addRunFlags(run).action(async (file: string, options: { out?: string } & RunFlags) => {
    const config = await loadConfigFile(file);
    const outDir = options.out === undefined ? defaultOutDir(config) : resolve(options.out);
    if (config.sweep !== undefined) {
      if (options.shard) {
        const message = `--shard splits one run; ${file} has a sweep: (a study): write a config per variant`;
        process.stderr.write(`error: ${message}\n`);
        throw new UsageError(message);
      }
      expandSweep(config); // every variant checked before anything starts
      setExitCode(await studyWithUi(config, outDir, options));
    } else {
      setExitCode(await runWithUi(config, outDir, options));
    }
  });

  program
    .command('plan')
    .summary('count a run and estimate its time and disk, without running it')
    .description(
      'Say what `run CONFIG` would do, generating nothing: its images (prompts x layers x seeds x stages), ' +
        'how many of them the output folder holds already (checked as `run` checks them), the denoiser ' +
        'evaluations (steps x images, x2 where classifier-free guidance runs: guidance > 1, not Flux), and ' +
        'estimates of the time and the disk it takes. A config with a `sweep:` is planned variant by variant ' +
        '(each in OUT/<variant>/, as `run` writes them), with a total. Offline by default: no worker starts.',
    )
    .argument(
      '<configs...>',
      'experiment files (.yaml, .yml or .json); several are planned in turn, with a total',
    )
    .option(
      '-o, --out <dir>',
      'output folder whose images count as cached (default: runs/<name>, as `run`); one config only',
    )
    .option(
      '--load',
      'start the worker and load the model, as `run` does, for exact numbers (default: offline: the config, ' +
        "the checkpoint's config files, the last run's record in the folder, and the built-in tables)",
    )
    .option(
      '--measure',
      "time one batch of the run's first items on the device (implies --load); the images are not kept",
    )
    .option(
      '--gpu <name>',
      `the GPU a table time estimate is for: ${Object.keys(GPU_SPEED).join(', ')} (default: ${REFERENCE_GPU})`,
      (name: string) => {
        try {
          return gpuKey(name);
        } catch (error) {
          throw new InvalidArgumentError((error as ConfigError).issues[0]?.message ?? String(error));
        }
      },
    )
    .option('--json', 'print each plan as one JSON object on a line (default: text)')
    .option('-v, --verbose', "show the worker's log lines (default: off)")
    .addHelpText(
      'after',
      '\nWhere the numbers come from, best first: the worker (--load); what the worker resolved for the\n' +
        "last run in the output folder (exact, without Python); the config and the checkpoint's config\n" +
        'files (a local folder, or the Hugging Face cache); then the tables in src/experiment/estimate.ts:\n' +
        "a family's encoder depth L and defaults, seconds per denoiser evaluation on an A100 from published\n" +
        'benchmarks (scaled by pixel count, and to other GPUs with --gpu), 1.5 bytes per PNG pixel. Every\n' +
        'number taken from a table is listed under "estimated"; images in a folder that cannot be checked\n' +
        'offline are counted and said to be unchecked.\n\n' +
        'Examples:\n' +
        '  diffusion-lens plan configs/paper/sd21-two-colors.yaml\n' +
        '  diffusion-lens plan configs/paper/*.yaml --gpu h100\n' +
        '  diffusion-lens plan configs/tiny-sd.yaml --measure --json',
    )
    .action(async (files: string[], options: PlanFlags) => {
      setExitCode(await planCommand(files, options));
    });

  program
    .command('schema')
    .summary('print the JSON Schema of experiment files')
    .description('Print the JSON Schema of experiment config files (for editor completion and validation).')
    .action(() => {
      process.stdout.write(`${JSON.stringify(toJsonSchema(), null, 2)}\n`);
    });

  program
    .command('doctor')
    .summary('check the Python worker set-up')
    .description(
      'Check Node.js, the Python interpreter the worker uses, its packages and the compute device.\n' +
        'Exits 1 if anything is missing, printing the fix for each problem.',
    )
    .option('--json', 'print the report as JSON (default: text)')
    .action(async (options: { json?: boolean }) => {
      const report = await runDoctor();
      process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : doctorText(report));
      setExitCode(report.ok ? 0 : EXIT_ERROR);
    });

  addScoreCommand(program, setExitCode);
  addStatsCommands(program);
  addReportCommand(program, setExitCode);
  addServeCommand(program, setExitCode);
  addMergeCommand(program);
  addSlurmCommand(program);
  addWorkerCommand(program, setExitCode);
  addKeysCommand(program);
  return program;
}

async function main(argv: string[] = process.argv): Promise<number> {
  let exitCode = 0;
  const program = buildProgram((code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander printed the message (or the help) already.
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
      if (error.code === 'commander.help') return error.exitCode;
      return EXIT_USAGE;
    }
    if (error instanceof UsageError) return EXIT_USAGE;
    printError(error);
    return EXIT_ERROR;
  }
}

// `diffusion-lens lens --help | head`: a reader that stops early is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

process.exitCode = await main();
