// `diffusion-lens stats` and `diffusion-lens annotations export|import`: thin over src/eval (loadLabels,
// computeStats, writeStatsFiles, exportAnnotationCsvs, importAnnotationCsvs).
import { basename, join, relative, resolve } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import {
  computeStats,
  DEFAULT_BY,
  DEFAULT_RESAMPLES,
  DIMENSIONS,
  type Dimension,
  EXPORT_DIR,
  exportAnnotationCsvs,
  importAnnotationCsvs,
  type Label,
  loadLabels,
  type PaperTable,
  writeStatsFiles,
} from '../eval/index.js';
import { statsText } from './stats-text.js';

/** The folder `stats` writes to in a run folder: RUN_DIR/stats/. */
const STATS_DIR = 'stats';

function parseBy(value: string): Dimension[] {
  const names = value
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '' && name !== 'none');
  for (const name of names) {
    if (!(DIMENSIONS as readonly string[]).includes(name)) {
      throw new InvalidArgumentError(`"${name}" is not one of ${DIMENSIONS.join(', ')} (or none)`);
    }
  }
  return names as Dimension[];
}

const wholeNumber = (what: string, min: number) => (value: string) => {
  if (!/^\d+$/.test(value) || Number(value) < min)
    throw new InvalidArgumentError(`${what} must be a whole number ≥ ${min}`);
  return Number(value);
};

