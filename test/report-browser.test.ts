// The report in a real browser (headless Chromium, playwright-core): it loads from file:// and from
// `serve` without a console error, its slider changes the layer shown, a prompt holding markup is shown
// as text and never runs, annotation keystrokes reach the annotator's file and the paper-layout export
// and survive a reload; and `report` works on a run the CLI made with the real worker (tiny SD fixture).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { readAnnotations } from '../src/eval/index.js';
import { writeReport } from '../src/render/report/index.js';
import { type ReportServer, startReportServer } from '../src/serve/index.js';
import { launchChromium, watchedPage } from './browser.js';
import { writeFakeRun } from './report-fixtures.js';
import { tempDirs } from './temp-dirs.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const tempDir = tempDirs('dlens-browser-');
const EVIL =
  '<script>window.__pwned = 1; alert(1)</script><img src=x onerror="window.__pwned = 2; alert(2)">';
const NO_RESULTS = async () => ({ plots: [], tables: [], note: null });

let browser: Browser;

beforeAll(async () => {
  if (!existsSync(join(root, 'dist', 'report-client', 'report.js'))) {
    await execa('npm', ['run', 'build'], { cwd: root });
  }
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
});

async function ready(page: Page): Promise<void> {
  await page.waitForSelector('body[data-ready="1"]');
}

/** Every eagerly loaded image of the page decoded (none broken). */
async function imagesLoaded(page: Page, selector: string): Promise<number> {
  await page.waitForFunction(
    (s) => [...document.querySelectorAll<HTMLImageElement>(s)].every((img) => img.complete),
    selector,
  );
  return page.$$eval(
    selector,
    (imgs) => (imgs as HTMLImageElement[]).filter((img) => img.naturalWidth > 0).length,
  );
}

/** The markup did not run and made no element. */
async function expectInert(page: Page): Promise<void> {
  expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
  expect(await page.locator('img[src="x"]').count()).toBe(0);
  expect(await page.locator('main script').count()).toBe(0);
}

describe('report.html from file://', () => {
  let runDir = '';

  beforeAll(async () => {
    runDir = tempDir();
    await writeFakeRun(runDir, {
      prompts: ['a red circle', EVIL],
      numLayers: 4,
      seeds: [0, 1, 2],
      columns: [{ category: 'shapes' }, { category: 'attacks' }],
    });
    await writeReport(runDir, { results: await NO_RESULTS() });
  });

  it('loads with no console error and shows every image', async () => {
    const { page, problems } = await watchedPage(browser);
    await page.goto(pathToFileURL(join(runDir, 'report.html')).href);
    await ready(page);
    expect(await page.locator('.card').count()).toBe(2);
    expect(await imagesLoaded(page, '.focus-img')).toBe(6);
    await page.locator('.card').nth(1).scrollIntoViewIfNeeded();
    expect(await imagesLoaded(page, '.cell')).toBeGreaterThan(0);
    for (const view of ['compare', 'results', 'annotate']) {
      await page.click(`a.tab[data-view="${view}"]`);
      await page.waitForSelector(`body[data-view="${view}"]`);
    }
    expect(await page.locator('.results-view').textContent()).toContain('No annotations or scores yet');
    expect(problems).toEqual([]);
    await page.close();
  });

  it('the slider changes the layer shown', async () => {
    const { page, problems } = await watchedPage(browser);
    await page.goto(pathToFileURL(join(runDir, 'report.html')).href);
    await ready(page);
    const card = page.locator('.card').first();
    const shown = () => card.locator('.focus-img').first().getAttribute('data-layer');
    expect(await shown()).toBe('4'); // the final layer first
    await card.locator('.layer-slider').focus();
    await page.keyboard.press('ArrowLeft');
    expect(await shown()).toBe('3');
    expect(await card.locator('.layer-label').textContent()).toBe('L3 · 75%');
    expect(await card.locator('.focus-img').first().getAttribute('src')).toMatch(/L3-s0\.png$/);
    expect(await card.locator('tr.selected').getAttribute('data-layer')).toBe('3');
    await page.keyboard.press('Home');
    expect(await shown()).toBe('0');
    // The toolbar's slider moves every card.
    await page.locator('.global-slider').focus();
    await page.keyboard.press('End');
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('ArrowLeft');
    const firstImages = page.locator('.card .focus-row figure:first-child .focus-img');
    expect(await firstImages.evaluateAll((imgs) => imgs.map((i) => i.getAttribute('data-layer')))).toEqual([
      '2',
      '2',
    ]);
    // The category filter.
    await page.selectOption('.filter-category', { label: 'shapes' });
    expect(await page.locator('.card').count()).toBe(1);
    expect(problems).toEqual([]);
    await page.close();
  });

  it('shows a prompt holding markup as text, and runs none of it', async () => {
    const { page, problems } = await watchedPage(browser);
    await page.goto(pathToFileURL(join(runDir, 'report.html')).href);
    await ready(page);
    expect(await page.locator('.card .prompt').nth(1).textContent()).toBe(EVIL);
    await page.waitForTimeout(200);
    await expectInert(page);
    expect(problems).toEqual([]);
    await page.close();
  });
});

