// The ablations end to end through the CLI and the real worker, on the tiny SD fixture: a mix at alpha 0
// and 1 makes exactly the images of its two layers (swept as one study), a token window names the
// positions it lensed in the manifest, and injected embeddings replace the conditioning at every layer.
// The tensor-level checks are python/tests/test_ablations.py.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { Manifest } from '../src/experiment/index.js';
import { safetensors } from './safetensors.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const tempDir = tempDirs('dlens-ablations-');
const fixture = inject('sdFixture');
const QUICK = ['--seeds', '0', '--steps', '2', '--size', '32'];

async function lens(out: string, ...args: string[]): Promise<Manifest> {
  const result = await execa(
    'node',
    [cli, 'lens', 'a red apple', '--model', fixture, ...QUICK, ...args, '--out', out],
    {
      reject: false,
      cwd: root,
    },
  );
  expect(result.stderr).not.toMatch(/error/i);
  expect(result.exitCode).toBe(0);
  return readManifest(out);
}

const readManifest = (out: string): Manifest => JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));

/** The PNG bytes of each image of a run, by layer. */
function pngs(out: string, manifest: Manifest): Map<number, Buffer> {
  return new Map(manifest.images.map((image) => [image.layer, readFileSync(join(out, image.path))]));
}

let plainOut = '';
let plain: Manifest;

beforeAll(async () => {
  if (!existsSync(cli)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  plainOut = join(tempDir(), 'plain');
  plain = await lens(plainOut, '--layers', '1,4');
});

describe('lens ablations through the worker', () => {
  it('a mix swept over alpha makes layer a at 0 and layer b at 1, with their own keys', async () => {
    const dir = tempDir();
    const configPath = join(dir, 'mix.yaml');
    writeFileSync(
      configPath,
      [
        `model: { id: ${JSON.stringify(fixture)} }`,
        'prompts: [a red apple]',
        'seeds: [0]',
        'sampler: { steps: 2, size: 32 }',
        'lens: { mix: { layers: [1, 4], alpha: 0 } }',
        'sweep:',
        '  lens.mix.alpha: [0, 1]',
        '',
      ].join('\n'),
    );
    const out = join(dir, 'study');
    const result = await execa('node', [cli, 'run', configPath, '--out', out], { reject: false, cwd: root });
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.exitCode).toBe(0);
    const expected = pngs(plainOut, plain);
    for (const [variant, layer] of [
      ['alpha-0', 1],
      ['alpha-1', 4],
    ] as const) {
      const manifest = readManifest(join(out, variant));
      expect(manifest.config.lens.mix).toEqual({ layers: [1, 4], alpha: layer === 1 ? 0 : 1 });
      expect(manifest.images.map((image) => image.layer)).toEqual([1]);
      const [image] = manifest.images;
      expect(readFileSync(join(out, variant, image?.path ?? 'missing'))).toEqual(expected.get(layer));
      expect(plain.images.map((p) => p.key)).not.toContain(image?.key);
    }
  });

  it('a token window lenses the prompt through its end-of-text token and says which', async () => {
    const out = join(tempDir(), 'tokens');
    const manifest = await lens(out, '--layers', '1', '--tokens', 'prompt');
    expect(manifest.config.lens.tokens).toBe('prompt');
    const lensed = manifest.prompts[0]?.lensed_tokens;
    expect(lensed?.tokens[0]).toBe('<|startoftext|>');
    expect(lensed?.tokens.at(-1)).toBe('<|endoftext|>');
    expect(lensed?.positions).toEqual(lensed?.tokens.map((_, i) => i));
    const [image] = manifest.images;
    expect(readFileSync(join(out, image?.path ?? 'missing'))).not.toEqual(pngs(plainOut, plain).get(1));
    expect(plain.prompts[0]?.lensed_tokens).toBeNull();
  });

  it('injected embeddings replace the conditioning at every layer', async () => {
    const dir = tempDir();
    const file = join(dir, 'zeros.safetensors');
    writeFileSync(file, safetensors({ prompt_embeds: { dtype: 'F32', shape: [1, 77, 40] } }));
    const out = join(dir, 'embeds');
    const manifest = await lens(out, '--layers', '1,4', '--embeds', file);
    expect(manifest.config.lens.embeds?.path).toBe(file);
    const images = pngs(out, manifest);
    // Zeros at both layers: the same conditioning, the same (shared) noise, the same image.
    expect(images.get(1)).toEqual(images.get(4));
    expect(images.get(1)).not.toEqual(pngs(plainOut, plain).get(1));
  });
});
