import { describe, expect, it } from 'vitest';
import { ZERO_LSN, formatLsn, parseLsn, readLsn } from '../../bridge/replication/lsn.js';
import { PgoutputDecoder, PgoutputDecoderError, parseTextArray, type PgoutputMessage, type RelationInfo } from '../../bridge/replication/pgoutput-decoder.js';

// Type oids from pg_type.dat.
const BOOL = 16;
const BYTEA = 17;
const INT8 = 20;
const INT4 = 23;
const TEXT = 25;
const JSON_OID = 114;
const TIMESTAMPTZ = 1184;
const INT4_ARRAY = 1007;
const NUMERIC = 1700;
const JSONB = 3802;

/** Writes protocol fields the way the server does (big-endian, NUL-terminated strings). */
class Builder {
  readonly #parts: Buffer[] = [];

  byte(value: number | string): this {
    this.#parts.push(Buffer.from([typeof value === 'string' ? value.charCodeAt(0) : value]));
    return this;
  }
  int16(value: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(value);
    this.#parts.push(b);
    return this;
  }
  int32(value: number): this {
    const b = Buffer.alloc(4);
    if (value < 0) b.writeInt32BE(value);
    else b.writeUInt32BE(value);
    this.#parts.push(b);
    return this;
  }
  int64(value: bigint): this {
    const b = Buffer.alloc(8);
    if (value < 0n) b.writeBigInt64BE(value);
    else b.writeBigUInt64BE(value);
    this.#parts.push(b);
    return this;
  }
  cstring(value: string): this {
    this.#parts.push(Buffer.from(value, 'utf8'), Buffer.from([0]));
    return this;
  }
  raw(value: Buffer): this {
    this.#parts.push(value);
    return this;
  }
  build(): Buffer {
    return Buffer.concat(this.#parts);
  }
}

type Value = string | null | { unchanged: true } | { binary: Buffer };
const U = { unchanged: true } as const;

function tuple(b: Builder, values: readonly Value[]): Builder {
  b.int16(values.length);
  for (const value of values) {
    if (value === null) b.byte('n');
    else if (typeof value === 'string') {
      const bytes = Buffer.from(value, 'utf8');
      b.byte('t').int32(bytes.length).raw(bytes);
    } else if ('unchanged' in value) b.byte('u');
    else b.byte('b').int32(value.binary.length).raw(value.binary);
  }
  return b;
}

const msg = {
  begin: (finalLsn: bigint, micros: bigint, xid: number) => new Builder().byte('B').int64(finalLsn).int64(micros).int32(xid).build(),
  commit: (flags: number, commitLsn: bigint, endLsn: bigint, micros: bigint) =>
    new Builder().byte('C').byte(flags).int64(commitLsn).int64(endLsn).int64(micros).build(),
  origin: (lsn: bigint, name: string) => new Builder().byte('O').int64(lsn).cstring(name).build(),
  type: (oid: number, schema: string, name: string) => new Builder().byte('Y').int32(oid).cstring(schema).cstring(name).build(),
  relation(oid: number, schema: string, name: string, identity: string, columns: Array<[name: string, typeOid: number, key?: boolean, typeMod?: number]>) {
    const b = new Builder().byte('R').int32(oid).cstring(schema).cstring(name).byte(identity).int16(columns.length);
    for (const [column, typeOid, key, typeMod] of columns)
      b.byte(key ? 1 : 0)
        .cstring(column)
        .int32(typeOid)
        .int32(typeMod ?? -1);
    return b.build();
  },
  insert: (oid: number, values: Value[]) => tuple(new Builder().byte('I').int32(oid).byte('N'), values).build(),
  update(oid: number, before: { K?: readonly Value[]; O?: readonly Value[] }, values: readonly Value[]) {
    const b = new Builder().byte('U').int32(oid);
    if (before.K) tuple(b.byte('K'), before.K);
    if (before.O) tuple(b.byte('O'), before.O);
    return tuple(b.byte('N'), values).build();
  },
  delete: (oid: number, kind: 'K' | 'O', values: Value[]) => tuple(new Builder().byte('D').int32(oid).byte(kind), values).build(),
  truncate(oids: number[], options: number) {
    const b = new Builder().byte('T').int32(oids.length).byte(options);
    for (const oid of oids) b.int32(oid);
    return b.build();
  },
  message: (transactional: boolean, lsn: bigint, prefix: string, content: Buffer) =>
    new Builder()
      .byte('M')
      .byte(transactional ? 1 : 0)
      .int64(lsn)
      .cstring(prefix)
      .int32(content.length)
      .raw(content)
      .build(),
};

function expectTag<T extends PgoutputMessage['tag']>(message: PgoutputMessage, tag: T): Extract<PgoutputMessage, { tag: T }> {
  expect(message.tag).toBe(tag);
  return message as Extract<PgoutputMessage, { tag: T }>;
}

/** A decoder that knows `public.items (id int4 key, name text, body text)`. */
function itemsDecoder(identity = 'd'): { decoder: PgoutputDecoder; relation: RelationInfo } {
  const decoder = new PgoutputDecoder();
  const relation = expectTag(
    decoder.decode(
      msg.relation(16400, 'public', 'items', identity, [
        ['id', INT4, true],
        ['name', TEXT],
        ['body', TEXT],
      ]),
    ),
    'relation',
  ).relation;
  return { decoder, relation };
}

function decodeError(fn: () => unknown): PgoutputDecoderError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PgoutputDecoderError);
    expect((error as PgoutputDecoderError).code).toBe('E_PGOUTPUT');
    return error as PgoutputDecoderError;
  }
  throw new Error('expected a PgoutputDecoderError');
}

