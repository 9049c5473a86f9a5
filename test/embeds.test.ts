// The lens.embeds file, checked before any worker starts (src/experiment/embeds.ts): a safetensors header
// read by hand, the rows of its tensors against its `prompts` metadata and the run's prompts, the sha256
// of its bytes; every refusal a ConfigError naming lens.embeds (its line in a config file, its option on
// the command line).
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lensConfig } from '../src/cli/options.js';
import { type ExperimentConfigInput, loadConfigFile, parseConfig } from '../src/config/index.js';
import { resolveEmbeds } from '../src/experiment/embeds.js';
import { resolveInputs } from '../src/experiment/inputs.js';
import { configError, write } from './config-helpers.js';
import { rawSafetensors, safetensors } from './safetensors.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-embeds-');

const embeds1 = { prompt_embeds: { dtype: 'F32', shape: [1, 77, 32] } };
const rows = (n: number) => ({
  prompt_embeds: { dtype: 'F16', shape: [n, 77, 32] },
  pooled_prompt_embeds: { dtype: 'F16', shape: [n, 32] },
});

function fileWith(bytes: Buffer, name = 'e.safetensors'): { dir: string; path: string } {
  const dir = tempDir();
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return { dir, path };
}

const config = (embeds: string, extra: ExperimentConfigInput['lens'] = {}, prompts = ['a cat', 'a dog']) =>
  parseConfig({ prompts, lens: { embeds, ...extra } });

/** The message of the ConfigError that checking `bytes` against `prompts` gives, after its path. */
async function refusal(bytes: Buffer, prompts = ['a cat', 'a dog']): Promise<string> {
  const { dir } = fileWith(bytes);
  const error = await configError(resolveEmbeds(config('e.safetensors', {}, prompts), dir, prompts));
  expect(error.field).toBe('lens.embeds');
  expect(error.issues).toHaveLength(1);
  return error.issues[0]?.message.replace(/^"e\.safetensors" /, '') ?? '';
}

