/** The one typing's pure parts: lossless JSON, record literals, dates and times (bridge/typing). */
import { describe, expect, it } from 'vitest';
import { JsonNumber, parseLosslessJson, toPlainJson } from '../../bridge/typing/lossless-json.js';
import { defaultParser } from '../../bridge/replication/pgoutput-types.js';
import { fromJson, fromText, parseRecordText, toPostgresJson } from '../../bridge/typing/values.js';

describe('parseLosslessJson', () => {
  it('keeps number tokens as written', () => {
    const value = parseLosslessJson('{"a": 9007199254740993, "b": [1.10, -0, 1e400], "c": "x\\"y", "d": null, "e": true}') as Record<string, unknown>;
    expect(value['a']).toEqual(new JsonNumber('9007199254740993'));
    expect(value['b']).toEqual([new JsonNumber('1.10'), new JsonNumber('-0'), new JsonNumber('1e400')]);
    expect(value['c']).toBe('x"y');
    expect(value['d']).toBeNull();
    expect(value['e']).toBe(true);
  });

  it.each([
    ['"a\\\\"', 'a\\'],
    ['"\\u0000"', '\u0000'],
    ['"🦄 \\ud83e\\udd84"', '🦄 🦄'],
    ['"\\\\\\""', '\\"'],
  ])('reads the string %s', (text, expected) => {
    expect(parseLosslessJson(text)).toBe(expected);
  });

  it('makes a __proto__ key a plain key', () => {
    const value = parseLosslessJson('{"__proto__": {"polluted": true}}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(value)).toBeNull();
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    const plain = toPlainJson(parseLosslessJson('{"__proto__": 1}')) as Record<string, unknown>;
    expect(Object.getOwnPropertyNames(plain)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(plain)).toBe(Object.prototype);
  });

  it.each(['{"a": 1', '[1,]', '{"a" 1}', '01', 'nul', '"open', '{} x'])('refuses %s with its position', (text) => {
    expect(() => parseLosslessJson(text)).toThrow(/position/);
  });
});

describe('parseRecordText', () => {
  it.each([
    ['(1,abc)', ['1', 'abc']],
    ['(,)', [null, null]],
    ['("",x)', ['', 'x']],
    ['("a,b","c""d","e\\\\f")', ['a,b', 'c"d', 'e\\f']],
    ['("(1,2)",)', ['(1,2)', null]],
  ])('%s', (text, expected) => {
    expect(parseRecordText(text)).toEqual(expected);
  });
});

describe('dates and times', () => {
  it.each([
    ['timestamptz', '2024-03-01 01:00:00+01', '2024-03-01T00:00:00Z'],
    ['timestamptz', '2024-03-01T00:30:00.5+05:30', '2024-02-29T19:00:00.5Z'],
    ['timestamptz', '1900-01-01 00:00:00+00:53:28', '1899-12-31T23:06:32Z'],
    ['timestamptz', '2024-12-31 23:00:00-01', '2025-01-01T00:00:00Z'],
    ['timestamptz', '0001-01-01 00:00:00+00 BC', '0000-01-01T00:00:00Z'],
    ['timestamptz', '294276-12-31 23:59:59.999999+00', '+294276-12-31T23:59:59.999999Z'],
    ['timestamptz', 'infinity', 'infinity'],
    ['timestamp', '2024-02-29 23:59:59.999999', '2024-02-29T23:59:59.999999'],
    ['timestamp', '0044-03-15 12:00:00 BC', '-000043-03-15T12:00:00'],
    ['date', '2024-02-29', '2024-02-29'],
    ['date', '0044-03-15 BC', '-000043-03-15'],
    ['date', '-infinity', '-infinity'],
    ['timetz', '12:00:00+05:30', '12:00:00+05:30'],
    ['timetz', '12:00:00-08', '12:00:00-08:00'],
  ] as const)('%s %s → %s', (kind, text, expected) => {
    expect(fromText({ kind }, text)).toBe(expected);
  });
});

describe('fromJson', () => {
  it('keeps int8 and numeric exact, and reads NaN/Infinity floats', () => {
    expect(fromJson({ kind: 'exact' }, new JsonNumber('9007199254740993'))).toBe('9007199254740993');
    expect(fromJson({ kind: 'exact' }, 'NaN')).toBe('NaN');
    expect(fromJson({ kind: 'number' }, 'Infinity')).toBe(Infinity);
    expect(Object.is(fromJson({ kind: 'number' }, new JsonNumber('-0')), -0)).toBe(true);
  });
});

describe('toPostgresJson', () => {
  it('writes bytes as bytea hex and bigints as digits', () => {
    expect(toPostgresJson({ raw: Buffer.from([0xde, 0xad]), bytes: new Uint8Array([1]), big: 12345678901234567890n })).toBe(
      '{"raw":"\\\\xdead","bytes":"\\\\x01","big":"12345678901234567890"}',
    );
  });
});

describe('a value the typing cannot read', () => {
  it('arrives as its text instead of stopping the stream', () => {
    expect(defaultParser(1007, undefined)('not an array')).toBe('not an array');
    expect(defaultParser(114, undefined)('{not json')).toBe('{not json');
  });

  it('NaN, ±Infinity and -0 go back to Postgres as strings its float input reads', () => {
    expect(toPostgresJson({ a: NaN, b: Infinity, c: -Infinity, d: -0, e: 0 })).toBe('{"a":"NaN","b":"Infinity","c":"-Infinity","d":"-0","e":0}');
  });
});

describe('deep json', () => {
  it("is read past the parser's own depth, by JSON.parse", () => {
    const deep = `{"doc": ${'['.repeat(5000)}1${']'.repeat(5000)}}`;
    const value = parseLosslessJson(deep) as Record<string, unknown>;
    let inner: unknown = toPlainJson(value['doc'] as never);
    for (let i = 0; i < 5000; i++) inner = (inner as unknown[])[0];
    expect(inner).toBe(1);
  });
});
