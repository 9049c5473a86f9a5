// report.html without a browser: the page's data from run folders (hand-written here), escaping, the
// content security policy, thumbnails, study folders and comparisons, and the errors for folders that
// are not runs.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { appendAnnotation } from '../src/eval/index.js';
import {
  DATA_ELEMENT_ID,
  jsonForScript,
  type ReportData,
  ReportDataSchema,
  readReportSource,
  renderReport,
  safeRelativePath,
  thumbPath,
  writeReport,
} from '../src/render/report/index.js';
import { writeFakeRun } from './report-fixtures.js';
import { tempDirs } from './temp-dirs.js';

const tempDir = tempDirs('dlens-report-');
const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');

beforeAll(async () => {
  if (!existsSync(join(root, 'dist', 'report-client', 'report.js')) || !existsSync(cli)) {
    await execa('npm', ['run', 'build'], { cwd: root });
  }
});

/** The page's data, read back from the HTML as the browser reads it. */
function pageData(html: string): ReportData {
  const match = new RegExp(
    `<script type="application/json" id="${DATA_ELEMENT_ID}">(.*?)</script>`,
    's',
  ).exec(html);
  if (!match?.[1]) throw new Error('no data element');
  return ReportDataSchema.parse(JSON.parse(match[1]));
}

