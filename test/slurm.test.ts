// `diffusion-lens slurm` (issue 14, item 4): the sbatch array script, the merge script and submit.sh, read
// as text, checked by bash -n and run with stand-ins for diffusion-lens and sbatch (paths with a space and
// a quote arrive as one argument each); then, where Slurm is installed (CI installs slurm-wlm and munge),
// submitted for real to a single-node cluster (scripts/slurm-single-node.sh): two shards and the merge,
// whose folder equals an unsharded run byte for byte.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { loadConfigFile } from '../src/config/index.js';
import {
  canonicalJson,
  type Manifest,
  runExperiment,
  SlurmError,
  shellQuote,
  slurmScripts,
  writeSlurmScripts,
} from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const tempDir = tempDirs('dlens-slurm-');

/** Runs a script with bash; its stdout. */
function bash(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): string {
  return execFileSync('bash', [script, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

describe('slurm scripts', () => {
  it('quotes words for the shell', () => {
    expect(shellQuote('/a/b-c_d.yaml')).toBe('/a/b-c_d.yaml');
    expect(shellQuote("it's a dir")).toBe(`'it'\\''s a dir'`);
    expect(shellQuote('')).toBe("''");
    expect(shellQuote('$HOME;rm')).toBe("'$HOME;rm'");
  });

  it('writes the array, the merge and submit.sh: checked by bash -n, arguments intact', async () => {
    const base = join(tempDir(), `it's a "dir"`);
    const scripts = await writeSlurmScripts({
      configPath: join(base, 'exp.yaml'),
      outDir: join(base, 'out'),
      scriptDir: join(tempDir(), 'scripts 100%'),
      array: 3,
      partition: 'gpu',
      time: '4:00:00',
      mem: '16G',
      cpusPerTask: 4,
      account: 'lab',
      jobName: 'dlens-exp',
      sbatch: ['--qos=high'],
      setup: ['export OMP_NUM_THREADS=4'],
      // A stand-in for diffusion-lens that prints its arguments, one per line.
      command: ['printf', '%s\\n'],
    });
    for (const file of [scripts.shards, scripts.merge, scripts.submit]) {
      expect(readFileSync(file.path, 'utf8')).toBe(file.text);
      expect(spawnSync('bash', ['-n', file.path]).status, file.path).toBe(0);
    }
    expect(existsSync(scripts.logs)).toBe(true);
    const shards = scripts.shards.text.split('\n');
    expect(shards[0]).toBe('#!/bin/bash');
    for (const line of [
      '#SBATCH --job-name=dlens-exp',
      '#SBATCH --array=0-2',
      '#SBATCH --ntasks=1',
      '#SBATCH --gpus-per-task=1',
      '#SBATCH --cpus-per-task=4',
      '#SBATCH --mem=16G',
      '#SBATCH --partition=gpu',
      '#SBATCH --account=lab',
      '#SBATCH --time=4:00:00',
      '#SBATCH --qos=high',
      `#SBATCH --output="${scripts.logs.replace('100%', '100%%')}/shard-%A_%a.out"`,
      'set -euo pipefail',
      'export OMP_NUM_THREADS=4',
    ]) {
      expect(shards, line).toContain(line);
    }
    // #SBATCH lines come before the first command (sbatch stops reading them there).
    const firstCommand = shards.indexOf('set -euo pipefail');
    expect(shards.slice(firstCommand).some((line) => line.startsWith('#SBATCH'))).toBe(false);
    const merge = scripts.merge.text.split('\n');
    expect(merge).toContain('#SBATCH --job-name=dlens-exp-merge');
    expect(merge).toContain('#SBATCH --partition=gpu');
    expect(merge.some((line) => line.startsWith('#SBATCH --gpus'))).toBe(false);
    expect(merge.some((line) => line.startsWith('#SBATCH --array'))).toBe(false);

    // Run with the stand-in: every path arrives whole.
    expect(bash(scripts.shards.path, [], { SLURM_ARRAY_TASK_ID: '2' }).split('\n')).toEqual([
      'run',
      join(base, 'exp.yaml'),
      '--out',
      join(base, 'out', 'shards', '2'),
      '--shard',
      '2/3',
      '',
    ]);
    expect(
      spawnSync('bash', [scripts.shards.path], { env: { PATH: process.env.PATH } }).stderr.toString(),
    ).toMatch(/SLURM_ARRAY_TASK_ID: run this script with sbatch/);
    expect(bash(scripts.merge.path).split('\n')).toEqual([
      'merge',
      join(base, 'out', 'shards', '0'),
      join(base, 'out', 'shards', '1'),
      join(base, 'out', 'shards', '2'),
      '--out',
      join(base, 'out'),
      '',
    ]);

    // submit.sh with a stand-in sbatch that records its arguments.
    const bin = tempDir();
    const calls = join(bin, 'calls');
    writeFileSync(
      join(bin, 'sbatch'),
      `#!/bin/bash\nprintf '%s|' "$@" >>${shellQuote(calls)}\necho >>${shellQuote(calls)}\n` +
        `if [[ "$*" == *dependency* ]]; then echo 43; else echo '42;cluster'; fi\n`,
    );
    chmodSync(join(bin, 'sbatch'), 0o755);
    const path = `${bin}:${process.env.PATH}`;
    const submitted = bash(scripts.submit.path, [], { PATH: path });
    expect(submitted).toMatch(/submitted the shards as job 42 and the merge as job 43/);
    expect(readFileSync(calls, 'utf8').split('\n')).toEqual([
      `--parsable|${scripts.shards.path}|`,
      `--parsable|--dependency=afterok:42|${scripts.merge.path}|`,
      '',
    ]);
    expect(readFileSync(join(scripts.dir, 'shards.jobid'), 'utf8')).toBe('42\n');
    // Failed shards again: submit.sh I,J.
    writeFileSync(calls, '');
    bash(scripts.submit.path, ['0,2'], { PATH: path });
    expect(readFileSync(calls, 'utf8').split('\n')[0]).toBe(`--parsable|--array=0,2|${scripts.shards.path}|`);
  });

  it('asks for no GPU with --gpus-per-task 0; refuses bad values, naming the option', () => {
    const options = { configPath: '/c.yaml', outDir: '/o', array: 2 };
    expect(slurmScripts({ ...options, gpusPerTask: 0 }).shards.text).not.toMatch(/gpus/);
    expect(slurmScripts(options).dir).toBe('/o/slurm');
    const bad: [Partial<Parameters<typeof slurmScripts>[0]>, RegExp][] = [
      [{ array: 0 }, /--array must be a whole number of shards, 1 or more/],
      [{ gpusPerTask: -1 }, /--gpus-per-task/],
      [{ mem: 'lots' }, /--mem must be a size such as 32G/],
      [{ time: 'soon' }, /--time must be a Slurm time limit/],
      [{ partition: 'a b' }, /--partition must be letters/],
      [{ sbatch: ['qos=high'] }, /--sbatch takes an sbatch option/],
      [{ scriptDir: '/tmp/a"b' }, /cannot be written in an #SBATCH line/],
    ];
    for (const [override, pattern] of bad) {
      expect(() => slurmScripts({ ...options, ...override }), pattern.source).toThrow(SlurmError);
      expect(() => slurmScripts({ ...options, ...override }), pattern.source).toThrow(pattern);
    }
  });

  it('the CLI writes the scripts under OUT/slurm and says how to submit them', async () => {
    const dir = tempDir();
    const config = join(dir, 'exp.yaml');
    writeFileSync(config, 'name: exp\nprompts: [a red circle]\nseeds: [0]\nlens: { layers: [0] }\n');
    const result = await execa('node', [cli, 'slurm', config, '--array', '4', '--out', join(dir, 'out')], {
      reject: false,
    });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain(`submit with:\n  ${join(dir, 'out', 'slurm', 'submit.sh')}`);
    const shards = readFileSync(join(dir, 'out', 'slurm', 'shards.sbatch'), 'utf8');
    expect(shards).toContain('#SBATCH --array=0-3\n');
    expect(shards).toContain('#SBATCH --job-name=dlens-exp\n');
    expect(shards).toContain(`${process.execPath} ${cli} run ${config} --out`);
    const bad = await execa('node', [cli, 'slurm', config, '--array', '0'], { reject: false });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(
      /option '--array <n>' argument '0' is invalid. must be a whole number, 1 or more/,
    );
  });
});

const slurmInstalled =
  spawnSync('sh', ['-c', 'command -v sbatch && { command -v slurmctld || test -x /usr/sbin/slurmctld; }'])
    .status === 0;

const realSlurm = slurmInstalled
  ? 'on a real single-node Slurm'
  : 'on a real single-node Slurm: skipped, Slurm is not installed (apt-get install slurm-wlm munge)';

describe.skipIf(!slurmInstalled)(realSlurm, () => {
  it('runs two shards as an array job and the merge after them; the merged run equals an unsharded one', async () => {
    // Start the cluster if it is not up (idempotent).
    const setup = spawnSync('bash', [join(root, 'scripts', 'slurm-single-node.sh')], { encoding: 'utf8' });
    expect(setup.status, `${setup.stdout}\n${setup.stderr}`).toBe(0);

    const dir = join(tempDir(), "slurm's run");
    mkdirSync(dir);
    const configPath = join(dir, 'exp.yaml');
    writeFileSync(
      configPath,
      'name: slurm-shapes\nsampler: { steps: 4 }\nlens: { layers: [0, 4, 8] }\nseeds: [0, 1]\n' +
        'prompts: [a large red circle at the left, two small blue squares]\nruntime: { max_batch: 4 }\n',
    );
    const out = join(dir, 'out');
    const scripts = await writeSlurmScripts({
      configPath,
      outDir: out,
      array: 2,
      gpusPerTask: 0,
      cpusPerTask: 1,
      time: '10',
      jobName: 'dlens-test',
    });
    const submitted = bash(scripts.submit.path);
    const shardsJob = readFileSync(join(scripts.dir, 'shards.jobid'), 'utf8').trim();
    const mergeJob = readFileSync(join(scripts.dir, 'merge.jobid'), 'utf8').trim();
    expect(submitted).toContain(`job ${shardsJob}`);

    const deadline = Date.now() + 480_000;
    let queued = '';
    while (Date.now() < deadline) {
      queued = execFileSync('squeue', ['-h', '-j', `${shardsJob},${mergeJob}`, '-o', '%i %T %r'], {
        encoding: 'utf8',
      }).trim();
      if (queued === '') break;
      await sleep(1000);
    }
    const logs = readdirSync(scripts.logs)
      .map((name) => `--- ${name}\n${readFileSync(join(scripts.logs, name), 'utf8')}`)
      .join('\n');
    expect(queued, `jobs still queued:\n${queued}\n${logs}`).toBe('');
    const state = execFileSync('scontrol', ['show', 'job', mergeJob], { encoding: 'utf8' });
    expect(state, logs).toMatch(/JobState=COMPLETED/);
    expect(readdirSync(scripts.logs).sort()).toEqual([
      `merge-${mergeJob}.out`,
      `shard-${shardsJob}_0.out`,
      `shard-${shardsJob}_1.out`,
    ]);

    const merged: Manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(merged.complete).toBe(true);
    expect(merged.merged_from).toEqual([join(out, 'shards', '0'), join(out, 'shards', '1')]);
    expect(merged.images).toHaveLength(12);

    // The same config without shards, here.
    const whole = join(dir, 'whole');
    const result = await runExperiment(await loadConfigFile(configPath), { outDir: whole });
    expect(result.complete).toBe(true);
    const wholeManifest = result.manifest as Manifest;
    expect(canonicalJson(merged.images)).toBe(canonicalJson(wholeManifest.images));
    expect(merged.grids).toEqual(wholeManifest.grids);
    for (const path of [
      ...wholeManifest.images.map((image) => image.path),
      ...wholeManifest.grids.map((grid) => grid.path),
      'images.csv',
    ]) {
      expect(readFileSync(join(out, path)).equals(readFileSync(join(whole, path))), path).toBe(true);
    }
  }, 600_000);
});
