#!/usr/bin/env node
// `npm run bench`: the figures of docs/benchmarks.md, measured on this machine, written to
// docs/benchmarks.json and into the generated tables of docs/benchmarks.md (between its
// `<!-- bench:NAME -->` markers; the prose around them is hand-written).
//
//   node scripts/bench.mjs [--only cpu,cli,warm] [--repeats 5] [--no-write]
//
// cpu:  python -m diffusion_lens.bench per case (one process each, so peak RSS is the case's): the lens
//       with max_batch auto (the default) and 8 against the official-style per-layer loop.
// cli:  a `diffusion-lens run` of the shapes model (5 prompts x every layer x 5 seeds), its wall time
//       split into start-up, model load, encoding, denoising, decoding, PNG encoding, writing and
//       bridge + orchestration (the rest).
// warm: a worker kept open: first call (start-up and load included) against a warm call, through the
//       library and through `diffusion-lens worker` + `run --worker`.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, 'dist', 'cli.js');
const python = join(root, 'python', '.venv', 'bin', 'python');
const shapes = join(root, 'models', 'shapes');
const jsonPath = join(root, 'docs', 'benchmarks.json');
const mdPath = join(root, 'docs', 'benchmarks.md');
/** The shapes model's layers through the lens: its encoder's, plus the token embeddings (layer 0). */
const shapesLayers =
  JSON.parse(readFileSync(join(shapes, 'text_encoder', 'config.json'), 'utf8')).num_hidden_layers + 1;

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'cpu,cli,warm' },
    repeats: { type: 'string', default: '5' },
    'no-write': { type: 'boolean', default: false },
  },
});
const sections = new Set(args.only.split(','));
const scratch = mkdtempSync(join(tmpdir(), 'dlens-bench-'));

/** The CPU cases: what the issue names (the tiny fixture, a 64² random SD, the shapes model) and IF. */
const CPU_CASES = [
  { name: 'tiny SD fixture, 32²', args: ['--layers', '5', '--seeds', '4', '--steps', '20'] },
  { name: 'tiny SD fixture, 64²', args: ['--layers', '6', '--seeds', '4', '--steps', '20', '--size', '64'] },
  { name: 'shapes model, 32²', args: ['--model', shapes, '--layers', '9', '--seeds', '4', '--steps', '20'] },
  { name: 'tiny IF fixture, both stages', args: ['--family', 'if', '--layers', '5', '--seeds', '4'] },
];

function machine() {
  const torch = execFileSync(python, [
    '-c',
    'import torch; print(torch.__version__, torch.get_num_threads())',
  ])
    .toString()
    .trim()
    .split(' ');
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memory_gib: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    torch: torch[0],
    torch_threads: Number(torch[1]),
    date: new Date().toISOString().slice(0, 10),
  };
}

function benchCase(testCase) {
  const out = join(scratch, 'case.json');
  const caseArgs = [...testCase.args, '--compare-batch', '8', '--repeats', args.repeats, '--json', out];
  console.error(`\n# ${testCase.name}`);
  execFileSync(python, ['-m', 'diffusion_lens.bench', ...caseArgs], {
    cwd: join(root, 'python'),
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const figures = JSON.parse(readFileSync(out, 'utf8'));
  // Paths of this machine say nothing elsewhere: the model as the repository names it.
  figures.model = testCase.args.includes('--model')
    ? relative(root, figures.model)
    : `tiny ${figures.family} fixture`;
  const command = `npm run bench:case -- ${testCase.args.map((a) => a.replace(root, '..')).join(' ')}`;
  return { name: testCase.name, command, ...figures };
}

/** The peak resident memory (VmHWM) of `pid` and its descendants, polled until `done` settles. */
function trackPeakRss(pid, done) {
  const peaks = new Map();
  const poll = () => {
    const children = new Map();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
        children.set(Number(entry), ppid);
      } catch {}
    }
    const tree = new Set([pid]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const [child, parent] of children) {
        if (tree.has(parent) && !tree.has(child)) {
          tree.add(child);
          grew = true;
        }
      }
    }
    for (const member of tree) {
      try {
        const status = readFileSync(`/proc/${member}/status`, 'utf8');
        const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
        const name = /Name:\s+(\S+)/.exec(status)?.[1] ?? '?';
        peaks.set(member, { name, mb: Math.max(peaks.get(member)?.mb ?? 0, kib / 1024) });
      } catch {}
    }
  };
  const timer = setInterval(poll, 100);
  return done.finally(() => clearInterval(timer)).then(() => [...peaks.values()]);
}

