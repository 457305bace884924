/**
 * The decoder against what Postgres really sends: every write below goes through a pgoutput slot
 * and comes back through `pg_logical_slot_peek_binary_changes`, whose `data` values are exactly
 * the XLogData payloads the streaming protocol would carry.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseLsn } from '../../bridge/replication/lsn.js';
import { PgoutputDecoder, type PgoutputMessage, type Row } from '../../bridge/replication/pgoutput-decoder.js';
import { driverTypes } from '../../bridge/typing/values.js';
import { serverMajor, useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase('pgoutput-decoder');

const SLOT = `hb_pgoutput_${randomBytes(4).toString('hex')}`;
const PUBLICATION = 'decoder pub';
const TABLE = '"Sales Data"."Order Line"';
// Random hex barely compresses, so 40 kB of it is stored out of line (TOASTed), not inline.
const BIG_TEXT = randomBytes(20_000).toString('hex');
const UUID = '5c9c4ba7-3c1e-4a9b-9d6f-1f2e3d4c5b6a';

let slotCreated = false;
let peeked: Array<{ lsn: string; data: Buffer }> = [];
let messages: PgoutputMessage[] = [];
/** Row 1 as the services read it (the pg driver with hookbridge's typing), before any update. */
let selected: Row = {};
/** What pg_logical_emit_message returned. */
let emitted: bigint[] = [];
let oids: Record<'mood' | 'moodArray' | 'positive' | 'codes' | 'table', number>;

async function peek(c: pg.Client): Promise<Array<{ lsn: string; data: Buffer }>> {
  const { rows } = await c.query<{ lsn: string; data: Buffer }>(
    `select lsn, data from pg_logical_slot_peek_binary_changes($1, null, null,
       'proto_version', '1', 'publication_names', $2, 'messages', 'true')`,
    [SLOT, `"${PUBLICATION}"`],
  );
  return rows;
}

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`
      create schema "Sales Data";
      create type "Sales Data".mood as enum ('happy', 'sad', 'très bien');
      create domain "Sales Data".positive as int4 check (value > 0);
      create domain "Sales Data".codes as int4[];
      create table ${TABLE} (
        id int4 primary key,
        big int8,
        "Unit Price" numeric,
        label text,
        flag bool,
        doc json,
        docb jsonb,
        at timestamptz,
        day date,
        raw bytea,
        uid uuid,
        mood "Sales Data".mood,
        ints int4[],
        texts text[],
        moods "Sales Data".mood[],
        qty "Sales Data".positive,
        codes "Sales Data".codes,
        big_text text
      );
      create publication "${PUBLICATION}" for table ${TABLE};
    `);
    const found = await c.query<typeof oids>(
      `select '"Sales Data".mood'::regtype::oid::int4 as mood, '"Sales Data".mood[]'::regtype::oid::int4 as "moodArray",
              '"Sales Data".positive'::regtype::oid::int4 as positive, '"Sales Data".codes'::regtype::oid::int4 as codes,
              '${TABLE}'::regclass::oid::int4 as table`,
    );
    oids = found.rows[0]!;
    await c.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [SLOT]);
    slotCreated = true;

    const insert = `insert into ${TABLE} values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`;
    await c.query('begin');
    await c.query(insert, [
      1,
      '9007199254740993',
      '12345678901234567890.123456789',
      'zoë 🦄 日本語',
      true,
      '{"a": [1, 2.5, null], "b": "ü"}',
      '{"a": [1, 2.5, null], "b": "ü"}',
      '2025-01-02 03:04:05.678901+00',
      '2025-01-02',
      Buffer.from('deadbeef', 'hex'),
      UUID,
      'très bien',
      '{1,NULL,3}',
      ['a,b', '', null, 'quote"d', 'back\\slash'],
      '{happy,"très bien"}',
      5,
      '{7,NULL,-9}',
      BIG_TEXT,
    ]);
    await c.query(`insert into ${TABLE} (id, label) values (2, '')`);
    await c.query('commit');
    selected = (await c.query({ text: `select * from ${TABLE} where id = 1`, types: driverTypes(pg.types) })).rows[0] as Row;

    // Default replica identity: no old tuple, then a K tuple when the key changes.
    await c.query(`update ${TABLE} set label = 'renamed' where id = 1`);
    await c.query(`update ${TABLE} set id = 20 where id = 2`);
    await c.query(`delete from ${TABLE} where id = 20`);

    await c.query(`alter table ${TABLE} replica identity full`);
    await c.query(`update ${TABLE} set label = 'renamed again' where id = 1`);
    await c.query(`insert into ${TABLE} (id, flag) values (3, false)`);
    await c.query(`delete from ${TABLE} where id = 3`);

    await c.query(`truncate ${TABLE} restart identity cascade`);
    const emit = async (transactional: boolean, content: string) =>
      parseLsn((await c.query<{ lsn: string }>(`select pg_logical_emit_message($1, 'hb', $2)::text as lsn`, [transactional, content])).rows[0]!.lsn);
    emitted = [await emit(true, 'x'), await emit(false, 'y')];

    // A non-transactional message commits nothing, so nothing flushes its WAL, and decoding
    // reads flushed WAL only: it shows up once the WAL writer gets to it.
    await waitFor(async () => (peeked = await peek(c)).some((row) => row.data[0] === 0x4d && row.data[1] === 0), {
      message: 'the non-transactional message to become decodable',
    });
    const decoder = new PgoutputDecoder();
    messages = peeked.map((row) => decoder.decode(row.data));
  });
});

