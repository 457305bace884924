/**
 * One typing, checked against what Postgres really prints: for each value, its text output (what
 * pgoutput and queries carry) and its to_json output (what the filter trigger sends) must become the
 * same JS value, in several time zones, and none may lose a digit. Composites and domains are typed
 * through the catalog (TypeCatalog), as both paths do.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseLosslessJson } from '../../bridge/typing/lossless-json.js';
import { TypeCatalog } from '../../bridge/typing/type-catalog.js';
import { driverTypes, fromJson, fromText, TEXT } from '../../bridge/typing/values.js';
import { useTestDatabase } from '../support/database.js';

const db = useTestDatabase('typing');
let pool: pg.Pool;
let catalog: TypeCatalog;

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: db.url, max: 2 });
  await pool.query(`
    create type pair as (n int8, label text, at timestamptz, tags text[]);
    create domain money_amount as numeric(20, 4);
    create domain big_ids as int8[];
    create type mood as enum ('ok', 'très bien');`);
  catalog = new TypeCatalog(pool);
});

afterAll(async () => {
  await pool.end();
});

/** [sql type, value literals]: every literal is checked in both forms. */
const CASES: Array<[string, string[]]> = [
  ['int2', ['-32768', '32767']],
  ['int4', ['-2147483648', '0']],
  ['int8', ['9007199254740993', '-9223372036854775808', '9223372036854775807', '0']],
  ['numeric', ['1.00000000000000000002', '12345678901234567890.123456789', '-0.000001', '1.50', 'NaN', 'Infinity', '-Infinity']],
  ['float4', ['1.5', '-0', 'NaN', 'Infinity']],
  ['float8', ['0.1', '-0', '1e308', '4.9e-324', 'NaN', '-Infinity', '9007199254740993']],
  ['bool', ['true', 'false']],
  ['text', ['', 'zoë 🦄 日本語', 'a"b\\c', 'NULL']],
  ['json', ['{"b": 1, "a": [1, 2.5, null], "big": 9007199254740993}', '"\\u0000"', '[]', 'null']],
  ['jsonb', ['{"b": 1, "a": {"c": "ü"}}', '3.0']],
  ['bytea', ['\\xdeadbeef', '\\x']],
  ['date', ['2024-02-29', '0044-03-15 BC', '0001-01-01', '294276-12-31', 'infinity', '-infinity']],
  ['timestamp', ['2024-02-29 23:59:59.999999', '2024-01-01 00:00:00', '0001-01-01 00:00:00 BC', '294276-12-31 23:59:59.999999', 'infinity']],
  [
    'timestamptz',
    [
      '2024-02-29 23:59:59.999999+00',
      '2024-01-01 00:30:00+05:30',
      '1900-01-01 00:00:00+00',
      '0044-03-15 12:00:00+00 BC',
      '294276-12-31 23:59:59.999999+00',
      '-infinity',
    ],
  ],
  ['time', ['23:59:59.999999', '00:00:00']],
  ['timetz', ['12:00:00+05:30', '12:00:00.5-08']],
  ['interval', ['1 year 2 mons 3 days 04:05:06.789']],
  ['uuid', ['5c9c4ba7-3c1e-4a9b-9d6f-1f2e3d4c5b6a']],
  ['int8[]', ['{9007199254740993,NULL,-1}', '[0:1]={1,2}', '{{1,2},{3,4}}', '{}']],
  ['numeric[]', ['{1.10,NaN}']],
  ['text[]', ['{"a,b","",NULL,"quote\\"d","back\\\\slash","NULL"}']],
  ['timestamptz[]', ['{"2024-01-01 00:30:00+05:30",NULL}']],
  ['jsonb[]', ['{"{\\"a\\": 1}",null}']],
  ['pair', ['(9007199254740993,"x, y","2024-01-01 00:30:00+05:30","{a,b}")', '(,,,)']],
  ['pair[]', ['{"(1,a,,)",NULL}']],
  ['money_amount', ['123.4500']],
  ['big_ids', ['{9007199254740993}']],
  ['mood', ['très bien']],
  ['mood[]', ['{ok,"très bien"}']],
  ['point', ['(1,2)']],
  ['int4range', ['[1,5)']],
  ['int2vector', ['1 2']],
  ['box[]', ['{(1,1),(0,0);(2,2),(1,1)}']],
];

