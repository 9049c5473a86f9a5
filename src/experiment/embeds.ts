// The `lens.embeds` file, checked before any worker starts: a safetensors file (an 8-byte little-endian
// header length, that many bytes of JSON `{name: {dtype, shape, data_offsets}, "__metadata__": {...}}`,
// then the tensors' bytes) whose tensors replace the prompt's conditioning arguments of their names. One
// row (first dimension 1) serves every prompt; with `__metadata__.prompts` (a JSON list of strings, the
// prompt of each row) every tensor has one row per listed prompt, and every prompt of the run is listed.
// The sha256 of its bytes enters the images' keys (a moved file keeps them) and the worker refuses other
// bytes.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { ConfigError, type ExperimentConfig, issueAt, resolveLocalPath } from '../config/index.js';

/** An embeds file as checked: where it is, what its bytes hash to, and what it holds. */
export interface EmbedsFile {
  /** Absolute. */
  path: string;
  /** sha256 (hex) of the file's bytes. */
  sha256: string;
  /** The prompt of each row (`__metadata__.prompts`); null when the file has none (one row for all). */
  prompts: string[] | null;
  tensors: { name: string; dtype: string; shape: number[] }[];
}

/** Bytes per element of the safetensors dtypes (others are passed on unchecked). */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
};

/** A header larger than this is not an embeds file (safetensors itself stops at 100 MB). */
const MAX_HEADER = 100_000_000;

/** Why a file is not what lens.embeds takes: the message of a ConfigError on lens.embeds. */
class EmbedsProblem extends Error {}

const isObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

const isCount = (value: unknown): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

/**
 * The tensors and metadata of a safetensors header (the JSON text after the length), checked against the
 * size of the data that follows it. Throws EmbedsProblem.
 */
function readHeader(
  text: string,
  dataBytes: number,
): { tensors: EmbedsFile['tensors']; metadata: Record<string, string> } {
  const bad = (why: string) => new EmbedsProblem(`is not a safetensors file: ${why}`);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch {
    throw bad('its header is not JSON');
  }
  if (!isObject(header)) throw bad('its header is not a JSON object');
  const metadata: Record<string, string> = {};
  const tensors: EmbedsFile['tensors'] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(entry) || !Object.values(entry).every((value) => typeof value === 'string')) {
        throw bad('its __metadata__ is not a mapping of strings to strings');
      }
      Object.assign(metadata, entry);
      continue;
    }
    const tensor = JSON.stringify(name);
    if (!isObject(entry)) throw bad(`tensor ${tensor} is not described by {dtype, shape, data_offsets}`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string') throw bad(`tensor ${tensor} has no dtype`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw bad(`tensor ${tensor} has no shape (a list of sizes)`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw bad(`tensor ${tensor} has no data_offsets [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataBytes) {
      throw bad(
        `tensor ${tensor}'s bytes ${begin}..${end} are not within the file's ${dataBytes} data bytes`,
      );
    }
    const size = DTYPE_BYTES[dtype];
    const elements = shape.reduce((product: number, n: number) => product * n, 1);
    if (size !== undefined && end - begin !== elements * size) {
      throw bad(
        `tensor ${tensor} (${dtype}, shape [${shape.join(', ')}]) needs ${elements * size} bytes, ` +
          `its data_offsets give ${end - begin}`,
      );
    }
    tensors.push({ name, dtype, shape: shape as number[] });
  }
  return { tensors, metadata };
}

/** The `prompts` metadata: a JSON list of distinct strings. Throws EmbedsProblem. */
function listedPrompts(text: string): string[] {
  const bad = (why: string) =>
    new EmbedsProblem(`has "prompts" metadata that ${why}; it must be a JSON list of the prompt of each row`);
  let prompts: unknown;
  try {
    prompts = JSON.parse(text);
  } catch {
    throw bad('is not JSON');
  }
  if (!Array.isArray(prompts) || prompts.length === 0) throw bad('is not a non-empty list');
  if (!prompts.every((prompt) => typeof prompt === 'string')) throw bad('lists something other than strings');
  const seen = new Set<string>();
  for (const prompt of prompts as string[]) {
    if (seen.has(prompt)) throw bad(`lists ${JSON.stringify(prompt)} twice`);
    seen.add(prompt);
  }
  return prompts as string[];
}

