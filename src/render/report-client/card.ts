// One prompt's card: its text, columns and questions, a layer slider, the chosen layer's images (one per
// seed) at a readable size, and the whole layer × seed grid in small cells with the chosen layer's row
// marked. With two runs (comparison) their images stand side by side, the slider moving both by depth.
import { h } from './dom.js';
import {
  fileUrl,
  imageAt,
  nearestLayer,
  type ReportImage,
  type ReportLayer,
  type ReportPrompt,
  type RunIndex,
  stageName,
} from './report-data.js';

/** A run's prompt in a card. */
export interface CardMember {
  index: RunIndex;
  prompt: ReportPrompt;
}

export interface CardOptions {
  stage: number;
  /** The question whose answers are marked on the images. */
  question: string | null;
  /** Depth (percent of L) to show first. */
  depth: number;
  /** Name the run above its images (several runs in the report). */
  showRun: boolean;
}

/** Depth of each slider position: the depths of the members' layers, merged. */
function sliderDepths(members: readonly CardMember[]): number[] {
  return [...new Set(members.flatMap((m) => m.index.run.layers.map((layer) => layer.depth)))].sort(
    (a, b) => a - b,
  );
}

function nearestIndex(values: readonly number[], value: number): number {
  let best = 0;
  values.forEach((v, i) => {
    if (Math.abs(v - value) < Math.abs((values[best] ?? 0) - value)) best = i;
  });
  return best;
}

/** The yes/no counts of an image for a question, as a badge; null when nobody answered. */
function answerBadge(
  index: RunIndex,
  image: ReportImage | undefined,
  question: string | null,
): HTMLElement | null {
  if (!image || !question) return null;
  const counts = index.run.annotations.counts[image.k]?.[question];
  if (!counts) return null;
  const [yes, no] = counts;
  return h(
    'span',
    {
      className: `badge ${yes > no ? 'yes' : no > yes ? 'no' : 'tie'}`,
      title: `${question}: ${yes} yes, ${no} no`,
    },
    `✓${yes} ✗${no}`,
  );
}

function picture(
  index: RunIndex,
  image: ReportImage | undefined,
  className: string,
  thumb: boolean,
  alt: string,
): HTMLElement {
  if (!image) return h('div', { className: `${className} missing`, title: 'no image' }, '—');
  const src = fileUrl(index.run, thumb && image.th ? image.th : image.src);
  return h('img', {
    className,
    src,
    alt,
    loading: thumb ? 'lazy' : 'eager',
    decoding: 'async',
    'data-layer': image.l,
    'data-seed': image.s,
  });
}

class MemberView {
  readonly element: HTMLElement;
  private readonly focusRow: HTMLElement;
  private readonly layerLabel: HTMLElement;
  private readonly rows = new Map<number, HTMLTableRowElement>();
  private shown: ReportLayer | undefined;

  constructor(
    private readonly member: CardMember,
    private readonly options: CardOptions,
    onPickDepth: (depth: number) => void,
  ) {
    const { run } = member.index;
    this.layerLabel = h('span', { className: 'layer-label' });
    this.focusRow = h('div', { className: 'focus-row' });
    const head = h('tr', {}, h('th', {}), ...run.seeds.map((seed) => h('th', { scope: 'col' }, `s${seed}`)));
    const body = h('tbody');
    for (const layer of run.layers) {
      const row = h(
        'tr',
        { 'data-layer': layer.layer, title: `show ${layer.label} above` },
        h('th', { scope: 'row' }, layer.label),
      );
      for (const seed of run.seeds) {
        const image = imageAt(member.index, member.prompt.index, options.stage, layer.layer, seed);
        row.appendChild(
          h(
            'td',
            {},
            picture(member.index, image, 'cell', true, `${layer.label}, seed ${seed}`),
            answerBadge(member.index, image, options.question),
          ),
        );
      }
      row.addEventListener('click', () => onPickDepth(layer.depth));
      this.rows.set(layer.layer, row);
      body.appendChild(row);
    }
    const stage = stageName(run, options.stage);
    this.element = h(
      'div',
      { className: `member${run.pixelated ? ' pixelated' : ''}`, 'data-run': member.index.index },
      options.showRun || stage
        ? h(
            'div',
            { className: 'member-head' },
            options.showRun ? h('span', { className: 'run-tag' }, `${run.label} · ${run.model.short}`) : null,
            stage ? h('span', { className: 'stage-tag' }, stage) : null,
          )
        : null,
      h(
        'div',
        { className: 'member-body' },
        h('div', { className: 'focus' }, this.layerLabel, this.focusRow),
        h(
          'details',
          { className: 'grid-box', open: true },
          h('summary', {}, `all layers × seeds (${run.layers.length} × ${run.seeds.length})`),
          h('table', { className: 'grid' }, h('thead', {}, head), body),
        ),
      ),
    );
  }

