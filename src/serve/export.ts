// An annotator's answers in the paper's CSV layout (src/eval/paper-csv.ts): one file per question (and
// stage), `prompt,<layer columns>,seed`, 1 = yes, 0 = no, empty = not answered.
import {
  annotationLabels,
  type PaperCsvFile,
  paperCsvFiles,
  readAnnotations,
  readRunManifest,
  runLabelContext,
} from '../eval/index.js';

/** The annotator's paper-layout files for a run folder. */
export async function annotatorCsvFiles(dir: string, annotator: string): Promise<PaperCsvFile[]> {
  const manifest = await readRunManifest(dir);
  const { labels } = annotationLabels(runLabelContext(manifest), [await readAnnotations(dir, annotator)]);
  return paperCsvFiles(labels);
}
