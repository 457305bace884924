/**
 * WAL positions (LSNs) as unsigned 64-bit `bigint`s. Postgres prints them as two hex halves,
 * `16/B374D848`; comparing those strings is wrong (`9/0` > `10/0`), so everything past the wire
 * works with numbers and only logs and SQL see the text form.
 */

export const ZERO_LSN = 0n;

const MAX_LSN = 0xffff_ffff_ffff_ffffn;
// Postgres' pg_lsn input accepts 1 to 8 hex digits per half, nothing else (no spaces, no sign).
const MAX_HALF_DIGITS = 8;

function hexDigit(code: number): number {
  if (code >= 48 && code <= 57) return code - 48; // 0-9
  if (code >= 65 && code <= 70) return code - 55; // A-F
  if (code >= 97 && code <= 102) return code - 87; // a-f
  return -1;
}

function badLsn(text: unknown, why: string): TypeError {
  const shown = typeof text === 'string' ? JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text) : String(text);
  return new TypeError(`invalid LSN ${shown}: ${why}; expected two hexadecimal numbers of 1 to 8 digits separated by "/", like "16/B374D848"`);
}

// Hand-rolled instead of a regex: the replication stream parses one LSN per received message.
function parseHalf(text: string, start: number, end: number): number {
  if (end === start) throw badLsn(text, 'a half is empty');
  if (end - start > MAX_HALF_DIGITS) throw badLsn(text, 'a half has more than 8 digits');
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = hexDigit(text.charCodeAt(i));
    if (digit < 0) throw badLsn(text, `unexpected character ${JSON.stringify(text[i])}`);
    value = value * 16 + digit;
  }
  return value;
}

/** `'16/B374D848'` → `0x16B374D848n`. Throws a TypeError naming the input if it is not an LSN. */
export function parseLsn(text: string): bigint {
  if (typeof text !== 'string') throw badLsn(text, 'not a string');
  const slash = text.indexOf('/');
  if (slash < 0) throw badLsn(text, 'no "/"');
  const high = parseHalf(text, 0, slash);
  const low = parseHalf(text, slash + 1, text.length);
  return (BigInt(high) << 32n) | BigInt(low);
}

/** `0x16B374D848n` → `'16/B374D848'`: upper-case, unpadded halves, as Postgres prints them. */
export function formatLsn(lsn: bigint): string {
  if (typeof lsn !== 'bigint' || lsn < 0n || lsn > MAX_LSN) {
    throw new RangeError(`cannot format ${String(lsn)} as an LSN: it must be a bigint from 0 to 2^64-1`);
  }
  const high = Number(lsn >> 32n);
  const low = Number(lsn & 0xffff_ffffn);
  return `${high.toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
}

/** The 8-byte big-endian LSN at `offset` (how the replication protocol sends them). */
export function readLsn(buffer: Buffer, offset: number): bigint {
  return buffer.readBigUInt64BE(offset);
}

/**
 * The LSN at which a WAL segment file begins: `000000010000000A0000003F` (timeline, then the segment
 * number in two halves of 2^32 bytes' worth of segments) with `segmentSize` bytes per segment.
 * Undefined for a name that is no segment file (`.history`, `.partial`, `.backup` and the like).
 */
export function walSegmentStart(fileName: string, segmentSize: number): bigint | undefined {
  if (!/^[0-9A-F]{24}$/.test(fileName)) return undefined;
  if (!Number.isInteger(segmentSize) || segmentSize <= 0 || 0x1_0000_0000 % segmentSize !== 0) {
    throw new RangeError(`a WAL segment size must be a power of two dividing 4 GB, got ${String(segmentSize)}`);
  }
  const segmentsPerHalf = BigInt(0x1_0000_0000 / segmentSize);
  const high = BigInt(Number.parseInt(fileName.slice(8, 16), 16));
  const low = BigInt(Number.parseInt(fileName.slice(16, 24), 16));
  if (low >= segmentsPerHalf) return undefined;
  return (high * segmentsPerHalf + low) * BigInt(segmentSize);
}
