// The results panel: the statistics' plots (SVG documents, shown as images so that nothing in them runs)
// and tables, and a summary of the annotations; "no annotations or scores yet" when there is nothing.
import { h } from './dom.js';
import type { ReportData } from './report-data.js';

function svgUrl(svg: string): string {
  return `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
}

function annotationSummary(data: ReportData): HTMLElement | null {
  const rows: HTMLElement[] = [];
  for (const run of data.runs) {
    const byQuestion = new Map<string, [number, number, number]>();
    for (const counts of Object.values(run.annotations.counts)) {
      for (const [question, [yes, no]] of Object.entries(counts)) {
        const total = byQuestion.get(question) ?? [0, 0, 0];
        byQuestion.set(question, [total[0] + 1, total[1] + yes, total[2] + no]);
      }
    }
    for (const [question, [images, yes, no]] of byQuestion) {
      rows.push(
        h(
          'tr',
          {},
          h('td', {}, run.label),
          h('td', {}, question),
          h('td', {}, images),
          h('td', {}, yes),
          h('td', {}, no),
        ),
      );
    }
  }
  if (rows.length === 0) return null;
  const annotators = [...new Set(data.runs.flatMap((run) => run.annotations.annotators))];
  return h(
    'section',
    { className: 'annotation-summary' },
    h('h2', {}, 'Annotations'),
    h('p', {}, `Annotators: ${annotators.join(', ')}`),
    h(
      'table',
      { className: 'data-table' },
      h(
        'thead',
        {},
        h('tr', {}, ...['run', 'question', 'images answered', 'yes', 'no'].map((c) => h('th', {}, c))),
      ),
      h('tbody', {}, ...rows),
    ),
  );
}

export function resultsView(data: ReportData): HTMLElement {
  const { plots, tables, note } = data.results;
  const summary = annotationSummary(data);
  const parts: (HTMLElement | null)[] = [];
  if (note) parts.push(h('p', { className: 'note' }, note));
  for (const plot of plots) {
    parts.push(
      h(
        'figure',
        { className: 'plot' },
        h('img', { src: svgUrl(plot.svg), alt: plot.title }),
        h('figcaption', {}, plot.title),
      ),
    );
  }
  for (const table of tables) {
    parts.push(
      h(
        'section',
        { className: 'result-table' },
        h('h2', {}, table.title),
        h(
          'table',
          { className: 'data-table' },
          h('thead', {}, h('tr', {}, ...table.columns.map((c) => h('th', {}, c)))),
          h(
            'tbody',
            {},
            ...table.rows.map((row) =>
              h(
                'tr',
                {},
                ...row.map((cell) =>
                  h(
                    'td',
                    {},
                    cell === null
                      ? ''
                      : typeof cell === 'number'
                        ? String(Math.round(cell * 1000) / 1000)
                        : cell,
                  ),
                ),
              ),
            ),
          ),
        ),
      ),
    );
  }
  parts.push(summary);
  if (plots.length === 0 && tables.length === 0 && !summary) {
    parts.push(
      h(
        'p',
        { className: 'empty' },
        'No annotations or scores yet. Annotate with `diffusion-lens serve RUN_DIR`; the per-layer accuracy curves and emergence histograms appear here once there are answers or scores.',
      ),
    );
  }
  return h('div', { className: 'view results-view' }, ...parts);
}