/** Reads and checks the header of a safetensors file against the run's prompts. Throws EmbedsProblem. */
async function inspect(path: string, runPrompts: readonly string[]): Promise<Omit<EmbedsFile, 'sha256'>> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw new EmbedsProblem(`cannot be read: ${(error as Error).message}`);
  }
  let header: ReturnType<typeof readHeader>;
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new EmbedsProblem('is not a file');
    if (info.size < 8) throw new EmbedsProblem(`is not a safetensors file: it has ${info.size} bytes`);
    const length = Buffer.alloc(8);
    await handle.read(length, 0, 8, 0);
    const headerBytes = length.readBigUInt64LE(0);
    if (headerBytes > BigInt(Math.min(info.size - 8, MAX_HEADER))) {
      throw new EmbedsProblem(
        `is not a safetensors file: its header length ${headerBytes} is beyond its ${info.size} bytes`,
      );
    }
    const text = Buffer.alloc(Number(headerBytes));
    await handle.read(text, 0, text.length, 8);
    header = readHeader(text.toString('utf8'), info.size - 8 - text.length);
  } catch (error) {
    if (error instanceof EmbedsProblem) throw error;
    throw new EmbedsProblem(`cannot be read: ${(error as Error).message}`);
  } finally {
    await handle.close();
  }
  const { tensors, metadata } = header;
  if (tensors.length === 0) throw new EmbedsProblem('holds no tensors');
  const prompts = metadata.prompts === undefined ? null : listedPrompts(metadata.prompts);
  const rows = prompts?.length ?? 1;
  for (const { name, shape } of tensors) {
    if (shape[0] === rows) continue;
    const expected =
      prompts === null
        ? 'one row (first dimension 1) for every prompt, as the file has no "prompts" metadata'
        : `${rows} rows (first dimension ${rows}), one per prompt of its "prompts" metadata`;
    throw new EmbedsProblem(
      `has a tensor ${JSON.stringify(name)} of shape [${shape.join(', ')}]; expected ${expected}`,
    );
  }
  if (prompts !== null) {
    const listed = new Set(prompts);
    const missing = runPrompts.filter((prompt) => !listed.has(prompt));
    if (missing.length > 0) {
      const shown = missing.slice(0, 3).map((prompt) => JSON.stringify(prompt));
      const more = missing.length > 3 ? ` and ${missing.length - 3} more` : '';
      throw new EmbedsProblem(
        `has no row for ${missing.length === 1 ? 'the prompt' : `${missing.length} of the run's prompts:`} ` +
          `${shown.join(', ')}${more} (its "prompts" metadata lists the prompt of each row; every prompt ` +
          'of the run must be there)',
      );
    }
  }
  return { path, prompts, tensors };
}

/** sha256 (hex) of a file's bytes, read as a stream. */
async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * The config's `lens.embeds` file, resolved (relative to `configDir`), checked against the run's prompts
 * and hashed; null when the config has none. Throws ConfigError naming lens.embeds (by its line, or its
 * option) for a missing or unreadable file, one that is not safetensors, holds no tensors, has bad
 * `prompts` metadata, a tensor with the wrong rows, or no row for a prompt of the run.
 */
export async function resolveEmbeds(
  config: ExperimentConfig,
  configDir: string,
  prompts: readonly string[],
): Promise<EmbedsFile | null> {
  const given = config.lens.embeds;
  if (given === undefined) return null;
  const field = ['lens', 'embeds'];
  // Where the field was written (its line, or its option), for the error of a file that is not there.
  const { path: _path, message: _message, ...where } = issueAt(config, field, '');
  const path = resolveLocalPath(given, configDir, where, field);
  try {
    const inspected = await inspect(path, prompts);
    return { ...inspected, sha256: await fileSha256(path) };
  } catch (error) {
    if (!(error instanceof EmbedsProblem)) throw error;
    throw new ConfigError(issueAt(config, field, `${JSON.stringify(given)} ${error.message}`));
  }
}