  show(depth: number): void {
    const { run } = this.member.index;
    const layer = nearestLayer(run, depth);
    if (!layer || layer === this.shown) return;
    if (this.shown) this.rows.get(this.shown.layer)?.classList.remove('selected');
    this.rows.get(layer.layer)?.classList.add('selected');
    this.shown = layer;
    this.layerLabel.textContent = layer.label;
    this.focusRow.replaceChildren(
      ...run.seeds.map((seed) => {
        const image = imageAt(
          this.member.index,
          this.member.prompt.index,
          this.options.stage,
          layer.layer,
          seed,
        );
        return h(
          'figure',
          {},
          picture(this.member.index, image, 'focus-img', false, `${layer.label}, seed ${seed}`),
          h('figcaption', {}, `seed ${seed} `, answerBadge(this.member.index, image, this.options.question)),
        );
      }),
    );
  }
}

export class PromptCard {
  readonly element: HTMLElement;
  private readonly slider: HTMLInputElement;
  private readonly output: HTMLOutputElement;
  private readonly depths: number[];
  private readonly members: MemberView[];

  constructor(members: readonly CardMember[], options: CardOptions) {
    const [first] = members;
    if (!first) throw new Error('a card needs a prompt');
    const { prompt } = first;
    this.depths = sliderDepths(members);
    this.slider = h('input', {
      type: 'range',
      min: 0,
      max: Math.max(0, this.depths.length - 1),
      step: 1,
      className: 'layer-slider',
      'aria-label': 'layer',
    });
    this.output = h('output', { className: 'slider-value' });
    this.slider.addEventListener('input', () => this.setDepth(this.depths[Number(this.slider.value)] ?? 0));
    this.members = members.map((member) => new MemberView(member, options, (depth) => this.setDepth(depth)));
    const columns = Object.entries(prompt.columns);
    const questions = prompt.questions;
    this.element = h(
      'section',
      { className: 'card', 'data-prompt': prompt.index },
      h(
        'header',
        {},
        h('h2', { className: 'prompt' }, prompt.prompt),
        columns.length > 0
          ? h(
              'ul',
              { className: 'chips' },
              ...columns.map(([name, value]) =>
                h('li', {}, h('span', { className: 'chip-name' }, name), ' ', value),
              ),
            )
          : null,
        prompt.truncated
          ? h(
              'p',
              { className: 'warning' },
              `cut by the encoder: ${prompt.truncated.tokens} tokens, limit ${prompt.truncated.max_tokens}`,
            )
          : null,
        questions.length > 0
          ? h(
              'ul',
              { className: 'questions' },
              ...questions.map((q) =>
                h(
                  'li',
                  { className: q.id === options.question ? 'current' : '' },
                  h('span', { className: 'question-id' }, q.id),
                  ' ',
                  q.text,
                ),
              ),
            )
          : null,
      ),
      h('label', { className: 'slider' }, 'Layer ', this.slider, ' ', this.output),
      h(
        'div',
        { className: `members${members.length > 1 ? ' side-by-side' : ''}` },
        ...this.members.map((m) => m.element),
      ),
    );
    this.setDepth(options.depth);
  }

  /** Shows the layer nearest to a depth (percent of L) in every member. */
  setDepth(depth: number): void {
    const position = nearestIndex(this.depths, depth);
    this.slider.value = String(position);
    const shown = this.depths[position] ?? depth;
    this.output.textContent = `${shown}%`;
    for (const member of this.members) member.show(shown);
  }
}