describe('lens.embeds', () => {
  it('reads one row for every prompt, relative to the config folder, with the sha256 of its bytes', async () => {
    const bytes = safetensors(embeds1);
    const { dir, path } = fileWith(bytes);
    const file = await resolveEmbeds(config('e.safetensors'), dir, ['a cat', 'a dog']);
    expect(file).toEqual({
      path,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      prompts: null,
      tensors: [{ name: 'prompt_embeds', dtype: 'F32', shape: [1, 77, 32] }],
    });
    expect(await resolveEmbeds(parseConfig({ prompts: ['a cat'] }), dir, ['a cat'])).toBeNull();
  });

  it('reads one row per prompt of its "prompts" metadata, which lists every prompt of the run', async () => {
    const listed = { prompts: JSON.stringify(['a dog', 'a cat', 'a cow']) };
    const { dir } = fileWith(safetensors(rows(3), listed));
    const file = await resolveEmbeds(config('e.safetensors'), dir, ['a cat', 'a dog']);
    expect(file?.prompts).toEqual(['a dog', 'a cat', 'a cow']);
    expect(file?.tensors.map((t) => t.name)).toEqual(['prompt_embeds', 'pooled_prompt_embeds']);
    // One listed prompt, one row.
    const one = fileWith(safetensors(rows(1), { prompts: '["a cat"]', other: 'kept' }));
    expect(
      (await resolveEmbeds(config('e.safetensors', {}, ['a cat']), one.dir, ['a cat']))?.prompts,
    ).toEqual(['a cat']);
  });

  it('refuses a file that is missing or not a file', async () => {
    const dir = tempDir();
    const missing = await configError(resolveEmbeds(config('gone.safetensors'), dir, ['a cat']));
    expect(missing.message).toBe(
      `lens.embeds: "gone.safetensors" does not exist (looked for ${join(dir, 'gone.safetensors')})`,
    );
    mkdirSync(join(dir, 'folder.safetensors'));
    const folder = await configError(resolveEmbeds(config('folder.safetensors'), dir, ['a cat']));
    expect(folder.message).toBe('lens.embeds: "folder.safetensors" is not a file');
  });

  it('refuses what is not a safetensors file', async () => {
    expect(await refusal(Buffer.from('abc'))).toBe('is not a safetensors file: it has 3 bytes');
    expect(await refusal(Buffer.from('not a safetensors file at all'))).toMatch(
      /^is not a safetensors file: its header length \d+ is beyond its 29 bytes$/,
    );
    expect(await refusal(rawSafetensors('{"prompt_embeds": ', 0))).toBe(
      'is not a safetensors file: its header is not JSON',
    );
    expect(await refusal(rawSafetensors('[1, 2]', 0))).toBe(
      'is not a safetensors file: its header is not a JSON object',
    );
    expect(await refusal(rawSafetensors('{"x": {"shape": [1], "data_offsets": [0, 4]}}', 4))).toBe(
      'is not a safetensors file: tensor "x" has no dtype',
    );
    expect(
      await refusal(rawSafetensors('{"x": {"dtype": "F32", "shape": [1, -2], "data_offsets": [0, 4]}}', 4)),
    ).toBe('is not a safetensors file: tensor "x" has no shape (a list of sizes)');
    expect(await refusal(rawSafetensors('{"x": {"dtype": "F32", "shape": [1]}}', 4))).toBe(
      'is not a safetensors file: tensor "x" has no data_offsets [begin, end]',
    );
    expect(
      await refusal(rawSafetensors('{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}', 4)),
    ).toBe('is not a safetensors file: tensor "x"\'s bytes 0..8 are not within the file\'s 4 data bytes');
    expect(
      await refusal(rawSafetensors('{"x": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 4]}}', 4)),
    ).toBe(
      'is not a safetensors file: tensor "x" (F32, shape [1, 2]) needs 8 bytes, its data_offsets give 4',
    );
    expect(await refusal(rawSafetensors('{"__metadata__": {"prompts": 3}}', 0))).toBe(
      'is not a safetensors file: its __metadata__ is not a mapping of strings to strings',
    );
  });

  it('refuses a file without tensors', async () => {
    expect(await refusal(safetensors({}))).toBe('holds no tensors');
    expect(await refusal(safetensors({}, { prompts: '["a cat"]' }))).toBe('holds no tensors');
  });

  it('refuses "prompts" metadata that is not a JSON list of distinct strings', async () => {
    const bad = async (prompts: string) => refusal(safetensors(rows(2), { prompts }));
    const must = 'it must be a JSON list of the prompt of each row';
    expect(await bad('a cat, a dog')).toBe(`has "prompts" metadata that is not JSON; ${must}`);
    expect(await bad('{"a": 1}')).toBe(`has "prompts" metadata that is not a non-empty list; ${must}`);
    expect(await bad('[]')).toBe(`has "prompts" metadata that is not a non-empty list; ${must}`);
    expect(await bad('["a cat", 2]')).toBe(
      `has "prompts" metadata that lists something other than strings; ${must}`,
    );
    expect(await bad('["a cat", "a cat"]')).toBe(`has "prompts" metadata that lists "a cat" twice; ${must}`);
  });

  it('refuses a tensor whose rows are not one, or one per listed prompt', async () => {
    expect(await refusal(safetensors(rows(2)))).toBe(
      'has a tensor "prompt_embeds" of shape [2, 77, 32]; expected one row (first dimension 1) for every ' +
        'prompt, as the file has no "prompts" metadata',
    );
    const listed = { prompts: JSON.stringify(['a cat', 'a dog']) };
    expect(
      await refusal(
        safetensors(
          { prompt_embeds: { dtype: 'F16', shape: [2, 77, 32] }, mask: { dtype: 'I64', shape: [1, 77] } },
          listed,
        ),
      ),
    ).toBe(
      'has a tensor "mask" of shape [1, 77]; expected 2 rows (first dimension 2), one per prompt of its ' +
        '"prompts" metadata',
    );
    expect(await refusal(safetensors({ scale: { dtype: 'F32', shape: [] } }))).toBe(
      'has a tensor "scale" of shape []; expected one row (first dimension 1) for every prompt, as the file ' +
        'has no "prompts" metadata',
    );
  });

  it('refuses a file without a row for a prompt of the run', async () => {
    const listed = { prompts: JSON.stringify(['a cat', 'a cow']) };
    expect(await refusal(safetensors(rows(2), listed), ['a cat', 'a dog'])).toBe(
      'has no row for the prompt "a dog" (its "prompts" metadata lists the prompt of each row; every prompt of ' +
        'the run must be there)',
    );
    const many = ['a', 'b', 'c', 'd', 'e'];
    expect(await refusal(safetensors(rows(2), listed), many)).toBe(
      `has no row for 5 of the run's prompts: "a", "b", "c" and 2 more (its "prompts" metadata lists the prompt ` +
        'of each row; every prompt of the run must be there)',
    );
  });

  it('is checked with the run inputs: relative to the config file, errors at its line', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'e.safetensors'), safetensors(embeds1));
    const good = write(dir, 'good.yaml', 'prompts: [a cat]\nlens:\n  embeds: e.safetensors\n');
    const inputs = await resolveInputs(await loadConfigFile(good), {});
    expect(inputs.embeds?.path).toBe(join(dir, 'e.safetensors'));
    expect(inputs.embeds?.sha256).toMatch(/^[0-9a-f]{64}$/);
    writeFileSync(join(dir, 'two.safetensors'), safetensors(rows(2)));
    const bad = write(dir, 'bad.yaml', 'prompts: [a cat]\nlens:\n  embeds: two.safetensors\n');
    const error = await configError(async () => resolveInputs(await loadConfigFile(bad), {}));
    expect(error.message).toBe(
      `${bad}:3: lens.embeds: "two.safetensors" has a tensor "prompt_embeds" of shape [2, 77, 32]; expected ` +
        'one row (first dimension 1) for every prompt, as the file has no "prompts" metadata',
    );
    const none = await resolveInputs(parseConfig({ prompts: ['a cat'] }), {});
    expect(none.embeds).toBeNull();
  });

  it('is named by its option on the command line, relative to the current folder', async () => {
    const dir = tempDir();
    const cwd = process.cwd();
    writeFileSync(join(dir, 'two.safetensors'), safetensors(rows(2)));
    try {
      process.chdir(dir);
      const error = await configError(resolveInputs(lensConfig('a cat', { embeds: 'two.safetensors' }), {}));
      expect(error.message).toMatch(/^--embeds: "two\.safetensors" has a tensor "prompt_embeds" of shape/);
      const missing = await configError(
        resolveInputs(lensConfig('a cat', { embeds: 'gone.safetensors' }), {}),
      );
      expect(missing.message).toMatch(/^--embeds: "gone\.safetensors" does not exist/);
    } finally {
      process.chdir(cwd);
    }
  });
});