afterAll(async () => {
  if (!slotCreated) return;
  await withClient(db.url, (c) => c.query('select pg_drop_replication_slot($1)', [SLOT]));
});

function summary(message: PgoutputMessage): string {
  switch (message.tag) {
    case 'relation':
      return `relation ${message.relation.schema}.${message.relation.name} ${message.relation.replicaIdentity}`;
    case 'type':
      return `type ${message.schema}.${message.name}`;
    case 'insert':
      return `insert ${message.new['id']}`;
    case 'update':
      return `update ${message.key ? 'key' : '-'} ${message.old ? 'old' : '-'} ${message.new['id']}`;
    case 'delete':
      return `delete ${message.key ? 'key' : '-'} ${message.old ? 'old' : '-'}`;
    case 'message':
      return `message ${message.transactional ? 'transactional' : 'immediate'} ${message.prefix}`;
    default:
      return message.tag;
  }
}

function all<T extends PgoutputMessage['tag']>(tag: T): Array<Extract<PgoutputMessage, { tag: T }>> {
  return messages.filter((m): m is Extract<PgoutputMessage, { tag: T }> => m.tag === tag);
}

function nth<T extends PgoutputMessage['tag']>(tag: T, index: number): Extract<PgoutputMessage, { tag: T }> {
  const found = all(tag)[index];
  if (!found) throw new Error(`no ${tag} #${index} among ${messages.map(summary).join(', ')}`);
  return found;
}

/** The page header a WAL record starting at `lsn` is put after (the server's defaults: 8 kB pages, 16 MB segments). */
function walPageHeaderAt(lsn: bigint): bigint {
  if (lsn % (16n * 1024n * 1024n) === 0n) return 40n;
  return lsn % 8192n === 0n ? 24n : 0n;
}

const COLUMNS = [
  'id',
  'big',
  'Unit Price',
  'label',
  'flag',
  'doc',
  'docb',
  'at',
  'day',
  'raw',
  'uid',
  'mood',
  'ints',
  'texts',
  'moods',
  'qty',
  'codes',
  'big_text',
];

