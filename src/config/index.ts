export { parseCsv } from './csv.js';
export { ConfigError, type ConfigIssue, type FieldPath, formatIssue, formatPath } from './errors.js';
export { type LayerRange, type LayerSpec, parseLayerSpec, resolveLayers } from './layers.js';
export {
  type ConfigSource,
  configSource,
  type Locator,
  loadConfigFile,
  locateField,
  type ParseConfigOptions,
  parseConfig,
} from './load.js';
export { looksLikePath, resolveModelId } from './model-path.js';
export {
  type LoadPromptsOptions,
  loadPrompts,
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
  FAMILIES,
  type LayerSpecInput,
  type LensConfig,
  type ModelConfig,
  NOISE_MODES,
  type NoiseMode,
  OFFLOAD_MODES,
  type OffloadMode,
  type PromptFileSpec,
  resolveStages,
  type SamplerConfig,
  SCHEDULERS,
  type SchedulerName,
  STAGES,
  type Stage,
  type Stage2Config,
  toJsonSchema,
  UNCOND_MODES,
  type UncondMode,
} from './schema.js';