describe.each(['UTC', 'Asia/Kolkata', 'America/St_Johns', 'Europe/Amsterdam'])('time zone %s', (zone) => {
  test.each(CASES)('%s: text and to_json give the same value', async (type, literals) => {
    const client = await pool.connect();
    try {
      await client.query(`set timezone = '${zone}'`);
      for (const literal of literals) {
        const { rows } = await client.query<{ oid: number; text: string | null; json: string }>(
          `select pg_typeof(v)::oid::int4 as oid, v::text as text, to_json(v)::text as json from (select $1::${type} as v) s`,
          [literal],
        );
        const row = rows[0]!;
        await catalog.load([row.oid]);
        const shape = catalog.known(row.oid) ?? TEXT;
        const viaText = row.text === null ? null : fromText(shape, row.text);
        const viaJson = fromJson(shape, parseLosslessJson(row.json));
        expect(viaJson, `${type} ${literal}: text ${row.text}, json ${row.json}`).toEqual(viaText);
        // Object.is tells -0 from 0 and NaN from NaN, which toEqual does not.
        if (typeof viaText === 'number') expect(Object.is(viaJson, viaText), `${type} ${literal}`).toBe(true);
      }
    } finally {
      client.release();
    }
  });
});

test('values a double cannot hold stay exact, and times keep their microseconds', async () => {
  const { rows } = await pool.query(
    `select 9007199254740993::int8 as big, 1.00000000000000000002::numeric as n, '2024-01-01 00:30:00.123456+05:30'::timestamptz as at,
            '294276-12-31 23:59:59.999999+00'::timestamptz as last, '0044-03-15 12:00:00+00 BC'::timestamptz as ides,
            row(9007199254740993, 'x', null, '{a}')::pair as p`,
  );
  const r = rows[0] as Record<string, unknown>;
  const typed = async (column: string, oid: number) => {
    await catalog.load([oid]);
    return fromText(catalog.known(oid) ?? TEXT, String(r[column]));
  };
  expect(await typed('big', 20)).toBe('9007199254740993');
  expect(await typed('n', 1700)).toBe('1.00000000000000000002');
  // The pg driver made a Date (ms) of it; the text form is what the typing reads.
  const text = await pool.query<{ at: string; last: string; ides: string; p: string; poid: number }>(
    `select '2024-01-01 00:30:00.123456+05:30'::timestamptz::text as at, '294276-12-31 23:59:59.999999+00'::timestamptz::text as last,
            '0044-03-15 12:00:00+00 BC'::timestamptz::text as ides, row(9007199254740993, 'x', null, '{a}')::pair::text as p, 'pair'::regtype::oid::int4 as poid`,
  );
  const t = text.rows[0]!;
  expect(fromText({ kind: 'timestamptz' }, t.at)).toBe('2023-12-31T19:00:00.123456Z');
  expect(fromText({ kind: 'timestamptz' }, t.last)).toBe('+294276-12-31T23:59:59.999999Z');
  expect(fromText({ kind: 'timestamptz' }, t.ides)).toBe('-000043-03-15T12:00:00Z');
  await catalog.load([t.poid]);
  expect(fromText(catalog.known(t.poid)!, t.p)).toEqual({ n: '9007199254740993', label: 'x', at: null, tags: ['a'] });
});

test('the services read through driverTypes: the same values as hooks get', async () => {
  const typedPool = new pg.Pool({ connectionString: db.url, max: 1, types: driverTypes(pg.types) });
  try {
    const { rows } = await typedPool.query(
      `select 9007199254740993::int8 as big, 1.50::numeric as n, '2024-01-01 00:30:00.123456+05:30'::timestamptz as at, '{1,2}'::int8[] as ids,
              '\\xff'::bytea as raw, '{"a":1}'::jsonb as doc, 7::int4 as small`,
    );
    expect(rows[0]).toEqual({
      big: '9007199254740993',
      n: '1.50',
      at: '2023-12-31T19:00:00.123456Z',
      ids: ['1', '2'],
      raw: Buffer.from([0xff]),
      doc: { a: 1 },
      small: 7,
    });
  } finally {
    await typedPool.end();
  }
});