describe('lsn', () => {
  it.each([
    ['0/0', 0n],
    ['0/1', 1n],
    ['16/B374D848', 0x16_b374_d848n],
    ['1/0', 0x1_0000_0000n],
    ['FFFFFFFF/FFFFFFFF', 0xffff_ffff_ffff_ffffn],
  ])('%s ⇄ %s', (text, value) => {
    expect(parseLsn(text)).toBe(value);
    expect(formatLsn(value)).toBe(text);
  });

  it('accepts lower case and zero padding, prints upper case without padding', () => {
    expect(formatLsn(parseLsn('00000016/0000b374'))).toBe('16/B374');
  });

  it.each(['', '/', '0/', '/0', '0', '0/0/0', ' 0/0', '0/0 ', 'G/0', '0/-1', '-1/0', '123456789/0', '0/123456789', '0x1/0'])('rejects %j', (text) => {
    expect(() => parseLsn(text)).toThrow(TypeError);
    expect(() => parseLsn(text)).toThrow(/invalid LSN .*like "16\/B374D848"/);
  });

  it('rejects what is not a string', () => {
    expect(() => parseLsn(undefined as unknown as string)).toThrow(/invalid LSN undefined: not a string/);
  });

  it('refuses to format what is not an LSN', () => {
    expect(() => formatLsn(-1n)).toThrow(RangeError);
    expect(() => formatLsn(1n << 64n)).toThrow(RangeError);
  });

  it('reads 8 bytes big-endian at an offset', () => {
    const buffer = Buffer.from([0xff, 0x00, 0x00, 0x00, 0x16, 0xb3, 0x74, 0xd8, 0x48, 0xff]);
    expect(readLsn(buffer, 1)).toBe(0x16_b374_d848n);
    expect(readLsn(Buffer.alloc(8, 0xff), 0)).toBe(0xffff_ffff_ffff_ffffn);
    expect(ZERO_LSN).toBe(0n);
  });
});

