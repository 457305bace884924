/**
 * Issue 12, findings 4 and 7: the filter sees the final row (hookbridge's BEFORE trigger fires after the
 * user's); /health tells the truth about triggers (a replaced trigger function is noticed and undone);
 * a table the bridge may not alter is listed with the reason and never stops the others; table owners
 * keep creating partitions of a filtered table. The bridge runs as a non-superuser role set up as the
 * README says, so that a table it may not alter can exist.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../bridge/config.js';
import { doctor } from '../../bridge/inspect.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { ROLE_PASSWORD, testRoles } from '../support/readme-roles.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const { roles, urlAs, prepareBridge, drop: dropRoles } = testRoles(db, ['bridge', 'owner', 'stranger']);
const seen: Array<Record<string, unknown>> = [];
const acted: string[] = [];
(globalThis as Record<string, unknown>)['__triggerHealth'] = { seen, acted };

const sql = (text: string, url = db.url) => withClient(url, (c) => c.query(text));
const failure = (text: string, url = db.url) =>
  sql(text, url).then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
let tb: TestBridge;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create role ${roles.bridge} login replication password '${ROLE_PASSWORD}'`);
    await c.query(`create role ${roles.owner} login password '${ROLE_PASSWORD}'`);
    await c.query(`create role ${roles.stranger} nologin`);
    await prepareBridge(c, db.name, roles.bridge);
    await c.query(`grant ${roles.owner} to ${roles.bridge}`);
    await c.query(`grant create on schema public to ${roles.owner}`);
    for (const table of ['g_items', 'g_strangers', 'g_sealed']) {
      await c.query(`create table ${table} (id int primary key, title text, stamp text)`);
    }
    await c.query(`create table g_events (id int, at date, title text, primary key (id, at)) partition by range (at)`);
    await c.query(`create table g_events_2024 partition of g_events for values from ('2024-01-01') to ('2025-01-01')`);
    await c.query(`alter table g_items owner to ${roles.owner}`);
    await c.query(`alter table g_events owner to ${roles.owner}`);
    await c.query(`alter table g_events_2024 owner to ${roles.owner}`);
    await c.query(`alter table g_strangers owner to ${roles.stranger}`);
    await c.query(`alter table g_sealed owner to ${roles.stranger}`);
    // Readable, and open to triggers, but not the bridge's to publish: it used to stop the publication
    // sync of every table. g_sealed is only readable.
    await c.query(`grant select, trigger on g_strangers to ${roles.bridge}`);
    await c.query(`grant select on g_sealed to ${roles.bridge}`);
    // The user's own BEFORE trigger, named to sort after the old "hookbridge_filter".
    await c.query(`create function public.stamp() returns trigger language plpgsql as $$ begin new.stamp := 'stamped'; return new; end $$`);
    await c.query(`create trigger zz_stamp before insert or update on g_items for each row execute function public.stamp()`);
    await c.query(`create function public.let_through() returns trigger language plpgsql as $$ begin return new; end $$`);
  });
  tb = await startTestBridge(
    urlAs(roles.bridge),
    {
      'hooks/guard/index.js': `
        module.exports = ({ filter, action }) => {
          const { seen, acted } = globalThis.__triggerHealth;
          filter('g_*.items.create', (payload, meta) => {
            seen.push({ collection: meta.collection, ...payload });
            if (payload.title === 'reject me') throw new Error('rejected by the hook');
            return payload;
          });
          action('g_*.items.create', (meta) => { acted.push(meta.collection + ':' + meta.payload.title); });
        };`,
    },
    { filterTransport: 'direct', filterTimeoutMs: 2000 },
  );
});

afterAll(async () => {
  await tb?.dispose();
  await dropRoles();
});

const triggerOf = async (table: string) =>
  (await sql(`select tgname, tgfoid::regproc::text as fn from pg_trigger where tgrelid = '${table}'::regclass and tgname like '%hookbridge_filter'`)).rows;

describe('trigger order and health', () => {
  it("fires after the user's BEFORE triggers: the filter sees the final row", async () => {
    await waitFor(async () => (await triggerOf('g_items')).length === 1, { message: 'no filter trigger on g_items' });
    await sql(`insert into g_items (id, title) values (1, 'first')`);
    expect(seen.at(-1)).toMatchObject({ collection: 'g_items', title: 'first', stamp: 'stamped' });
  });

  it('puts back a trigger whose function an owner replaced, and says so until then', async () => {
    const ownerUrl = urlAs(roles.owner);
    await sql(
      `drop trigger "~hookbridge_filter" on g_items; create trigger "~hookbridge_filter" before insert on g_items for each row execute function public.let_through()`,
      ownerUrl,
    );
    await waitFor(async () => (await triggerOf('g_items'))[0]?.fn === 'hookbridge.filter_trigger', { message: 'the replaced trigger was never put back' });
    expect(await failure(`insert into g_items (id, title) values (2, 'reject me')`)).toMatchObject({ message: expect.stringMatching(/rejected by the hook/) });
    expect(tb.bridge.health().filters).toMatchObject({ triggersInSync: true });
  });

  it('lists a table it may not alter, with the reason, and keeps managing the others', async () => {
    const unmanaged = (section: unknown) => ((section as { unmanaged?: Array<{ collection: string }> }).unmanaged ?? []).map((u) => u.collection);
    await waitFor(() => unmanaged(tb.bridge.health().replication).length === 2, { message: "the strangers' tables never listed" });
    const health = tb.bridge.health();
    expect(health.status).toBe('ok');
    expect((health.filters as { unmanaged: unknown[] }).unmanaged).toEqual([
      { collection: 'g_sealed', reason: expect.stringMatching(/no TRIGGER privilege.*GRANT/) },
    ]);
    expect((health.replication as { unmanaged: unknown[] }).unmanaged).toEqual([
      { collection: 'g_sealed', reason: expect.stringMatching(/owned by role .*publishing a table needs that.*GRANT/) },
      { collection: 'g_strangers', reason: expect.stringMatching(/owned by role/) },
    ]);
    // TRIGGER privilege is enough for the filter trigger.
    await waitFor(async () => (await triggerOf('g_strangers')).length === 1, { message: 'g_strangers never got its trigger' });
    // A table created afterwards is still guarded and published: the stranger's table blocks nothing.
    await sql(`create table g_late (id int primary key, title text)`, urlAs(roles.owner));
    await waitFor(async () => (await triggerOf('g_late')).length === 1, { message: 'g_late never got its trigger' });
    await waitFor(async () => (await sql(`select 1 from pg_publication_tables where tablename = 'g_late'`)).rowCount === 1, {
      message: 'g_late never published',
    });
    expect(await failure(`insert into g_late values (1, 'reject me')`)).toMatchObject({ message: expect.stringMatching(/rejected by the hook/) });
    await sql(`insert into g_late values (2, 'late and fine')`);
    await waitFor(() => acted.includes('g_late:late and fine'), { message: 'g_late changes never reached the action hook' });
  });

  it('lets a table owner create and attach partitions of a filtered table', async () => {
    await waitFor(async () => (await triggerOf('g_events')).length === 1, { message: 'no filter trigger on g_events' });
    const ownerUrl = urlAs(roles.owner);
    expect(await failure(`create table g_events_2025 partition of g_events for values from ('2025-01-01') to ('2026-01-01')`, ownerUrl)).toBeUndefined();
    expect(await failure(`create table g_events_2026 (like g_events including all)`, ownerUrl)).toBeUndefined();
    expect(await failure(`alter table g_events attach partition g_events_2026 for values from ('2026-01-01') to ('2027-01-01')`, ownerUrl)).toBeUndefined();
    expect(await failure(`insert into g_events values (1, '2025-06-01', 'reject me')`)).toMatchObject({
      message: expect.stringMatching(/rejected by the hook/),
    });
    expect(await failure(`insert into g_events values (2, '2026-06-01', 'reject me')`)).toMatchObject({
      message: expect.stringMatching(/rejected by the hook/),
    });
  });

  it('doctor names a user trigger that still sorts after the filter, and a disabled filter trigger', async () => {
    await sql(`create trigger "~~late" before insert on g_items for each row execute function public.stamp()`, urlAs(roles.owner));
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      const config = resolveConfig({ databaseUrl: db.url, slotName: tb.slotName }, {});
      const check = (await doctor(pool, config)).find((c) => c.name === 'filter triggers fire last');
      expect(check).toMatchObject({ ok: false, detail: expect.stringMatching(/g_items: its trigger "~~late" runs after hookbridge's filter/) });
    } finally {
      await pool.end();
      await sql(`drop trigger "~~late" on g_items`);
    }
  });
});
