// `diffusion-lens plan` through the built CLI: every paper preset plans offline (no hub, no Python); on the
// tiny SD fixture the cached count goes from 0 to all after a run, without starting Python, and a
// changed setting shows the folder's images as another variant's; --load --measure times the device.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { type RunEstimate, RunEstimateSchema } from '../src/experiment/index.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const fixture = inject('sdFixture');
const tempDir = tempDirs('dlens-cli-plan-');

/** No hub cache to read, and no Python to start: a plan that needs either fails. */
const noPython = (): NodeJS.ProcessEnv => ({
  ...process.env,
  HF_HUB_CACHE: tempDir(),
  HF_HUB_OFFLINE: '1',
  DIFFUSION_LENS_PYTHON: '/nonexistent/python',
});

function dlens(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  return execa('node', [cli, ...args], { reject: false, cwd: options.cwd ?? root, env: options.env });
}

const estimates = (stdout: string): RunEstimate[] =>
  stdout
    .trim()
    .split('\n')
    .map((line) => RunEstimateSchema.parse(JSON.parse(line)));

beforeAll(() => {
  // The CLI tests run the build output; `npm test` builds first. Build here if there is none.
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
});

describe('diffusion-lens plan', () => {
  it('explains itself', async () => {
    const help = await dlens(['plan', '--help']);
    expect(help.exitCode).toBe(0);
    for (const text of ['--load', '--measure', '--gpu', '--json', '--out', 'estimated', 'classifier-free']) {
      expect(help.stdout).toContain(text);
    }
  });

  it('plans every paper preset offline, without the hub or Python', async () => {
    const files = readdirSync(join(root, 'configs', 'paper'))
      .filter((name) => name.endsWith('.yaml'))
      .map((name) => join(root, 'configs', 'paper', name));
    expect(files).toHaveLength(36);
    const cwd = tempDir(); // runs/<name> here: empty
    const json = await dlens(['plan', ...files, '--json'], { cwd, env: noPython() });
    expect(json.stderr).toBe('');
    expect(json.exitCode).toBe(0);
    const plans = estimates(json.stdout);
    expect(plans.map((plan) => plan.config)).toEqual(files);
    for (const plan of plans) {
      expect(plan.source, plan.name).toBe('offline');
      expect(plan.images, plan.name).toBeGreaterThan(0);
      expect(plan.todo, plan.name).toBe(plan.images);
      expect(plan.cached, plan.name).toEqual({
        verified: null,
        on_disk: 0,
        changed_by_hand: 0,
        other_settings: 0,
      });
      // L is not known without the checkpoint: said so, and taken from the table.
      expect(plan.estimated.join('\n'), plan.name).toMatch(/^L = \d+: the table's depth of /m);
      expect(plan.time.basis, plan.name).toBe('table');
      expect(plan.time.seconds, plan.name).toBeGreaterThan(0);
      expect(plan.disk.image_bytes, plan.name).toBeGreaterThan(0);
    }
    const flux = plans.find((plan) => plan.name === 'flux-objects');
    expect(flux?.stage_estimates[0]).toMatchObject({ cfg: false, evaluations_per_image: 28 });
    const ifPlan = plans.find((plan) => plan.name === 'if-objects');
    expect(ifPlan?.stage_estimates.map((s) => s.evaluations_per_image)).toEqual([200, 100]);

    const text = await dlens(['plan', ...files, '--gpu', 'h100'], { cwd, env: noPython() });
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toMatch(/^sd21-objects {2}\(.*sd21-objects\.yaml\) -> /m);
    expect(text.stdout).toMatch(/on an H100 \(estimated\)/);
    expect(text.stdout).toMatch(
      /^total: 36 configs, [\d,]+ images, [\d,]+ denoiser evaluations, ~.* on an H100/m,
    );
  });

  it('runs as the README shows it, from the repository root', async () => {
    const result = await dlens(['plan', 'configs/paper/sd21-two-colors.yaml'], { env: noPython() });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/960 = 40 prompts x 6 layers x 4 seeds/);
    expect(result.stdout).toMatch(/stage I +768x768, 50 steps \(dpm-multistep\), CFG 7\.5: x2/);
    expect(result.stdout).toMatch(/100 UNet evaluations per image x 960 = 96,000/);
    expect(result.stdout).toMatch(/L = 23 \(estimated\)/);
  });

  it('refuses an unknown GPU and --out with several configs as usage errors', async () => {
    const gpu = await dlens(['plan', 'configs/paper/sd21-objects.yaml', '--gpu', 'abacus'], {
      env: noPython(),
    });
    expect(gpu.exitCode).toBe(2);
    expect(gpu.stderr).toMatch(/unknown GPU "abacus"/);
    const out = await dlens(['plan', 'configs/sdxl-base.yaml', 'configs/flux-dev.yaml', '--out', tempDir()], {
      env: noPython(),
    });
    expect(out.exitCode).toBe(2);
    expect(out.stderr).toMatch(/--out names the output folder of one config/);
  });

  it('counts the images a run made on the tiny fixture, without starting Python', async () => {
    const dir = tempDir();
    const config = join(dir, 'tiny.yaml');
    const write = (steps: number) =>
      writeFileSync(
        config,
        [
          'name: tiny-plan',
          `model: { id: ${JSON.stringify(fixture)} }`,
          `sampler: { steps: ${steps}, guidance: 7.5, size: 32 }`,
          'lens: { layers: "0,5" }',
          'seeds: [0, 1]',
          'prompts: [a red cube, a blue ball]',
        ].join('\n'),
      );
    write(2);
    const out = join(dir, 'out');

    const before = await dlens(['plan', config, '--out', out, '--json'], { env: noPython() });
    expect(before.stderr).toBe('');
    expect(before.exitCode).toBe(0);
    const [first] = estimates(before.stdout);
    expect(first).toMatchObject({
      source: 'offline',
      num_layers: 5, // from the fixture's config files: not estimated
      layers: [0, 5],
      images: 8,
      cached: { verified: null, on_disk: 0 },
      todo: 8,
      evaluations: 8 * 2 * 2,
      todo_evaluations: 32,
    });
    expect(first?.estimated.join('\n')).not.toMatch(/L = /);
    expect(first?.time.basis).toBe('none'); // a 32x32 model is outside the speed table

    const run = await dlens(['run', config, '--out', out]);
    expect(run.exitCode).toBe(0);

    const after = await dlens(['plan', config, '--out', out, '--json'], { env: noPython() });
    expect(after.stderr).toBe('');
    expect(after.exitCode).toBe(0);
    const [second] = estimates(after.stdout);
    expect(second).toMatchObject({
      source: 'recorded',
      num_layers: 5,
      images: 8,
      cached: { verified: 8, on_disk: 8, changed_by_hand: 0, other_settings: 0 },
      todo: 0,
      todo_evaluations: 0,
      time: { basis: 'measured', todo_seconds: 0 },
      disk: { basis: 'measured', todo_bytes: 0 },
    });
    const text = await dlens(['plan', config, '--out', out], { env: noPython() });
    expect(text.stdout).toMatch(/cached +8 of 8 on disk, their bytes checked: 0 to make/);

    // Another setting: the folder's images are another variant's, and `run` would refuse them.
    write(3);
    const changed = await dlens(['plan', config, '--out', out, '--json'], { env: noPython() });
    expect(changed.exitCode).toBe(0);
    const [third] = estimates(changed.stdout);
    expect(third).toMatchObject({ cached: { verified: 0, other_settings: 8 }, todo: 8 });
    expect(third?.notes.join('\n')).toMatch(/--new-variant or --overwrite/);
  });

  it('loads the model and times the device with --measure', async () => {
    const dir = tempDir();
    const config = join(dir, 'tiny.yaml');
    writeFileSync(
      config,
      [
        `model: { id: ${JSON.stringify(fixture)} }`,
        'sampler: { steps: 2, size: 32 }',
        'lens: { layers: all }',
        'seeds: [0]',
        'prompts: [a red cube]',
      ].join('\n'),
    );
    const result = await dlens(['plan', config, '--out', join(dir, 'out'), '--measure', '--json']);
    expect(result.exitCode).toBe(0);
    const [plan] = estimates(result.stdout);
    expect(plan).toMatchObject({ source: 'worker', num_layers: 5, images: 6, todo: 6 });
    // The worker's default guidance (7.5) runs CFG.
    expect(plan?.stage_estimates[0]).toMatchObject({ guidance: 7.5, cfg: true, evaluations_per_image: 4 });
    expect(plan?.time.basis).toBe('measured');
    expect(plan?.time.seconds).toBeGreaterThan(0);
    expect(plan?.time.source).toMatch(/measured: 4 items of this run .* on cpu/);
    expect(existsSync(join(dir, 'out'))).toBe(false); // nothing written
  });
});
