// Safetensors files written by hand for the tests: an 8-byte little-endian header length, the header's
// JSON (padded with spaces to a multiple of 8), then the tensors' bytes (zeros).

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, BOOL: 1, U8: 1 };

export type TensorSpec = { dtype: string; shape: number[] };

/** A safetensors file's bytes: each tensor's header entry with its offsets, zeros for its data. */
export function safetensors(tensors: Record<string, TensorSpec>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, { dtype, shape }] of Object.entries(tensors)) {
    const bytes = shape.reduce((a, b) => a * b, 1) * (BYTES[dtype] ?? 1);
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  if (metadata) header.__metadata__ = metadata;
  return rawSafetensors(JSON.stringify(header), offset);
}

/** A header text as it is, then `dataBytes` zero bytes. */
export function rawSafetensors(headerText: string, dataBytes: number): Buffer {
  let json = Buffer.from(headerText);
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, ' ')]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, Buffer.alloc(dataBytes)]);
}
