// A run's inputs, resolved and checked before any process starts or file is written: the prompts (with
// their prompt-file columns), the model ids, the stages, the layers (and lens.mix's) as far as the
// checkpoint's config files tell its depth, the load request, the checkpoints' fingerprints, and the
// lens.embeds file.
import type { LoadRequest } from '../bridge/index.js';
import {
  ConfigError,
  configSource,
  type ExperimentConfig,
  type FieldPath,
  isLocalFile,
  loadPromptSet,
  type PromptSet,
  type RemoteWorker,
  readModelDepth,
  resolveLocalPath,
  resolveModelId,
  resolveStages,
  type Stage,
} from '../config/index.js';
import { runLayers } from './ablation.js';
import { type EmbedsFile, resolveEmbeds } from './embeds.js';
import { configuredOptions } from './family.js';
import { type Fingerprints, localFingerprint, modelFingerprint } from './resolution.js';
import { slugify } from './store.js';

export interface RunInputs {
  name: string;
  promptSet: PromptSet;
  modelId: string;
  stage2ModelId: string | undefined;
  stages: Stage[];
  load: LoadRequest;
  /** What is being loaded, for messages. */
  loading: string;
  fingerprints: Fingerprints;
  /** The layers of the config against a depth L (and the stock layer, default L): lens.layers, or with
   *  lens.mix its first layer; a ConfigError located at `lens.layers` (or `lens.mix`) if one is bad. */
  layersFor: (numLayers: number, stockLayer?: number) => number[];
  /** The lens.embeds file, checked against the prompts and hashed; null without one. */
  embeds: EmbedsFile | null;
  /** runtime.remote, its keys folders resolved against the config's folder. */
  remote: RemoteWorker[];
}

export async function resolveInputs(
  config: ExperimentConfig,
  options: { configDir?: string; env?: NodeJS.ProcessEnv },
): Promise<RunInputs> {
  const source = configSource(config);
  const configDir = options.configDir ?? source?.dir ?? process.cwd();
  const env = options.env ?? process.env;
  const locate = (path: FieldPath) => source?.locate?.(path) ?? {};

  const promptSet = await loadPromptSet(config.prompts, { configDir, locate });
  const modelId = resolveModelId(config.model.id, configDir, locate(['model', 'id']), ['model', 'id'], true);
  const singleFile = isLocalFile(modelId);
  const configField = ['model', 'config'];
  const modelConfig =
    config.model.config === undefined
      ? null
      : resolveModelId(config.model.config, configDir, locate(configField), configField);
  if (modelConfig !== null && !singleFile) {
    throw new ConfigError({
      path: configField,
      ...locate(configField),
      message: `is for a single-file model.id; ${modelId} is a diffusers checkpoint with its own configuration`,
    });
  }
  const loras = (config.model.lora ?? []).map(({ path, scale }, index) => {
    const field = ['model', 'lora', index];
    return { path: resolveLocalPath(path, configDir, locate(field), field), scale };
  });
  const stages = resolveStages(config);
  let stage2ModelId: string | undefined;
  if (stages.includes(2)) {
    // parseConfig guarantees it; a hand-built config might not have it.
    if (config.stage2.model === undefined) {
      throw new ConfigError({
        path: ['stage2', 'model'],
        ...locate(['stage2', 'model']),
        message: 'is required when stages include 2',
      });
    }
    const field = ['stage2', 'model'];
    stage2ModelId = resolveModelId(config.stage2.model, configDir, locate(field), field);
  }
  const layersFor = (numLayers: number, stockLayer = numLayers): number[] => {
    try {
      return runLayers(config, { numLayers, stockLayer });
    } catch (error) {
      if (error instanceof ConfigError) {
        throw new ConfigError(
          error.issues.map((issue) =>
            issue.file === undefined ? { ...issue, ...locate(issue.path) } : issue,
          ),
        );
      }
      throw error;
    }
  };
  const revision = config.model.revision ?? null;
  // The depth, when the config files tell it, catches a bad layer before anything starts (a single
  // file's are its configuration's).
  const knownDepth = await readModelDepth(modelConfig ?? modelId, revision, env);
  if (knownDepth !== null) layersFor(knownDepth);
  const stage2Revision = config.stage2.revision ?? null;
  const embeds = await resolveEmbeds(config, configDir, promptSet.prompts);
  return {
    name: config.name ?? slugify(promptSet.prompts[0] ?? 'run'),
    promptSet,
    modelId,
    stage2ModelId,
    stages,
    load: {
      model: modelId,
      family: config.model.family === 'auto' ? null : config.model.family,
      dtype: config.model.dtype,
      device: config.model.device,
      revision,
      offload: config.model.offload,
      stage2: stage2ModelId === undefined ? null : { model: stage2ModelId, revision: stage2Revision },
      allow_pickle: config.model.allow_pickle,
      variant: config.model.variant ?? null,
      family_options: configuredOptions(config, 'load').values,
      config: modelConfig,
      lora: loras,
      compile: config.model.compile,
    },
    loading: `${modelId}${stage2ModelId === undefined ? '' : ` with stage II ${stage2ModelId}`}`,
    fingerprints: {
      model: await modelFingerprint(modelId, revision, env),
      stage2: stage2ModelId === undefined ? null : await modelFingerprint(stage2ModelId, stage2Revision, env),
      // A single file's configuration: the folder's files or the hub commit; null = the hub repo its
      // weights look like, which only the worker can tell.
      ...(singleFile
        ? { config: modelConfig === null ? null : await modelFingerprint(modelConfig, revision, env) }
        : {}),
      ...(loras.length > 0
        ? { lora: await Promise.all(loras.map(({ path }) => localFingerprint(path))) }
        : {}),
    },
    layersFor,
    embeds,
    remote: config.runtime.remote.map(({ endpoint, keys }, index) => {
      const field = ['runtime', 'remote', index, 'keys'];
      return keys === undefined
        ? { endpoint }
        : { endpoint, keys: resolveLocalPath(keys, configDir, locate(field), field) };
    }),
  };
}
