/**
 * A cursor over one protocol message. One instance is reused for every message (`reset`), so
 * decoding allocates nothing for the cursor itself.
 *
 * Buffer's own readers throw a RangeError past the end; the strings and byte runs below check by
 * hand because `toString` silently clamps. Callers turn every RangeError into a protocol error.
 */

export class TruncatedMessageError extends RangeError {
  constructor(what: string, at: number, needed: number, length: number) {
    super(`the message ends early: ${what} at byte ${at} needs ${needed} byte(s), only ${Math.max(0, length - at)} left`);
    this.name = 'TruncatedMessageError';
  }
}

const EMPTY = Buffer.alloc(0);

export class BinaryReader {
  buffer: Buffer = EMPTY;
  offset = 0;

  reset(buffer: Buffer): void {
    this.buffer = buffer;
    this.offset = 0;
  }

  get remaining(): number {
    return this.buffer.length - this.offset;
  }

  uint8(): number {
    const value = this.buffer[this.offset];
    if (value === undefined) throw new TruncatedMessageError('a byte', this.offset, 1, this.buffer.length);
    this.offset += 1;
    return value;
  }

  uint16(): number {
    const value = this.buffer.readUInt16BE(this.offset);
    this.offset += 2;
    return value;
  }

  int32(): number {
    const value = this.buffer.readInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  uint32(): number {
    const value = this.buffer.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  uint64(): bigint {
    const value = this.buffer.readBigUInt64BE(this.offset);
    this.offset += 8;
    return value;
  }

  int64(): bigint {
    const value = this.buffer.readBigInt64BE(this.offset);
    this.offset += 8;
    return value;
  }

  /** A NUL-terminated UTF-8 string (the protocol's `String`). */
  cstring(what: string): string {
    const start = this.offset;
    const end = this.buffer.indexOf(0, start);
    if (end < 0) throw new TruncatedMessageError(`${what} (a NUL-terminated string)`, start, this.buffer.length - start + 1, this.buffer.length);
    this.offset = end + 1;
    return this.buffer.toString('utf8', start, end);
  }

  utf8(length: number, what: string): string {
    const start = this.offset;
    const end = start + length;
    if (length < 0 || end > this.buffer.length) throw new TruncatedMessageError(what, start, length, this.buffer.length);
    this.offset = end;
    return this.buffer.toString('utf8', start, end);
  }

  /**
   * A copy, not a view: the replication client's parser compacts its receive buffer in place, so a
   * view kept past the current callback (rows go to async hooks) could change under its holder.
   */
  bytes(length: number, what: string): Buffer {
    const start = this.offset;
    const end = start + length;
    if (length < 0 || end > this.buffer.length) throw new TruncatedMessageError(what, start, length, this.buffer.length);
    this.offset = end;
    return Buffer.from(this.buffer.subarray(start, end));
  }
}
