// The per-image questions of a run folder, which annotation asks, the scorers answer and the statistics
// count: each prompt's own, as its manifest records them (the prompt set's questions filled in for its
// row, else the generic one). Manifests from before questions were recorded, and folders the Python API
// saved without them, get the generic question.
import { GENERIC_QUESTION, promptQuestions, type RenderedQuestion } from '../config/index.js';
import type { ManifestPrompt } from '../experiment/index.js';

export type Question = RenderedQuestion;

export { GENERIC_QUESTION };

/** What the questions are read from: a manifest's prompts (old manifests have no `questions`). */
export interface PromptsWithQuestions {
  prompts: readonly (Pick<ManifestPrompt, 'prompt'> &
    Partial<Pick<ManifestPrompt, 'columns' | 'questions'>>)[];
}

/** The questions of each prompt of a run, by prompt index. */
export function manifestQuestions(manifest: PromptsWithQuestions): Question[][] {
  return manifest.prompts.map(
    (prompt) => prompt.questions ?? promptQuestions(null, prompt.prompt, prompt.columns ?? {}),
  );
}

/** The question ids of a run, in first-seen order. */
export function questionIds(manifest: PromptsWithQuestions): string[] {
  return [...new Set(manifestQuestions(manifest).flatMap((questions) => questions.map((q) => q.id)))];
}
