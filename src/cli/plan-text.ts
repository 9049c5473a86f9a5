// `diffusion-lens plan` as text: one block per config (counts, cache, evaluations, time, disk, and what
// is estimated), and a total line for several.
import { isAbsolute, relative } from 'node:path';
import type { RunEstimate } from '../experiment/index.js';

const count = (n: number): string => n.toLocaleString('en-US');
const plural = (n: number, noun: string): string => `${count(n)} ${noun}${n === 1 ? '' : 's'}`;

/** `12 s`, `4 min 10 s`, `48 min`, `6 h 21 min`, `3.2 days`. */
export function durationText(seconds: number): string {
  if (seconds < 59.5) return `${seconds < 9.95 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  if (minutes < 48 * 60) return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

/** `1.7 GB`, `350 KB` (decimal units). */
export function bytesText(bytes: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0
    ? `${Math.round(value)} bytes`
    : `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

const SOURCES: Record<RunEstimate['source'], string> = {
  worker: 'loaded by the worker',
  recorded: 'as the worker resolved it for the last run in this folder',
  offline: 'offline, not loaded',
};

const STAGE_NAMES = { 1: 'stage I', 2: 'stage II' } as const;

/** Width of a text block; longer values are wrapped between words. */
const WIDTH = 110;

function wrap(line: string, width: number): string[] {
  const out: string[] = [];
  let current = '';
  for (const word of line.split(' ')) {
    if (current !== '' && current.length + 1 + word.length > width) {
      out.push(current);
      current = word;
    } else {
      current = current === '' ? word : `${current} ${word}`;
    }
  }
  if (current !== '') out.push(current);
  return out;
}

function rows(entries: [string, string | string[]][]): string {
  const width = Math.max(...entries.map(([label]) => label.length)) + 2;
  return entries
    .flatMap(([label, value]) => {
      const lines = (Array.isArray(value) ? value : [value]).flatMap((line) =>
        wrap(line, WIDTH - 2 - width).map((part, i) => (i === 0 ? part : `  ${part}`)),
      );
      return lines.map((line, i) => `  ${(i === 0 ? label : '').padEnd(width)}${line}`);
    })
    .join('\n');
}

/** A folder as the user would type it: relative to the current one when inside it. */
function shownPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === '' || rel.startsWith('..') || isAbsolute(rel) ? path : rel;
}

export function estimateText(e: RunEstimate): string {
  const head = `${e.name}${e.config ? `  (${e.config})` : ''} -> ${shownPath(e.out_dir)}`;
  const tilde = (basis: string) => (basis === 'measured' ? '' : '~');
  const estimatedL = e.estimated.some((line) => line.startsWith('L = '));
  const entries: [string, string | string[]][] = [
    [
      'model',
      `${e.model.id}${e.model.stage2 ? ` + stage II ${e.model.stage2}` : ''} (family ${e.model.family ?? 'unknown'}; ` +
        `${SOURCES[e.source]})`,
    ],
    [
      'encoder',
      `L = ${e.num_layers}${estimatedL ? ' (estimated)' : ''}: hidden states 0..${e.num_layers}, stock layer ${e.stock_layer}`,
    ],
    [
      'images',
      [
        `${count(e.images)} = ${plural(e.prompts, 'prompt')} x ${plural(e.layers.length, 'layer')} x ` +
          `${plural(e.seeds.length, 'seed')}${e.stages.length > 1 ? ` x ${e.stages.length} stages` : ''}`,
        `layers ${e.layers.join(', ')}; seeds ${e.seeds.join(', ')}`,
      ],
    ],
  ];
  const { cached } = e;
  if (cached.verified !== null) {
    entries.push([
      'cached',
      `${count(cached.verified)} of ${count(e.images)} on disk, their bytes checked: ${count(e.todo ?? 0)} to make`,
    ]);
  } else if (cached.on_disk === 0) {
    entries.push(['cached', `0 (the folder has no images): ${count(e.images)} to make`]);
  } else {
    entries.push([
      'cached',
      `${plural(cached.on_disk, 'image')} in the folder, not checked (--load checks them): up to ` +
        `${count(e.images)} to make`,
    ]);
  }
  for (const s of e.stage_estimates) {
    const scheduler = s.scheduler === 'default' ? "the checkpoint's scheduler" : s.scheduler;
    const guidance = s.cfg ? `CFG ${s.guidance}: x2` : `guidance ${s.guidance}: x1`;
    const todo =
      s.todo_evaluations !== null && s.todo_evaluations !== s.evaluations
        ? `; ${count(s.todo_evaluations)} left to do`
        : '';
    entries.push([
      STAGE_NAMES[s.stage],
      [
        `${s.width}x${s.height}, ${s.steps} steps (${scheduler}), ${guidance}`,
        `${plural(s.evaluations_per_image, `${e.model.denoiser} evaluation`)} per image x ${count(s.images)} = ` +
          `${count(s.evaluations)}${todo}`,
      ],
    ]);
  }
  const { time, disk } = e;
  if (time.seconds === null) {
    entries.push(['time', `unknown: ${time.source}`]);
  } else {
    const left =
      time.todo_seconds !== null && Math.abs(time.todo_seconds - time.seconds) > 0.5
        ? `; ${tilde(time.basis)}${durationText(time.todo_seconds)} for what is left`
        : '';
    const basis = time.basis === 'measured' ? 'measured' : 'estimated';
    entries.push([
      'time',
      `${tilde(time.basis)}${durationText(time.seconds)} on ${time.device} (${basis})${left}`,
    ]);
  }
  const diskBasis = disk.basis === 'measured' ? 'PNG size measured' : 'estimated';
  const diskLeft =
    disk.todo_bytes !== null && disk.todo_bytes !== disk.image_bytes
      ? `; ~${bytesText(disk.todo_bytes)} of images left to write`
      : '';
  entries.push([
    'disk',
    `~${bytesText(disk.image_bytes)} of images + ~${bytesText(disk.grid_bytes)} of grids (${diskBasis})${diskLeft}`,
  ]);
  if (time.basis === 'measured') entries.push(['timed', time.source]);
  if (e.estimated.length > 0) entries.push(['estimated', e.estimated]);
  if (e.notes.length > 0) entries.push(['note', e.notes]);
  return `${head}\n${rows(entries)}\n`;
}

/** One line summing several plans. */
export function totalsText(estimates: readonly RunEstimate[]): string {
  const images = estimates.reduce((a, e) => a + e.images, 0);
  const evaluations = estimates.reduce((a, e) => a + e.evaluations, 0);
  const bytes = estimates.reduce((a, e) => a + e.disk.image_bytes + e.disk.grid_bytes, 0);
  const timed = estimates.filter((e) => e.time.seconds !== null);
  const seconds = timed.reduce((a, e) => a + (e.time.seconds ?? 0), 0);
  const untimed = estimates.length - timed.length;
  const devices = [...new Set(timed.map((e) => e.time.device))];
  const time =
    timed.length === 0
      ? 'time unknown'
      : `~${durationText(seconds)} on ${devices.join(' / ')}${untimed > 0 ? ` (${untimed} without a time estimate)` : ''}`;
  return (
    `total: ${plural(estimates.length, 'config')}, ${plural(images, 'image')}, ` +
    `${plural(evaluations, 'denoiser evaluation')}, ${time}, ~${bytesText(bytes)} on disk\n`
  );
}
