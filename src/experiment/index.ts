export type { AblationSettings, ResolvedMix } from './ablation.js';
export { type CacheState, inspectCache } from './cache.js';
export type { EmbedsFile } from './embeds.js';
export {
  defaultOutDir,
  type EstimateOptions,
  estimateRun,
  evaluationsPerImage,
  passesPerStep,
  planRun,
  type RunEstimate,
  RunEstimateSchema,
  type StageEstimate,
} from './estimate.js';
export {
  DENOISER_SECONDS,
  FAMILY_FACTS,
  type FamilyFacts,
  GPU_SPEED,
  gpuKey,
  KNOWN_CHECKPOINTS,
  PNG_BYTES_PER_PIXEL,
  REFERENCE_GPU,
  TABLE_SCALE_RANGE,
  tableSeconds,
} from './estimate-tables.js';
export type { ImageRef, RunEvent, RunEventType } from './events.js';
export { optionValueText } from './family.js';
export { claimFolder, FolderConflictError } from './folder.js';
export { gridTitle } from './grids.js';
export { experimentImages, type ImageRecord } from './image-stream.js';
export { IMAGES_CSV_FILE, imagesCsv } from './images-csv.js';
export { FolderBusyError, LOCK_FILE } from './lock.js';
export {
  buildManifest,
  type LensedTokens,
  MANIFEST_VERSION,
  type Manifest,
  type ManifestGrid,
  type ManifestImage,
  type ManifestInput,
  type ManifestPrompt,
  manifestImage,
  type ResolvedConfig,
  type ResolvedStage2,
  type Truncation,
  type VariantTag,
  VariantTagSchema,
  writeManifest,
} from './manifest.js';
export { MergeError, type MergeOptions, type MergeResult, mergeShards } from './merge.js';
export { OutputFolderError } from './outdir.js';
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
export { type ImageReadout, imageReadout, type ReadoutSettings, readoutFor } from './readout.js';
export { buildWork, jobOfImage, type RequestItem, requestItems, type Work } from './request.js';
export { type RunOptions, type RunResult, runExperiment } from './runner.js';
export { describeChanges, diffSettings, type SettingChange, settingsId, variantName } from './settings.js';
export {
  checkShard,
  parseShard,
  SHARD_FILE,
  ShardError,
  type ShardRecord,
  ShardRecordSchema,
  type ShardSpec,
  selectShard,
  shardBatches,
} from './shard.js';
export {
  SlurmError,
  type SlurmFile,
  type SlurmOptions,
  type SlurmScripts,
  shellQuote,
  slurmJobName,
  slurmScripts,
  writeSlurmScripts,
} from './slurm.js';
export {
  gridPath,
  imagePath,
  JOURNAL_FILE,
  Journal,
  type JournalEntry,
  journalEntrySchema,
  MANIFEST_FILE,
  promptDirName,
  promptHash8,
  sha256Hex,
  slugify,
  writeFileAtomic,
} from './store.js';
export {
  expandSweep,
  runStudy,
  STUDY_FILE,
  STUDY_VERSION,
  type StudyEvent,
  type StudyOptions,
  type StudyRecord,
  StudyRecordSchema,
  type StudyResult,
  type StudyVariantRecord,
  StudyVariantRecordSchema,
  type SweepVariant,
} from './study.js';
