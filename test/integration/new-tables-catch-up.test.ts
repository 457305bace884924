/**
 * New tables without the event trigger (issue 12, finding 2): a bridge role that is not a superuser,
 * set up as the README's security section says, cannot create it. `doctor` and `status` say so and
 * give the statement a superuser runs; meanwhile every row committed to a new matching table reaches
 * action hooks exactly once — rows written before the table joined the publication as catch-up
 * creates, as they stood at the join, later ones as they happen — even while the bridge was down.
 * Once a superuser ran the statement, the same bridge guards new tables inside their CREATE TABLE.
 */
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../bridge/config.js';
import { doctor, status } from '../../bridge/inspect.js';
import { eventTriggerStatement } from '../../bridge/new-tables.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { ROLE_PASSWORD, testRoles } from '../support/readme-roles.js';
import { waitFor, withClient } from '../support/helpers.js';
import { waitUntilHandled } from '../support/slot.js';

const db = useTestDatabase();
const { roles, urlAs, prepareBridge, drop: dropRoles } = testRoles(db, ['bridge', 'owner'], 'hb_nt');
type Seen = { event: string; meta: Record<string, any>; who: Record<string, any> | null };
const seen: Seen[] = [];
(globalThis as Record<string, unknown>)['__catchUpSeen'] = seen;

const extensions = {
  'hooks/late/index.js': `
    module.exports = ({ filter, action }, { exceptions }) => {
      filter('late_*.items.create', (payload) => {
        if (Number(payload.v) % 2 === 1) throw new exceptions.InvalidPayloadException('odd values are refused');
        return payload;
      });
      for (const event of ['create', 'update', 'delete']) {
        action('late_*.items.' + event, (meta, ctx) => globalThis.__catchUpSeen.push({ event, meta, who: ctx.accountability }));
      }
    };`,
};

let tb: TestBridge | undefined;
const asOwner = (text: string) => withClient(urlAs(roles.owner), (c) => c.query(text));
const events = (collection: string, event?: string) => seen.filter((s) => s.meta['collection'] === collection && (!event || s.event === event));
const keysOf = (list: Seen[]) => list.map((s) => Number(s.meta['key'] ?? s.meta['keys']?.[0])).sort((a, b) => a - b);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const waitForEvents = (collection: string, count: number, event = 'create') =>
  waitFor(() => events(collection, event).length >= count, {
    timeoutMs: 30_000,
    message: () => `${count} ${event} events for ${collection}; have ${events(collection, event).length}`,
  });
const published = (table: string) =>
  waitFor(
    async () =>
      (await withClient(db.url, (c) => c.query(`select 1 from pg_publication_tables where pubname like 'hookbridge%' and tablename = $1`, [table]))).rowCount,
    { timeoutMs: 15_000, message: `${table} joins the publication` },
  );

beforeAll(async () => {
  // The README's security section, with the table owner as the role migrations run as.
  await withClient(db.url, async (c) => {
    await c.query(`create role ${roles.bridge} login replication password '${ROLE_PASSWORD}'`);
    await c.query(`create role ${roles.owner} login password '${ROLE_PASSWORD}'`);
    await prepareBridge(c, db.name, roles.bridge);
    await c.query(`grant ${roles.owner} to ${roles.bridge}`);
    await c.query(`grant create on schema public to ${roles.owner}`);
  });
  tb = await startTestBridge(urlAs(roles.bridge), extensions, { filterTransport: 'direct' });
});

afterAll(async () => {
  await tb?.dispose();
  await withClient(db.url, async (c) => {
    await c.query(`drop event trigger if exists hookbridge_new_tables`);
  });
  await dropRoles();
});

beforeEach(() => {
  seen.length = 0;
});

