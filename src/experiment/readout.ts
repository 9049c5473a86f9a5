// Which hidden states of which text encoders an image reads: `lens.encoders` (the sequence encoders that
// follow the layer; the others stay at their stock index) and `lens.pooled` (where the pooled vector
// comes from), checked against the encoders the worker reported (`loaded.encoders`, with the index each
// lens layer takes from each), and recorded per image in the manifest.
import type { EncoderInfo } from '../bridge/index.js';
import {
  ConfigError,
  type ConfigIssue,
  type ExperimentConfig,
  issueAt,
  nearest,
  type PooledMode,
} from '../config/index.js';

/**
 * `lens.encoders` and `lens.pooled` as they enter an image's settings (and so its key): absent where they
 * are the stock reading (every sequence encoder follows the layer; the final pooled vector), so that
 * images made before these options existed keep their keys, and a list naming every encoder is `all`.
 */
export interface ReadoutSettings {
  /** The sequence encoders that follow the layer, sorted; absent = all. */
  encoders?: string[];
  pooled?: Exclude<PooledMode, 'final'>;
}

/** The config's readout checked against the loaded model's encoders; a ConfigError names the bad field. */
export function readoutFor(config: ExperimentConfig, encoders: readonly EncoderInfo[]): ReadoutSettings {
  const sequence = encoders.filter((encoder) => encoder.sequence).map((encoder) => encoder.name);
  const issues: ConfigIssue[] = [];
  const chosen = config.lens.encoders;
  if (chosen !== 'all') {
    chosen.forEach((name) => {
      if (sequence.includes(name)) return;
      const best = nearest(name, sequence);
      const hint = best === undefined ? '' : ` (did you mean "${best}"?)`;
      const message = `${JSON.stringify(name)} is not a text encoder of this model whose hidden states the lens can take${hint}; choose from ${sequence.join(', ')}`;
      issues.push(issueAt(config, ['lens', 'encoders'], message));
    });
  }
  const pooled = config.lens.pooled;
  if (pooled !== 'final' && !encoders.some((encoder) => encoder.pooled)) {
    const message =
      'this model has no pooled text vector (only SDXL, SD3 and Flux have one); leave it at final';
    issues.push(issueAt(config, ['lens', 'pooled'], message));
  }
  if (issues.length > 0) throw new ConfigError(issues);
  const all = chosen === 'all' || sequence.every((name) => chosen.includes(name));
  return {
    ...(all ? {} : { encoders: [...chosen].sort() }),
    ...(pooled === 'final' ? {} : { pooled }),
  };
}

/** The readout fields of a generate request. */
export function readoutRequest(readout: ReadoutSettings): {
  encoders: string[] | null;
  pooled: PooledMode;
} {
  return { encoders: readout.encoders ?? null, pooled: readout.pooled ?? 'final' };
}

/** One image's reading of the encoders, as the manifest records it. */
export interface ImageReadout {
  /** The sequence embedding: each encoder's hidden state (0 = embeddings) and the norm it went through. */
  encoders: { name: string; hidden_state: number; norm: string | null; follows_layer: boolean }[];
  /** The pooled vector: its mode and the hidden state it is pooled from (of the empty prompt for `empty`),
   *  per encoder; null for a model without one. */
  pooled: { mode: PooledMode; encoders: { name: string; hidden_state: number }[] } | null;
}

export function imageReadout(
  layer: number,
  encoders: readonly EncoderInfo[],
  readout: ReadoutSettings,
): ImageReadout {
  const mode = readout.pooled ?? 'final';
  const pooling = encoders.filter((encoder) => encoder.pooled);
  return {
    encoders: encoders
      .filter((encoder) => encoder.sequence)
      .map((encoder) => {
        const follows = readout.encoders === undefined || readout.encoders.includes(encoder.name);
        return {
          name: encoder.name,
          hidden_state: follows ? (encoder.indices[layer] ?? encoder.stock_index) : encoder.stock_index,
          norm: encoder.norm,
          follows_layer: follows,
        };
      }),
    pooled:
      pooling.length === 0
        ? null
        : {
            mode,
            encoders: pooling.map((encoder) => ({
              name: encoder.name,
              hidden_state:
                mode === 'same-layer' ? (encoder.pooled_indices?.[layer] ?? encoder.layers) : encoder.layers,
            })),
          },
  };
}
