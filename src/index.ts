// diffusion-lens as a library: everything the CLI does, for scripted studies.
//
//   import { parseConfig, runExperiment } from 'diffusion-lens';
//   const config = parseConfig({ prompts: ['a red circle'], lens: { layers: '0:8:4' }, seeds: [0] });
//   const result = await runExperiment(config, { outDir: 'runs/circle', onEvent: console.log });

export {
  type DoneMessage,
  type GenerateRequest,
  type ImageMessage,
  LensWorker,
  type LoadedMessage,
  type LoadRequest,
  type ProgressMessage,
  type ReadyMessage,
  WorkerError,
  type WorkerOptions,
} from './bridge/index.js';
export {
  ConfigError,
  type ConfigIssue,
  type ExperimentConfig,
  type ExperimentConfigInput,
  ExperimentConfigSchema,
  type LayerSpec,
  loadConfigFile,
  loadPromptSet,
  loadPrompts,
  type PromptSet,
  parseConfig,
  parseLayerSpec,
  resolveLayers,
  resolveModelId,
  resolveStages,
  type Stage,
  type Stage2Config,
  toJsonSchema,
} from './config/index.js';
export { type DoctorProblem, type DoctorReport, runDoctor } from './doctor.js';
export {
  contentKey,
  defaultOutDir,
  type EstimateOptions,
  estimateRun,
  experimentImages,
  FolderBusyError,
  FolderConflictError,
  gridPath,
  type ImageRecord,
  type ImageSettings,
  imagePath,
  type Job,
  type Manifest,
  type ManifestGrid,
  type ManifestImage,
  type ManifestPrompt,
  OutputFolderError,
  type Plan,
  planExperiment,
  planRun,
  type RunEstimate,
  type RunEvent,
  type RunOptions,
  type RunResult,
  runExperiment,
  type Stage2Settings,
  slugify,
} from './experiment/index.js';
export { buildGrid, type GridOptions, gridLayout } from './render/index.js';
export { LENS_ALGORITHM_VERSION, TOOL_NAME, TOOL_VERSION } from './version.js';
