// Text files the user writes (configs, prompt files): UTF-8, with an optional byte-order mark. Other
// encodings are refused, naming the line, rather than read with replacement characters (a prompt whose
// "é" became "�" would make other images than the user meant, without a word).
import { isUtf8 } from 'node:buffer';

/** The text of a UTF-8 file's bytes (a leading BOM dropped), or what is wrong with them. */
export function decodeUtf8(bytes: Uint8Array): { text: string } | { error: string; line?: number } {
  if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
    return { error: 'is UTF-16 text: save it as UTF-8', line: 1 };
  }
  if (!isUtf8(bytes)) {
    // The first line that is not UTF-8 (lines end at '\n', which no multi-byte character holds).
    let line = 1;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i === bytes.length || bytes[i] === 0x0a) {
        if (!isUtf8(bytes.subarray(start, i))) break;
        line++;
        start = i + 1;
      }
    }
    return { error: 'is not UTF-8 text: save it as UTF-8', line };
  }
  const text = new TextDecoder('utf-8').decode(bytes);
  return { text };
}
