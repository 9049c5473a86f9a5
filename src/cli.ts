#!/usr/bin/env node
// The diffusion-lens command line: a thin layer over the library (src/index.ts).
import { resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { WorkerError } from './bridge/index.js';
import { type LensOptions, lensConfig } from './cli/options.js';
import { createReporter, type ReportMode } from './cli/reporter.js';
import {
  ConfigError,
  DEVICES,
  DTYPES,
  type ExperimentConfig,
  FAMILIES,
  loadConfigFile,
  NOISE_MODES,
  OFFLOAD_MODES,
  SCHEDULERS,
  toJsonSchema,
  UNCOND_MODES,
} from './config/index.js';
import { runDoctor } from './doctor.js';
import { runExperiment } from './experiment/index.js';
import { slugify } from './experiment/store.js';
import { TOOL_VERSION } from './version.js';

const EXIT_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;

const debug = (): boolean => process.env.DIFFUSION_LENS_DEBUG === '1';

/** A ConfigError from command-line options is a usage error (exit 2). */
class UsageError extends Error {}

interface RunFlags {
  json?: boolean;
  verbose?: boolean;
  overwrite?: boolean;
  newVariant?: boolean;
}

/** The options every command that runs the lens has. */
function addRunFlags(command: Command): Command {
  return command
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
    .option('--json', 'print one JSON event per line on stdout (default: progress on stderr)')
    .option('-v, --verbose', "show the worker's log lines (default: off)");
}

function reportMode(flags: RunFlags): ReportMode {
  if (flags.json) return 'json';
  return process.stderr.isTTY ? 'tty' : 'plain';
}

async function runWithUi(config: ExperimentConfig, outDir: string, flags: RunFlags): Promise<number> {
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
    const result = await runExperiment(config, {
      outDir,
      overwrite: flags.overwrite,
      newVariant: flags.newVariant,
      signal: controller.signal,
      onEvent: (event) => reporter.onEvent(event),
      onLog: flags.verbose ? (line) => reporter.note(`worker: ${line}`) : undefined,
    });
    if (result.aborted) return EXIT_INTERRUPTED;
    return result.complete ? 0 : EXIT_ERROR;
  } finally {
    reporter.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
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

const choices = (list: readonly string[]): string => list.join('|');

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
    .option(
      '-m, --model <id>',
      'Hugging Face hub id or local checkpoint folder (default: the embedded shapes model)',
    )
    .requiredOption('-o, --out <dir>', 'output folder; a rerun into it skips images already made (required)')
    .option(
      '--layers <spec>',
      'encoder layers: all, start:end[:step] (inclusive), 0,4,8; -1 = final (default: all)',
    )
    .option('--seeds <list>', 'comma-separated seeds, 0 <= seed < 2^32 (default: 0,1,2,3)')
    .option('--steps <n>', "denoising steps (default: the model's: SD 50, IF 100)")
    .option('--guidance <g>', "classifier-free guidance scale (default: the model's: SD 7.5, IF 7.0)")
    .option('--size <s>', "image size: S (square) or HxW, multiples of 8 (default: the model's native size)")
    .addOption(
      new Option('--scheduler <name>', `${choices(SCHEDULERS)} (default: default = the checkpoint's own)`),
    )
    .option('--negative <text>', 'negative prompt (default: "")')
    .addOption(
      new Option('--uncond <mode>', `unconditional branch: ${choices(UNCOND_MODES)} (default: final)`),
    )
    .addOption(
      new Option('--noise <mode>', `initial noise across layers: ${choices(NOISE_MODES)} (default: shared)`),
    )
    .option('--max-batch <n>', 'images per UNet batch; halved automatically on out-of-memory (default: 8)')
    .addOption(new Option('--dtype <dtype>', `${choices(DTYPES)} (default: auto = fp16 on GPU, fp32 on CPU)`))
    .addOption(new Option('--device <device>', `${choices(DEVICES)} (default: auto = best available)`))
    .addOption(new Option('--family <family>', `${choices(FAMILIES)} (default: auto = detect)`))
    .option('--revision <rev>', 'hub revision: branch, tag or commit (default: main)')
    .option(
      '--variant <name>',
      'weight files to load, e.g. fp16 (*.fp16.safetensors: half the download), for every stage (default: the full files)',
    )
    .addOption(
      new Option(
        '--offload [mode]',
        `GPU memory saving: ${choices(OFFLOAD_MODES)}; encoder = the text encoder waits on the CPU ` +
          'between encodings (IF on 24 GB cards), model = model CPU offload (smaller GPUs); ' +
          'the flag alone = model (default: none)',
      ),
    )
    .option(
      '--clean-caption',
      "IF: clean captions as the stock pipeline does; needs beautifulsoup4 and ftfy (default: auto = on when they're installed)",
    )
    .option('--no-clean-caption', 'IF: do not clean captions')
    .option(
      '--stages <list>',
      'IF: 1 (stage I only) or 1,2 (and stage II) (default: 1,2 with --stage2-model, else 1)',
    )
    .option(
      '--stage2-model <id>',
      'IF: hub id or local folder of the stage II checkpoint, e.g. DeepFloyd/IF-II-L-v1.0 (default: none)',
    )
    .option('--stage2-revision <rev>', 'IF: hub revision of the stage II checkpoint (default: main)')
    .option('--stage2-steps <n>', "IF: stage II denoising steps (default: the checkpoint's, 50)")
    .option('--stage2-guidance <g>', "IF: stage II guidance scale (default: the checkpoint's, IF-II 4.0)")
    .option('--stage2-size <s>', "IF: stage II size, S or HxW (default: the checkpoint's native, IF-II 256)")
    .addOption(
      new Option(
        '--stage2-scheduler <name>',
        "IF: stage II scheduler, a --scheduler name (default: default = the stage II checkpoint's own)",
      ),
    )
    .option('--noise-level <n>', 'IF: noise added to the stage I image before stage II (default: 250)')
    .option(
      '--stage2-seed <seed>',
      "IF: stage II noise: same = each image's own seed, or one seed N for all (default: same)",
    )
    .option('--allow-pickle', 'allow loading pickled .bin/.ckpt weights; unsafe (default: off)')
    .option(
      '--grid-cell <n>',
      'smallest side of a grid cell in pixels; smaller images are upscaled without smoothing (default: 128)',
    )
    .option('--name <name>', 'run name in the manifest (default: from the prompt)');
  addRunFlags(lens)
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  diffusion-lens lens "a red apple" --model stabilityai/stable-diffusion-2-1 --layers 3:23:4 --out runs/apple\n' +
        '  diffusion-lens lens "a red apple" --model DeepFloyd/IF-I-XL-v1.0 --stage2-model DeepFloyd/IF-II-L-v1.0 \\\n' +
        '      --layers 0:24:4 --offload encoder --out runs/apple-if',
    )
    .action(async (prompt: string, options: LensOptions & RunFlags) => {
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
        'output folder with the same settings are skipped, so an interrupted run resumes where it stopped.',
    )
    .argument('<config>', 'experiment file (.yaml, .yml or .json)')
    .option('-o, --out <dir>', 'output folder (default: runs/<name>, name from the config or its file name)');
  addRunFlags(run).action(async (file: string, options: { out?: string } & RunFlags) => {
    const config = await loadConfigFile(file);
    const name = config.name ?? 'run';
    const outDir = resolve(options.out ?? `runs/${slugify(name) === name ? name : slugify(name)}`);
    setExitCode(await runWithUi(config, outDir, options));
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
      if (options.json) {
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      } else {
        const out: string[] = [
          `diffusion-lens ${report.tool}`,
          `node          ${report.node}`,
          `python        ${report.python ?? 'not working'} (${report.executable ?? report.pythonPath})`,
        ];
        for (const name of ['torch', 'diffusers', 'transformers']) {
          out.push(`${name.padEnd(14)}${report.packages[name] ?? 'missing'}`);
        }
        const others = Object.entries(report.packages).filter(
          ([name]) => !['torch', 'diffusers', 'transformers'].includes(name),
        );
        if (others.length > 0) {
          out.push(`${'other'.padEnd(14)}${others.map(([n, v]) => `${n} ${v ?? 'missing'}`).join(', ')}`);
        }
        const gpus = report.cuda?.devices.length ? ` (${report.cuda.devices.join(', ')})` : '';
        out.push(`device        ${report.device ?? 'unknown'}${gpus}`);
        if (report.ok) out.push('ok: everything the worker needs is there');
        else {
          out.push(`${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}:`);
          for (const problem of report.problems) out.push(`  - ${problem.what}\n    fix: ${problem.fix}`);
        }
        process.stdout.write(`${out.join('\n')}\n`);
      }
      setExitCode(report.ok ? 0 : EXIT_ERROR);
    });

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

process.exitCode = await main();
