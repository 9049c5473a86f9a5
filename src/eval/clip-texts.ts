// The texts the clip scorer compares each image with, per prompt and question of a run: for a prompt set's
// question, its `clip` templates (configs/prompts/sets.yaml) filled in for the prompt's row; for the generic
// question (`matches_prompt`), the prompt itself against the run's other prompts.
import {
  type ClipTextsSpec,
  GENERIC_QUESTION,
  type LoadedPromptSet,
  loadPromptSets,
  PROMPT_COLUMN,
  PROMPT_SETS_FILE,
  renderQuestion,
} from '../config/prompt-sets.js';
import { manifestQuestions, type PromptsWithQuestions } from './questions.js';

/** What the clip scorer asks of one image: is it closer to `right` than to every `contrast` text? */
export interface ClipTexts {
  right: string;
  contrast: string[];
}

/** The contrast of the generic question when the run has one prompt (no other prompt to tell it from). */
export const NEUTRAL_TEXT = 'an image';

export class ClipTextsError extends Error {
  override readonly name = 'ClipTextsError';
}

/** One row of a set as the templates see it: its prompt and its values of the set's columns. */
export interface ClipRow {
  prompt: string;
  values: Readonly<Record<string, string>>;
}

/**
 * A question's CLIP texts filled in for one row of `set`: the right text, and the contrast texts in order,
 * each once, none equal to the right text. `{vary: column}` takes the column's declared `values`, else the
 * values in the set's rows (in file order), other than the row's own and its `except` columns' values.
 */
export function renderClipTexts(
  clip: ClipTextsSpec,
  set: Pick<LoadedPromptSet, 'columns' | 'rows'>,
  row: ClipRow,
): ClipTexts {
  const values: Record<string, string> = { ...row.values, [PROMPT_COLUMN]: row.prompt };
  const right = renderQuestion(clip.right, values);
  const contrast: string[] = [];
  for (const entry of clip.contrast) {
    if (typeof entry === 'string') {
      contrast.push(renderQuestion(entry, values));
      continue;
    }
    const declared = set.columns.find((column) => column.name === entry.vary)?.values;
    const taken = declared ?? set.rows.map((r) => r.values[entry.vary] ?? '');
    const own = new Set([entry.vary, ...(entry.except ?? [])].map((column) => values[column]));
    for (const value of new Set(taken)) {
      if (value !== '' && !own.has(value))
        contrast.push(renderQuestion(clip.right, { ...values, [entry.vary]: value }));
    }
  }
  return { right, contrast: [...new Set(contrast)].filter((text) => text !== right) };
}

/** The manifest fields the texts come from. */
export interface ClipTextsSource extends PromptsWithQuestions {
  prompt_set?: { id: string } | null;
}

/**
 * The CLIP texts of every question of every prompt of a run, by prompt index then question id. A prompt
 * set's questions take their `clip` templates from the set of that id in `indexFile` (default: the
 * package's configs/prompts/sets.yaml); the generic question takes the prompt as its right text and the
 * run's other prompts as contrast (NEUTRAL_TEXT when it has one prompt). Throws ClipTextsError naming
 * what is missing (the set, a question's texts, a column).
 */
export async function runClipTexts(
  manifest: ClipTextsSource,
  indexFile: string = PROMPT_SETS_FILE,
): Promise<Map<string, ClipTexts>[]> {
  const prompts = manifest.prompts.map((p) => p.prompt);
  const setId = manifest.prompt_set?.id ?? null;
  let set: LoadedPromptSet | undefined;
  if (setId !== null) {
    set = (await loadPromptSets(indexFile)).find((s) => s.id === setId);
    if (!set) {
      throw new ClipTextsError(
        `the run's prompt set "${setId}" is not in ${indexFile}: pass the index it is in (--prompt-sets FILE)`,
      );
    }
  }
  return manifestQuestions(manifest).map((questions, index) => {
    const prompt = prompts[index] ?? '';
    const texts = new Map<string, ClipTexts>();
    for (const question of questions) {
      if (question.id === GENERIC_QUESTION.id && !set?.questions.some((q) => q.id === question.id)) {
        const others = [...new Set(prompts.filter((p) => p !== prompt))];
        texts.set(question.id, { right: prompt, contrast: others.length > 0 ? others : [NEUTRAL_TEXT] });
        continue;
      }
      const clip = set?.questions.find((q) => q.id === question.id)?.clip;
      if (!set || !clip) {
        throw new ClipTextsError(
          `question "${question.id}" of prompt ${JSON.stringify(prompt)} has no clip texts` +
            (set ? ` in set "${set.id}" of ${indexFile}: add clip: {right, contrast} to it` : ''),
        );
      }
      const row = { prompt, values: manifest.prompts[index]?.columns ?? {} };
      try {
        texts.set(question.id, renderClipTexts(clip, set, row));
      } catch (error) {
        throw new ClipTextsError(
          `question "${question.id}" of prompt ${JSON.stringify(prompt)}: ${(error as Error).message}`,
        );
      }
      if (texts.get(question.id)?.contrast.length === 0) {
        throw new ClipTextsError(
          `question "${question.id}" of prompt ${JSON.stringify(prompt)}: its clip texts leave nothing to ` +
            'contrast the right text with',
        );
      }
    }
    return texts;
  });
}