function parseScale(value: string): number {
  const scale = Number(value);
  if (!Number.isFinite(scale) || scale <= 0)
    throw new InvalidArgumentError('must be a positive number (e.g. 1 or 10)');
  return scale;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** The options that say how to read paper-layout CSV files. */
function addCsvOptions(command: Command): Command {
  return command
    .option(
      '--question <id>',
      'the question the CSV files answer (default: from each file name, <model>__<question>.csv)',
    )
    .option('--model <id>', 'the model of the CSV files (default: from each file name)')
    .option(
      '--scale <n>',
      'the value meaning "yes" in the CSV files: cells are divided by it (default: 1 when every cell is ' +
        'within 0..1, else 10 when the largest is at most 10, else 100)',
      parseScale,
    );
}

interface CsvFlags {
  question?: string;
  model?: string;
  scale?: number;
}

interface StatsFlags extends CsvFlags {
  by?: Dimension[];
  annotations?: string[];
  source?: string[];
  categoryColumn?: string;
  category?: string;
  out?: string;
  png?: boolean;
  title?: string;
  seed?: number;
  resamples?: number;
  json?: boolean;
}

const display = (path: string) => {
  const rel = relative(process.cwd(), path);
  return rel === '' ? '.' : rel.startsWith('..') ? path : rel;
};

/** A CSV file's scale in words, when it was guessed (so that a wrong guess is seen). */
const scaleNotes = (tables: readonly PaperTable[]) =>
  tables
    .filter((table) => table.scaleFrom === 'guessed')
    .map((table) => `${table.file}: graded values read as 0-${table.scale} (give --scale to say otherwise)`);

/** Keeps labels whose source is a prefix (`annotator`) or a whole source (`annotator:alice`). */
const fromSources = (labels: Label[], prefixes: readonly string[]) =>
  prefixes.length === 0
    ? labels
    : labels.filter((label) => prefixes.some((p) => label.source === p || label.source.startsWith(`${p}:`)));

async function statsAction(runDirs: string[], flags: StatsFlags, command: Command): Promise<void> {
  const csvPaths = flags.annotations ?? [];
  // command.error prints the message and the usage hint, and exits 2 (a usage error).
  if (runDirs.length === 0 && csvPaths.length === 0) {
    command.error('error: give a run folder, or CSV files with --annotations', { exitCode: 2 });
  }
  if (flags.out === undefined && runDirs.length !== 1) {
    command.error('error: give --out DIR (the default, RUN_DIR/stats/, needs exactly one run folder)', {
      exitCode: 2,
    });
  }
  const outDir = resolve(flags.out ?? join(runDirs[0] as string, STATS_DIR));
  const loaded = await loadLabels({
    runDirs,
    csvPaths,
    question: flags.question,
    model: flags.model,
    scale: flags.scale,
    category: flags.category,
    categoryColumn: flags.categoryColumn,
  });
  for (const warning of [...loaded.warnings, ...scaleNotes(loaded.tables)])
    process.stderr.write(`warning: ${warning}\n`);
  const labels = fromSources(loaded.labels, flags.source ?? []);
  if (labels.length === 0) {
    const where = [...runDirs, ...csvPaths].join(', ');
    const filter = flags.source ? ` from ${flags.source.join(', ')}` : '';
    throw new Error(
      `no judgments${filter} in ${where}: annotate the run (annotation mode), score it, or import CSVs ` +
        '(diffusion-lens annotations import)',
    );
  }
  const summary = computeStats(labels, {
    by: flags.by ?? DEFAULT_BY,
    seed: flags.seed,
    resamples: flags.resamples,
  });
  const written = await writeStatsFiles(summary, labels, outDir, { png: flags.png, title: flags.title });
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ ...summary, files: written })}\n`);
    return;
  }
  process.stdout.write(statsText(summary));
  process.stdout.write(
    `\nwrote to ${display(outDir)}: ${written.map((path) => basename(path)).join(', ')}\n`,
  );
}

export function addStatsCommands(program: Command): void {
  const stats = program
    .command('stats')
    .summary('per-layer accuracy, emergence layers, category tests and agreement of judged images')
    .description(
      'Statistics of the judgments of images (annotations, imported CSVs, scores) of run folders, or of ' +
        'paper-layout CSV files alone (--annotations; no images needed): per group, accuracy per layer with a ' +
        "bootstrap interval (resampling prompts, then seeds), and each prompt's emergence layer (the first " +
        'layer from which a majority of its seeds is correct at every later layer), with the median ' +
        'emergence layer and its bootstrap interval (resampling the prompts that emerge); between categories, ' +
        "permutation tests; between judges, percent agreement and Cohen's kappa. Prints a table and writes " +
        'CSV tables and SVG plots.',
    )
    .argument('[runDirs...]', 'run folders (optional with --annotations)')
    .option(
      '--by <dims>',
      `what to group by, comma-separated: ${DIMENSIONS.join(', ')}, or none (default: ${DEFAULT_BY.join(',')})`,
      parseBy,
    )
    .option('--annotations <path>', 'paper-layout CSV files, or folders of them (repeatable)', collect)
    .option(
      '--source <prefix>',
      'count only judgments from these sources: annotator, scorer, import, or a whole source such as ' +
        'annotator:alice (repeatable; default: all)',
      collect,
    )
    .option(
      '--category-column <name>',
      "the prompt column that is the category (default: a `category` column, else the prompt set's category)",
    )
    .option('--category <name>', 'the category of every prompt of the --annotations CSV files');
  addCsvOptions(stats)
    .option('-o, --out <dir>', 'folder for the CSV tables and plots (default: RUN_DIR/stats/)')
    .option('--png', 'also write the plots as PNG (for papers)')
    .option('--title <text>', "the plots' title (default: none)")
    .option('--seed <n>', 'seed of the bootstrap and permutations (default: 0)', wholeNumber('--seed', 0))
    .option(
      '--resamples <n>',
      `bootstrap resamples and permutations (default: ${DEFAULT_RESAMPLES})`,
      wholeNumber('--resamples', 1),
    )
    .option('--json', 'print the statistics as one JSON object (default: tables)')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  diffusion-lens stats runs/animals --by question,category\n' +
        '  diffusion-lens stats runs/animals-common runs/animals-uncommon --by question --out runs/animals-stats\n' +
        '  diffusion-lens stats --annotations paper-csvs/ --by question,model --out stats --png',
    )
    .action(statsAction);

  const annotations = program
    .command('annotations')
    .summary("export a run's annotations as paper-layout CSV files, or import such files into a run");

  annotations
    .command('export')
    .summary("write a run's annotations as paper-layout CSV files")
    .description(
      "Write a run's annotations as CSV files in the paper's layout (prompt,<one column per layer>,seed; " +
        '1 = yes, 0 = no, empty = not answered), one per model, question and annotator: ' +
        '<model>__<question>__<annotator>.csv.',
    )
    .argument('<runDir>', 'run folder')
    .option('-o, --out <dir>', `output folder (default: RUN_DIR/${EXPORT_DIR}/)`)
    .action(async (runDir: string, flags: { out?: string }) => {
      const { files, warnings } = await exportAnnotationCsvs(
        runDir,
        flags.out === undefined ? undefined : resolve(flags.out),
      );
      for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`);
      if (files.length === 0) process.stdout.write(`${runDir} has no annotations to export\n`);
      for (const file of files) process.stdout.write(`${display(file.path)}: ${file.images} answers\n`);
    });

  const importCommand = annotations
    .command('import')
    .summary('check paper-layout CSV files against a run and copy them into it')
    .description(
      "Check CSV files in the paper's layout (prompt,<one column per layer>,seed; 0/1 or graded values) against " +
        'a run and copy them into RUN_DIR/annotations/imported/ (values scaled to 0..1), where stats and the ' +
        'report count them. Each file is one judge: several files for one question are kept apart.',
    )
    .argument('<files...>', 'CSV files, or folders of them')
    .requiredOption('--into <runDir>', 'the run folder the judgments are of');
  addCsvOptions(importCommand)
    .option('--overwrite', 'replace a file imported before under the same name')
    .action(async (files: string[], flags: CsvFlags & { into: string; overwrite?: boolean }) => {
      const result = await importAnnotationCsvs(files, flags.into, flags);
      for (const warning of [...result.warnings, ...scaleNotes(result.files.map((f) => f.table))]) {
        process.stderr.write(`warning: ${warning}\n`);
      }
      for (const { from, to, table } of result.files) {
        const what = `${table.question}, ${table.cells.length} judgments`;
        process.stdout.write(
          to === null ? `${from}: imported already (${what})\n` : `${from} -> ${display(to)} (${what})\n`,
        );
      }
    });
}
