// The `lens` option table (src/cli/lens-options.ts) and what is generated from it: the config mapping, the
// labels errors name the options by, the commander options and their help, the options type.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { execa } from 'execa';
import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { doctorText } from '../src/cli/doctor-text.js';
import {
  LENS_OPTIONS,
  type LensOptionSpec,
  type LensOptionValues,
  optionKey,
  optionLabel,
} from '../src/cli/lens-options.js';
import { addLensOptions, optionHelp, schemaField } from '../src/cli/option-help.js';
import { lensConfig, lensConfigInput, OPTION_LABELS } from '../src/cli/options.js';
import { formatPath } from '../src/config/index.js';
import type { DoctorReport } from '../src/doctor.js';
import { ifCapabilities } from './capabilities.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');

beforeAll(() => {
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
});

const name = (spec: LensOptionSpec): string => optionLabel(spec);

/** One value per parser, as typed on the command line, and the config value it becomes. */
function sample(spec: LensOptionSpec): { given: string | boolean; value: unknown } {
  switch (spec.parse) {
    case 'text':
      return { given: 'x/y', value: 'x/y' };
    case 'choice': {
      const choice = schemaField(spec.path)?.choices?.at(-1) ?? '';
      return { given: choice, value: choice };
    }
    case 'int':
      return { given: ' 24 ', value: 24 };
    case 'ints':
      return { given: '1, 2', value: [1, 2] };
    case 'number':
      return { given: '2.5', value: 2.5 };
    case 'size':
      return { given: '64x32', value: [64, 32] };
    case 'int-or-text':
      return { given: '5', value: 5 };
    case 'int-or-auto':
      return { given: 'auto', value: 'auto' };
    case 'names':
      return { given: 'text_encoder, text_encoder_2', value: ['text_encoder', 'text_encoder_2'] };
    case 'mix':
      return { given: '4, -1, 0.25', value: { layers: [4, -1], alpha: 0.25 } };
    case 'switch':
      return { given: true, value: true };
  }
}

const at = (object: unknown, path: readonly string[]): unknown =>
  path.reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], object);

describe('the lens option table', () => {
  it.each(LENS_OPTIONS.map((spec) => [name(spec), spec] as const))(
    '%s sets a field of the config schema, which describes it',
    (_, spec) => {
      const field = schemaField(spec.path);
      expect(field, formatPath(spec.path)).toBeDefined();
      expect(field?.description).toMatch(/\w/);
      if (spec.parse === 'choice') expect(field?.choices?.length).toBeGreaterThan(1);
      expect(optionHelp(spec)).toMatch(/ \(default: [^)]+\)$/);
    },
  );

  it('has one option per flag, per value and per config field', () => {
    const unique = (list: string[]) => expect(new Set(list).size).toBe(list.length);
    unique(LENS_OPTIONS.map(optionLabel));
    unique(LENS_OPTIONS.map(optionKey));
    unique(LENS_OPTIONS.map((spec) => formatPath(spec.path)));
  });

  it('knows a path that is not a field', () => {
    expect(schemaField(['sampler', 'stepz'])).toBeUndefined();
    expect(schemaField(['seeds', 'x'])).toBeUndefined();
    expect(() => optionHelp({ flags: '--stepz <n>', path: ['sampler', 'stepz'], parse: 'int' })).toThrow(
      '--stepz: config field sampler.stepz is not in the config schema',
    );
  });

  it('maps each option to its field, and labels the field with the option', () => {
    for (const spec of LENS_OPTIONS) {
      const { given, value } = sample(spec);
      const input = lensConfigInput('a cat', { [optionKey(spec)]: given });
      expect(at(input, spec.path), name(spec)).toEqual(value);
      expect(input.prompts).toEqual(['a cat']);
      expect(OPTION_LABELS[formatPath(spec.path)]).toBe(name(spec));
    }
    expect(OPTION_LABELS.prompts).toBe('PROMPT');
    expect(lensConfigInput('a cat', {})).toEqual({ prompts: ['a cat'] });
  });

  it('reads --offload alone as model, and --no-clean-caption as false', () => {
    const parse = (args: string[]) =>
      addLensOptions(new Command().exitOverride()).parse(args, { from: 'user' }).opts() as LensOptionValues;
    expect(lensConfig('a cat', parse(['--offload'])).model.offload).toBe('model');
    expect(lensConfig('a cat', parse(['--offload', 'encoder'])).model.offload).toBe('encoder');
    expect(parse([]).cleanCaption).toBeUndefined();
    expect(lensConfig('a cat', parse(['--no-clean-caption'])).model.clean_caption).toBe(false);
  });

  it('infers the options type from the flags', () => {
    expectTypeOf<LensOptionValues['stage2Model']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<LensOptionValues['maxBatch']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<LensOptionValues['offload']>().toEqualTypeOf<string | true | undefined>();
    expectTypeOf<LensOptionValues['cleanCaption']>().toEqualTypeOf<boolean | undefined>();
    expectTypeOf<LensOptionValues['noiseLevel']>().toEqualTypeOf<string | undefined>();
  });
});

