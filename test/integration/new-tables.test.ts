/**
 * New tables are guarded from their first row (issue 12, finding 2), with a bridge whose role may
 * create event triggers (the test server's superuser): a migration that creates a table and writes to
 * it, in one transaction or in autocommit statements right after, has every row filtered and every
 * committed change delivered to action hooks — also for CREATE TABLE AS, a rename into a matching
 * name, a key added after the rows, and partitions.
 */
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../bridge/config.js';
import { doctor, status } from '../../bridge/inspect.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
type Seen = { event: string; meta: Record<string, any>; who: Record<string, any> | null };
const seen: Seen[] = [];
(globalThis as Record<string, unknown>)['__newTablesSeen'] = seen;

// Odd values are refused, even ones stamped, deletes filtered; every change of a late_* table is recorded.
const extensions = {
  'hooks/late/index.js': `
    module.exports = ({ filter, action }, { exceptions }) => {
      filter('late_*.items.create', (payload) => {
        if (Number(payload.v) % 2 === 1) throw new exceptions.InvalidPayloadException('odd values are refused');
        return { ...payload, note: 'filtered' };
      });
      // Delete filters: a TRUNCATE, which would bypass them, is refused.
      filter('late_*.items.delete', (keys) => keys);
      for (const event of ['create', 'update', 'delete']) {
        action('late_*.items.' + event, (meta, ctx) => globalThis.__newTablesSeen.push({ event, meta, who: ctx.accountability }));
      }
    };`,
};

let tb: TestBridge;

beforeAll(async () => {
  tb = await startTestBridge(db.url, extensions, { filterTransport: 'direct' });
});

afterAll(async () => {
  await tb?.dispose();
});

beforeEach(() => {
  seen.length = 0;
});

const sql = (text: string) => withClient(db.url, (c) => c.query(text));
const outcome = (c: pg.Client, text: string) =>
  c.query(text).then(
    () => 'ok',
    (error: pg.DatabaseError) => error.code ?? error.message,
  );
const events = (collection: string, event?: string) => seen.filter((s) => s.meta['collection'] === collection && (!event || s.event === event));
const keysOf = (list: Seen[]) => list.map((s) => Number(s.meta['key'] ?? s.meta['keys']?.[0])).sort((a, b) => a - b);
const range = (from: number, to: number, step = 1) => Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => from + i * step);
const waitForEvents = (collection: string, count: number, event = 'create') =>
  waitFor(() => events(collection, event).length >= count, {
    timeoutMs: 30_000,
    message: () => `${count} ${event} events for ${collection}; have ${events(collection, event).length}`,
  });