describe('new tables, without the event trigger (a bridge role that is not a superuser)', () => {
  it('doctor and status say new tables are not guarded in their own transaction, and give the statement', async () => {
    const pool = new pg.Pool({ connectionString: urlAs(roles.bridge), max: 1 });
    try {
      const config = resolveConfig({ databaseUrl: urlAs(roles.bridge), slotName: tb!.slotName });
      const check = (await doctor(pool, config)).find((c) => c.name === 'new tables guarded from their first row');
      expect(check).toMatchObject({ ok: false, fix: `as a superuser, once: ${eventTriggerStatement('hookbridge')}` });
      expect(check?.detail).toMatch(/no event trigger .*not filtered.*catch-up creates/);
      const report = await status(pool, config);
      expect(report.newTables).toMatchObject({ state: 'missing', fix: check?.fix });
    } finally {
      await pool.end();
    }
    expect(tb!.log.lines().some((l) => l['msg'] === "new tables are guarded only from the bridge's next check (no event trigger)")).toBe(true);
  });

  it('delivers every row of a table created and written in one transaction, once, as it stood when the table joined', async () => {
    await asOwner(`begin;
      create table late_tx (id int primary key, v int, note text);
      insert into late_tx (id, v) select g, 2 * g from generate_series(1, 300) g;
      update late_tx set note = 'changed' where id <= 5;
      delete from late_tx where id > 295;
      commit`);
    await waitForEvents('late_tx', 295);
    const creates = events('late_tx', 'create');
    expect(keysOf(creates)).toEqual(range(1, 295));
    expect(creates.every((s) => s.meta['catchUp'] === true && s.who?.['verified'] === false)).toBe(true);
    // Typed as any insert: int4 as a number, the update folded into the row.
    expect(creates.find((s) => s.meta['key'] === 3)?.meta['payload']).toEqual({ id: 3, v: 6, note: 'changed' });
    expect(new Set(creates.map((s) => s.meta['id'])).size).toBe(295);

    // After the join: changes arrive as they happen, none twice.
    await published('late_tx');
    await asOwner(`insert into late_tx (id, v) select g, 2 * g from generate_series(296, 320) g; update late_tx set note = 'later' where id = 1`);
    await waitForEvents('late_tx', 320);
    await waitForEvents('late_tx', 1, 'update');
    expect(keysOf(events('late_tx', 'create'))).toEqual(range(1, 320));
    expect(
      events('late_tx', 'create')
        .filter((s) => s.meta['catchUp'] === undefined)
        .every((s) => s.who?.['role'] === roles.owner),
    ).toBe(true);
    expect(events('late_tx', 'update').map((s) => s.meta['payload'])).toEqual([{ id: 1, v: 2, note: 'later' }]);
  });

  it('delivers each of 400 autocommit inserts right after CREATE TABLE exactly once, before and after the join', async () => {
    await withClient(urlAs(roles.owner), async (c) => {
      // One implicit transaction: the first row is surely in before the table joins.
      await c.query(`create table late_auto (id int primary key, v int); insert into late_auto values (1, 2)`);
      for (let id = 2; id <= 400; id += 1) {
        await c.query(`insert into late_auto (id, v) values ($1, $2)`, [id, 2 * id]);
        if (id === 200) await published('late_auto');
      }
    });
    await waitForEvents('late_auto', 400);
    // Every transaction that could carry one of these rows (the inserts, the join's catch-up) committed
    // before this point: once the bridge handled all of them, a duplicate would have arrived.
    await waitUntilHandled(db.url, tb!.slotName);
    expect(keysOf(events('late_auto', 'create'))).toEqual(range(1, 400));
    // The rows before the join were caught up; those after it came from the WAL.
    expect(events('late_auto', 'create').filter((s) => s.meta['catchUp'] === true).length).toBeGreaterThan(0);
    expect(
      events('late_auto', 'create')
        .filter((s) => s.meta['key'] > 200)
        .every((s) => s.meta['catchUp'] === undefined),
    ).toBe(true);
  });

  it('catches up a table created and written while the bridge was down', async () => {
    await tb!.stop();
    await asOwner(`create table late_offline (id int primary key, v int); insert into late_offline select g, 2 * g from generate_series(1, 50) g`);
    await tb!.restart();
    await waitForEvents('late_offline', 50);
    expect(keysOf(events('late_offline', 'create'))).toEqual(range(1, 50));
  });

  it('guards new tables in their own transaction once a superuser ran the statement doctor gives', async () => {
    await withClient(db.url, (c) => c.query(eventTriggerStatement('hookbridge')));
    const pool = new pg.Pool({ connectionString: urlAs(roles.bridge), max: 1 });
    try {
      const check = (await doctor(pool, resolveConfig({ databaseUrl: urlAs(roles.bridge), slotName: tb!.slotName }))).find(
        (c) => c.name === 'new tables guarded from their first row',
      );
      expect(check).toMatchObject({ ok: true });
    } finally {
      await pool.end();
    }
    const refused = await withClient(urlAs(roles.owner), async (c) => {
      await c.query('begin');
      await c.query(`create table late_guarded (id int primary key, v int)`);
      const result = await c.query(`insert into late_guarded values (1, 1)`).then(
        () => 'ok',
        (error: pg.DatabaseError) => error.code,
      );
      await c.query('rollback');
      return result;
    });
    expect(refused).toBe('HB400');
    await asOwner(`begin; create table late_guarded (id int primary key, v int); insert into late_guarded values (1, 2), (2, 4); commit`);
    await waitForEvents('late_guarded', 2);
    expect(events('late_guarded', 'create').every((s) => s.meta['catchUp'] === undefined && s.who?.['role'] === roles.owner)).toBe(true);
  });
});
