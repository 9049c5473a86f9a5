// The grid view: a card per prompt (and stage) of every run shown, filtered; one layer slider in the
// toolbar moves every card, each card's own moves it alone.
import { type CardMember, PromptCard } from './card.js';
import { CardList } from './card-list.js';
import { h } from './dom.js';
import { type Filters, filterControls, NO_FILTERS, promptPasses } from './filters.js';
import type { ReportData, RunIndex } from './report-data.js';

interface Entry {
  members: CardMember[];
  stage: number;
}

/** The depths of every run's layers, merged and sorted. */
export function allDepths(runs: readonly RunIndex[]): number[] {
  return [...new Set(runs.flatMap((r) => r.run.layers.map((layer) => layer.depth)))].sort((a, b) => a - b);
}

/** The global layer slider: moves every card on screen and sets the depth of the cards still to come. */
export function depthSlider(
  depths: readonly number[],
  initial: number,
  onDepth: (depth: number) => void,
): HTMLElement {
  const slider = h('input', {
    type: 'range',
    min: 0,
    max: Math.max(0, depths.length - 1),
    step: 1,
    className: 'global-slider',
    'aria-label': 'layer of every card',
  });
  slider.value = String(Math.max(0, depths.indexOf(initial)));
  const output = h('output', {}, `${initial}%`);
  slider.addEventListener('input', () => {
    const depth = depths[Number(slider.value)] ?? 0;
    output.textContent = `${depth}%`;
    onDepth(depth);
  });
  return h(
    'label',
    {
      className: 'global-layer',
      title: 'depth in percent of the encoder: 0 = embeddings, 100 = final layer',
    },
    'All cards: layer depth ',
    slider,
    ' ',
    output,
  );
}

export function gridsView(data: ReportData, runs: readonly RunIndex[]): HTMLElement {
  const depths = allDepths(runs);
  let depth = depths.at(-1) ?? 100;
  let filters: Filters = NO_FILTERS;
  const cards = new Set<PromptCard>();
  const list = new CardList<Entry>((entry) => {
    const card = new PromptCard(entry.members, {
      stage: entry.stage,
      question: filters.question,
      depth,
      showRun: runs.length > 1,
    });
    cards.add(card);
    return card.element;
  }, 'No prompt matches the filters.');

  const refresh = () => {
    cards.clear();
    const entries: Entry[] = [];
    // Prompts of the same text from several runs stand together, in the order first seen.
    const order = new Map<string, Entry[]>();
    for (const index of runs) {
      if (filters.run !== null && index.index !== filters.run) continue;
      for (const prompt of index.run.prompts) {
        if (!promptPasses(index.run, prompt, filters)) continue;
        for (const stage of index.promptStages.get(prompt.index) ?? []) {
          if (filters.stage !== null && stage !== filters.stage) continue;
          const entry = { members: [{ index, prompt }], stage };
          const group = order.get(prompt.prompt);
          if (group) group.push(entry);
          else order.set(prompt.prompt, [entry]);
        }
      }
    }
    for (const group of order.values()) entries.push(...group);
    const images = entries.reduce(
      (n, e) =>
        n + (e.members[0]?.index.run.layers.length ?? 0) * (e.members[0]?.index.run.seeds.length ?? 0),
      0,
    );
    list.show(
      entries,
      `${order.size} prompt${order.size === 1 ? '' : 's'}, ${entries.length} grid${entries.length === 1 ? '' : 's'}, ${images} cells`,
    );
  };

  const toolbar = h(
    'div',
    { className: 'toolbar' },
    filterControls(
      data,
      filters,
      (next) => {
        filters = next;
        refresh();
      },
      { runSelect: true },
    ),
    depthSlider(depths, depth, (next) => {
      depth = next;
      for (const card of cards) card.setDepth(depth);
    }),
  );
  refresh();
  return h('div', { className: 'view grids-view' }, toolbar, list.element);
}