describe('a 10,000-image run', () => {
  it('opens at once: cards are made as they scroll into view', async () => {
    const runDir = tempDir();
    const prompts = Array.from({ length: 250 }, (_, i) => `prompt number ${i}`);
    await writeFakeRun(runDir, { prompts, numLayers: 9, seeds: [0, 1, 2, 3], size: 16 });
    const started = Date.now();
    const { images } = await writeReport(runDir, { results: await NO_RESULTS() });
    expect(images).toBe(10_000);
    const written = Date.now() - started;
    const { page, problems } = await watchedPage(browser);
    const opened = Date.now();
    await page.goto(pathToFileURL(join(runDir, 'report.html')).href);
    await ready(page);
    const shown = Date.now() - opened;
    const initial = await page.locator('.card').count();
    expect(initial).toBeLessThanOrEqual(16);
    expect(await page.locator('.count').first().textContent()).toBe('250 prompts, 250 grids, 10000 cells');
    // Scrolling down renders more; a filter answers at once.
    await page.locator('.card').last().scrollIntoViewIfNeeded();
    await page.waitForFunction((n) => document.querySelectorAll('.card').length > n, initial);
    await page.fill('.filter-text', 'number 249');
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 1);
    expect(problems).toEqual([]);
    console.log(`10,000 images: report written in ${written} ms, page ready in ${shown} ms`);
    expect(shown).toBeLessThan(10_000);
    await page.close();
  });
});