/** Runs the CLI with --json; every event with the milliseconds since spawn it arrived at. */
function runCli(cliArgs, env = process.env) {
  const started = performance.now();
  const child = spawn(process.execPath, [cli, ...cliArgs, '--json'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events = [];
  let buffer = '';
  child.stdout.on('data', (chunk) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim()) events.push({ at: performance.now() - started, ...JSON.parse(line) });
    }
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`diffusion-lens ${cliArgs[0]} exited ${code}: ${stderr}`)),
    );
  });
  return trackPeakRss(child.pid, exited).then((peaks) => ({
    events,
    wall: performance.now() - started,
    peaks,
  }));
}

const at = (events, type) => events.find((e) => e.type === type)?.at;

function shapesConfig(name, seeds) {
  const path = join(scratch, `${name}.yaml`);
  writeFileSync(
    path,
    [
      `name: ${name}`,
      'sampler: { steps: 20, guidance: 5 }',
      'lens: { layers: all }',
      `seeds: [${seeds.join(', ')}]`,
      'prompts:',
      '  - a large red circle at the left',
      '  - a small blue square in the center',
      '  - three small yellow triangles',
      '  - a green cross above a purple bar',
      '  - two large orange diamonds',
      '',
    ].join('\n'),
  );
  return path;
}

async function cliSplit() {
  console.error(`\n# CLI time split: shapes model, 5 prompts x ${shapesLayers} layers x 5 seeds`);
  const config = shapesConfig('bench-cli', [0, 1, 2, 3, 4]);
  const out = join(scratch, 'cli-out');
  const { events, wall, peaks } = await runCli(['run', config, '--out', out]);
  const done = events.find((e) => e.type === 'done');
  const t = done.timings;
  const nodeStart = at(events, 'start');
  // One after another on the way to the last image; PNG encoding (worker threads) and writing (the
  // orchestrator, while the worker samples on) overlap them, so the rest of the wall time is what of
  // those, the bridge, the grids and the manifest did not overlap the compute.
  const parts = {
    'node start-up and config': nodeStart,
    'worker start-up (imports)': at(events, 'worker-ready') - nodeStart,
    'model load': at(events, 'model-loaded') - at(events, 'worker-ready'),
    encoding: t.encode_ms,
    denoising: t.denoise_ms,
    decoding: t.decode_ms,
  };
  const sequential = Object.values(parts).reduce((a, b) => a + b, 0);
  parts['bridge, PNG, writing, grids, manifest (the rest)'] = Math.max(0, wall - sequential);
  const overlapped = { 'PNG encoding (worker threads)': t.png_ms, 'PNG writing and journal': t.write_ms };
  rmSync(out, { recursive: true, force: true });
  const node = peaks.find((p) => p.name === 'node');
  const worker = peaks.filter((p) => p.name !== 'node').sort((a, b) => b.mb - a.mb)[0];
  return {
    command: 'npm run bench -- --only cli',
    images: done.images_generated,
    wall_ms: wall,
    parts,
    overlapped,
    bridge_and_png_share: parts['bridge, PNG, writing, grids, manifest (the rest)'] / wall,
    peak_rss_mb: { orchestrator: node?.mb ?? null, worker: worker?.mb ?? null },
  };
}

