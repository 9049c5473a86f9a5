export { parseCsv } from './csv.js';
export { ConfigError, type ConfigIssue, type FieldPath, formatIssue, formatPath } from './errors.js';
export {
  type LayerRange,
  type LayerSpec,
  layerAtDepth,
  layerDepth,
  parseLayerSpec,
  resolveLayers,
} from './layers.js';
export {
  type ConfigSource,
  configSource,
  issueAt,
  type Locator,
  loadConfigFile,
  locateField,
  nearest,
  type ParseConfigOptions,
  parseConfig,
} from './load.js';
export { readModelDepth, resolveHubCommit } from './model-info.js';
export {
  isLocalFile,
  isWeightFile,
  looksLikePath,
  resolveLocalPath,
  resolveModelId,
  SINGLE_FILE_SUFFIXES,
} from './model-path.js';
export {
  type LoadedPromptSet,
  loadPromptSets,
  PROMPT_SETS_FILE,
  type PromptSetIndex,
  type PromptSetQuestion,
  type PromptSetRow,
  type RenderedQuestion,
  renderQuestions,
} from './prompt-sets.js';
export {
  type LoadPromptsOptions,
  loadPromptSet,
  loadPrompts,
  type PromptSet,
  parsePromptCsv,
  parsePromptText,
  readPromptFile,
} from './prompts.js';
export {
  DEVICES,
  DTYPES,
  type ExperimentConfig,
  type ExperimentConfigInput,
  ExperimentConfigSchema,
  FAMILY_OPTION_SHORTCUTS,
  GRID_MIN_CELL,
  type GridConfig,
  type LayerSpecInput,
  type LensConfig,
  MAX_GUIDANCE,
  type ModelConfig,
  NOISE_MODES,
  type NoiseMode,
  OFFLOAD_MODES,
  type OffloadMode,
  POOLED_MODES,
  type PooledMode,
  type PromptFileSpec,
  resolveStages,
  type SamplerConfig,
  STAGES,
  type Stage,
  type Stage2Config,
  toJsonSchema,
  UNCOND_MODES,
  type UncondMode,
} from './schema.js';
