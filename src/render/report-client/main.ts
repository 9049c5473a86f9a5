// The report page's app: reads the page's data, builds the header and the views (grids, compare,
// results, and annotate when served), and switches between them by the URL's hash (#grids, ...).
import { AnnotateView, annotateUnavailable } from './annotate-view.js';
import { compareView } from './compare-view.js';
import { h } from './dom.js';
import { gridsView } from './grids-view.js';
import { indexRun, type ReportData, readData } from './report-data.js';
import { resultsView } from './results-view.js';

type ViewName = 'grids' | 'compare' | 'results' | 'annotate';

const VIEW_NAMES: Record<ViewName, string> = {
  grids: 'Grids',
  compare: 'Compare',
  results: 'Results',
  annotate: 'Annotate',
};

function header(data: ReportData): HTMLElement {
  const runs = data.runs.map((run) =>
    h(
      'li',
      {},
      h('b', {}, run.label),
      ` · ${run.model.short} (${run.model.family}, L = ${run.model.num_layers}) · ${run.prompts.length} prompts · ${run.images.length} images`,
      run.complete ? '' : ' · incomplete run',
      run.settings.length > 0 ? h('span', { className: 'settings' }, ` · ${run.settings.join(' · ')}`) : null,
      run.skipped.length > 0
        ? h(
            'span',
            { className: 'warning' },
            ` · ${run.skipped.length} images left out (paths outside the run folder)`,
          )
        : null,
    ),
  );
  return h(
    'header',
    { className: 'page-head' },
    h('h1', {}, data.title),
    h('ul', { className: 'runs' }, ...runs),
  );
}

function cellSizeControl(): HTMLElement {
  const slider = h('input', {
    type: 'range',
    min: 48,
    max: 256,
    step: 8,
    value: 96,
    'aria-label': 'grid cell size',
  });
  const focus = h('input', {
    type: 'range',
    min: 128,
    max: 768,
    step: 8,
    value: 200,
    'aria-label': 'image size',
  });
  slider.addEventListener('input', () =>
    document.documentElement.style.setProperty('--cell', `${slider.value}px`),
  );
  focus.addEventListener('input', () =>
    document.documentElement.style.setProperty('--focus', `${focus.value}px`),
  );
  return h(
    'div',
    { className: 'sizes' },
    h('label', {}, 'Grid cells ', slider),
    h('label', {}, 'Images ', focus),
  );
}

function main(): void {
  const data = readData();
  const runs = data.runs.map((run, i) => indexRun(run, i));
  const names: ViewName[] = ['grids', 'compare', 'results', 'annotate'];
  const built = new Map<ViewName, HTMLElement>();
  const annotate = data.mode === 'serve' ? new AnnotateView(runs) : null;
  const make = (name: ViewName): HTMLElement => {
    switch (name) {
      case 'grids':
        return gridsView(data, runs);
      case 'compare':
        return compareView(data, runs);
      case 'results':
        return resultsView(data);
      case 'annotate':
        return annotate ? annotate.element : annotateUnavailable(data);
    }
  };
  const main = h('main', {});
  const tabs = names.map((name) =>
    h('a', { href: `#${name}`, className: 'tab', 'data-view': name }, VIEW_NAMES[name]),
  );
  const show = () => {
    const wanted = window.location.hash.slice(1) as ViewName;
    const name: ViewName = names.includes(wanted) ? wanted : 'grids';
    let view = built.get(name);
    if (!view) {
      view = make(name);
      built.set(name, view);
      main.appendChild(view);
    }
    for (const [other, element] of built) element.hidden = other !== name;
    for (const tab of tabs) tab.classList.toggle('active', tab.dataset.view === name);
    if (annotate) {
      annotate.active = name === 'annotate';
      if (name === 'annotate') annotate.open();
    }
    document.body.dataset.view = name;
  };
  document.body.append(
    header(data),
    h('nav', { className: 'tabs' }, ...tabs, cellSizeControl()),
    main,
    h('footer', {}, `${data.tool.name} ${data.tool.version} · written ${data.generated}`),
  );
  window.addEventListener('hashchange', show);
  show();
  document.body.dataset.ready = '1';
}

try {
  main();
} catch (error) {
  document.body.append(h('pre', { className: 'fatal' }, `The report failed to start: ${String(error)}`));
  throw error;
}