describe('lens --help', () => {
  let help = '';
  beforeAll(async () => {
    const result = await execa('node', [cli, 'lens', '--help'], { cwd: root });
    help = result.stdout;
  });

  /** The help of one option in `lens --help`, its lines joined. */
  function helpOf(flags: string): string | undefined {
    const lines = help.split('\n');
    const start = lines.findIndex((line) => line.trimStart().startsWith(`${flags} `));
    if (start < 0) return undefined;
    const column = (lines[start] ?? '').indexOf(flags) + 2;
    const block = [lines[start]];
    for (const line of lines.slice(start + 1)) {
      if (line.trim() === '' || line.slice(0, column).trim() !== '') break;
      block.push(line);
    }
    return block
      .join(' ')
      .slice(block[0]?.indexOf(flags) ?? 0)
      .slice(flags.length)
      .replace(/\s+/g, ' ')
      .trim();
  }

  it.each(LENS_OPTIONS.map((spec) => [spec.flags, spec] as const))(
    'lists %s with its schema description and default',
    (flags, spec) => {
      expect(helpOf(flags)).toBe(optionHelp(spec).replace(/\s+/g, ' '));
    },
  );

  it('says what the option texts mean', () => {
    expect(helpOf('--steps <n>')).toBe(
      "denoising steps (default: the model's: SD 50, IF 100, PixArt 20, SDXL 50, Flux 28, SD3 28)",
    );
    expect(helpOf('--dtype <dtype>')).toBe(
      'weights dtype; auto = fp16 on GPU (bf16 for Flux and SD3), fp32 on CPU; auto|fp32|fp16|bf16 (default: auto)',
    );
    expect(helpOf('--seeds <list>')).toMatch(/; comma-separated \(default: 0,1,2,3\)$/);
    expect(helpOf('--size <s>')).toMatch(/; S or HxW \(default: the model's native size\)$/);
    expect(helpOf('--offload [mode]')).toMatch(
      /; none\|encoder\|model; the flag alone = model \(default: none\)$/,
    );
    expect(helpOf('--stages <list>')).toContain('(default: 1 and 2 when --stage2-model is set, else 1)');
    expect(helpOf('--negative <text>')).toMatch(/\(default: ""\)$/);
    expect(helpOf('--allow-pickle')).toMatch(/\(default: off\)$/);
    expect(helpOf('--no-clean-caption')).toBe('the opposite of --clean-caption: false');
    expect(helpOf('-o, --out <dir>')).toMatch(/\(required\)$/);
    expect(help).toContain('Examples:\n  diffusion-lens lens "a red apple"');
  });
});

describe('doctor text', () => {
  const report: DoctorReport = {
    tool: '0.1.0',
    node: '20.19.0',
    pythonPath: 'python3',
    python: '3.11.2',
    executable: '/usr/bin/python3',
    packages: { torch: '2.4.0', diffusers: '0.30.0', transformers: null, ftfy: '6.2' },
    device: 'cuda',
    cuda: { available: true, devices: ['NVIDIA H100'] },
    families: [ifCapabilities],
    problems: [],
    ok: true,
  };

  it('aligns the versions and ends with ok', () => {
    expect(doctorText(report)).toBe(
      [
        'diffusion-lens 0.1.0',
        'node          20.19.0',
        'python        3.11.2 (/usr/bin/python3)',
        'torch         2.4.0',
        'diffusers     0.30.0',
        'transformers  missing',
        'other         ftfy 6.2',
        'device        cuda (NVIDIA H100)',
        'family if     IFPipeline; 2 stages, classifier-free guidance',
        '  schedulers  default, dpm-multistep, dpm-singlestep, ddpm',
        '  option      model.family_options.clean_caption (boolean | null, default: null)',
        '  option      stage2.family_options.noise_level (integer, default: 250)',
        'ok: everything the worker needs is there',
        '',
      ].join('\n'),
    );
  });

  it('lists each problem with its fix', () => {
    const broken = {
      ...report,
      python: null,
      executable: null,
      packages: {},
      device: null,
      cuda: null,
      families: [],
      ok: false,
      problems: [{ what: 'Python interpreter "python3" not found', fix: 'run `npm install`' }],
    };
    expect(doctorText(broken).split('\n').slice(2)).toEqual([
      'python        not working (python3)',
      'torch         missing',
      'diffusers     missing',
      'transformers  missing',
      'device        unknown',
      '1 problem:',
      '  - Python interpreter "python3" not found',
      '    fix: run `npm install`',
      '',
    ]);
  });
});
