// How a run shows itself: a progress bar on a terminal, plain lines otherwise, JSON lines with --json.
import cliProgress from 'cli-progress';
import { optionValueText, type RunEvent } from '../experiment/index.js';

export type ReportMode = 'json' | 'tty' | 'plain';

export interface Reporter {
  onEvent(event: RunEvent): void;
  /** A message for the user (stderr; above the bar on a terminal; dropped in JSON mode). */
  note(message: string): void;
  stop(): void;
}

function seconds(s: number): string {
  return s < 90 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** "worker 2: " for an event of a pool's second worker; "" when the run has one worker. */
function workerPrefix(event: { worker?: number }): string {
  return event.worker === undefined ? '' : `worker ${event.worker + 1}: `;
}

/** One-line description of an event for humans; null for events not worth a line. */
export function describeEvent(event: RunEvent): string | null {
  const line = describeRunEvent(event);
  return line === null || !('worker' in event) ? line : `${workerPrefix(event)}${line}`;
}

function describeRunEvent(event: RunEvent): string | null {
  switch (event.type) {
    case 'start':
      return `run "${event.name}": ${plural(event.prompts, 'prompt')} -> ${event.out_dir}`;
    case 'worker-ready':
      return (
        `${event.restart > 0 ? `worker restarted (${event.restart})` : 'worker ready'}` +
        `${event.endpoint ? ` at ${event.endpoint}` : ''}: python ${event.python}, ` +
        `torch ${event.torch}, diffusers ${event.diffusers}, device ${event.device}`
      );
    case 'model-loaded': {
      const options = Object.entries(event.family_options)
        .map(([name, value]) => `, ${name} ${optionValueText(value)}`)
        .join('');
      const stage2 = event.stage2 ? `; stage II ${event.stage2.model} (${event.stage2.pipeline_class})` : '';
      return (
        `loaded ${event.model} (${event.pipeline_class}, family ${event.family}, ${event.num_layers} encoder ` +
        `layers, ${event.device} ${event.dtype}${options})${stage2}`
      );
    }
    case 'notice':
      return `warning: ${event.message}`;
    case 'plan': {
      const stages = event.stage2 ? ` x ${plural(event.stages.length, 'stage')}` : '';
      const sizes = event.stage2
        ? `${event.height}x${event.width}, stage II ${event.stage2.height}x${event.stage2.width}`
        : `${event.height}x${event.width}`;
      return (
        `plan: ${event.total} images (${plural(event.prompts, 'prompt')} x ${plural(event.layers.length, 'layer')} x ` +
        `${plural(event.seeds.length, 'seed')}${stages}, ${sizes}); ${event.skipped} on disk, ` +
        `${event.todo} to make`
      );
    }
    case 'image':
      return `[${event.images_done}/${event.images_total}] ${event.path}`;
    case 'worker-lost':
      return (
        `worker lost (${event.code}): ${plural(event.lost, 'image')} not received; ` +
        (event.restarting ? 'restarting it and resuming' : 'giving up after too many restarts') +
        `\n  ${event.message.split('\n')[0]}`
      );
    case 'grid':
      return `grid: ${event.path}`;
    case 'done': {
      const made = `${plural(event.images_generated, 'image')} made`;
      if (event.aborted) {
        return `stopped: ${made}, run again to resume${event.manifest ? ` (${event.manifest})` : ''}`;
      }
      if (!event.complete) {
        // A failure: the error itself is printed by the CLI; say what is kept, if anything.
        if (event.images_generated + event.images_skipped === 0) return null;
        return (
          `incomplete: ${made}, ${event.images_skipped} already on disk; they are kept, and running the ` +
          `same command again resumes${event.manifest ? ` (${event.manifest})` : ''}`
        );
      }
      return (
        `done: ${made}, ${event.images_skipped} already on disk, ${seconds(event.seconds)}` +
        (event.manifest ? ` -> ${event.manifest}` : '')
      );
    }
    case 'error':
      return null; // the CLI prints the error itself
    default:
      return null;
  }
}

/** The layers being denoised, for the progress bar: `layer 4`, `layers 0-8` (a batch spans several). */
export function layerLabel(layers: readonly number[]): string {
  if (layers.length === 0) return 'starting';
  const low = Math.min(...layers);
  const high = Math.max(...layers);
  return low === high ? `layer ${low}` : `layers ${low}-${high}`;
}

export interface ReporterStreams {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

export function createReporter(
  mode: ReportMode,
  streams: ReporterStreams = { out: process.stdout, err: process.stderr },
): Reporter {
  if (mode === 'json') {
    return {
      onEvent: (event) => {
        streams.out.write(`${JSON.stringify(event)}\n`);
        // A warning is for the person running the command too, not only for the program reading stdout.
        if (event.type === 'notice') streams.err.write(`${describeEvent(event)}\n`);
      },
      note: () => undefined,
      stop: () => undefined,
    };
  }
  if (mode === 'plain') {
    return {
      onEvent: (event) => {
        const line = describeEvent(event);
        if (line === null) return;
        (event.type === 'done' ? streams.out : streams.err).write(`${line}\n`);
      },
      note: (message) => streams.err.write(`${message}\n`),
      stop: () => undefined,
    };
  }
  // A terminal: one bar (images made / to make, ETA from denoising steps, the layer last finished).
  const multibar = new cliProgress.MultiBar(
    {
      stream: streams.err,
      format: ' {bar} {images}/{imagesTotal} images | {layer} | ETA {eta_formatted} | {elapsed}',
      barCompleteChar: '\u2588',
      barIncompleteChar: '\u2591',
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let bar: cliProgress.SingleBar | null = null;
  let startedAt = Date.now();
  const elapsed = (): string => seconds((Date.now() - startedAt) / 1000);
  let payload = { images: 0, imagesTotal: 0, layer: 'starting', elapsed: '0 s' };
  const log = (line: string): void => {
    if (bar) multibar.log(`${line}\n`);
    else streams.err.write(`${line}\n`);
  };
  return {
    onEvent: (event) => {
      switch (event.type) {
        case 'plan': {
          log(describeEvent(event) ?? '');
          if (event.todo > 0) {
            startedAt = Date.now();
            payload = { ...payload, imagesTotal: event.todo };
            bar = multibar.create(1, 0, payload);
          }
          return;
        }
        case 'progress':
          payload = {
            ...payload,
            images: event.images_done,
            layer: layerLabel(event.layers),
            elapsed: elapsed(),
          };
          bar?.setTotal(Math.max(1, event.units_total));
          bar?.update(event.units_done, payload);
          return;
        case 'image':
          payload = { ...payload, images: event.images_done, elapsed: elapsed() };
          bar?.update(payload);
          return;
        case 'done': {
          multibar.stop();
          bar = null;
          const line = describeEvent(event);
          if (line !== null) streams.out.write(`${line}\n`);
          return;
        }
        case 'grid':
          return; // the summary names the folder; one line per grid is noise on a terminal
        default: {
          const line = describeEvent(event);
          if (line !== null) log(line);
        }
      }
    },
    note: log,
    stop: () => {
      multibar.stop();
      bar = null;
    },
  };
}