describe('new tables, with the event trigger (a superuser bridge)', () => {
  it('doctor and status say new tables are guarded in their own transaction', async () => {
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      const config = resolveConfig({ databaseUrl: db.url, slotName: tb.slotName });
      const check = (await doctor(pool, config)).find((c) => c.name === 'new tables guarded from their first row');
      expect(check).toMatchObject({ ok: true });
      expect((await status(pool, config)).newTables.state).toBe('installed');
    } finally {
      await pool.end();
    }
  });

  it('refuses the transaction that creates a matching table and writes 400 rows, half of them refused by the filter', async () => {
    const result = await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query(`create table late_tx (id int primary key, v int, note text)`);
      const insert = await outcome(c, `insert into late_tx (id, v) select g, g from generate_series(1, 400) g`);
      await c.query('rollback');
      return insert;
    });
    expect(result).toBe('HB400');
  });

  it('filters autocommit writes right after CREATE TABLE, and every accepted row reaches the action hook', async () => {
    const refused = await withClient(db.url, async (c) => {
      await c.query(`create table late_auto (id int primary key, v int, note text)`);
      const outcomes: string[] = [];
      for (let id = 1; id <= 400; id += 1) outcomes.push(await outcome(c, `insert into late_auto (id, v) values (${id}, ${id})`));
      return outcomes.filter((o) => o !== 'ok');
    });
    expect(refused).toEqual(Array.from({ length: 200 }, () => 'HB400'));
    const rows = (await sql(`select id, note from late_auto order by id`)).rows as Array<{ id: number; note: string }>;
    expect(rows.map((r) => r.id)).toEqual(range(2, 400, 2));
    expect(new Set(rows.map((r) => r.note))).toEqual(new Set(['filtered']));
    await waitForEvents('late_auto', 200);
    expect(keysOf(events('late_auto', 'create'))).toEqual(range(2, 400, 2));
    expect(events('late_auto').every((s) => s.meta['catchUp'] === undefined && s.who?.['verified'] === true)).toBe(true);
  });

  it('delivers every change of a table created and written in one transaction', async () => {
    await sql(`begin;
      create table late_same (id int primary key, v int, note text);
      insert into late_same (id, v) select g, 2 * g from generate_series(1, 300) g;
      update late_same set note = 'changed' where id <= 10;
      delete from late_same where id > 290;
      commit`);
    await waitForEvents('late_same', 300);
    await waitForEvents('late_same', 10, 'update');
    await waitForEvents('late_same', 10, 'delete');
    expect(keysOf(events('late_same', 'create'))).toEqual(range(1, 300));
    expect(events('late_same', 'create').every((s) => s.meta['payload'].note === 'filtered' && s.meta['catchUp'] === undefined)).toBe(true);
    expect(keysOf(events('late_same', 'update'))).toEqual(range(1, 10));
    expect(events('late_same', 'update').every((s) => s.meta['payload'].note === 'changed')).toBe(true);
    expect(keysOf(events('late_same', 'delete'))).toEqual(range(291, 300));
    expect(events('late_same')[0]?.who).toMatchObject({ verified: true, role: 'postgres' });
  });

  it('runs CREATE TABLE AS rows through the filters and delivers them', async () => {
    await withClient(db.url, async (c) => {
      expect(await outcome(c, `create table late_ctas_odd as select g as id, g as v, null::text as note from generate_series(1, 20) g`)).toBe('HB400');
    });
    await sql(`create table late_ctas as select g as id, 2 * g as v, null::text as note from generate_series(1, 20) g`);
    expect((await sql(`select count(*)::int as n, count(*) filter (where note = 'filtered')::int as filtered from late_ctas`)).rows[0]).toEqual({
      n: 20,
      filtered: 20,
    });
    await waitForEvents('late_ctas', 20);
    // No key: the events carry none, but each row once, with its writer.
    expect(
      events('late_ctas', 'create')
        .map((s) => Number(s.meta['payload'].id))
        .sort((a, b) => a - b),
    ).toEqual(range(1, 20));
    expect(events('late_ctas', 'create').every((s) => s.who?.['verified'] === true)).toBe(true);
    expect(events('late_ctas', 'delete')).toEqual([]);
  });

  it('guards a table whose CREATE TABLE also declares a foreign key (an ALTER TABLE of its own)', async () => {
    const result = await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query(`create table late_parent (id int primary key, v int, note text)`);
      await c.query(`create table late_child (id int primary key, parent int references late_parent, v int, note text)`);
      const odd = await outcome(c, `insert into late_child (id, v) values (1, 1)`);
      await c.query('rollback');
      return odd;
    });
    expect(result).toBe('HB400');
  });

  it('puts the TRUNCATE trigger on a new table with delete filters, and on its partitions', async () => {
    const results = await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query(`create table late_trunc (id int primary key, v int, note text) partition by range (id)`);
      await c.query(`create table late_trunc_low partition of late_trunc for values from (0) to (100)`);
      await c.query(`insert into late_trunc (id, v) values (1, 2)`);
      await c.query('savepoint s');
      const whole = await outcome(c, `truncate late_trunc`);
      await c.query('rollback to savepoint s');
      const partition = await outcome(c, `truncate late_trunc_low`);
      await c.query('rollback');
      return [whole, partition];
    });
    expect(results).toEqual(['HB403', 'HB403']);
  });

  it('guards a table renamed into a matching name in the renaming transaction', async () => {
    await sql(`create table plain_renamed (id int primary key, v int, note text)`);
    const result = await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query(`alter table plain_renamed rename to late_renamed`);
      const odd = await outcome(c, `insert into late_renamed (id, v) values (1, 1)`);
      await c.query('rollback');
      return odd;
    });
    expect(result).toBe('HB400');
  });

  it('moves a table to the full publication when its key is added, in that transaction: no update lost', async () => {
    await sql(`begin;
      create table late_keyless (id int not null, v int, note text);
      insert into late_keyless (id, v) values (1, 2), (2, 4);
      alter table late_keyless add primary key (id);
      update late_keyless set note = 'keyed' where id = 1;
      commit`);
    await waitForEvents('late_keyless', 2);
    await waitForEvents('late_keyless', 1, 'update');
    expect(events('late_keyless', 'update')[0]?.meta).toMatchObject({ keys: [1], payload: { id: 1, note: 'keyed' } });
  });

  it('guards partitions created in the same transaction, with their writer known', async () => {
    await sql(`begin;
      create table late_parts (id int primary key, v int, note text) partition by range (id);
      create table late_parts_low partition of late_parts for values from (0) to (100);
      insert into late_parts_low (id, v) values (1, 2);
      commit`);
    await withClient(db.url, async (c) => {
      expect(await outcome(c, `insert into late_parts_low (id, v) values (2, 3)`)).toBe('HB400');
    });
    await waitForEvents('late_parts', 1);
    expect(events('late_parts', 'create')[0]).toMatchObject({ meta: { key: 1, payload: { note: 'filtered' } }, who: { verified: true } });
  });
});
