// The ablations of the prompt's conditioning: `lens.tokens` (which positions of the sequence embedding
// follow the layer), `lens.mix` (two layers' conditioning mixed) and `lens.embeds` (tensors from a file
// in place of the conditioning's arguments). Here: `lens.mix` resolved against the model's depth, the
// run's layers under it, what each ablation adds to an image's settings (and so to its key: nothing
// when it is not used, so that images made before these options existed keep their keys), and the
// fields of a generate request. The unconditional branch follows `lens.uncond` alone.
import type { GenerateRequest } from '../bridge/index.js';
import {
  ConfigError,
  type ExperimentConfig,
  issueAt,
  type LensTokens,
  parseLayerSpec,
  resolveLayers,
} from '../config/index.js';
import type { EmbedsFile } from './embeds.js';

/** `lens.mix` with its layers as hidden-state indices. */
export interface ResolvedMix {
  /** [a, b]: the layer the images are of, and the layer mixed into it (a != b). */
  layers: [number, number];
  /** b's weight: the conditioning is (1 - alpha) × a's + alpha × b's. */
  alpha: number;
}

/**
 * The ablations as they enter an image's settings (settings.lens), each only when used: `tokens` when
 * not `all`, `mix` with its layers resolved, `embeds` as the sha256 of the file's bytes (not its path,
 * so that a moved file keeps its images' keys). The Python API writes the same shape.
 */
export interface AblationSettings {
  tokens?: Exclude<LensTokens, 'all'>;
  mix?: ResolvedMix;
  embeds?: { sha256: string };
}

/** The model's depth: L (hidden states 0..L) and the layer the stock pipeline uses. */
export interface Depth {
  numLayers: number;
  stockLayer: number;
}

/**
 * `lens.mix` resolved against the model's depth (negative layers count from the end, -1 = L; `stock` is
 * the stock layer); null without one. Throws ConfigError naming lens.mix.layers for a layer out of range,
 * or two that are the same layer.
 */
export function resolveMix(config: ExperimentConfig, depth: Depth): ResolvedMix | null {
  const mix = config.lens.mix;
  if (mix === undefined) return null;
  const L = depth.numLayers;
  const layers = mix.layers.map((layer, index) => {
    if (layer === 'stock') return depth.stockLayer;
    const resolved = layer < 0 ? L + 1 + layer : layer;
    if (resolved < 0 || resolved > L) {
      const hint = layer < 0 ? `; negative layers count from the end, -1 = ${L}, -${L + 1} = 0` : '';
      throw new ConfigError(
        issueAt(config, ['lens', 'mix', 'layers', index], `layer ${layer} is out of range 0..${L}${hint}`),
      );
    }
    return resolved;
  }) as [number, number];
  if (layers[0] === layers[1]) {
    const written = mix.layers.map((layer) => JSON.stringify(layer)).join(' and ');
    throw new ConfigError(
      issueAt(
        config,
        ['lens', 'mix', 'layers'],
        `${written} are both layer ${layers[0]} of 0..${L}: mix two different layers`,
      ),
    );
  }
  return { layers, alpha: mix.alpha };
}

/**
 * The run's layers against the model's depth: `lens.layers`, or with `lens.mix` its layer a alone
 * (`lens.layers` left at all, or naming exactly a). Throws ConfigError naming the bad field: lens.layers
 * (a bad spec, or one that is not [a] under mix) or lens.mix.layers.
 */
export function runLayers(config: ExperimentConfig, depth: Depth): number[] {
  const mix = resolveMix(config, depth);
  const spec = config.lens.layers;
  if (mix === null) return resolveLayers(spec, depth.numLayers, depth.stockLayer);
  const [a] = mix.layers;
  if (parseLayerSpec(spec).kind === 'all') return [a];
  const layers = resolveLayers(spec, depth.numLayers, depth.stockLayer);
  if (layers.length === 1 && layers[0] === a) return layers;
  throw new ConfigError(
    issueAt(
      config,
      ['lens', 'layers'],
      `gives layer${layers.length === 1 ? '' : 's'} ${layers.join(', ')}, but with a mix the images are ` +
        `of its first layer, ${a}, alone: leave the layers at all, or set them to ${a}`,
    ),
  );
}

/**
 * What the ablations add to an image's settings (see AblationSettings). `depth` resolves lens.mix;
 * `embeds` is the checked lens.embeds file (resolveEmbeds). Throws when the config has lens.mix or
 * lens.embeds and what it needs is not given (a caller's mistake, not the user's).
 */
export function ablationSettings(
  config: ExperimentConfig,
  depth: Partial<Depth>,
  embeds: Pick<EmbedsFile, 'sha256'> | null | undefined,
): AblationSettings {
  const { tokens, mix } = config.lens;
  let resolved: ResolvedMix | null = null;
  if (mix !== undefined) {
    const { numLayers, stockLayer } = depth;
    if (numLayers === undefined) throw new Error("lens.mix needs the model's depth to resolve its layers");
    resolved = resolveMix(config, { numLayers, stockLayer: stockLayer ?? numLayers });
  }
  if (config.lens.embeds !== undefined && !embeds) throw new Error('no sha256 for lens.embeds');
  return {
    ...(tokens === 'all' ? {} : { tokens }),
    ...(resolved === null ? {} : { mix: resolved }),
    ...(config.lens.embeds === undefined || !embeds ? {} : { embeds: { sha256: embeds.sha256 } }),
  };
}

/**
 * The ablation fields of a generate request, from an image's settings and the embeds file they name
 * (its path is the worker's to read; its sha256 the worker checks).
 */
export function ablationRequest(
  settings: AblationSettings,
  embeds: Pick<EmbedsFile, 'path' | 'sha256'> | null,
): Pick<GenerateRequest, 'tokens' | 'mix' | 'embeds'> {
  if (settings.embeds !== undefined && embeds?.sha256 !== settings.embeds.sha256) {
    throw new Error("the plan's lens.embeds file is not the one its settings name");
  }
  return {
    tokens: settings.tokens ?? 'all',
    mix: settings.mix ? { layers: [...settings.mix.layers], alpha: settings.mix.alpha } : null,
    embeds: settings.embeds && embeds ? { path: embeds.path, sha256: embeds.sha256 } : null,
  };
}

/** One line per ablation in use, for `plan`'s notes; none without. */
export function ablationNotes(config: ExperimentConfig, depth: Depth): string[] {
  const notes: string[] = [];
  const { tokens, embeds } = config.lens;
  if (tokens !== 'all') {
    const which =
      typeof tokens === 'number'
        ? `position ${tokens} alone follows`
        : tokens === 'prompt'
          ? "the prompt's tokens (through its end-of-sequence token) follow"
          : 'the padding after the prompt follows';
    notes.push(`lens.tokens: ${which} the layer; the other positions take the stock layer's`);
  }
  const mix = resolveMix(config, depth);
  if (mix !== null) {
    const [a, b] = mix.layers;
    notes.push(
      `lens.mix: each image's conditioning is (1 - ${mix.alpha}) x layer ${a}'s + ${mix.alpha} x layer ${b}'s ` +
        '(the encoder is read at both)',
    );
  }
  if (embeds !== undefined) {
    notes.push(
      `lens.embeds: the tensors of ${embeds} replace the prompt's conditioning arguments of their names`,
    );
  }
  return notes;
}
