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
  sha256Hex,
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

const entry = (key: string, path: string, data = 'png') => ({
  key,
  path,
  sha256: sha256Hex(data),
  bytes: Buffer.byteLength(data),
  settings: 's1',
});

describe('Journal', () => {
  it('reuses an image only while the file at its path has the bytes recorded for its key', async () => {
    const dir = tempDir();
    const journal = await Journal.open(dir);
    expect(existsSync(join(dir, '.diffusion-lens'))).toBe(false);
    await writeFileAtomic(join(dir, 'images/a.png'), 'png');
    await journal.append(entry('k1', 'images/a.png'));
    await journal.append(entry('k2', 'images/b.png'));
    const again = await Journal.open(dir);
    expect(await again.verify('k1', dir, 'images/a.png')).toBe(true);
    expect(await again.verify('k2', dir, 'images/b.png')).toBe(false); // no file
    expect(await again.verify('k1', dir, 'images/other.png')).toBe(false); // another path
    expect(await again.verify('k3', dir, 'images/a.png')).toBe(false); // unknown key
    writeFileSync(join(dir, 'images/a.png'), 'pnG');
    expect(await again.verify('k1', dir, 'images/a.png')).toBe(false); // same size, other bytes
    writeFileSync(join(dir, 'images/a.png'), '');
    expect(await again.verify('k1', dir, 'images/a.png')).toBe(false); // emptied
  });

  it('a path written again by another key no longer serves the old key', async () => {
    const dir = tempDir();
    const journal = await Journal.open(dir);
    await writeFileAtomic(join(dir, 'a.png'), 'one');
    await journal.append(entry('k1', 'a.png', 'one'));
    await writeFileAtomic(join(dir, 'a.png'), 'two');
    await journal.append(entry('k2', 'a.png', 'two'));
    // Even if the old bytes came back, k1 is gone: its path belongs to k2 now.
    await writeFileAtomic(join(dir, 'a.png'), 'one');
    const reopened = await Journal.open(dir);
    expect(reopened.get('k1')).toBeUndefined();
    expect(await reopened.verify('k1', dir, 'a.png')).toBe(false);
    expect(reopened.atPath('a.png')?.key).toBe('k2');
  });

  it('ignores a torn last line and cuts it off before appending', async () => {
    const dir = tempDir();
    const journal = await Journal.open(dir);
    await journal.append(entry('k1', 'a.png'));
    appendFileSync(join(dir, JOURNAL_FILE), '{"key":"k2","pa');
    const reopened = await Journal.open(dir);
    expect(reopened.size).toBe(1);
    expect(reopened.get('k2')).toBeUndefined();
    await reopened.append(entry('k3', 'c.png'));
    const lines = readFileSync(join(dir, JOURNAL_FILE), 'utf8').split('\n');
    expect(lines.map((line) => (line ? JSON.parse(line).key : ''))).toEqual(['k1', 'k3', '']);
    expect((await Journal.open(dir)).size).toBe(2);
  });

  it('skips corrupt lines and lines of the old format (no hash), counting them', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, '.diffusion-lens'));
    writeFileSync(
      join(dir, JOURNAL_FILE),
      `garbage\n${JSON.stringify(entry('k1', 'a.png'))}\n{"key":1}\n{"key":"k0","path":"b.png"}\n`,
    );
    const journal = await Journal.open(dir);
    expect(journal.size).toBe(1);
    expect(journal.get('k1')?.path).toBe('a.png');
    expect(journal.skippedLines).toBe(3);
  });

  it('compacts to the entries kept', async () => {
    const dir = tempDir();
    const journal = await Journal.open(dir);
    await journal.append(entry('k1', 'a.png'));
    await journal.append(entry('k2', 'b.png'));
    await journal.compact((e) => e.key === 'k2');
    expect((await Journal.open(dir)).entries().map((e) => e.key)).toEqual(['k2']);
  });
});
