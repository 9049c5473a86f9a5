// `diffusion-lens score RUN_DIR --scorer clip|vqa|shapes`: answers each image's questions with an automatic
// scorer into RUN_DIR/scores.csv (src/eval/score.ts does the work).
import { type Command, InvalidArgumentError, Option } from 'commander';
import { SCORER_KINDS, type ScorerKind, type ScorerSpec } from '../bridge/index.js';
import {
  DEFAULT_SCORE_BATCH,
  DEFAULT_SCORER_MODELS,
  type ScoreEvent,
  type ScoreOptions,
  scoreRun,
} from '../eval/score.js';

interface ScoreFlags {
  scorer: ScorerKind;
  model?: string;
  revision?: string;
  device: ScorerSpec['device'];
  dtype: ScorerSpec['dtype'];
  batch: number;
  rescore?: boolean;
  promptSets?: string;
  json?: boolean;
  verbose?: boolean;
}

const EXIT_INTERRUPTED = 130;

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

/** One line of text for an event (stderr), or null for none. */
export function scoreEventText(event: ScoreEvent): string | null {
  switch (event.type) {
    case 'score-start':
      return (
        `scoring ${event.run_dir} with ${event.scorer} (${event.scorer_model}): ${event.images} images, ` +
        `${event.images_cached} answered already, ${event.images_to_score} to score` +
        (event.scorer === 'shapes' ? '' : ` (${event.questions_to_ask} questions)`)
      );
    case 'scorer-loaded':
      return event.kind === 'shapes'
        ? `scorer shapes: ${event.version}`
        : `scorer ${event.kind} ${event.model} on ${event.device} (${event.dtype}): ${event.version}`;
    case 'score-progress':
      return `scored ${event.images_done}/${event.images_total} images`;
    case 'score-skipped':
      return `skipped ${event.images} image${event.images === 1 ? '' : 's'} of ${JSON.stringify(event.prompt)}: ${event.reason}`;
    case 'score-done':
      return null;
  }
}

function doneText(event: Extract<ScoreEvent, { type: 'score-done' }>): string {
  const how = event.aborted ? 'stopped' : 'done';
  return (
    `scoring ${how}: ${event.images_scored} images scored, ${event.images_cached} answered already` +
    `${event.images_skipped > 0 ? `, ${event.images_skipped} skipped` : ''}; ` +
    `${event.rows_written} rows written to ${event.file}\n`
  );
}

/** Adds `score` to the program; its exit code goes to `setExitCode`. */
export function addScoreCommand(program: Command, setExitCode: (code: number) => void): void {
  program
    .command('score')
    .summary("answer every image's questions with an automatic scorer")
    .description(
      "Answer each image's questions in RUN_DIR (a lens or run output folder) with an automatic scorer, run " +
        'by the worker, into RUN_DIR/scores.csv: one row per image, question and scorer, with a 0..1 score, ' +
        'a yes (1) / no (0) answer and the model and version that answered. Answers already there for the ' +
        'same scorer and model are not asked again. clip: is the image closer to the right text than to ' +
        "every contrast text (sets.yaml's clip texts; for a prompt of no set, the prompt against the run's " +
        "other prompts)? vqa: a BLIP model answers the question. shapes: the shapes world's ground truth, " +
        'read from the pixels, for images of the embedded shapes model (its own questions).',
    )
    .argument('<run-dir>', 'the run folder (with manifest.json)')
    .addOption(
      new Option('--scorer <kind>', 'which scorer answers').choices(SCORER_KINDS).makeOptionMandatory(),
    )
    .option(
      '--model <id-or-path>',
      `clip: a CLIPModel, vqa: a BLIP VQA model, by hub id or local folder (default: clip ` +
        `${DEFAULT_SCORER_MODELS.clip}, vqa ${DEFAULT_SCORER_MODELS.vqa}); shapes takes none`,
    )
    .option('--revision <rev>', "the model's hub branch, tag or commit (default: its main branch)")
    .addOption(
      new Option('--device <device>', 'where the scorer runs')
        .choices(['auto', 'cpu', 'cuda', 'mps'])
        .default('auto'),
    )
    .addOption(
      new Option('--dtype <dtype>', 'auto = fp16 on a GPU, fp32 on the CPU')
        .choices(['auto', 'fp32', 'fp16', 'bf16'])
        .default('auto'),
    )
    .option('--batch <n>', 'images per request to the worker', positiveInteger, DEFAULT_SCORE_BATCH)
    .option('--rescore', 'ask again what scores.csv already answers for this scorer and model (default: off)')
    .option(
      '--prompt-sets <file>',
      "clip: the prompt-set index holding the run's prompt set and its clip texts (default: configs/prompts/sets.yaml)",
    )
    .option('--json', 'print one JSON event per line on stdout (default: lines on stderr)')
    .option('-v, --verbose', "show the worker's log lines (default: off)")
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  diffusion-lens score runs/sd21-two-colors --scorer clip\n' +
        '  diffusion-lens score runs/sd21-two-colors --scorer vqa --device cuda --batch 64\n' +
        '  diffusion-lens score out/demo --scorer shapes',
    )
    .action(async (runDir: string, flags: ScoreFlags) => {
      setExitCode(await scoreCommand(runDir, flags));
    });
}

async function scoreCommand(runDir: string, flags: ScoreFlags): Promise<number> {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupts++;
    if (interrupts > 1) process.exit(EXIT_INTERRUPTED);
    process.stderr.write(
      `${signal === 'SIGINT' ? 'Ctrl-C' : signal}: stopping; answers of finished batches are kept (again to force)\n`,
    );
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const options: ScoreOptions = {
    scorer: flags.scorer,
    model: flags.model,
    revision: flags.revision,
    device: flags.device,
    dtype: flags.dtype,
    batch: flags.batch,
    rescore: flags.rescore,
    promptSets: flags.promptSets,
    signal: controller.signal,
    onLog: flags.verbose ? (line) => process.stderr.write(`worker: ${line}\n`) : undefined,
    onEvent: (event) => {
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(event)}\n`);
        return;
      }
      if (event.type === 'score-done') process.stdout.write(doneText(event));
      const line = scoreEventText(event);
      if (line) process.stderr.write(`${line}\n`);
    },
  };
  try {
    const result = await scoreRun(runDir, options);
    return result.aborted ? EXIT_INTERRUPTED : 0;
  } catch (error) {
    if (controller.signal.aborted) return EXIT_INTERRUPTED;
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
