// A long list of cards, rendered a page at a time as it scrolls into view (an IntersectionObserver on a
// sentinel after the last card), so that a run of thousands of prompts and images opens at once. Cards
// off screen skip layout and paint (CSS content-visibility), and their grid images load lazily.
import { h } from './dom.js';

const PAGE = 8;

export class CardList<T> {
  readonly element: HTMLElement;
  private readonly sentinel: HTMLElement;
  private readonly observer: IntersectionObserver;
  private items: readonly T[] = [];
  private rendered = 0;

  constructor(
    private readonly render: (item: T) => HTMLElement,
    private readonly empty: string,
  ) {
    this.sentinel = h('div', { className: 'sentinel', 'aria-hidden': 'true' });
    this.element = h('div', { className: 'card-list' });
    this.observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) this.more();
      },
      { rootMargin: '1200px 0px' },
    );
  }

  /** Replaces the list's items and renders the first page. */
  show(items: readonly T[], summary: string): void {
    this.items = items;
    this.rendered = 0;
    this.observer.disconnect();
    this.element.replaceChildren(h('p', { className: 'count' }, summary));
    if (items.length === 0) {
      this.element.appendChild(h('p', { className: 'empty' }, this.empty));
      return;
    }
    this.element.appendChild(this.sentinel);
    this.more();
    this.observer.observe(this.sentinel);
  }

  private more(): void {
    const end = Math.min(this.items.length, this.rendered + PAGE);
    const fragment = document.createDocumentFragment();
    for (let i = this.rendered; i < end; i++) fragment.appendChild(this.render(this.items[i] as T));
    this.rendered = end;
    this.element.insertBefore(fragment, this.sentinel);
    if (this.rendered >= this.items.length) {
      this.observer.disconnect();
      this.sentinel.remove();
    }
  }
}