describe('pgoutput from a real server', () => {
  test('arrives as the expected sequence of messages', () => {
    const schema = ['type Sales Data.mood', 'type Sales Data._mood', 'type .int4', 'type ._int4'];
    expect(messages.map(summary)).toEqual([
      ...['begin', ...schema, 'relation Sales Data.Order Line default', 'insert 1', 'insert 2', 'commit'],
      ...['begin', 'update - - 1', 'commit'],
      ...['begin', 'update key - 20', 'commit'],
      ...['begin', 'delete key -', 'commit'],
      // Before PostgreSQL 15, pgoutput also sends transactions that changed no published row (the ALTER TABLE).
      ...(serverMajor() < 15 ? ['begin', 'commit'] : []),
      // ALTER TABLE ... REPLICA IDENTITY and TRUNCATE both invalidate the relation: it is sent again.
      ...['begin', ...schema, 'relation Sales Data.Order Line full', 'update key old 1', 'commit'],
      ...['begin', 'insert 3', 'commit'],
      ...['begin', 'delete key old', 'commit'],
      ...['begin', ...schema, 'relation Sales Data.Order Line full', 'truncate', 'commit'],
      ...['begin', 'message transactional hb', 'commit'],
      'message immediate hb',
    ]);
  });

  test('frames transactions with consistent LSNs and commit times', () => {
    const begins = all('begin');
    const commits = all('commit');
    expect(begins).toHaveLength(commits.length);
    begins.forEach((begin, i) => {
      const commit = commits[i]!;
      expect(commit.commitLsn).toBe(begin.finalLsn);
      expect(commit.endLsn).toBeGreaterThan(commit.commitLsn);
      expect(commit.commitTimeMicros).toBe(begin.commitTimeMicros);
      expect(commit.commitTime).toEqual(begin.commitTime);
      expect(commit.flags).toBe(0);
      expect(Math.abs(commit.commitTime.getTime() - Date.now())).toBeLessThan(5 * 60_000);
      expect(Number(commit.commitTimeMicros / 1000n) + Date.UTC(2000, 0, 1)).toBe(commit.commitTime.getTime());
      if (i > 0) {
        expect(begin.finalLsn).toBeGreaterThan(begins[i - 1]!.finalLsn);
        expect(begin.xid).toBeGreaterThan(begins[i - 1]!.xid);
      }
    });
    // The SQL interface reports a commit at the end of its record, as the streaming protocol does.
    peeked.forEach((row, i) => {
      const message = messages[i]!;
      if (message.tag === 'commit') expect(parseLsn(row.lsn)).toBe(message.endLsn);
    });
  });

  test('keeps schema, table, column and type names verbatim and resolves user types', () => {
    const relation = nth('relation', 0).relation;
    expect(relation).toMatchObject({ oid: oids.table, schema: 'Sales Data', name: 'Order Line', replicaIdentity: 'default', keyColumns: ['id'] });
    expect(relation.columns.map((c) => c.name)).toEqual(COLUMNS);
    const column = (name: string) => relation.columns.find((c) => c.name === name)!;
    expect(column('mood')).toMatchObject({ typeOid: oids.mood, typeName: 'mood', isKey: false });
    expect(column('moods')).toMatchObject({ typeOid: oids.moodArray, typeName: '_mood' });
    // A domain is announced under its own oid but its base type's name, in pg_catalog (empty schema).
    expect(nth('type', 2)).toEqual({ tag: 'type', oid: oids.positive, schema: '', name: 'int4' });
    expect(column('qty')).toMatchObject({ typeOid: oids.positive, typeName: 'int4' });
    expect(column('codes')).toMatchObject({ typeOid: oids.codes, typeName: '_int4' });
    expect(column('label')).toMatchObject({ typeOid: 25, typeMod: -1 });
    expect(column('label').typeName).toBeUndefined();
  });

  test('types inserted values as the services read them (one typing: exact numbers and times as strings)', () => {
    const row = nth('insert', 0).new;
    expect(Object.getPrototypeOf(row)).toBeNull();
    expect(Object.keys(row)).toEqual(COLUMNS);
    expect(row).toEqual({
      id: 1,
      big: '9007199254740993',
      'Unit Price': '12345678901234567890.123456789',
      label: 'zoë 🦄 日本語',
      flag: true,
      doc: { a: [1, 2.5, null], b: 'ü' },
      docb: { a: [1, 2.5, null], b: 'ü' },
      at: '2025-01-02T03:04:05.678901Z',
      day: '2025-01-02',
      raw: Buffer.from('deadbeef', 'hex'),
      uid: UUID,
      mood: 'très bien',
      ints: [1, null, 3],
      texts: ['a,b', '', null, 'quote"d', 'back\\slash'],
      moods: ['happy', 'très bien'],
      qty: 5,
      codes: [7, null, -9],
      big_text: BIG_TEXT,
    });
    // Identical to SELECT, except the enum array, which the driver leaves as text.
    expect({ ...row, moods: '{happy,"très bien"}' }).toEqual({ ...selected });
  });

  test('sends NULLs and empty strings', () => {
    const row = nth('insert', 1).new;
    expect(row).toEqual({ ...Object.fromEntries(COLUMNS.map((c) => [c, null])), id: 2, label: '' });
  });

  test('update under the default identity: no old row, unchanged TOASTed column left out', () => {
    const update = nth('update', 0);
    expect(update.key).toBeNull();
    expect(update.old).toBeNull();
    expect(update.unchangedToast).toEqual(['big_text']);
    expect('big_text' in update.new).toBe(false);
    expect(update.new).toMatchObject({ id: 1, label: 'renamed', big: '9007199254740993' });
    expect(Object.keys(update.new)).toEqual(COLUMNS.filter((c) => c !== 'big_text'));
  });

  test('update of the primary key: the old key comes in a K tuple', () => {
    const update = nth('update', 1);
    expect(update.key).toEqual({ id: 2 });
    expect(Object.getPrototypeOf(update.key)).toBeNull();
    expect(update.old).toBeNull();
    expect(update.new).toMatchObject({ id: 20, label: '' });
    expect(update.unchangedToast).toEqual([]);
  });

  test('delete under the default identity: only the key', () => {
    const del = nth('delete', 0);
    expect(del.key).toEqual({ id: 20 });
    expect(del.old).toBeNull();
  });

  test('REPLICA IDENTITY FULL: every column is flagged as key; the old row fills unchanged TOAST', () => {
    const relation = nth('relation', 1).relation;
    expect(relation.replicaIdentity).toBe('full');
    expect(relation.keyColumns).toEqual(COLUMNS);

    const update = nth('update', 2);
    expect(update.old).toMatchObject({ id: 1, label: 'renamed', big_text: BIG_TEXT, qty: 5 });
    expect(update.new).toMatchObject({ id: 1, label: 'renamed again', big_text: BIG_TEXT });
    expect(update.unchangedToast).toEqual([]);
    expect(update.key).toEqual(update.old);
    // The new tuple really said "unchanged": the big value travelled once, in the old tuple.
    const payload = peeked[messages.indexOf(update)]!.data;
    expect(payload.length).toBeGreaterThan(BIG_TEXT.length);
    expect(payload.length).toBeLessThan(2 * BIG_TEXT.length);
  });

  test('delete under REPLICA IDENTITY FULL: the whole old row', () => {
    const del = nth('delete', 1);
    expect(del.old).toEqual({ ...Object.fromEntries(COLUMNS.map((c) => [c, null])), id: 3, flag: false });
    expect(del.key).toEqual(del.old);
  });

  test('truncate', () => {
    const truncate = nth('truncate', 0);
    expect(truncate.relations.map((r) => [r.oid, r.schema, r.name])).toEqual([[oids.table, 'Sales Data', 'Order Line']]);
    expect(truncate.cascade).toBe(true);
    expect(truncate.restartIdentity).toBe(true);
  });

  test('logical decoding messages, in and outside a transaction', () => {
    const [transactional, immediate] = all('message');
    expect(transactional).toMatchObject({ transactional: true, prefix: 'hb', content: Buffer.from('x') });
    expect(immediate).toMatchObject({ transactional: false, prefix: 'hb', content: Buffer.from('y') });
    // A message's LSN is where its WAL record *ends* (what pg_logical_emit_message returns), so the
    // last thing in a transaction shares its LSN with the commit record that follows it — unless the
    // message ends exactly at a WAL page boundary: the commit record then starts after the next page's
    // header (24 bytes; 40 where a 16 MB segment begins).
    expect([transactional!.lsn, immediate!.lsn]).toEqual(emitted);
    const last = all('commit').at(-1)!;
    expect(last.commitLsn - transactional!.lsn).toBe(walPageHeaderAt(transactional!.lsn));
    expect(immediate!.lsn).toBeGreaterThan(last.endLsn);
    expect(parseLsn(peeked.at(-1)!.lsn)).toBe(immediate!.lsn);
  });
});
