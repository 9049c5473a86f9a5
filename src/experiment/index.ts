export type { ImageRef, RunEvent, RunEventType } from './events.js';
export { gridTitle } from './grids.js';
export {
  buildManifest,
  MANIFEST_VERSION,
  type Manifest,
  type ManifestGrid,
  type ManifestImage,
  type ManifestInput,
  manifestImage,
  type ResolvedConfig,
  type ResolvedStage2,
  writeManifest,
} from './manifest.js';
export {
  CODE_VERSION,
  canonicalJson,
  contentKey,
  type ImageCoordinates,
  type ImageSettings,
  imageSettings,
  type Job,
  type KeyVersion,
  type LoadedForSettings,
  type Plan,
  planExperiment,
  resolveSize,
  type Stage2Settings,
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