describe('serve: annotation mode', () => {
  let runDir = '';
  let server: ReportServer;

  beforeAll(async () => {
    runDir = tempDir();
    await writeFakeRun(runDir, {
      prompts: [EVIL, 'a dog'],
      numLayers: 2,
      seeds: [0],
      questions: [
        [
          { id: 'first_object', text: 'Is there a circle?' },
          { id: 'relation', text: 'Is it <b>left</b> of the square?' },
        ],
        [{ id: 'animal_correct', text: 'Is it a dog?' }],
      ],
    });
    server = await startReportServer({ dir: runDir, results: NO_RESULTS });
  });

  afterAll(async () => {
    await server?.close();
  });

  it('saves each keystroke at once, exports it, and survives a reload', async () => {
    const { page, problems } = await watchedPage(browser);
    await page.goto(`${server.url}#annotate`);
    await ready(page);
    await page.fill('.annotator-name', 'alice');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.annotate-image img');
    expect(await page.locator('.annotate-side .prompt').textContent()).toBe(EVIL);
    expect(await page.locator('.annotate-questions li').nth(1).textContent()).toContain('<b>left</b>');
    await expectInert(page);
    // Image 1: yes, no. Image 2: no, then take it back and answer yes, then no. Image 3: skipped.
    for (const key of ['y', 'n', 'n', 'u', 'y', 'n', 's']) await page.keyboard.press(key);
    await page.waitForFunction(() => document.body.dataset.pending === '0');
    const stored = await readAnnotations(runDir, 'alice');
    expect(stored.history.map((a) => [a.question, a.answer])).toEqual([
      ['first_object', 1],
      ['relation', 0],
      ['first_object', 0],
      ['first_object', null],
      ['first_object', 1],
      ['relation', 0],
    ]);
    const [first, second] = [stored.history[0], stored.history[4]];
    expect(first?.key).not.toBe(second?.key);
    expect(await page.locator('.progress-text').textContent()).toMatch(/^2 \/ 6 images · 4 \/ 9 answers/);

    // The export, in the paper's layout.
    await page.click('.exports summary');
    const link = page.locator('.export-link').filter({ hasText: 'first_object' });
    const csv = await page.evaluate(
      async (href) => (await fetch(href)).text(),
      (await link.getAttribute('href')) ?? '',
    );
    // One row per (prompt, seed), a column per layer answered: both first_object answers were yes.
    const rows = csv.trim().split('\n');
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatch(/^prompt,\d,\d,seed$/);
    expect(rows[1]).toBe(`"${EVIL.replaceAll('"', '""')}",1,1,0`);

    // Reload: the name is remembered, the answers are there, and the next image is one not yet done.
    await page.reload();
    await ready(page);
    await page.waitForSelector('.annotate-image img');
    expect(await page.locator('.annotator').textContent()).toBe('alice');
    expect(await page.locator('.progress-text').textContent()).toMatch(/^2 \/ 6 images · 4 \/ 9 answers/);
    const shownKey = await page.locator('.annotate-image img').getAttribute('data-key');
    expect([first?.key, second?.key]).not.toContain(shownKey);
    await page.keyboard.press('y');
    await page.waitForFunction(() => document.body.dataset.pending === '0');
    expect((await readAnnotations(runDir, 'alice')).history).toHaveLength(7);
    expect(problems).toEqual([]);
    await page.close();
  });

  it('serves the grids with no console error, the markup as text', async () => {
    const { page, problems } = await watchedPage(browser);
    await page.goto(server.url);
    await ready(page);
    expect(await imagesLoaded(page, '.focus-img')).toBe(2);
    expect(await page.locator('.card .prompt').first().textContent()).toBe(EVIL);
    await expectInert(page);
    expect(problems).toEqual([]);
    await page.close();
  });
});

describe('report on a run the CLI made', () => {
  it('writes a page that loads every image of a real run', async () => {
    const out = join(tempDir(), 'run');
    mkdirSync(out);
    const run = await execa(
      'node',
      [
        cli,
        'lens',
        'a red apple',
        '--model',
        inject('sdFixture'),
        '--layers',
        '1,3,5',
        '--seeds',
        '0,1',
        '--steps',
        '2',
        '--out',
        out,
      ],
      { reject: false, cwd: root },
    );
    expect(run.exitCode, run.stderr).toBe(0);
    const report = await execa('node', [cli, 'report', out], { reject: false, cwd: root });
    expect(report.exitCode, report.stderr).toBe(0);
    expect(report.stdout).toMatch(/report: .*report\.html \(1 run, 6 images\)/);
    expect(readFileSync(join(out, 'report.html'), 'utf8')).toContain('a red apple');
    const { page, problems } = await watchedPage(browser);
    await page.goto(pathToFileURL(join(out, 'report.html')).href);
    await ready(page);
    expect(await imagesLoaded(page, '.focus-img')).toBe(2);
    expect(await imagesLoaded(page, '.cell')).toBe(6);
    expect(problems).toEqual([]);
    await page.close();
  });
});
