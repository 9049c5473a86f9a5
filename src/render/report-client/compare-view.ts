// Side by side: two runs (two sweep variants, or a run and the one given with --compare) chosen from the
// report's runs; each prompt both have gets one card with their images next to each other, one slider
// moving both by layer depth.
import { type CardMember, PromptCard } from './card.js';
import { CardList } from './card-list.js';
import { h, option } from './dom.js';
import { type Filters, filterControls, NO_FILTERS, promptPasses } from './filters.js';
import { allDepths, depthSlider } from './grids-view.js';
import type { ReportData, RunIndex } from './report-data.js';

interface Pair {
  members: CardMember[];
  stage: number;
}

function runSelect(
  runs: readonly RunIndex[],
  selected: number,
  label: string,
  onChange: (i: number) => void,
): HTMLElement {
  const select = h('select', { 'aria-label': label, className: `compare-${label}` });
  for (const index of runs)
    select.appendChild(
      option(String(index.index), `${index.run.label} · ${index.run.model.short}`, index.index === selected),
    );
  select.addEventListener('change', () => onChange(Number(select.value)));
  return h('label', {}, `${label === 'left' ? 'Left' : 'Right'} `, select);
}

export function compareView(data: ReportData, runs: readonly RunIndex[]): HTMLElement {
  if (runs.length < 2) {
    return h(
      'div',
      { className: 'view compare-view' },
      h(
        'p',
        { className: 'empty' },
        'This report has one run. To compare two, run `diffusion-lens report RUN_DIR --compare OTHER_RUN_DIR`, or report a study folder (its variants).',
      ),
    );
  }
  let left = 0;
  let right = 1;
  let filters: Filters = NO_FILTERS;
  let depth = allDepths(runs).at(-1) ?? 100;
  const cards = new Set<PromptCard>();
  const list = new CardList<Pair>((pair) => {
    const card = new PromptCard(pair.members, {
      stage: pair.stage,
      question: filters.question,
      depth,
      showRun: true,
    });
    cards.add(card);
    return card.element;
  }, 'The two runs have no prompt in common that matches the filters.');

  const refresh = () => {
    cards.clear();
    const a = runs[left];
    const b = runs[right];
    if (!a || !b) return;
    const byText = new Map(b.run.prompts.map((prompt) => [prompt.prompt, prompt]));
    const pairs: Pair[] = [];
    for (const prompt of a.run.prompts) {
      const other = byText.get(prompt.prompt);
      if (!other || !promptPasses(a.run, prompt, filters)) continue;
      const stages = b.promptStages.get(other.index) ?? [];
      for (const stage of a.promptStages.get(prompt.index) ?? []) {
        if (!stages.includes(stage) || (filters.stage !== null && stage !== filters.stage)) continue;
        pairs.push({
          members: [
            { index: a, prompt },
            { index: b, prompt: other },
          ],
          stage,
        });
      }
    }
    list.show(pairs, `${pairs.length} prompt${pairs.length === 1 ? '' : 's'} in both runs`);
  };

  const toolbar = h(
    'div',
    { className: 'toolbar' },
    h(
      'div',
      { className: 'filters' },
      runSelect(runs, left, 'left', (i) => {
        left = i;
        refresh();
      }),
      runSelect(runs, right, 'right', (i) => {
        right = i;
        refresh();
      }),
    ),
    filterControls(
      data,
      filters,
      (next) => {
        filters = next;
        refresh();
      },
      { runSelect: false },
    ),
    depthSlider(allDepths(runs), depth, (next) => {
      depth = next;
      for (const card of cards) card.setDepth(depth);
    }),
  );
  refresh();
  return h('div', { className: 'view compare-view' }, toolbar, list.element);
}
