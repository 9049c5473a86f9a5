// One protocol message is one ZeroMQ frame holding a msgpack map (docs/protocol.md).
import { Packr } from 'msgpackr';

// useRecords: false keeps msgpackr to plain msgpack (no record extension Python cannot read).
const packr = new Packr({ useRecords: false });

export function encodeMessage(message: object): Buffer {
  return packr.pack(message);
}

/** Decodes one frame; throws on anything that is not a complete msgpack value. */
export function decodeFrame(frame: Uint8Array): unknown {
  return packr.unpack(frame);
}
