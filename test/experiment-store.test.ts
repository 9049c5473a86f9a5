import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  gridPath,
  imagePath,
  JOURNAL_FILE,
  Journal,
  promptHash8,
  slugify,
  writeFileAtomic,
} from '../src/experiment/index.js';

const tempDir = (): string => mkdtempSync(join(tmpdir(), 'dlens-store-'));

describe('paths', () => {
  it('slugs prompts safely', () => {
    expect(slugify('A Red Apple!')).toBe('a-red-apple');
    expect(slugify('../../etc/passwd')).toBe('etc-passwd');
    expect(slugify('Crème brûlée')).toBe('creme-brulee');
    expect(slugify('日本')).toBe('prompt');
    expect(slugify('x'.repeat(100))).toHaveLength(40);
    expect(slugify(`${'a'.repeat(39)} b`)).toBe('a'.repeat(39));
    expect(slugify('a  -- b')).toMatch(/^[a-z0-9-]+$/);
  });

  it('keeps prompts with the same slug apart', () => {
    expect(promptHash8('A cat')).not.toBe(promptHash8('a cat'));
    expect(imagePath('A cat', 1, 0, 5)).not.toBe(imagePath('a cat', 1, 0, 5));
  });

  it('pads the layer to the width of L', () => {
    const hash = promptHash8('a cat');
    expect(imagePath('a cat', 7, 2, 23)).toBe(`images/a-cat-${hash}/L07-s2.png`);
    expect(imagePath('a cat', 3, 0, 5)).toBe(`images/a-cat-${hash}/L3-s0.png`);
    expect(imagePath('a cat', 3, 10, 100)).toBe(`images/a-cat-${hash}/L003-s10.png`);
    expect(gridPath('a cat')).toBe(`grids/a-cat-${hash}.png`);
  });

  it('names stage II images and grids with -stage2, stage I ones as before', () => {
    const hash = promptHash8('a cat');
    expect(imagePath('a cat', 7, 2, 24, 1)).toBe(`images/a-cat-${hash}/L07-s2.png`);
    expect(imagePath('a cat', 7, 2, 24, 2)).toBe(`images/a-cat-${hash}/L07-s2-stage2.png`);
    expect(gridPath('a cat', 1)).toBe(`grids/a-cat-${hash}.png`);
    expect(gridPath('a cat', 2)).toBe(`grids/a-cat-${hash}-stage2.png`);
  });
});

describe('writeFileAtomic', () => {
  it('writes via a temp file in the same folder and leaves nothing else', async () => {
    const dir = tempDir();
    const path = join(dir, 'sub', 'x.png');
    await writeFileAtomic(path, Buffer.from('one'));
    await writeFileAtomic(path, Buffer.from('two'));
    expect(readFileSync(path, 'utf8')).toBe('two');
    expect(readdirSync(join(dir, 'sub'))).toEqual(['x.png']);
  });

  it('leaves the old file and no temp file when the write fails', async () => {
    const dir = tempDir();
    const path = join(dir, 'x.txt');
    writeFileSync(path, 'old');
    mkdirSync(join(dir, 'folder'));
    // Renaming a file over a non-empty folder fails.
    writeFileSync(join(dir, 'folder', 'inside'), '');
    await expect(writeFileAtomic(join(dir, 'folder'), 'new')).rejects.toThrow();
    expect(readFileSync(path, 'utf8')).toBe('old');
    expect(readdirSync(dir).sort()).toEqual(['folder', 'x.txt']);
  });
});

describe('Journal', () => {
  it('records keys; an image counts as done only when the file exists at its path', async () => {
    const dir = tempDir();
    const journal = await Journal.open(dir);
    expect(existsSync(join(dir, '.diffusion-lens'))).toBe(false);
    await writeFileAtomic(join(dir, 'images/a.png'), 'png');
    await journal.append({ key: 'k1', path: 'images/a.png' });
    await journal.append({ key: 'k2', path: 'images/b.png' });
    const again = await Journal.open(dir);
    expect(again.isDone('k1', dir, 'images/a.png')).toBe(true);
    expect(again.isDone('k2', dir, 'images/b.png')).toBe(false); // no file
    expect(again.isDone('k1', dir, 'images/other.png')).toBe(false); // another path
    expect(again.isDone('k3', dir, 'images/a.png')).toBe(false); // unknown key
  });

  it('ignores a torn last line and cuts it off before appending', async () => {
    const dir = tempDir();
    const journal = await Journal.open(dir);
    await journal.append({ key: 'k1', path: 'a.png' });
    appendFileSync(join(dir, JOURNAL_FILE), '{"key":"k2","pa');
    const reopened = await Journal.open(dir);
    expect(reopened.size).toBe(1);
    expect(reopened.get('k2')).toBeUndefined();
    await reopened.append({ key: 'k3', path: 'c.png' });
    const lines = readFileSync(join(dir, JOURNAL_FILE), 'utf8').split('\n');
    expect(lines).toEqual(['{"key":"k1","path":"a.png"}', '{"key":"k3","path":"c.png"}', '']);
    expect((await Journal.open(dir)).size).toBe(2);
  });

  it('skips corrupt lines', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, '.diffusion-lens'));
    writeFileSync(join(dir, JOURNAL_FILE), 'garbage\n{"key":"k1","path":"a.png"}\n{"key":1}\n');
    const journal = await Journal.open(dir);
    expect(journal.size).toBe(1);
    expect(journal.get('k1')).toBe('a.png');
  });
});
