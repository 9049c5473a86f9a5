// The annotation API of `diffusion-lens serve` (src/serve/), from the page.
import type { AnswerRequest, NextImage, Progress, UndoRequest, UndoResponse } from '../report/model.js';

export type { NextImage, Progress, UndoResponse };

export class ApiError extends Error {}

async function call<T>(path: string, body?: unknown): Promise<T> {
  const response = await fetch(path, {
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ApiError(`${path}: ${response.status} ${text.slice(0, 200)}`);
  }
  if (!response.ok) {
    const message = (parsed as { error?: unknown }).error;
    throw new ApiError(typeof message === 'string' ? message : `${path}: ${response.status}`);
  }
  return parsed as T;
}

const query = (params: Record<string, string | number>) =>
  new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

export interface ExportFile {
  name: string;
  question: string;
  stage: number;
  images: number;
  url: string;
}

export const api = {
  next: (run: number, annotator: string, from: number) =>
    call<NextImage>(`api/next?${query({ run, annotator, from })}`),
  image: (run: number, annotator: string, key: string) =>
    call<NextImage>(`api/image?${query({ run, annotator, key })}`),
  answer: (request: AnswerRequest) => call<{ progress: Progress }>('api/answer', request),
  undo: (request: UndoRequest) => call<UndoResponse>('api/undo', request),
  exports: (run: number, annotator: string) =>
    call<{ files: ExportFile[] }>(`api/export?${query({ run, annotator })}`),
};
