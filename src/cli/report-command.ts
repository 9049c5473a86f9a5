// `diffusion-lens report RUN_DIR [--compare DIR] [--out FILE]`: writes report.html.
import { isAbsolute, relative } from 'node:path';
import type { Command } from 'commander';
import { writeReport } from '../render/report/index.js';

export function addReportCommand(program: Command, setExitCode: (code: number) => void): void {
  program
    .command('report')
    .summary('write report.html for a run folder (or a study, or two runs side by side)')
    .description(
      'Write DIR/report.html: one self-contained page (open it from the file system, no server needed) ' +
        'with per prompt the layer x seed grid, a layer slider, filters by category, question and model, ' +
        'the results panel (per-layer accuracy, emergence layers) and a side-by-side comparison of two runs. ' +
        'DIR is a run folder, or a study folder (study.json) whose variants it shows. Images larger than ' +
        '256 px get thumbnails in <run>/report/thumbs/. To annotate, use `diffusion-lens serve`.',
    )
    .argument('<dir>', 'a run folder (with manifest.json) or a study folder (with study.json)')
    .option('--compare <dir>', 'another run or study folder, shown beside it (the Compare tab)')
    .option(
      '-o, --out <file>',
      'where to write the page (default: DIR/report.html); image paths are relative to it',
    )
    .action(async (dir: string, options: { compare?: string; out?: string }) => {
      const result = await writeReport(dir, {
        compare: options.compare,
        out: options.out,
        onThumbProgress: (done, total) => {
          if (process.stderr.isTTY && (done === total || done % 50 === 0)) {
            process.stderr.write(`\rthumbnails ${done}/${total}${done === total ? '\n' : ''}`);
          }
        },
      });
      for (const why of result.skipped.slice(0, 10))
        process.stderr.write(`warning: image left out: ${why}\n`);
      if (result.skipped.length > 10)
        process.stderr.write(`warning: ${result.skipped.length - 10} more images left out\n`);
      if (result.thumbs.failed > 0) {
        process.stderr.write(
          `warning: ${result.thumbs.failed} images could not be read (missing?): shown as placeholders\n`,
        );
      }
      const thumbs = result.thumbs.made + result.thumbs.reused;
      const shown = relative(process.cwd(), result.path);
      process.stdout.write(
        `report: ${shown.startsWith('..') || isAbsolute(shown) ? result.path : shown} (${result.runs.length} run${result.runs.length === 1 ? '' : 's'}, ` +
          `${result.images} images${thumbs > 0 ? `, ${result.thumbs.made} thumbnails made, ${result.thumbs.reused} reused` : ''})\n`,
      );
      setExitCode(0);
    });
}