describe('report data', () => {
  it('lists every image, layer and question of a run, with answer counts', async () => {
    const dir = tempDir();
    const manifest = await writeFakeRun(dir, {
      prompts: ['a cat', 'a dog'],
      columns: [{ class: 'feline' }, { class: 'canine' }],
      questions: [
        [{ id: 'animal_correct', text: 'Is it a cat?' }],
        [{ id: 'animal_correct', text: 'Is it a dog?' }],
      ],
      promptSet: { id: 'animals', category: 'animals' },
    });
    const image = manifest.images[3];
    if (!image) throw new Error('no image');
    for (const annotator of ['alice', 'bob']) {
      await appendAnnotation(dir, annotator, {
        key: image.key,
        prompt: image.prompt,
        layer: image.layer,
        seed: image.seed,
        stage: 1,
        question: 'animal_correct',
        answer: annotator === 'alice' ? 1 : 0,
      });
    }
    const result = await writeReport(dir, { results: { plots: [], tables: [], note: null } });
    expect(result.path).toBe(join(dir, 'report.html'));
    const data = pageData(readFileSync(result.path, 'utf8'));
    expect(data.mode).toBe('static');
    const [run] = data.runs;
    expect(run?.base).toBe('');
    expect(run?.images).toHaveLength(2 * 5 * 2);
    expect(run?.layers.map((l) => l.label)).toEqual([
      'L0 · 0%',
      'L1 · 25%',
      'L2 · 50%',
      'L3 · 75%',
      'L4 (final)',
    ]);
    expect(run?.prompts[1]).toMatchObject({ prompt: 'a dog', columns: { class: 'canine' } });
    expect(run?.prompts[1]?.questions[0]?.text).toBe('Is it a dog?');
    expect(run?.prompt_set).toEqual({ id: 'animals', category: 'animals' });
    expect(run?.pixelated).toBe(true);
    expect(run?.annotations.annotators).toEqual(['alice', 'bob']);
    expect(run?.annotations.counts[image.key]).toEqual({ animal_correct: [1, 1] });
    expect(run?.images.every((i) => i.th === null)).toBe(true); // 32 px images need no thumbnails
  });

  it('escapes the data so that no prompt can end its script element', async () => {
    const dir = tempDir();
    const evil = '</script><script>alert(1)</script><!-- <img src=x onerror=alert(2)> & \u2028';
    await writeFakeRun(dir, { prompts: [evil], layers: [0, 4], seeds: [0] });
    const { html, csp } = await renderReport((await readReportSource(dir)).runs, { mode: 'static' });
    expect(html).not.toContain('<script>alert');
    expect(html).not.toContain('<img src=x');
    expect(html.match(/<script/g)).toHaveLength(2); // the data element and the app, nothing else
    expect(pageData(html).runs[0]?.prompts[0]?.prompt).toBe(evil);
    expect(jsonForScript({ a: '</script>' })).toBe('{"a":"\\u003c/script\\u003e"}');
    // The policy allows exactly the inlined script and styles.
    const script = /<script>(.*)<\/script>\n<\/body>/s.exec(html)?.[1] ?? '';
    const hash = createHash('sha256').update(script).digest('base64');
    expect(csp).toContain(`script-src 'sha256-${hash}'`);
    expect(csp).toContain("default-src 'none'");
    expect(html).toContain('http-equiv="Content-Security-Policy"');
  });

  it('makes thumbnails of large images once, and leaves out paths outside the folder', async () => {
    const dir = tempDir();
    const manifest = await writeFakeRun(dir, {
      prompts: ['a big picture'],
      layers: [0, 1],
      seeds: [0],
      size: 300,
    });
    const first = manifest.images[0];
    if (!first) throw new Error('no image');
    manifest.images.push({ ...first, key: 'evil', path: '../../etc/passwd' });
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
    const made = await writeReport(dir);
    expect(made.thumbs).toEqual({ made: 2, reused: 0, failed: 0 });
    expect(existsSync(join(dir, thumbPath(first.key)))).toBe(true);
    expect(made.skipped).toEqual(['fake-run: "../../etc/passwd": not a path inside the run folder']);
    const data = pageData(readFileSync(made.path, 'utf8'));
    expect(data.runs[0]?.images.map((i) => i.th)).toEqual(
      manifest.images.slice(0, 2).map((i) => thumbPath(i.key)),
    );
    expect(data.runs[0]?.pixelated).toBe(false);
    expect((await writeReport(dir)).thumbs).toEqual({ made: 0, reused: 2, failed: 0 });
  });

  it('reads a study folder as its variants, and adds a run to compare with paths relative to the page', async () => {
    const study = tempDir();
    mkdirSync(join(study, 'guidance-3'));
    mkdirSync(join(study, 'guidance-7'));
    await writeFakeRun(join(study, 'guidance-3'), { name: 'guidance-3' });
    await writeFakeRun(join(study, 'guidance-7'), { name: 'guidance-7' });
    const variant = (name: string, ran: boolean) => ({
      name,
      values: { 'sampler.guidance': Number(name.slice(-1)) },
      folder: name,
      manifest: ran ? `${name}/manifest.json` : null,
      complete: ran,
      images_generated: 0,
      images_skipped: 0,
      images_shared: 0,
      shared_from: [],
    });
    writeFileSync(
      join(study, 'study.json'),
      JSON.stringify({
        version: 1,
        name: 'guidance-study',
        complete: false,
        sweep: { 'sampler.guidance': [3, 7, 9] },
        variants: [variant('guidance-3', true), variant('guidance-7', true), variant('guidance-9', false)],
      }),
    );
    const other = tempDir();
    await writeFakeRun(other, { name: 'other run', prompts: ['a red circle'] });
    const result = await writeReport(study, { compare: other });
    const data = pageData(readFileSync(result.path, 'utf8'));
    expect(data.runs.map((r) => [r.label, r.base])).toEqual([
      ['guidance-3', 'guidance-3/'],
      ['guidance-7', 'guidance-7/'],
      ['other run', `../${other.split('/').at(-1)}/`],
    ]);
    expect(data.title).toBe('guidance-3 vs guidance-7 vs other run');
    // Without a comparison the study's name is the title.
    expect(pageData(readFileSync((await writeReport(study)).path, 'utf8')).title).toBe('guidance-study');
  });

  it('says what is wrong with a folder that is not a run', async () => {
    const empty = tempDir();
    await expect(writeReport(empty)).rejects.toThrow(/has no manifest\.json: not a run folder/);
    await expect(writeReport(join(empty, 'missing'))).rejects.toThrow(/does not exist/);
    writeFileSync(join(empty, 'manifest.json'), '{"version": 1}');
    await expect(writeReport(empty)).rejects.toThrow(/is not a manifest this version reads: config/);
    writeFileSync(join(empty, 'manifest.json'), '{');
    await expect(writeReport(empty)).rejects.toThrow(/is not valid JSON/);
  });

  it('report on the command line: the page written, or what is wrong (exit 1)', async () => {
    const dir = tempDir();
    await writeFakeRun(dir);
    const ok = await execa('node', [cli, 'report', dir, '--out', join(dir, 'page.html')], { reject: false });
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stdout).toBe(`report: ${join(dir, 'page.html')} (1 run, 20 images)\n`.trimEnd());
    expect(existsSync(join(dir, 'page.html'))).toBe(true);
    const empty = tempDir();
    const bad = await execa('node', [cli, 'report', empty], { reject: false });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toBe(
      `error: ${empty} has no manifest.json: not a run folder (diffusion-lens lens/run writes one, at the end of a run and when a run stops early)`,
    );
  });

  it('accepts only relative paths that stay inside', () => {
    expect(safeRelativePath('images/a/L0-s0.png')).toBe('images/a/L0-s0.png');
    for (const bad of ['../x.png', 'images/../../x', '/etc/passwd', 'a//b', 'a\\..\\b', 'C:/x', './a', '']) {
      expect(safeRelativePath(bad)).toBeNull();
    }
  });
});
