// `diffusion-lens stats` as text: what was counted, a per-layer table and the emergence summary per
// group, the category comparisons and the agreement between judges.
import type { CategoryComparison, GroupStats, StatsSummary } from '../eval/index.js';

const fixed = (value: number | null, digits = 2): string =>
  value === null || !Number.isFinite(value) ? '-' : value.toFixed(digits);

const signed = (value: number, digits = 2): string =>
  Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(digits)}` : '-';

const pValue = (p: number | null): string => (p === null ? '-' : p < 0.001 ? '< 0.001' : p.toFixed(3));

/** Seeds as ranges: `0-3, 7`. */
function seedsText(seeds: readonly number[]): string {
  const parts: string[] = [];
  let start = seeds[0];
  for (let i = 0; i < seeds.length; i++) {
    const seed = seeds[i] as number;
    const next = seeds[i + 1];
    if (next !== seed + 1) {
      parts.push(start === seed ? `${seed}` : `${start}-${seed}`);
      start = next;
    }
  }
  return parts.join(', ');
}

/** Columns of text: the first `textColumns` left-aligned (names), the rest right-aligned (numbers). */
function table(header: string[], rows: string[][], textColumns = 0): string[] {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => (row[c] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, c) => (c < textColumns ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

function groupText(group: GroupStats, confidence: number): string[] {
  const percent = Math.round(confidence * 100);
  const judges = group.sources.length === 1 ? (group.sources[0] as string) : `${group.sources.length} judges`;
  const lines = [
    `${group.name}: ${group.prompts} prompt${group.prompts === 1 ? '' : 's'}, seeds ${seedsText(group.seeds)}, ${judges}`,
  ];
  lines.push(
    ...table(
      ['layer', 'n', 'accuracy', `${percent}% CI`],
      group.layers.map((row) => [
        String(row.layer),
        String(row.n),
        fixed(row.accuracy),
        `[${fixed(row.low)}, ${fixed(row.high)}]`,
      ]),
    ).map((line) => `  ${line}`),
  );
  const e = group.emergenceSummary;
  const at = e.counts.filter((c) => c.prompts > 0).map((c) => `L${c.layer}: ${c.prompts}`);
  lines.push(
    `  emergence: ${e.emerged} of ${e.prompts} prompts` +
      (e.emerged > 0
        ? `, median layer ${fixed(e.median, 1)} [${percent}% CI ${fixed(e.interval?.[0] ?? null, 1)}, ` +
          `${fixed(e.interval?.[1] ?? null, 1)}], mean ${fixed(e.mean, 1)}`
        : '') +
      `; never: ${e.never}`,
  );
  if (at.length > 0) lines.push(`    ${at.join('  ')}`);
  return lines;
}

function comparisonsText(summary: StatsSummary): string[] {
  const overall = summary.comparisons.filter((row) => row.layer === null);
  if (overall.length === 0) return [];
  const lines = [
    `categories compared (permutation test: ${summary.resamples} shuffles of the prompts' categories, two-sided):`,
  ];
  const pairs = new Map<string, CategoryComparison[]>();
  for (const row of overall) {
    const id = JSON.stringify([row.name, row.categoryA, row.categoryB]);
    pairs.set(id, [...(pairs.get(id) ?? []), row]);
  }
  for (const rows of pairs.values()) {
    const [first] = rows as [CategoryComparison];
    const where = summary.by.some((d) => d !== 'category') ? `${first.name}: ` : '';
    lines.push(`  ${where}${first.categoryA} (${first.promptsA}) vs ${first.categoryB} (${first.promptsB})`);
    lines.push(
      ...table(
        ['', 'a', 'b', 'a - b', 'p'],
        rows.map((row) => [
          row.measure === 'accuracy'
            ? 'accuracy, all layers'
            : `mean emergence layer (never = ${row.neverAs})`,
          fixed(row.a),
          fixed(row.b),
          signed(row.difference),
          pValue(row.p),
        ]),
        1,
      ).map((line) => `    ${line}`),
    );
  }
  lines.push('  (per layer: comparisons.csv)');
  return lines;
}

function agreementText(summary: StatsSummary): string[] {
  if (summary.agreement.length === 0) return [];
  return [
    'agreement between judges (the same image and question):',
    ...table(
      ['judge a', 'judge b', 'question', 'n', 'agreement', 'kappa'],
      summary.agreement.map((row) => [
        row.a,
        row.b,
        row.question ?? 'all',
        String(row.n),
        fixed(row.agreement),
        fixed(row.kappa),
      ]),
      3,
    ).map((line) => `  ${line}`),
  ];
}

/** `annotator:alice`, or `3 judges (a, b, c)`, the list cut after 4. */
function judgesText(sources: readonly string[]): string {
  if (sources.length === 1) return sources[0] as string;
  const listed = sources.length > 4 ? [...sources.slice(0, 3), `and ${sources.length - 3} more`] : sources;
  return `${sources.length} judges (${listed.join(', ')})`;
}

/** The whole report. */
export function statsText(summary: StatsSummary): string {
  const sources = [...new Set(summary.groups.flatMap((g) => g.sources))];
  const lines = [
    `${summary.n} judgments from ${judgesText(sources)}; ` +
      `grouped by ${summary.by.length > 0 ? summary.by.join(', ') : 'nothing'}; ` +
      `${Math.round(summary.confidence * 100)}% CI from ${summary.resamples} bootstrap resamples (prompts, then seeds), seed ${summary.seed}`,
    ...summary.notes.map((note) => `note: ${note}`),
  ];
  for (const group of summary.groups) lines.push('', ...groupText(group, summary.confidence));
  const comparisons = comparisonsText(summary);
  if (comparisons.length > 0) lines.push('', ...comparisons);
  const agreement = agreementText(summary);
  if (agreement.length > 0) lines.push('', ...agreement);
  return `${lines.join('\n')}\n`;
}
