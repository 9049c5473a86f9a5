// Builds the tiny random-weight pipelines once per test run and hands their folders to the tests
// (inject('sdFixture'), inject('ifFixture'), ...: one per family, see ProvidedContext). The tests load
// them by path, through the same code as a hub id.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { findPython } from '../src/bridge/python.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Tiny StableDiffusionPipeline (CLIP with 5 layers, 32x32). */
    sdFixture: string;
    /** Tiny IFPipeline, stage I (T5 with 4 blocks, 16x16). */
    ifFixture: string;
    /** Tiny IFSuperResolutionPipeline, stage II (32x32). */
    ifSrFixture: string;
    /** Tiny PixArtAlphaPipeline (T5 with 3 blocks, 256x256 native). */
    pixartFixture: string;
    /** Tiny StableDiffusionXLPipeline (CLIPs with 3 and 5 layers, 32x32). */
    sdxlFixture: string;
    /** Tiny FluxPipeline (CLIP pooled, T5 with 3 blocks, 256x256 native). */
    fluxFixture: string;
    /** Tiny StableDiffusion3Pipeline (CLIPs with 3 and 4 layers, T5 with 3 blocks, 32x32). */
    sd3Fixture: string;
    /** Tiny SanaPipeline (Gemma-2 with 3 layers, 32x DC-AE, 512x512 native). */
    sanaFixture: string;
    /** Tiny CLIPModel with its processor (the clip scorer's model). */
    clipScorerFixture: string;
    /** Tiny BlipForQuestionAnswering with its processor (the vqa scorer's model). */
    blipVqaFixture: string;
  }
}

const run = promisify(execFile);

async function buildFixture(kind: string, out: string): Promise<string> {
  try {
    await run(findPython(), ['-m', 'diffusion_lens.fixtures', kind, out], {
      cwd: join(import.meta.dirname, '..', 'python'),
    });
  } catch (error) {
    const { stderr } = error as { stderr?: string };
    throw new Error(`building the ${kind} fixture failed:\n${stderr ?? String(error)}`);
  }
  return out;
}

export default async function setup(project: TestProject): Promise<() => void> {
  const dir = mkdtempSync(join(tmpdir(), 'dlens-fixture-'));
  // In parallel: most of each build is importing torch and diffusers.
  const [sd, tinyIf, tinyIfSr, pixart, sdxl, flux, sd3, sana, clipScorer, blipVqa] = await Promise.all([
    buildFixture('sd', join(dir, 'tiny-sd')),
    buildFixture('if', join(dir, 'tiny-if')),
    buildFixture('if-sr', join(dir, 'tiny-if-sr')),
    buildFixture('pixart', join(dir, 'tiny-pixart')),
    buildFixture('sdxl', join(dir, 'tiny-sdxl')),
    buildFixture('flux', join(dir, 'tiny-flux')),
    buildFixture('sd3', join(dir, 'tiny-sd3')),
    buildFixture('sana', join(dir, 'tiny-sana')),
    buildFixture('clip-scorer', join(dir, 'tiny-clip-scorer')),
    buildFixture('blip-vqa', join(dir, 'tiny-blip-vqa')),
  ]);
  project.provide('sdFixture', sd);
  project.provide('ifFixture', tinyIf);
  project.provide('ifSrFixture', tinyIfSr);
  project.provide('pixartFixture', pixart);
  project.provide('sdxlFixture', sdxl);
  project.provide('fluxFixture', flux);
  project.provide('sd3Fixture', sd3);
  project.provide('sanaFixture', sana);
  project.provide('clipScorerFixture', clipScorer);
  project.provide('blipVqaFixture', blipVqa);
  return () => rmSync(dir, { recursive: true, force: true });
}
