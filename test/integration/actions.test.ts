/**
 * Action hooks fed by logical replication, end to end: writes from clients nobody here wrote reach
 * the right handlers with Directus' meta and typed values.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { listFailedEvents, replayFailedEvents, replayHeldEvents } from '../../bridge/failed-events.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { findPsql, waitFor, withClient } from '../support/helpers.js';

const run = promisify(execFile);
const db = useTestDatabase();

type Seen = { ext: string; meta: Record<string, any>; accountability: Record<string, any> | null };
const seen: Seen[] = [];
(globalThis as Record<string, unknown>)['__seen'] = seen;
const flags = { failing: true };
(globalThis as Record<string, unknown>)['__flags'] = flags;

const recorder = `
  module.exports = ({ action }) => {
    action('items.create', (meta, ctx) => globalThis.__seen.push({ ext: 'all', meta, accountability: ctx.accountability }));
    action('items.update', (meta, ctx) => globalThis.__seen.push({ ext: 'all', meta, accountability: ctx.accountability }));
    action('items.delete', (meta, ctx) => globalThis.__seen.push({ ext: 'all', meta, accountability: ctx.accountability }));
    action('items.truncate', (meta) => globalThis.__seen.push({ ext: 'truncate', meta, accountability: null }));
  };`;
const flaky = `
  module.exports = ({ action }) => {
    action('flaky.items.create', (meta) => {
      if (globalThis.__flags.failing) throw new Error('downstream is down for ' + meta.key);
      globalThis.__seen.push({ ext: 'flaky', meta, accountability: null });
    });
  };`;

let tb: TestBridge;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create type mood as enum ('happy', 'sad')`);
    await c.query(`create table items (
      id bigserial primary key, title text, n numeric, big int8, doc jsonb, at timestamptz, raw bytea,
      tags text[], feeling mood, feelings mood[])`);
    // Tests insert explicit small ids; generated ones (pgbench) start far above them.
    await c.query(`alter sequence items_id_seq restart with 100000`);
    await c.query(`create table flaky (id int primary key, v text)`);
    await c.query(`create table "Odd Name" (id int primary key, "Value" text)`);
    await c.query(`create schema shop`);
    await c.query(`create table shop.orders (id int primary key, total int)`);
    await c.query(`create table nokey (v text)`);
  });
  tb = await startTestBridge(db.url, { 'hooks/recorder/index.js': recorder, 'hooks/flaky/index.js': flaky }, { actionAttempts: 2, env: {} });
});

afterAll(async () => {
  await tb?.dispose();
});

beforeEach(() => {
  seen.length = 0;
});

const events = (collection: string, ext = 'all') => seen.filter((s) => s.ext === ext && s.meta['collection'] === collection);
const waitForEvents = (collection: string, count: number, ext = 'all') =>
  waitFor(() => events(collection, ext).length >= count, {
    timeoutMs: 30_000,
    message: () => `${count} events for ${collection}; have ${events(collection, ext).length}: ${JSON.stringify(seen.map((s) => s.meta['id']))}`,
  });

describe('action hooks from logical replication', () => {
  it('deliver create, update and delete with Directus meta, typed values and a stable id', async () => {
    await withClient(db.url, async (c) => {
      await c.query(
        `insert into items (id, title, n, big, doc, at, raw, tags, feeling, feelings)
         values (1, 'héllo ✓', 12.50, 9007199254740993, '{"a":[1,2]}', '2026-01-02T03:04:05.123Z', '\\xdeadbeef', '{x,"y z"}', 'happy', '{happy,sad}')`,
      );
      await c.query(`update items set title = 'changed' where id = 1`);
      await c.query(`delete from items where id = 1`);
    });
    await waitForEvents('items', 3);
    const [created, updated, deleted] = events('items').map((s) => s.meta);
    expect(created).toMatchObject({ event: 'items.create', collection: 'items', key: '1' });
    expect(created?.['payload']).toMatchObject({
      id: '1',
      title: 'héllo ✓',
      n: '12.50',
      big: '9007199254740993',
      doc: { a: [1, 2] },
      tags: ['x', 'y z'],
      feeling: 'happy',
      feelings: ['happy', 'sad'],
    });
    expect(created?.['payload'].at).toBe('2026-01-02T03:04:05.123Z');
    expect(Buffer.from(created?.['payload'].raw).toString('hex')).toBe('deadbeef');
    expect(created?.['id']).toMatch(/^[0-9A-F]+\/[0-9A-F]+:0$/);
    expect(updated).toMatchObject({ event: 'items.update', keys: ['1'], payload: { title: 'changed' } });
    expect(deleted).toMatchObject({ event: 'items.delete', keys: ['1'], payload: ['1'] });
  });

  it('carry the writer in accountability: role, application_name, and an application user', async () => {
    await withClient(db.url, async (c) => {
      await c.query(`set application_name = 'billing-job'`);
      await c.query(`begin`);
      await c.query(`set local hookbridge."user" = 'alice'`); // USER is a reserved word: quote it, or use set_config()
      await c.query(`insert into items (id, title) values (10, 'who')`);
      await c.query(`commit`);
    });
    await waitForEvents('items', 1);
    expect(events('items')[0]?.accountability).toMatchObject({ role: 'postgres', admin: true, userAgent: 'billing-job', user: 'alice' });
  });

  it('deliver writes from psql, COPY, pgbench, pg and postgres.js, multi-row statements included', async () => {
    const psql = findPsql();
    const expected = new Set<string>();
    await withClient(db.url, (c) => c.query(`insert into items (id, title) values (100, 'pg'), (101, 'pg'), (102, 'pg')`));
    ['100', '101', '102'].forEach((k) => expected.add(k));
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await sql`insert into items (id, title) values (200, 'postgres.js')`;
      expected.add('200');
    } finally {
      await sql.end();
    }
    if (psql) {
      await run(psql, [db.url, '-v', 'ON_ERROR_STOP=1', '-c', `insert into items (id, title) values (300, 'psql')`]);
      expected.add('300');
      const copy = promisify(execFile);
      const child = copy(psql, [db.url, '-v', 'ON_ERROR_STOP=1', '-c', `copy items (id, title) from stdin`]);
      child.child.stdin?.end('400\tcopied\n401\tcopied\n');
      await child;
      ['400', '401'].forEach((k) => expected.add(k));
      const pgbench = join(psql, '..', 'pgbench');
      const script = join(tb.extensionsPath, 'bench.sql');
      await writeFile(script, `insert into items (title) values ('pgbench');\n`);
      await run(pgbench, ['-n', '-c', '2', '-t', '10', '-f', script, db.url]);
    }
    const pgbenchRows = psql ? 20 : 0;
    await waitForEvents('items', expected.size + pgbenchRows);
    const keys = events('items').map((s) => String(s.meta['key']));
    for (const key of expected) expect(keys).toContain(key);
    expect(events('items').filter((s) => s.meta['payload'].title === 'pgbench')).toHaveLength(pgbenchRows);
  });

  it('name collections verbatim: quoted names and other schemas', async () => {
    await withClient(db.url, async (c) => {
      await c.query(`insert into "Odd Name" (id, "Value") values (1, 'x')`);
      await c.query(`insert into shop.orders (id, total) values (1, 5)`);
    });
    await waitForEvents('Odd Name', 1);
    await waitForEvents('shop.orders', 1);
    expect(events('Odd Name')[0]?.meta).toMatchObject({ event: 'items.create', payload: { Value: 'x' } });
  });

  it('handle tables without a primary key: inserts arrive, and their updates still work', async () => {
    await withClient(db.url, async (c) => {
      await c.query(`insert into nokey (v) values ('a')`);
      await c.query(`update nokey set v = 'b'`);
      await c.query(`delete from nokey`);
    });
    await waitForEvents('nokey', 1);
    expect(events('nokey')[0]?.meta).toMatchObject({ event: 'items.create', key: null, payload: { v: 'a' } });
  });

  it('fire items.truncate only for handlers that name it', async () => {
    await withClient(db.url, (c) => c.query(`truncate "Odd Name"`));
    await waitForEvents('Odd Name', 1, 'truncate');
    expect(events('Odd Name', 'truncate')[0]?.meta).toMatchObject({ event: 'items.truncate', keys: null });
    expect(events('Odd Name')).toHaveLength(0);
  });

  it('retry a failing handler, park its event, go on, and replay it later', async () => {
    flags.failing = true;
    await withClient(db.url, async (c) => {
      await c.query(`insert into flaky (id, v) values (1, 'first')`);
      await c.query(`insert into items (id, title) values (500, 'after the failure')`);
    });
    await waitForEvents('items', 1);
    const parked = await waitFor(
      async () => {
        const pool = new pg.Pool({ connectionString: db.url, max: 1 });
        try {
          const list = await listFailedEvents(pool, 'hookbridge');
          return list.length ? list : undefined;
        } finally {
          await pool.end();
        }
      },
      { timeoutMs: 30_000, message: 'the failing event was never parked' },
    );
    expect(parked[0]).toMatchObject({ extension: 'flaky', event: 'flaky.items.create', attempts: 2 });
    expect(parked[0]?.error.message).toBe('downstream is down for 1');

    flags.failing = false;
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      const results = await replayFailedEvents(pool, 'hookbridge', tb.bridge.runtime);
      expect(results).toEqual([{ id: parked[0]?.id, ok: true }]);
      expect(await listFailedEvents(pool, 'hookbridge')).toEqual([]);
    } finally {
      await pool.end();
    }
    expect(events('flaky', 'flaky')[0]?.meta).toMatchObject({ key: 1, payload: { v: 'first' } });
  });

  it('replays held changes in commit order and lists failed events in id order, where their text order differs', async () => {
    // pg_lsn and bigint sort as numbers; as text, '0/10000000' < '0/FFFFFFF' and '1000000' < '999999'
    // (a query that orders by the name of its `::text` output column sorts the text).
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      await pool.query(
        `insert into hookbridge.failed_events (id, event_id, extension, event, collection, action, commit_lsn, xid, meta, error, attempts, reason)
         values (1000000, '0/FFFFFFF:0', 'recorder', 'held_order.items.create', 'held_order', 'create', '0/FFFFFFF', 1,
                 '{"event": "held_order.items.create", "collection": "held_order", "key": "older", "payload": {}}', '{}', 0, 'extension_not_loaded'),
                (999999, '0/10000000:0', 'recorder', 'held_order.items.create', 'held_order', 'create', '0/10000000', 2,
                 '{"event": "held_order.items.create", "collection": "held_order", "key": "newer", "payload": {}}', '{}', 0, 'extension_not_loaded')`,
      );
      const listed = (await listFailedEvents(pool, 'hookbridge')).filter((e) => e.collection === 'held_order').map((e) => e.id);
      expect(listed).toEqual(['999999', '1000000']);
      const policy = { attempts: 1, timeoutMs: 10_000, signal: new AbortController().signal };
      const delivered = await replayHeldEvents({
        pool,
        schema: 'hookbridge',
        runtime: tb.bridge.runtime,
        logger: tb.log.logger,
        delivery: { runtime: tb.bridge.runtime, pool, schema: 'hookbridge', logger: tb.log.logger, policy },
        context: {},
      });
      expect(delivered).toBe(2);
      expect(events('held_order').map((s) => s.meta['key'])).toEqual(['older', 'newer']);
    } finally {
      await pool.query(`delete from hookbridge.failed_events where collection = 'held_order'`);
      await pool.end();
    }
  });

  it('picks up a table created while running', async () => {
    await withClient(db.url, async (c) => {
      await c.query(`create table late (id int primary key)`);
    });
    await waitFor(() => withClient(db.url, async (c) => (await c.query(`select 1 from pg_publication_tables where tablename = 'late'`)).rowCount === 1), {
      timeoutMs: 20_000,
      message: 'late table never joined the publication',
    });
    await withClient(db.url, (c) => c.query(`insert into late values (1)`));
    await waitForEvents('late', 1);
  });

  it('resumes from its slot after a restart: writes made while stopped are delivered', async () => {
    await tb.stop();
    await withClient(db.url, (c) => c.query(`insert into items (id, title) values (600, 'while stopped'), (601, 'while stopped')`));
    await tb.restart();
    await waitForEvents('items', 2);
    expect(events('items').map((s) => s.meta['key'])).toEqual(['600', '601']);
  });
});
