// Shared by the example studies: collect a run's images by (prompt, seed, layer), compare PNGs, print a
// per-layer table. Plain JavaScript on the public API, as a study script outside this repository would be.
import sharp from 'sharp';

/** `DLENS_EXAMPLE_QUICK=1` (CI): fewer prompts, seeds and steps, the same study. */
export const quick = process.env.DLENS_EXAMPLE_QUICK === '1';

/** Every image of a run, by `prompt_index/seed/layer`, from `experimentImages`. */
export async function collect(images) {
  const byItem = new Map();
  for await (const image of images) byItem.set(`${image.prompt_index}/${image.seed}/${image.layer}`, image);
  return byItem;
}

/** Mean absolute difference of two same-size PNGs, in grey levels (0-255). */
export async function meanAbsDiff(fileA, fileB) {
  const [a, b] = await Promise.all([fileA, fileB].map((file) => sharp(file).raw().toBuffer()));
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / a.length;
}

/** Per layer, the mean of `value(item)` over the items of that layer. */
export async function perLayer(items, value) {
  const sums = new Map();
  for (const item of items) {
    const entry = sums.get(item.layer) ?? { sum: 0, n: 0 };
    entry.sum += await value(item);
    entry.n += 1;
    sums.set(item.layer, entry);
  }
  return new Map([...sums].sort(([a], [b]) => a - b).map(([layer, { sum, n }]) => [layer, sum / n]));
}

/** Prints `columns` (name → Map layer → number) as a table, one row per layer. */
export function printTable(title, columns) {
  const names = Object.keys(columns);
  const layers = [...columns[names[0]].keys()];
  console.log(title);
  console.log(['layer', ...names].map((name) => name.padStart(14)).join(''));
  for (const layer of layers) {
    const cells = names.map((name) => columns[name].get(layer).toFixed(2).padStart(14));
    console.log(`${String(layer).padStart(14)}${cells.join('')}`);
  }
}
