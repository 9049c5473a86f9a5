#!/usr/bin/env node
// The README's screenshots of the report and of annotation mode, from the demo's run folder (out/demo;
// made first with `npm run demo` when missing), in headless Chromium (/usr/bin/chromium, or
// CHROMIUM_PATH): docs/images/report.png and docs/images/annotate.png. Works on a copy of the folder, so
// the demo gets no report or annotations from it. Needs `npm run build`.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { startReportServer, writeReport } from '../dist/index.js';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const demo = join(root, 'out', 'demo');
const images = join(root, 'docs', 'images');
if (!existsSync(join(demo, 'manifest.json'))) {
  execFileSync(process.execPath, [join(root, 'scripts', 'demo.mjs')], { stdio: 'inherit' });
}
const work = mkdtempSync(join(tmpdir(), 'dlens-screenshots-'));
const run = join(work, 'demo');
cpSync(demo, run, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-sync',
    '--hide-scrollbars',
  ],
});
const server = await startReportServer({ dir: run });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });

  // The report: the demo's unseen combination, half way through the encoder.
  const { path } = await writeReport(run);
  await page.goto(`${pathToFileURL(path).href}#grids`);
  await page.waitForSelector('body[data-ready="1"]');
  await page.fill('.filter-text', 'diamonds');
  await page.waitForFunction(() => document.querySelectorAll('.card').length === 1);
  const card = page.locator('.card').first();
  const slider = card.locator('.layer-slider');
  await slider.focus();
  const half = Math.ceil(Number(await slider.getAttribute('max')) / 2);
  for (let i = 0; i < half; i++) await page.keyboard.press('ArrowLeft');
  await slider.blur();
  await page.waitForFunction(() =>
    [...document.querySelectorAll('img')].every((img) => img.complete && img.naturalWidth > 0),
  );
  await page.screenshot({ path: join(images, 'report.png') });

  // Annotation mode: a first answer given, the next image waiting with its question.
  await page.goto(`${server.url}#annotate`);
  await page.waitForSelector('body[data-ready="1"]');
  await page.fill('.annotator-name', 'alice');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.annotate-image img');
  await page.keyboard.press('y');
  await page.keyboard.press('l');
  await page.waitForFunction(() => document.body.dataset.pending === '0');
  await page.waitForFunction(() => document.querySelector('.annotate-image img')?.complete);
  await page.screenshot({ path: join(images, 'annotate.png') });
  console.log(`wrote ${join('docs', 'images', 'report.png')} and ${join('docs', 'images', 'annotate.png')}`);
} finally {
  await server.close();
  await browser.close();
  rmSync(work, { recursive: true, force: true });
}
