export type { ImageRef, RunEvent, RunEventType } from './events.js';
export {
  MANIFEST_VERSION,
  type Manifest,
  type ManifestImage,
  type ResolvedConfig,
  writeManifest,
} from './manifest.js';
export {
  CODE_VERSION,
  canonicalJson,
  contentKey,
  type ImageSettings,
  imageSettings,
  type Job,
  type KeyVersion,
  type Plan,
  planExperiment,
  resolveSize,
} from './plan.js';
export { type RunOptions, type RunResult, runExperiment } from './runner.js';
export {
  gridPath,
  imagePath,
  JOURNAL_FILE,
  Journal,
  type JournalEntry,
  MANIFEST_FILE,
  promptDirName,
  promptHash8,
  slugify,
  writeFileAtomic,
} from './store.js';