async function warmCalls() {
  console.error('\n# warm worker');
  const { LensWorker } = await import(join(root, 'dist', 'index.js'));
  const started = performance.now();
  const worker = await LensWorker.start({ python });
  const ready = performance.now() - started;
  const loadStarted = performance.now();
  await worker.load({
    model: shapes,
    revision: null,
    family: 'sd',
    device: 'cpu',
    dtype: 'fp32',
    offload: 'none',
    stage2: null,
    allow_pickle: false,
    variant: null,
    family_options: {},
    config: null,
    lora: [],
    compile: false,
  });
  const load = performance.now() - loadStarted;
  const request = {
    prompts: ['a large red circle at the left'],
    items: [0, 1, 2, 3].map((seed) => ({ prompt: 0, layer: 8, seed })),
    negative: '',
    steps: 20,
    guidance: 5,
    height: 64,
    width: 64,
    scheduler: null,
    uncond: 'final',
    noise: 'shared',
    encoders: null,
    pooled: 'final',
    tokens: 'all',
    mix: null,
    embeds: null,
    max_batch: 'auto',
    stage2: null,
    family_options: {},
  };
  const call = async () => {
    const sent = performance.now();
    const progress = [];
    const done = await worker.generate(request, {
      onProgress: () => progress.push(performance.now() - sent),
    });
    // Progress comes after each step: the first step's own time is the gap between the first two.
    const step = progress[1] - progress[0];
    return {
      before_first_step_ms: progress[0] - step,
      step_ms: step,
      total_ms: performance.now() - sent,
      done,
    };
  };
  const first = await call();
  const warm = await call();
  await worker.close();

  // The CLI: a cold run starts a worker; with `diffusion-lens worker` up, `run --worker` attaches to it.
  const config = shapesConfig('bench-warm', [0, 1, 2, 3]);
  const coldOut = join(scratch, 'cold');
  const cold = await runCli(['run', config, '--out', coldOut]);
  const endpoint = `ipc://${join(scratch, 'worker.sock')}`;
  const server = spawn(process.execPath, [cli, 'worker', '--model', shapes, '--bind', endpoint, '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise((resolve, reject) => {
    let log = '';
    const collect = (chunk) => {
      log += chunk;
      if (log.includes('"event":"loaded"')) resolve();
    };
    server.stdout.on('data', collect);
    server.stderr.on('data', collect);
    server.on('exit', (code) => reject(new Error(`diffusion-lens worker exited ${code}: ${log}`)));
  });
  const attached = [];
  for (const name of ['warm-1', 'warm-2']) {
    attached.push(await runCli(['run', config, '--out', join(scratch, name), '--worker', endpoint]));
  }
  server.kill('SIGTERM');
  const firstImage = (run) => at(run.events, 'image');
  return {
    command: 'npm run bench -- --only warm',
    library: {
      start_ms: ready,
      load_ms: load,
      first_call: {
        before_first_step_ms: first.before_first_step_ms,
        step_ms: first.step_ms,
        total_ms: first.total_ms,
      },
      warm_call: {
        before_first_step_ms: warm.before_first_step_ms,
        step_ms: warm.step_ms,
        total_ms: warm.total_ms,
      },
    },
    cli: {
      cold: { wall_ms: cold.wall, first_image_ms: firstImage(cold) },
      attached: attached.map((run) => ({ wall_ms: run.wall, first_image_ms: firstImage(run) })),
    },
  };
}

// Tables ------------------------------------------------------------------------------------------------

const f1 = (x) => (x === null || x === undefined ? '–' : x.toFixed(1));
const f2 = (x) => x.toFixed(2);
const ms = (x) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(0)} ms`);

function cpuTable(cases) {
  const lines = [
    '| case | images | lens, max_batch auto | lens, max_batch 8 | official-style loop | auto chose | peak RSS |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const c of cases) {
    const byRun = Object.fromEntries(c.results.map((r) => [r.run, r]));
    const cell = (r) => `${f1(r.images_per_s)} images/s (×${f2(r.vs_loop)})`;
    lines.push(
      `| ${c.name} | ${c.images} | ${cell(byRun['lens, max_batch auto'])} | ${cell(byRun['lens, max_batch 8'])} | ` +
        `${f1(byRun['official-style loop'].images_per_s)} images/s | ${c.max_batch_used} | ${c.peak_rss_mb.toFixed(0)} MiB |`,
    );
  }
  lines.push('', 'Commands (from the repository root):', '');
  for (const c of cases) lines.push(`- ${c.name}: \`${c.command} --compare-batch 8\``);
  return lines.join('\n');
}

