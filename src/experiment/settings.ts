// Which settings made which images of an output folder. A folder holds one variant: any prompts, layers
// and seeds, but one set of settings (model, sampler, lens; stage II's for stage II images). Each image's
// journal entry names its settings id; the settings themselves are kept under
// DIR/.diffusion-lens/settings/<id>.json so that a refusal can say what differs.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Stage } from '../config/index.js';
import { canonicalJson, type ImageSettings } from './plan.js';
import { STATE_DIR, sha256Hex, writeFileAtomic } from './store.js';

/** The settings that determine an image of a stage: stage I images do not depend on stage II's. */
export function stageSettings(settings: ImageSettings, stage: Stage): ImageSettings {
  if (stage === 2) return settings;
  const { stage2: _stage2, ...stage1 } = settings;
  return stage1;
}

/** A short id of the settings of a stage (16 hex digits of their canonical JSON's sha256). */
export function settingsId(settings: ImageSettings, stage: Stage): string {
  return sha256Hex(canonicalJson(stageSettings(settings, stage))).slice(0, 16);
}

const settingsFile = (outDir: string, id: string): string =>
  join(outDir, STATE_DIR, 'settings', `${id}.json`);

/** Records the settings of each stage of a run (once per id). */
export async function recordSettings(outDir: string, settings: ImageSettings, stages: readonly Stage[]) {
  for (const stage of stages) {
    const path = settingsFile(outDir, settingsId(settings, stage));
    await writeFileAtomic(path, `${JSON.stringify(stageSettings(settings, stage), null, 2)}\n`);
  }
}

/** The recorded settings of an id; null when unknown or unreadable. */
export async function readSettings(outDir: string, id: string): Promise<ImageSettings | null> {
  try {
    return JSON.parse(await readFile(settingsFile(outDir, id), 'utf8')) as ImageSettings;
  } catch {
    return null;
  }
}

/** `a.b.c` → value, for every leaf of a JSON value. */
function flatten(value: unknown, prefix = '', out = new Map<string, unknown>()): Map<string, unknown> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) flatten(child, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out.set(prefix, value);
  }
  return out;
}

export interface SettingChange {
  /** e.g. `sampler.steps`. */
  field: string;
  before: unknown;
  after: unknown;
}

/** The fields that differ between two settings, in a stable order. */
export function diffSettings(before: ImageSettings, after: ImageSettings): SettingChange[] {
  const a = flatten(before);
  const b = flatten(after);
  const fields = [...new Set([...a.keys(), ...b.keys()])].sort();
  return fields
    .filter((field) => canonicalJson(a.get(field) ?? null) !== canonicalJson(b.get(field) ?? null))
    .map((field) => ({ field, before: a.get(field), after: b.get(field) }));
}

const show = (value: unknown): string => (value === undefined ? '(unset)' : JSON.stringify(value));

/** `sampler.steps 6 → 8, lens.uncond "final" → "same-layer"`. */
export function describeChanges(changes: readonly SettingChange[]): string {
  return changes.map((c) => `${c.field} ${show(c.before)} -> ${show(c.after)}`).join(', ');
}

/**
 * A folder name for a variant, from what it changes: `steps-8`, `guidance-5-uncond-same-layer`; the
 * settings id when that would be empty or long.
 */
export function variantName(changes: readonly SettingChange[], id: string): string {
  const parts = changes.map((c) => {
    const field = c.field.split('.').pop() ?? c.field;
    const value = typeof c.after === 'string' && c.after.includes('/') ? c.after.split('/').pop() : c.after;
    return `${field}-${String(value ?? 'unset')}`;
  });
  const name = parts
    .join('-')
    .toLowerCase()
    .replace(/[^a-z0-9.]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return name && name.length <= 60 ? name : `settings-${id.slice(0, 8)}`;
}
