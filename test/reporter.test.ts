// How run events read: notices are warnings on every kind of output; stage II shows in load and plan lines.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createReporter, describeEvent, layerLabel } from '../src/cli/reporter.js';
import type { RunEvent } from '../src/experiment/index.js';
import { noTimings } from '../src/experiment/timings.js';

function sink(): { stream: NodeJS.WritableStream; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      text += String(chunk);
      callback();
    },
  });
  return { stream, text: () => text };
}

const notice: RunEvent = {
  type: 'notice',
  message: 'caption cleaning is off: beautifulsoup4 and ftfy are not installed',
};

describe('describeEvent', () => {
  it('shows a notice as a warning', () => {
    expect(describeEvent(notice)).toBe(
      'warning: caption cleaning is off: beautifulsoup4 and ftfy are not installed',
    );
  });

  it("names stage II and the family's resolved options when a model has them", () => {
    const loaded: RunEvent = {
      type: 'model-loaded',
      model: 'DeepFloyd/IF-I-XL-v1.0',
      family: 'if',
      pipeline_class: 'IFPipeline',
      revision: 'abc',
      num_layers: 24,
      device: 'cuda',
      dtype: 'fp16',
      family_options: { clean_caption: false },
      stage2: {
        model: 'DeepFloyd/IF-II-L-v1.0',
        pipeline_class: 'IFSuperResolutionPipeline',
        revision: 'def',
      },
    };
    expect(describeEvent(loaded)).toBe(
      'loaded DeepFloyd/IF-I-XL-v1.0 (IFPipeline, family if, 24 encoder layers, cuda fp16, clean_caption false); ' +
        'stage II DeepFloyd/IF-II-L-v1.0 (IFSuperResolutionPipeline)',
    );
    expect(describeEvent({ ...loaded, family: 'sd', family_options: {}, stage2: null })).not.toMatch(
      /caption|stage II/,
    );
  });

  it('says how many images a failed run keeps and that rerunning resumes; nothing when it kept none', () => {
    const done = {
      type: 'done',
      complete: false,
      aborted: false,
      manifest: '/runs/x/manifest.json',
      images_generated: 1,
      images_skipped: 3,
      seconds: 2,
      timings: noTimings(),
    } as const;
    expect(describeEvent(done)).toBe(
      'incomplete: 1 image made, 3 already on disk; they are kept, and running the same command again ' +
        'resumes (/runs/x/manifest.json)',
    );
    expect(describeEvent({ ...done, images_generated: 0, images_skipped: 0, manifest: null })).toBeNull();
    expect(describeEvent({ ...done, complete: true })).toMatch(/^done: 1 image made, 3 already on disk/);
    expect(describeEvent({ ...done, aborted: true, images_generated: 2 })).toMatch(/^stopped: 2 images made/);
  });

  it('labels the progress bar with the layers being denoised', () => {
    expect(layerLabel([])).toBe('starting');
    expect(layerLabel([4])).toBe('layer 4');
    expect(layerLabel([8, 0, 4])).toBe('layers 0-8');
  });

  it('counts both stages in the plan line', () => {
    const plan: RunEvent = {
      type: 'plan',
      out_dir: '/runs/if',
      total: 112,
      skipped: 0,
      todo: 112,
      prompts: 2,
      layers: [0, 4, 8, 12, 16, 20, 24],
      seeds: [0, 1, 2, 3],
      stages: [1, 2],
      height: 64,
      width: 64,
      stage2: { height: 256, width: 256, steps: 50 },
    };
    expect(describeEvent(plan)).toBe(
      'plan: 112 images (2 prompts x 7 layers x 4 seeds x 2 stages, 64x64, stage II 256x256); 0 on disk, 112 to make',
    );
    expect(describeEvent({ ...plan, total: 56, todo: 56, stages: [1], stage2: null })).toBe(
      'plan: 56 images (2 prompts x 7 layers x 4 seeds, 64x64); 0 on disk, 56 to make',
    );
  });
});

describe('createReporter', () => {
  it('prints notices on stderr in plain mode', () => {
    const out = sink();
    const err = sink();
    createReporter('plain', { out: out.stream, err: err.stream }).onEvent(notice);
    expect(err.text()).toBe(`${describeEvent(notice)}\n`);
    expect(out.text()).toBe('');
  });

  it('prints notices as JSON on stdout and as a warning on stderr in JSON mode', () => {
    const out = sink();
    const err = sink();
    createReporter('json', { out: out.stream, err: err.stream }).onEvent(notice);
    expect(JSON.parse(out.text())).toEqual(notice);
    expect(err.text()).toMatch(/^warning: caption cleaning is off/);
  });
});
