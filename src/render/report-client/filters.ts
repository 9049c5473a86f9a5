// The filters of the grid and compare views: prompt text, category (a categorical prompt column, or
// the prompt set's category), question, model (run) and stage; and which prompts pass them.
import { h, option } from './dom.js';
import type { ReportData, ReportPrompt, ReportRun } from './report-data.js';

/** The pseudo-column of a run's prompt-set category. */
export const SET_COLUMN = '\u0001set';

export interface Filters {
  text: string;
  /** A prompt column (or SET_COLUMN) and the value it must have. */
  category: { column: string; value: string } | null;
  question: string | null;
  /** Index of the run shown, or null for all. */
  run: number | null;
  stage: number | null;
}

export const NO_FILTERS: Filters = { text: '', category: null, question: null, run: null, stage: null };

export interface Facet {
  column: string;
  label: string;
  values: string[];
}

const MAX_FACET_VALUES = 50;

/** The category facets: the prompt set's category (when a run has one) and each categorical column. */
export function facetsOf(runs: readonly ReportRun[]): Facet[] {
  const facets: Facet[] = [];
  const sets = [...new Set(runs.flatMap((run) => (run.prompt_set ? [run.prompt_set.category] : [])))];
  if (sets.length > 0) facets.push({ column: SET_COLUMN, label: 'prompt set', values: sets.sort() });
  const columns = [...new Set(runs.flatMap((run) => run.columns))];
  for (const column of columns) {
    const values = new Set<string>();
    let prompts = 0;
    for (const run of runs) {
      for (const prompt of run.prompts) {
        const value = prompt.columns[column];
        if (value === undefined) continue;
        prompts++;
        values.add(value);
      }
    }
    const named = /^(category|class|kind|type|group)$/i.test(column);
    if (values.size > MAX_FACET_VALUES || values.size === 0) continue;
    if (!named && (values.size < 2 || values.size === prompts)) continue;
    facets.push({ column, label: column, values: [...values].sort() });
  }
  return facets;
}

/** The question ids of the runs, with the first text seen for each (as an example). */
export function questionsOf(runs: readonly ReportRun[]): { id: string; example: string }[] {
  const seen = new Map<string, string>();
  for (const run of runs) {
    for (const prompt of run.prompts) {
      for (const question of prompt.questions)
        if (!seen.has(question.id)) seen.set(question.id, question.text);
    }
  }
  return [...seen].map(([id, example]) => ({ id, example }));
}

export function promptPasses(run: ReportRun, prompt: ReportPrompt, filters: Filters): boolean {
  if (filters.text && !prompt.prompt.toLowerCase().includes(filters.text.toLowerCase())) return false;
  if (filters.category) {
    const { column, value } = filters.category;
    const actual = column === SET_COLUMN ? run.prompt_set?.category : prompt.columns[column];
    if (actual !== value) return false;
  }
  if (filters.question && !prompt.questions.some((q) => q.id === filters.question)) return false;
  return true;
}

const SEPARATOR = '\u0000';

/** The filter controls; `onChange` gets the new filters on every change. */
export function filterControls(
  data: ReportData,
  filters: Filters,
  onChange: (filters: Filters) => void,
  options: { runSelect: boolean },
): HTMLElement {
  let current = { ...filters };
  const emit = (patch: Partial<Filters>) => {
    current = { ...current, ...patch };
    onChange(current);
  };
  const search = h('input', {
    type: 'search',
    placeholder: 'prompt contains…',
    'aria-label': 'filter prompts by text',
    className: 'filter-text',
    value: current.text,
  });
  let typing = 0;
  search.addEventListener('input', () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => emit({ text: search.value.trim() }), 150);
  });
  const controls: HTMLElement[] = [h('label', {}, 'Search ', search)];

  const facets = facetsOf(data.runs);
  if (facets.length > 0) {
    const select = h('select', { 'aria-label': 'category', className: 'filter-category' }, option('', 'all'));
    for (const facet of facets) {
      const group = h('optgroup', { label: facet.label });
      for (const value of facet.values)
        group.appendChild(option(`${facet.column}${SEPARATOR}${value}`, value));
      select.appendChild(group);
    }
    select.addEventListener('change', () => {
      const [column, value] = select.value.split(SEPARATOR);
      emit({
        category: select.value && column !== undefined && value !== undefined ? { column, value } : null,
      });
    });
    controls.push(h('label', {}, 'Category ', select));
  }

  const questions = questionsOf(data.runs);
  if (questions.length > 0) {
    const select = h('select', { 'aria-label': 'question', className: 'filter-question' }, option('', 'any'));
    for (const q of questions) {
      const item = option(q.id, q.id);
      item.title = q.example;
      select.appendChild(item);
    }
    select.addEventListener('change', () => emit({ question: select.value || null }));
    controls.push(
      h('label', { title: 'show prompts asking it, and its answers on the images' }, 'Question ', select),
    );
  }

  if (options.runSelect && data.runs.length > 1) {
    const select = h('select', { 'aria-label': 'model', className: 'filter-run' }, option('', 'all runs'));
    data.runs.forEach((run, i) => {
      select.appendChild(option(String(i), `${run.label} · ${run.model.short}`));
    });
    select.addEventListener('change', () => emit({ run: select.value === '' ? null : Number(select.value) }));
    controls.push(h('label', {}, 'Model ', select));
  }

  if (data.runs.some((run) => run.stages.length > 1)) {
    const select = h(
      'select',
      { 'aria-label': 'stage', className: 'filter-stage' },
      option('', 'all'),
      option('1', 'stage I'),
      option('2', 'stage II'),
    );
    select.addEventListener('change', () =>
      emit({ stage: select.value === '' ? null : Number(select.value) }),
    );
    controls.push(h('label', {}, 'Stage ', select));
  }
  return h('div', { className: 'filters' }, ...controls);
}
