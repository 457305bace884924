/**
 * TRUNCATE through the hooks (issue 12, finding 3): a TRUNCATE of a table with delete filters is
 * refused unless an `items.truncate` filter allows it (a statement-level BEFORE TRUNCATE trigger,
 * sql/000007.sql), and each truncated table's action event has a `meta.id` of its own, the same
 * when delivered again.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();

type Seen = { event: string; payload: unknown; meta: Record<string, unknown>; role: unknown };
const state = {
  filters: [] as Seen[],
  deletes: [] as unknown[],
  actions: [] as Array<{ collection: string; id: string; run: number }>,
  run: 1,
  /** Holds the first run's handler for `tb` until released: its transaction stays unconfirmed. */
  hold: undefined as (() => void) | undefined,
};
(globalThis as Record<string, unknown>)['__truncate'] = state;

const extensions = {
  'hooks/truncates/index.js': `
    module.exports = ({ filter, action }, { exceptions }) => {
      const state = globalThis.__truncate;
      // Delete filters only: a TRUNCATE would bypass them.
      filter('notes.items.delete', (keys) => void state.deletes.push(keys));
      filter('child.items.delete', (keys) => void state.deletes.push(keys));
      // Delete filters, and a truncate filter that allows the TRUNCATE.
      filter('logs.items.delete', (keys) => void state.deletes.push(keys));
      filter('logs.items.truncate', (payload, meta, ctx) => {
        state.filters.push({ event: meta.event, payload, meta, role: ctx.accountability.role });
      });
      // A truncate filter alone, which refuses.
      filter('vault.items.truncate', (payload, meta) => {
        state.filters.push({ event: meta.event, payload, meta, role: null });
        throw new exceptions.InvalidPayloadException('the vault is never truncated');
      });
      filter('readings.items.truncate', (payload, meta) => {
        state.filters.push({ event: meta.event, payload, meta, role: null });
        if (meta.partition !== 'readings_2019') throw new exceptions.InvalidPayloadException('only old readings may go');
      });
      action('items.truncate', async (meta) => {
        state.actions.push({ collection: meta.collection, id: meta.id, run: state.run });
        if (meta.collection.startsWith('broken_')) throw new Error('downstream is down');
        if (meta.collection === 'tb' && state.run === 1) await new Promise((resolve) => { state.hold = resolve; });
      });
    };`,
};