describe('PgoutputDecoder', () => {
  describe('transaction framing', () => {
    // 2025-11-22T04:36:12.345678Z in microseconds since 2000-01-01.
    const micros = BigInt(Date.UTC(2025, 10, 22, 4, 36, 12, 345) - Date.UTC(2000, 0, 1)) * 1000n + 678n;

    it('decodes Begin: final LSN, exact and Date commit time, unsigned xid', () => {
      const begin = expectTag(new PgoutputDecoder().decode(msg.begin(0x16_b374_d848n, micros, 0xffff_fff0)), 'begin');
      expect(begin).toEqual({
        tag: 'begin',
        finalLsn: 0x16_b374_d848n,
        commitTime: new Date('2025-11-22T04:36:12.345Z'),
        commitTimeMicros: micros,
        xid: 0xffff_fff0,
      });
    });

    it('decodes Commit', () => {
      const commit = expectTag(new PgoutputDecoder().decode(msg.commit(0, 0x1_0000_0010n, 0x1_0000_0040n, micros)), 'commit');
      expect(commit).toEqual({
        tag: 'commit',
        flags: 0,
        commitLsn: 0x1_0000_0010n,
        endLsn: 0x1_0000_0040n,
        commitTime: new Date('2025-11-22T04:36:12.345Z'),
        commitTimeMicros: micros,
      });
    });

    it.each([
      [0n, '2000-01-01T00:00:00.000Z'],
      [999n, '2000-01-01T00:00:00.000Z'],
      [-1n, '1999-12-31T23:59:59.999Z'],
      [-1000n, '1999-12-31T23:59:59.999Z'],
      [-1001n, '1999-12-31T23:59:59.998Z'],
    ])('floors %s µs to milliseconds', (value, iso) => {
      const begin = expectTag(new PgoutputDecoder().decode(msg.begin(1n, value, 1)), 'begin');
      expect(begin.commitTime.toISOString()).toBe(iso);
      expect(begin.commitTimeMicros).toBe(value);
    });

    it('decodes Origin', () => {
      expect(new PgoutputDecoder().decode(msg.origin(0xabcn, 'pg_16385'))).toEqual({ tag: 'origin', originLsn: 0xabcn, name: 'pg_16385' });
    });
  });

  describe('relations', () => {
    it.each([
      ['d', 'default', ['id']],
      ['n', 'nothing', []],
      ['f', 'full', ['id', 'name']],
      ['i', 'index', ['name']],
    ] as const)('replica identity %s → %s, key columns from the flags', (byte, identity, keys) => {
      const decoder = new PgoutputDecoder();
      const columns: Array<[string, number, boolean]> = [
        ['id', INT4, keys.includes('id' as never)],
        ['name', TEXT, keys.includes('name' as never)],
      ];
      const { relation } = expectTag(decoder.decode(msg.relation(70000, 'My Schema', 'Order Lines', byte, columns)), 'relation');
      expect(relation).toMatchObject({ oid: 70000, schema: 'My Schema', name: 'Order Lines', replicaIdentity: identity, keyColumns: keys });
      expect(relation.columns.map((c) => [c.name, c.typeOid, c.typeMod, c.isKey])).toEqual([
        ['id', INT4, -1, keys.includes('id' as never)],
        ['name', TEXT, -1, keys.includes('name' as never)],
      ]);
      expect(decoder.relation(70000)).toBe(relation);
      expect(decoder.relation(70001)).toBeUndefined();
    });

    it('keeps the type modifier', () => {
      const { relation } = expectTag(new PgoutputDecoder().decode(msg.relation(1, 's', 't', 'd', [['v', 1043, false, 36]])), 'relation');
      expect(relation.columns[0]?.typeMod).toBe(36);
    });

    it('rejects an unknown replica identity', () => {
      expect(decodeError(() => new PgoutputDecoder().decode(msg.relation(1, 's', 't', 'x', []))).message).toMatch(/replica identity 'x'/);
    });

    it('replaces a relation by a newer Relation message for the same oid', () => {
      const { decoder } = itemsDecoder();
      const before = expectTag(decoder.decode(msg.insert(16400, ['1', 'a', 'b'])), 'insert');
      decoder.decode(
        msg.relation(16400, 'public', 'items', 'd', [
          ['id', INT4, true],
          ['name', TEXT],
          ['body', TEXT],
          ['qty', INT8],
        ]),
      );
      const after = expectTag(decoder.decode(msg.insert(16400, ['2', 'c', 'd', '9007199254740993'])), 'insert');
      expect(after.new).toEqual({ id: 2, name: 'c', body: 'd', qty: '9007199254740993' });
      expect(after.relation.columns).toHaveLength(4);
      expect(before.relation.columns).toHaveLength(3);
      expect(decoder.relation(16400)).toBe(after.relation);
      // The old shape no longer fits.
      expect(decodeError(() => decoder.decode(msg.insert(16400, ['3', 'e', 'f']))).message).toMatch(/sent 3 column\(s\).*announced 4/);
    });
  });

  describe('user-defined types', () => {
    const stream = [
      msg.type(90001, 'app', 'mood'),
      msg.type(90002, 'app', '_mood'),
      msg.relation(90010, 'app', 'people', 'd', [
        ['id', INT4, true],
        ['mood', 90001],
        ['moods', 90002],
      ]),
    ];

    it('decodes Type messages and types the columns that use them', () => {
      const decoder = new PgoutputDecoder();
      expect(decoder.decode(stream[0]!)).toEqual({ tag: 'type', oid: 90001, schema: 'app', name: 'mood' });
      decoder.decode(stream[1]!);
      const { relation } = expectTag(decoder.decode(stream[2]!), 'relation');
      expect(relation.columns.map((c) => c.typeName)).toEqual([undefined, 'mood', '_mood']);
      const insert = expectTag(decoder.decode(msg.insert(90010, ['1', 'happy', '{happy,"very sad",NULL,"NULL"}'])), 'insert');
      expect(insert.new).toEqual({ id: 1, mood: 'happy', moods: ['happy', 'very sad', null, 'NULL'] });
    });

    it('parses a domain over a builtin like its base type (pgoutput names the base type, in pg_catalog)', () => {
      const decoder = new PgoutputDecoder();
      decoder.decode(msg.type(90020, '', 'int4'));
      decoder.decode(msg.type(90021, '', '_jsonb'));
      decoder.decode(msg.type(90022, '', 'int8'));
      decoder.decode(msg.type(90023, '', 'tsrange_unknown_to_the_driver'));
      decoder.decode(msg.type(90024, 'app', 'int4'));
      decoder.decode(
        msg.relation(4, 'app', 'd', 'd', [
          ['a', 90020],
          ['b', 90021],
          ['c', 90022],
          ['d', 90023],
          ['e', 90024],
        ]),
      );
      const insert = expectTag(decoder.decode(msg.insert(4, ['5', '{"{\\"k\\": 1}",NULL}', '42', '[1,2)', '6'])), 'insert');
      expect(insert.new).toEqual({ a: 5, b: [{ k: 1 }, null], c: '42', d: '[1,2)', e: '6' });
    });

    it('leaves a user type without a Type message as text', () => {
      const decoder = new PgoutputDecoder();
      decoder.decode(msg.relation(1, 'app', 't', 'd', [['v', 90099]]));
      expect(expectTag(decoder.decode(msg.insert(1, ['{1,2}'])), 'insert').new).toEqual({ v: '{1,2}' });
    });

    it('lets parserFor choose per column, falling back to the default', () => {
      const asked: unknown[] = [];
      const decoder = new PgoutputDecoder({
        parserFor: (column) => {
          asked.push(column);
          if (column.typeName === 'mood') return (text) => text.toUpperCase();
          if (column.typeOid === INT8) return (text) => BigInt(text);
          return undefined;
        },
      });
      for (const payload of stream) decoder.decode(payload);
      decoder.decode(msg.relation(2, 'public', 'big', 'd', [['n', INT8]]));
      expect(asked).toContainEqual({ typeOid: 90001, typeName: 'mood', typeMod: -1, name: 'mood', schema: 'app', table: 'people' });
      expect(expectTag(decoder.decode(msg.insert(90010, ['1', 'happy', '{ok}'])), 'insert').new).toEqual({ id: 1, mood: 'HAPPY', moods: ['ok'] });
      expect(expectTag(decoder.decode(msg.insert(2, ['9223372036854775807'])), 'insert').new).toEqual({ n: 9223372036854775807n });
    });

    it('names the column when a parser throws', () => {
      const decoder = new PgoutputDecoder({
        parserFor: () => () => {
          throw new Error('nope');
        },
      });
      decoder.decode(msg.relation(3, 'public', 'bad', 'd', [['v', TEXT]]));
      const error = decodeError(() => decoder.decode(msg.insert(3, ['x'])));
      expect(error.message).toMatch(/column "v" \(type oid 25\) of public\.bad: nope/);
      expect((error.cause as Error).message).toBe('nope');
    });
  });

  describe('values', () => {
    const typed = () => {
      const decoder = new PgoutputDecoder();
      decoder.decode(
        msg.relation(5, 'public', 'typed', 'd', [
          ['i8', INT8, true],
          ['num', NUMERIC],
          ['b', BOOL],
          ['j', JSON_OID],
          ['jb', JSONB],
          ['ts', TIMESTAMPTZ],
          ['bin', BYTEA],
          ['ints', INT4_ARRAY],
        ]),
      );
      return decoder;
    };

    it('types text values with the one typing (bridge/typing): exact numbers and times as strings', () => {
      const insert = expectTag(
        typed().decode(
          msg.insert(5, [
            '9007199254740993',
            '12345678901234567890.000000001',
            't',
            '{"a": [1, 2.5, null]}',
            '{"k": "ü"}',
            '2025-01-02 03:04:05.678+00',
            '\\xdeadbeef',
            '{1,NULL,-3}',
          ]),
        ),
        'insert',
      );
      expect(insert.new).toEqual({
        i8: '9007199254740993',
        num: '12345678901234567890.000000001',
        b: true,
        j: { a: [1, 2.5, null] },
        jb: { k: 'ü' },
        ts: '2025-01-02T03:04:05.678Z',
        bin: Buffer.from('deadbeef', 'hex'),
        ints: [1, null, -3],
      });
      expect(typeof insert.new['i8']).toBe('string');
    });

    it.each([
      ['NULL', null, null],
      ['empty string', '', ''],
      ['unicode', 'zoë 🦄 日本語 \u0000-free', 'zoë 🦄 日本語 \u0000-free'],
      ['1 MB', 'x'.repeat(1024 * 1024), 'x'.repeat(1024 * 1024)],
    ])('keeps a %s text value', (_label, sent, expected) => {
      const { decoder } = itemsDecoder();
      const insert = expectTag(decoder.decode(msg.insert(16400, ['7', sent, 'tail'])), 'insert');
      expect(insert.new['name']).toBe(expected);
      expect(insert.new['body']).toBe('tail');
    });

    it('keeps a binary-format value as a Buffer that owns its bytes', () => {
      const { decoder } = itemsDecoder();
      const payload = msg.insert(16400, ['1', { binary: Buffer.from([1, 2, 3]) }, null]);
      const insert = expectTag(decoder.decode(payload), 'insert');
      payload.fill(0);
      expect(insert.new['name']).toEqual(Buffer.from([1, 2, 3]));
    });

    it('builds null-prototype rows in which any column name is a plain key', () => {
      const decoder = new PgoutputDecoder();
      decoder.decode(
        msg.relation(6, 'public', 'odd', 'd', [
          ['__proto__', TEXT, true],
          ['constructor', TEXT],
        ]),
      );
      const row = expectTag(decoder.decode(msg.insert(6, ['p', 'c'])), 'insert').new;
      expect(Object.getPrototypeOf(row)).toBeNull();
      expect(Object.keys(row)).toEqual(['__proto__', 'constructor']);
      expect(row['__proto__']).toBe('p');
    });
  });

  describe('updates', () => {
    it.each([
      ['without old tuple', 'd', {}, null, null],
      ['with K (key changed)', 'd', { K: ['1', null, null] }, { id: 1 }, null],
      ['with O (replica identity full)', 'f', { O: ['1', 'old', 'body'] }, { id: 1 }, { id: 1, name: 'old', body: 'body' }],
    ] as const)('%s', (_label, identity, before, key, old) => {
      const { decoder } = itemsDecoder(identity);
      const update = expectTag(decoder.decode(msg.update(16400, before, ['2', 'new', 'body'])), 'update');
      expect(update.key).toEqual(key);
      expect(update.old).toEqual(old);
      expect(update.new).toEqual({ id: 2, name: 'new', body: 'body' });
      expect(update.unchangedToast).toEqual([]);
      if (update.key) expect(Object.getPrototypeOf(update.key)).toBeNull();
    });

    it('drops the NULL placeholders of non-key columns from a K tuple, also with a composite key', () => {
      const decoder = new PgoutputDecoder();
      decoder.decode(
        msg.relation(8, 'public', 'pairs', 'd', [
          ['a', INT4, true],
          ['note', TEXT],
          ['b', TEXT, true],
        ]),
      );
      const update = expectTag(decoder.decode(msg.update(8, { K: ['1', null, 'x'] }, ['2', 'n', 'y'])), 'update');
      expect(update.key).toEqual({ a: 1, b: 'x' });
      expect(Object.keys(update.key!)).toEqual(['a', 'b']);
    });

    it('leaves an unchanged TOASTed column out of the new row and lists it', () => {
      const { decoder } = itemsDecoder();
      const update = expectTag(decoder.decode(msg.update(16400, {}, ['1', 'renamed', U])), 'update');
      expect(update.new).toEqual({ id: 1, name: 'renamed' });
      expect('body' in update.new).toBe(false);
      expect(update.unchangedToast).toEqual(['body']);
    });

    it('takes an unchanged TOASTed column from the old tuple when there is one', () => {
      const { decoder } = itemsDecoder('f');
      const update = expectTag(decoder.decode(msg.update(16400, { O: ['1', 'was', 'long body'] }, ['1', 'renamed', U])), 'update');
      expect(update.new).toEqual({ id: 1, name: 'renamed', body: 'long body' });
      expect(update.unchangedToast).toEqual([]);
    });

    it('lists it after all when the old tuple lacks it too', () => {
      const { decoder } = itemsDecoder('f');
      const update = expectTag(decoder.decode(msg.update(16400, { O: ['1', 'was', U] }, ['1', 'renamed', U])), 'update');
      expect(update.old).toEqual({ id: 1, name: 'was' });
      expect(update.new).toEqual({ id: 1, name: 'renamed' });
      expect(update.unchangedToast).toEqual(['body']);
    });

    it('rejects a missing N tuple', () => {
      const { decoder } = itemsDecoder();
      const payload = new Builder().byte('U').int32(16400).byte('X').build();
      expect(decodeError(() => decoder.decode(payload)).message).toMatch(/expected 'K', 'O' or 'N', got 'X'/);
    });
  });

  describe('deletes', () => {
    it('with K: only the key', () => {
      const { decoder } = itemsDecoder();
      const del = expectTag(decoder.decode(msg.delete(16400, 'K', ['4', null, null])), 'delete');
      expect(del).toMatchObject({ key: { id: 4 }, old: null });
      expect(Object.keys(del.key!)).toEqual(['id']);
    });

    it('with O: the old row, and the key from it', () => {
      const { decoder } = itemsDecoder('f');
      const del = expectTag(decoder.decode(msg.delete(16400, 'O', ['4', null, 'b'])), 'delete');
      expect(del.old).toEqual({ id: 4, name: null, body: 'b' });
      expect(del.key).toEqual({ id: 4 });
    });

    it('with O but no key columns: no key', () => {
      const decoder = new PgoutputDecoder();
      decoder.decode(msg.relation(9, 'public', 'keyless', 'f', [['v', TEXT]]));
      expect(expectTag(decoder.decode(msg.delete(9, 'O', ['x'])), 'delete')).toMatchObject({ key: null, old: { v: 'x' } });
    });

    it('rejects a delete without K or O', () => {
      const { decoder } = itemsDecoder();
      expect(decodeError(() => decoder.decode(msg.delete(16400, 'N' as 'K', ['1', null, null]))).message).toMatch(/expected 'K' or 'O', got 'N'/);
    });
  });

  describe('truncate', () => {
    it.each([
      [0, false, false],
      [1, true, false],
      [2, false, true],
      [3, true, true],
    ])('options %i → cascade %s, restart identity %s', (options, cascade, restartIdentity) => {
      const { decoder, relation } = itemsDecoder();
      const other = expectTag(decoder.decode(msg.relation(16500, 'x', 'other', 'n', [])), 'relation').relation;
      const truncate = expectTag(decoder.decode(msg.truncate([16400, 16500], options)), 'truncate');
      expect(truncate).toEqual({ tag: 'truncate', relations: [relation, other], cascade, restartIdentity });
    });
  });

  describe('logical decoding messages', () => {
    it.each([true, false])('transactional %s', (transactional) => {
      const payload = msg.message(transactional, 0x2_0000_0001n, 'hookbridge.test', Buffer.from('{"a":1}'));
      const message = expectTag(new PgoutputDecoder().decode(payload), 'message');
      expect(message).toEqual({ tag: 'message', transactional, lsn: 0x2_0000_0001n, prefix: 'hookbridge.test', content: Buffer.from('{"a":1}') });
      payload.fill(0);
      expect(message.content.toString()).toBe('{"a":1}');
    });

    it('with empty content', () => {
      expect(expectTag(new PgoutputDecoder().decode(msg.message(true, 1n, 'p', Buffer.alloc(0))), 'message').content).toEqual(Buffer.alloc(0));
    });
  });

  describe('errors', () => {
    it.each([
      ['insert', msg.insert(4242, ['1'])],
      ['update', msg.update(4242, {}, ['1'])],
      ['delete', msg.delete(4242, 'K', ['1'])],
      ['truncate', msg.truncate([4242], 0)],
    ])('names the unknown relation oid of a %s', (what, payload) => {
      const error = decodeError(() => new PgoutputDecoder().decode(payload));
      expect(error.message).toContain(`${what} for relation oid 4242`);
      expect(error.details).toEqual({ oid: 4242 });
    });

    it.each(['S', 'E', 'c', 'A', 'Z'])('rejects message type %s', (letter) => {
      const error = decodeError(() => new PgoutputDecoder().decode(new Builder().byte(letter).int32(1).build()));
      expect(error.message).toContain(`unknown pgoutput message type '${letter}'`);
      expect(error.details).toEqual({ tag: letter });
    });

    it('mentions protocol v2 for streaming messages', () => {
      expect(decodeError(() => new PgoutputDecoder().decode(Buffer.from('S'))).message).toMatch(/protocol version 2/);
    });

    it('rejects an empty payload', () => {
      expect(decodeError(() => new PgoutputDecoder().decode(Buffer.alloc(0))).message).toMatch(/empty/);
    });

    it.each([
      ['Begin', msg.begin(1n, 2n, 3)],
      ['Relation', msg.relation(1, 'public', 'items', 'd', [['id', INT4, true]])],
      ['Message', msg.message(true, 1n, 'prefix', Buffer.from('content'))],
    ])('rejects a truncated %s at every length', (_label, payload) => {
      for (let length = 1; length < payload.length; length++) {
        expect(() => new PgoutputDecoder().decode(payload.subarray(0, length))).toThrow(PgoutputDecoderError);
      }
    });

    it('rejects a tuple whose value runs past the end, naming the column', () => {
      const { decoder } = itemsDecoder();
      const payload = msg.insert(16400, ['1', 'abcdef', 'x']);
      expect(decodeError(() => decoder.decode(payload.subarray(0, payload.length - 8))).message).toMatch(/column "name"/);
    });

    it('rejects trailing bytes', () => {
      const payload = Buffer.concat([msg.begin(1n, 2n, 3), Buffer.from([0])]);
      expect(decodeError(() => new PgoutputDecoder().decode(payload)).message).toMatch(/1 unexpected trailing byte/);
    });

    it('rejects an unknown column kind', () => {
      const { decoder } = itemsDecoder();
      const payload = new Builder().byte('I').int32(16400).byte('N').int16(3).byte('t').int32(1).raw(Buffer.from('1')).byte('z').build();
      expect(decodeError(() => decoder.decode(payload)).message).toMatch(/unknown column kind 'z'/);
    });
  });
});

describe('parseTextArray', () => {
  it.each([
    ['{}', []],
    ['{a}', ['a']],
    ['{a,b,c}', ['a', 'b', 'c']],
    ['{NULL,null,"NULL",NULLs}', [null, null, 'NULL', 'NULLs']],
    ['{"a,b","c}d","e\\"f","g\\\\h",""}', ['a,b', 'c}d', 'e"f', 'g\\h', '']],
    [
      '{{a,b},{c,NULL}}',
      [
        ['a', 'b'],
        ['c', null],
      ],
    ],
    ['{{},{}}', [[], []]],
    ['[0:1]={x,y}', ['x', 'y']],
    ['[1:1][2:3]={{p,q}}', [['p', 'q']]],
    ['{"(1,\\"two\\")","(3,)"}', ['(1,"two")', '(3,)']],
    ['{ a , b }', ['a', 'b']],
    ['{ü,🦄}', ['ü', '🦄']],
  ])('%s', (text, expected) => {
    expect(parseTextArray(text)).toEqual(expected);
  });

  it.each(['', 'abc', '{a', '{{a}'])('rejects %j', (text) => {
    expect(() => parseTextArray(text)).toThrow(SyntaxError);
  });
});
