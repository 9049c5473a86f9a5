import { describe, expect, it } from 'vitest';
import type { EncoderInfo } from '../src/bridge/index.js';
import { ConfigError, type ExperimentConfigInput, parseConfig } from '../src/config/index.js';
import { imageReadout, readoutFor } from '../src/experiment/readout.js';
import { oneEncoder } from './capabilities.js';

// SDXL-shaped, as the worker reports it: CLIPs of 3 and 5 layers aligned at their penultimate states.
const sdxl: EncoderInfo[] = [
  {
    name: 'text_encoder',
    class_name: 'CLIPTextModel',
    layers: 3,
    stock_index: 2,
    indices: [0, 0, 0, 1, 2, 3],
    norm: null,
    sequence: true,
    pooled: false,
    pooled_indices: null,
  },
  {
    name: 'text_encoder_2',
    class_name: 'CLIPTextModelWithProjection',
    layers: 5,
    stock_index: 4,
    indices: [0, 1, 2, 3, 4, 5],
    norm: null,
    sequence: true,
    pooled: true,
    pooled_indices: [1, 2, 3, 4, 5, 5],
  },
];

const configWith = (lens: ExperimentConfigInput['lens']) =>
  parseConfig({ model: { id: '/m' }, prompts: ['a cat'], lens });

describe('lens.encoders and lens.pooled', () => {
  it('leave the settings (and so the keys) as they were when they are the stock reading', () => {
    expect(readoutFor(configWith({}), sdxl)).toEqual({});
    // Naming every sequence encoder is all of them, in any order.
    expect(readoutFor(configWith({ encoders: ['text_encoder_2', 'text_encoder'] }), sdxl)).toEqual({});
    expect(readoutFor(configWith({ encoders: ['text_encoder'], pooled: 'empty' }), sdxl)).toEqual({
      encoders: ['text_encoder'],
      pooled: 'empty',
    });
  });

  it('name what the model does not have', () => {
    const sd = oneEncoder('CLIPTextModel', 4, 'text_model.final_layer_norm');
    const refused = (lens: ExperimentConfigInput['lens'], encoders: EncoderInfo[]) => {
      try {
        readoutFor(configWith(lens), encoders);
      } catch (error) {
        if (error instanceof ConfigError) return error.issues.map((issue) => issue.message);
        throw error;
      }
      throw new Error('not refused');
    };
    expect(refused({ encoders: ['text_encoder_3'] }, sdxl)).toEqual([
      '"text_encoder_3" is not a text encoder of this model whose hidden states the lens can take ' +
        '(did you mean "text_encoder_2"?); choose from text_encoder, text_encoder_2',
    ]);
    expect(refused({ pooled: 'same-layer' }, sd)).toEqual([
      'this model has no pooled text vector (only SDXL, SD3 and Flux have one); leave it at final',
    ]);
    expect(() => configWith({ encoders: [] })).toThrow(ConfigError);
    expect(() => configWith({ encoders: ['text_encoder', 'text_encoder'] })).toThrow(/listed twice/);
  });

  it('record per image which hidden state of which encoder and which pooled vector', () => {
    expect(imageReadout(1, sdxl, { encoders: ['text_encoder_2'], pooled: 'same-layer' })).toEqual({
      encoders: [
        { name: 'text_encoder', hidden_state: 2, norm: null, follows_layer: false },
        { name: 'text_encoder_2', hidden_state: 1, norm: null, follows_layer: true },
      ],
      pooled: { mode: 'same-layer', encoders: [{ name: 'text_encoder_2', hidden_state: 2 }] },
    });
    expect(imageReadout(2, oneEncoder('T5EncoderModel', 4, 'encoder.final_layer_norm'), {})).toEqual({
      encoders: [
        { name: 'text_encoder', hidden_state: 2, norm: 'encoder.final_layer_norm', follows_layer: true },
      ],
      pooled: null,
    });
  });
});
