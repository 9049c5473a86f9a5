// Requests and assertions shared by the bridge tests.
import { expect } from 'vitest';
import { type GenerateRequest, type LoadRequest, WorkerError } from '../../src/bridge/index.js';

export function fixtureLoad(model: string): LoadRequest {
  return {
    model,
    family: null,
    dtype: 'fp32',
    device: 'cpu',
    revision: null,
    offload: 'none',
    stage2: null,
    allow_pickle: false,
    variant: null,
    family_options: {},
    config: null,
    lora: [],
    compile: false,
  };
}

export function smallJob(overrides: Partial<GenerateRequest> = {}): GenerateRequest {
  return {
    prompts: ['a red cube', 'a blue ball'],
    items: [
      { prompt: 0, layer: 1, seed: 0 },
      { prompt: 0, layer: 3, seed: 0 },
      { prompt: 1, layer: 1, seed: 7 },
      { prompt: 1, layer: 3, seed: 7 },
    ],
    negative: '',
    steps: 2,
    guidance: 7.5,
    height: 32,
    width: 32,
    scheduler: null,
    uncond: 'final',
    noise: 'shared',
    encoders: null,
    pooled: 'final',
    tokens: 'all',
    mix: null,
    embeds: null,
    max_batch: 4,
    stage2: null,
    family_options: {},
    ...overrides,
  };
}

/** A job long enough on the tiny model to be interrupted: 8 items × 20 steps, one item per batch. */
export function longJob(): GenerateRequest {
  return smallJob({
    prompts: ['a long job'],
    items: Array.from({ length: 8 }, (_, seed) => ({ prompt: 0, layer: 2, seed })),
    steps: 20,
    max_batch: 1,
  });
}

export async function rejection(promise: Promise<unknown>): Promise<WorkerError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(WorkerError);
  return error as WorkerError;
}