const role = `hb_truncate_${randomBytes(4).toString('hex')}`;
let tb: TestBridge;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create table notes (id int primary key, body text)`);
    await c.query(`create table logs (id int primary key)`);
    await c.query(`create table vault (id int primary key)`);
    await c.query(`create table parent (id int primary key)`);
    await c.query(`create table child (id int primary key, parent_id int references parent)`);
    await c.query(`create table readings (id int, at date, primary key (id, at)) partition by range (at)`);
    await c.query(`create table readings_2019 partition of readings for values from ('2019-01-01') to ('2020-01-01')`);
    await c.query(`create table readings_2026 partition of readings for values from ('2026-01-01') to ('2027-01-01')`);
    await c.query(`create table ta (id int primary key)`);
    await c.query(`create table tb (id int primary key)`);
    await c.query(`create table broken_a (id int primary key)`);
    await c.query(`create table broken_b (id int primary key)`);
    await c.query(`create table untouched (id int primary key)`);
    await c.query(`insert into notes values (1, 'keep'), (2, 'me')`);
    await c.query(`insert into logs values (1), (2)`);
    await c.query(`insert into vault values (1)`);
    await c.query(`insert into parent values (1)`);
    await c.query(`insert into child values (1, 1)`);
    await c.query(`insert into readings values (1, '2019-06-01'), (2, '2026-06-01')`);
    await c.query(`create role ${role} nologin`);
    await c.query(`grant truncate, select on logs, notes to ${role}`);
  });
  tb = await startTestBridge(db.url, extensions, { filterTimeoutMs: 3000, actionAttempts: 1 });
});

afterAll(async () => {
  state.hold?.();
  await tb?.dispose();
  await withClient(db.url, async (c) => {
    await c.query(`drop owned by ${role}`);
    await c.query(`drop role if exists ${role}`);
  });
});

const rows = (sql: string) => withClient(db.url, async (c) => (await c.query(sql)).rows);
const failure = (sql: string | string[]) =>
  withClient(db.url, async (c) => {
    for (const statement of [sql].flat()) await c.query(statement);
  }).then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );

describe('TRUNCATE and filter hooks', () => {
  it('puts the TRUNCATE trigger, last in name order, on tables with delete or truncate filters and on each partition', async () => {
    const triggers = await rows(
      `select tgrelid::regclass::text as t, tgname as name from pg_trigger
        where tgtype::int4 & 32 <> 0 and not tgisinternal and tgname <> 'hookbridge_accountability' order by 1`,
    );
    expect(triggers).toEqual(
      ['child', 'logs', 'notes', 'readings', 'readings_2019', 'readings_2026', 'vault'].map((t) => ({ t, name: '~hookbridge_filter_truncate' })),
    );
  });

  it('refuses a TRUNCATE of a table with delete filters and no truncate filter, with a clear error; rows stay', async () => {
    const error = await failure(`truncate notes`);
    expect(error).toMatchObject({
      code: 'HB403',
      message:
        'hookbridge: TRUNCATE of notes refused: it has delete filters, which a TRUNCATE would bypass; register an items.truncate filter (e.g. "notes.items.truncate") to allow it',
      detail: 'code: TRUNCATE_REFUSED',
    });
    expect(await rows(`select id from notes order by id`)).toEqual([{ id: 1 }, { id: 2 }]);
    expect(state.deletes).toEqual([]);
  });

  it('refuses it also when the table is only reached through CASCADE', async () => {
    const error = await failure(`truncate parent cascade`);
    expect(error).toMatchObject({ code: 'HB403', detail: 'code: TRUNCATE_REFUSED', message: expect.stringContaining('TRUNCATE of child refused') });
    expect(await rows(`select (select count(*)::int from parent) as parents, (select count(*)::int from child) as children`)).toEqual([
      { parents: 1, children: 1 },
    ]);
  });

  it('lets an items.truncate filter allow it: the filter sees the call, the writer and null', async () => {
    state.filters.length = 0;
    await withClient(db.url, async (c) => {
      await c.query(`set role ${role}`);
      await c.query(`truncate logs`);
    });
    expect(await rows(`select count(*)::int as n from logs`)).toEqual([{ n: 0 }]);
    expect(state.filters).toEqual([{ event: 'logs.items.truncate', payload: null, meta: { event: 'logs.items.truncate', collection: 'logs' }, role }]);
    expect(state.deletes).toEqual([]);
  });

  it("refuses it when a truncate filter throws, with the filter's error; rows stay", async () => {
    const error = await failure(`truncate vault`);
    expect(error).toMatchObject({ code: 'HB400', message: 'the vault is never truncated', detail: 'code: INVALID_PAYLOAD' });
    expect(await rows(`select id from vault`)).toEqual([{ id: 1 }]);
    expect(state.filters.at(-1)).toMatchObject({ event: 'vault.items.truncate', payload: null });
  });

  it('asks about each partition of a partitioned table, naming it, whether truncated alone or with its table', async () => {
    state.filters.length = 0;
    const whole = await failure(`truncate readings`);
    expect(whole).toMatchObject({ code: 'HB400', message: 'only old readings may go' });
    expect(await failure(`truncate readings_2026`)).toMatchObject({ code: 'HB400' });
    expect(await failure(`truncate readings_2019`)).toBeUndefined();
    expect(await rows(`select id from readings order by id`)).toEqual([{ id: 2 }]);
    expect(state.filters.map((f) => [f.event, f.meta['collection'], f.meta['partition']])).toEqual([
      ['readings.items.truncate', 'readings', undefined],
      ['readings.items.truncate', 'readings', 'readings_2026'],
      ['readings.items.truncate', 'readings', 'readings_2019'],
    ]);
  });

  it('follows the hooks: the trigger comes and goes with a delete filter, and reaches partitions created later', async () => {
    const hasTrigger = async (table: string) =>
      (await rows(`select 1 from pg_trigger where tgrelid = '${table}'::regclass and tgname = '~hookbridge_filter_truncate'`)).length === 1;
    const handler = () => undefined;
    tb.bridge.runtime.emitter.onFilter('untouched.items.delete', handler);
    await waitFor(() => hasTrigger('untouched'), { message: 'no TRUNCATE trigger on untouched after a delete filter came' });
    expect(await failure(`truncate untouched`)).toMatchObject({ code: 'HB403', detail: 'code: TRUNCATE_REFUSED' });
    tb.bridge.runtime.emitter.offFilter('untouched.items.delete', handler);
    await waitFor(async () => !(await hasTrigger('untouched')), { message: 'the TRUNCATE trigger stayed on untouched after its filter went' });
    expect(await failure(`truncate untouched`)).toBeUndefined();
    await withClient(db.url, (c) => c.query(`create table readings_2027 partition of readings for values from ('2027-01-01') to ('2028-01-01')`));
    await waitFor(() => hasTrigger('readings_2027'), { message: 'no TRUNCATE trigger on a partition created later' });
  });

  it('keeps the door narrow: a role without TRUNCATE may not have the hooks run for one by calling filter_entry itself', async () => {
    const error = await failure([`set role ${role}`, `select hookbridge.filter_entry('vault'::regclass, 'public', 'vault', 'TRUNCATE', null, null)`]);
    expect(error).toMatchObject({ code: '42501', message: `hookbridge: ${role} may not truncate public.vault` });
    // One it may truncate goes through the filters, as its TRUNCATE would.
    state.filters.length = 0;
    expect(await failure([`set role ${role}`, `select hookbridge.filter_entry('logs'::regclass, 'public', 'logs', 'TRUNCATE', null, null)`])).toBeUndefined();
    expect(state.filters).toHaveLength(1);
  });
});

describe('TRUNCATE and action hooks', () => {
  it('gives each table of one TRUNCATE its own meta.id, the same when delivered again', async () => {
    await withClient(db.url, async (c) => {
      await c.query(`insert into ta values (1)`);
      await c.query(`insert into tb values (1)`);
      await c.query(`truncate ta, tb`);
    });
    const first = (run: number) => state.actions.filter((a) => a.run === run && (a.collection === 'ta' || a.collection === 'tb'));
    await waitFor(() => first(1).length === 2, { timeoutMs: 20_000, message: () => `truncate events: ${JSON.stringify(state.actions)}` });
    const ids = first(1).map((a) => a.id);
    expect(new Set(ids).size).toBe(2);
    for (const id of ids) expect(id).toMatch(/^[0-9A-F]+\/[0-9A-F]+:\d+$/);

    // tb's handler has not finished: the transaction is not confirmed, and a new bridge gets it again.
    await tb.stop();
    state.run = 2;
    await tb.restart();
    state.hold?.();
    await waitFor(() => first(2).length === 2, { timeoutMs: 20_000, message: () => `redelivered truncate events: ${JSON.stringify(state.actions)}` });
    expect(first(2).map((a) => [a.collection, a.id])).toEqual(first(1).map((a) => [a.collection, a.id]));
  }, 60_000);

  it("parks a failing handler's event once per table (failed events are kept by id, extension and event)", async () => {
    await withClient(db.url, (c) => c.query(`truncate broken_a, broken_b`));
    const parked = await waitFor(
      async () => {
        const found = await rows(`select collection, event_id from hookbridge.failed_events where collection like 'broken_%' order by collection`);
        return found.length === 2 ? found : undefined;
      },
      { timeoutMs: 20_000, message: 'both truncate events were not parked' },
    );
    expect(parked.map((r) => r.collection)).toEqual(['broken_a', 'broken_b']);
    expect(parked[0]?.event_id).not.toBe(parked[1]?.event_id);
  });
});