function cliTable(split) {
  const lines = ['| part | time | share of the wall time |', '|---|---|---|'];
  for (const [part, value] of Object.entries(split.parts)) {
    lines.push(`| ${part} | ${ms(value)} | ${((100 * value) / split.wall_ms).toFixed(1)}% |`);
  }
  lines.push(`| **wall time, ${split.images} images** | **${ms(split.wall_ms)}** | 100% |`);
  for (const [part, value] of Object.entries(split.overlapped)) {
    lines.push(`| ${part}, beside the compute | ${ms(value)} | (overlapped) |`);
  }
  lines.push(
    '',
    `Bridge + PNG share of the wall time (the rest): **${(100 * split.bridge_and_png_share).toFixed(1)}%**. ` +
      `Peak RSS: orchestrator ${f1(split.peak_rss_mb.orchestrator)} MiB, worker ${f1(split.peak_rss_mb.worker)} MiB. ` +
      `Command: \`${split.command}\`.`,
  );
  return lines.join('\n');
}

function warmTable(warm) {
  const { library: lib, cli: c } = warm;
  const lines = [
    '| | before the first step | one step | whole call |',
    '|---|---|---|---|',
    `| library, first call (worker start ${ms(lib.start_ms)} and load ${ms(lib.load_ms)} before it) | ${ms(lib.first_call.before_first_step_ms)} | ${ms(lib.first_call.step_ms)} | ${ms(lib.first_call.total_ms)} |`,
    `| library, warm call | ${ms(lib.warm_call.before_first_step_ms)} | ${ms(lib.warm_call.step_ms)} | ${ms(lib.warm_call.total_ms)} |`,
    '',
    `| \`diffusion-lens run\` of ${5 * shapesLayers * 4} images (5 prompts × ${shapesLayers} layers × 4 seeds) | first image after | wall time |`,
    '|---|---|---|',
    `| starting its own worker | ${ms(c.cold.first_image_ms)} | ${ms(c.cold.wall_ms)} |`,
    ...c.attached.map(
      (run, i) =>
        `| \`--worker\` (a running \`diffusion-lens worker\`), call ${i + 1} | ${ms(run.first_image_ms)} | ${ms(run.wall_ms)} |`,
    ),
    '',
    `Command: \`${warm.command}\`.`,
  ];
  return lines.join('\n');
}

function machineLine(m) {
  return `${m.date}: ${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, no GPU; Node ${m.node}, torch ${m.torch} (${m.torch_threads} threads).`;
}

/** Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in `markdown`. */
function fill(markdown, name, body) {
  const open = `<!-- bench:${name} -->`;
  const close = `<!-- /bench:${name} -->`;
  const start = markdown.indexOf(open);
  const end = markdown.indexOf(close);
  if (start < 0 || end < start) throw new Error(`docs/benchmarks.md lacks the ${open} … ${close} markers`);
  return `${markdown.slice(0, start + open.length)}\n${body}\n${markdown.slice(end)}`;
}

try {
  const previous = existsSync(jsonPath) ? JSON.parse(readFileSync(jsonPath, 'utf8')) : {};
  const figures = { ...previous, machine: machine() };
  if (sections.has('cpu')) figures.cpu = CPU_CASES.map(benchCase);
  if (sections.has('cli')) figures.cli = await cliSplit();
  if (sections.has('warm')) figures.warm = await warmCalls();
  if (args['no-write']) {
    console.log(JSON.stringify(figures, null, 2));
  } else {
    writeFileSync(jsonPath, `${JSON.stringify(figures, null, 2)}\n`);
    let markdown = readFileSync(mdPath, 'utf8');
    markdown = fill(markdown, 'machine', machineLine(figures.machine));
    if (figures.cpu) markdown = fill(markdown, 'cpu', cpuTable(figures.cpu));
    if (figures.cli) markdown = fill(markdown, 'cli', cliTable(figures.cli));
    if (figures.warm) markdown = fill(markdown, 'warm', warmTable(figures.warm));
    writeFileSync(mdPath, markdown);
    console.error(`\nwrote ${jsonPath} and the tables of ${mdPath}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
