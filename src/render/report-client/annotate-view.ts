// Annotation mode (served pages only): one image at a time, the prompt and its questions; y / n answers
// the current question (1-9 picks one), u or Backspace takes the last answer back, s skips the image, l
// shows or hides the layer. Every answer is sent to the server at once and written there before the
// next key is handled (keys queue up, in order), so closing the tab loses nothing; the server's file is
// the only state. The annotator's name is kept in localStorage.
import { ApiError, api, type NextImage, type Progress } from './api.js';
import { h, option } from './dom.js';
import {
  fileUrl,
  type ReportData,
  type ReportImage,
  type ReportPrompt,
  type RunIndex,
  stageName,
} from './report-data.js';

const NAME_KEY = 'diffusion-lens.annotator';
const RUN_KEY = 'diffusion-lens.annotate-run';
const LAYER_KEY = 'diffusion-lens.show-layer';
/** As the server checks it (src/eval/annotations.ts ANNOTATOR_NAME). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

interface Current {
  position: number;
  image: ReportImage;
  prompt: ReportPrompt;
  answers: Record<string, 0 | 1>;
  question: number;
}

function stored(key: string): string | null {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null;
  }
}

function store(key: string, value: string): void {
  try {
    window.localStorage.setItem(key, value);
  } catch {
    // private mode: the name is asked again next time
  }
}

export class AnnotateView {
  readonly element: HTMLElement;
  private readonly body: HTMLElement;
  private readonly status: HTMLElement;
  private annotator = stored(NAME_KEY) ?? '';
  private run: number;
  private current: Current | null = null;
  private progress: Progress | null = null;
  private showLayer = stored(LAYER_KEY) === '1';
  private queue: Promise<void> = Promise.resolve();
  private pending = 0;
  active = false;

  constructor(private readonly runs: readonly RunIndex[]) {
    const saved = Number(stored(RUN_KEY));
    this.run = Number.isInteger(saved) && saved >= 0 && saved < runs.length ? saved : 0;
    this.body = h('div', { className: 'annotate-body' });
    this.status = h('p', { className: 'annotate-status', role: 'status' });
    this.element = h('div', { className: 'view annotate-view' }, this.body, this.status);
    document.addEventListener('keydown', (event) => this.onKey(event));
    this.setPending(0);
  }

  /** Called when the view is shown. */
  open(): void {
    this.active = true;
    if (!this.annotator) this.askName();
    else if (!this.current) this.enqueue(() => this.loadNext(0));
  }

  private setPending(delta: number): void {
    this.pending += delta;
    document.body.dataset.pending = String(this.pending);
  }

  private enqueue(action: () => Promise<void>): void {
    this.setPending(1);
    this.queue = this.queue
      .then(action)
      .catch((error: unknown) => this.fail(error))
      .finally(() => this.setPending(-1));
  }

  private fail(error: unknown): void {
    this.status.textContent = `error: ${error instanceof ApiError ? error.message : String(error)}`;
    this.status.className = 'annotate-status error';
  }

  private saved(text: string): void {
    this.status.textContent = text;
    this.status.className = 'annotate-status ok';
  }

  private askName(): void {
    const input = h('input', {
      type: 'text',
      className: 'annotator-name',
      'aria-label': 'annotator name',
      placeholder: 'your name',
      autocomplete: 'off',
      value: this.annotator,
    });
    const message = h(
      'p',
      { className: 'hint' },
      'Letters, digits, ".", "_" or "-". Your answers go to annotations/<name>.jsonl in the run folder.',
    );
    const form = h(
      'form',
      { className: 'name-form' },
      h('h2', {}, 'Who is annotating?'),
      input,
      h('button', { type: 'submit' }, 'Start'),
      message,
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!NAME.test(name)) {
        message.textContent = `"${name}" is not a name this accepts: 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.`;
        message.className = 'hint error';
        return;
      }
      this.annotator = name;
      store(NAME_KEY, name);
      input.blur();
      this.current = null;
      this.enqueue(() => this.loadNext(0));
    });
    this.body.replaceChildren(form);
    input.focus();
  }

  private onKey(event: KeyboardEvent): void {
    if (!this.active || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target as HTMLElement | null;
    if (target && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(target.tagName)) return;
    if (!this.annotator) return;
    const key = event.key.toLowerCase();
    const handled = (action: () => Promise<void>) => {
      event.preventDefault();
      this.enqueue(action);
    };
    if (key === 'y') handled(() => this.answer(1));
    else if (key === 'n') handled(() => this.answer(0));
    else if (key === 'u' || event.key === 'Backspace') handled(() => this.undo());
    else if (key === 's') handled(async () => this.loadNext((this.current?.position ?? -1) + 1));
    else if (key === 'l') {
      event.preventDefault();
      this.showLayer = !this.showLayer;
      store(LAYER_KEY, this.showLayer ? '1' : '0');
      this.render();
    } else if (/^[1-9]$/.test(key)) {
      event.preventDefault();
      this.enqueue(async () => {
        const current = this.current;
        const n = Number(key) - 1;
        if (current && n < current.prompt.questions.length) {
          current.question = n;
          this.render();
        }
      });
    }
  }

  private index(): RunIndex {
    const index = this.runs[this.run];
    if (!index) throw new Error(`no run ${this.run}`);
    return index;
  }

  private take(next: NextImage, question?: string): void {
    this.progress = next.progress;
    const index = this.index();
    const image = next.key === null ? undefined : index.byKey.get(next.key);
    const prompt = image ? index.run.prompts[image.p] : undefined;
    if (next.position === null || !image || !prompt) {
      this.current = null;
      this.render();
      return;
    }
    const answers = { ...next.answers };
    const asked = question === undefined ? -1 : prompt.questions.findIndex((q) => q.id === question);
    const open = prompt.questions.findIndex((q) => answers[q.id] === undefined);
    this.current = {
      position: next.position,
      image,
      prompt,
      answers,
      question: asked >= 0 ? asked : Math.max(0, open),
    };
    this.render();
  }

  private async loadNext(from: number): Promise<void> {
    this.take(await api.next(this.run, this.annotator, from));
  }

  private async answer(value: 0 | 1): Promise<void> {
    const current = this.current;
    if (!current) return;
    const question = current.prompt.questions[current.question];
    if (!question) return;
    const { progress } = await api.answer({
      annotator: this.annotator,
      run: this.run,
      key: current.image.k,
      question: question.id,
      answer: value,
    });
    this.progress = progress;
    current.answers[question.id] = value;
    this.saved(`saved: ${question.id} = ${value === 1 ? 'yes' : 'no'}`);
    const questions = current.prompt.questions;
    const open = questions.findIndex((q, i) => i > current.question && current.answers[q.id] === undefined);
    const anyOpen = questions.findIndex((q) => current.answers[q.id] === undefined);
    if (open >= 0 || anyOpen >= 0) {
      current.question = open >= 0 ? open : anyOpen;
      this.render();
    } else {
      await this.loadNext(current.position + 1);
    }
  }

  private async undo(): Promise<void> {
    const { undone, progress } = await api.undo({ annotator: this.annotator, run: this.run });
    this.progress = progress;
    if (!undone) {
      this.saved('nothing to undo');
      this.render();
      return;
    }
    this.take(await api.image(this.run, this.annotator, undone.key), undone.question);
    this.saved(`taken back: ${undone.question}`);
  }

  private progressBar(): HTMLElement {
    const p = this.progress;
    const done = p?.images_done ?? 0;
    const total = p?.images ?? 0;
    return h(
      'div',
      { className: 'annotate-progress' },
      h('progress', { max: Math.max(1, total), value: done, 'aria-label': 'images annotated' }),
      h(
        'span',
        { className: 'progress-text' },
        `${done} / ${total} images · ${p?.answered ?? 0} / ${p?.questions ?? 0} answers`,
      ),
    );
  }

  private header(): HTMLElement {
    const parts: (HTMLElement | string)[] = [
      h('span', {}, 'Annotator ', h('b', { className: 'annotator' }, this.annotator), ' '),
      h('button', { type: 'button', className: 'link', onclick: () => this.askName() }, 'change'),
    ];
    if (this.runs.length > 1) {
      const select = h('select', { 'aria-label': 'run to annotate' });
      for (const index of this.runs)
        select.appendChild(option(String(index.index), index.run.label, index.index === this.run));
      select.addEventListener('change', () => {
        this.run = Number(select.value);
        store(RUN_KEY, String(this.run));
        select.blur();
        this.current = null;
        this.enqueue(() => this.loadNext(0));
      });
      parts.push(h('label', {}, ' · Run ', select));
    }
    return h('div', { className: 'annotate-head' }, ...parts, this.progressBar());
  }

  /** Download links of the annotator's answers as paper-layout CSV files, listed when opened. */
  private exportLinks(open = false): HTMLElement {
    const list = h('div', { className: 'export-list' });
    const box = h(
      'details',
      { className: 'exports' },
      h('summary', {}, "Export (the paper's CSV layout)"),
      list,
    );
    const load = () => {
      api
        .exports(this.run, this.annotator)
        .then(({ files }) => {
          list.replaceChildren();
          if (files.length === 0) list.appendChild(h('p', { className: 'hint' }, 'no answers yet'));
          for (const file of files) {
            list.appendChild(
              h(
                'p',
                {},
                h('a', { href: file.url, download: file.name, className: 'export-link' }, file.name),
                ` (${file.images} images)`,
              ),
            );
          }
        })
        .catch((error: unknown) => this.fail(error));
    };
    box.addEventListener('toggle', () => {
      if (box.open) load();
    });
    box.open = open;
    return box;
  }

  private keysHelp(): HTMLElement {
    const keys: [string, string][] = [
      ['y / n', 'yes / no for the current question'],
      ['1-9', 'pick a question'],
      ['u, Backspace', 'take the last answer back'],
      ['s', 'skip this image'],
      ['l', 'show or hide the layer'],
    ];
    return h(
      'dl',
      { className: 'keys' },
      ...keys.flatMap(([key, what]) => [h('dt', {}, h('kbd', {}, key)), h('dd', {}, what)]),
    );
  }

  private render(): void {
    if (!this.annotator) return;
    const current = this.current;
    if (!current) {
      this.body.replaceChildren(
        this.header(),
        h(
          'p',
          { className: 'done' },
          this.progress ? 'Every image of this run has all its answers. Thank you!' : 'Loading…',
        ),
        this.exportLinks(this.progress !== null),
      );
      return;
    }
    const { run } = this.index();
    const { image, prompt } = current;
    const stage = stageName(run, image.st);
    const layer = run.layers.find((l) => l.layer === image.l);
    const meta = this.showLayer
      ? `${layer?.label ?? `L${image.l}`} · seed ${image.s}${stage ? ` · ${stage}` : ''}`
      : `layer hidden (l shows it)${stage ? ` · ${stage}` : ''}`;
    const questions = h(
      'ol',
      { className: 'annotate-questions' },
      ...prompt.questions.map((q, i) => {
        const answer = current.answers[q.id];
        return h(
          'li',
          {
            className: `${i === current.question ? 'current' : ''}${answer === undefined ? '' : answer === 1 ? ' answered-yes' : ' answered-no'}`,
            'data-question': q.id,
          },
          h('span', { className: 'question-text' }, q.text),
          ' ',
          h('span', { className: 'answer' }, answer === undefined ? '—' : answer === 1 ? 'yes' : 'no'),
        );
      }),
    );
    this.body.replaceChildren(
      this.header(),
      h(
        'div',
        { className: 'annotate-main' },
        h(
          'div',
          { className: `annotate-image${run.pixelated ? ' pixelated' : ''}` },
          h('img', {
            src: fileUrl(run, image.src),
            alt: 'image to annotate',
            'data-key': image.k,
            'data-position': current.position,
          }),
        ),
        h(
          'div',
          { className: 'annotate-side' },
          h('h2', { className: 'prompt' }, prompt.prompt),
          h('p', { className: 'meta' }, meta),
          questions,
          this.keysHelp(),
          this.exportLinks(),
        ),
      ),
    );
  }
}

export function annotateUnavailable(data: ReportData): HTMLElement {
  return h(
    'div',
    { className: 'view annotate-view' },
    h(
      'p',
      { className: 'empty' },
      `Annotation needs the local server: run \`diffusion-lens serve ${data.runs[0]?.dir ?? 'RUN_DIR'}\` and open the address it prints.`,
    ),
  );
}
