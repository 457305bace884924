/**
 * The README's security section, tried by an adversary. Roles are set up the way the README says (a
 * bridge role, a table owner, a writer; the superuser creates dblink), then every promise is checked:
 * writers cannot reach dblink or hookbridge's functions, cannot skip or answer filters, cannot forge
 * who they are; nothing a user creates runs inside the bridge's own queries; a second bridge leaves the
 * first alone; a bridge refuses to install triggers while writers could reach dblink; and a process
 * squatting on a dead bridge's port can never approve a write.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Bridge } from '../../bridge/bridge.js';
import { resolveConfig } from '../../bridge/config.js';
import { lockClassFor } from '../../bridge/filters/tickets.js';
import { WireServer } from '../../bridge/filters/wire-server.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { captureLogger } from '../support/capture-logger.js';
import { runCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { ROLE_PASSWORD, testRoles } from '../support/readme-roles.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const suffix = randomBytes(3).toString('hex');
const { roles, urlAs, prepareBridge, drop: dropRoles } = testRoles(db, ['bridge', 'owner', 'writer']);
const seen: Array<{ payload: Record<string, unknown>; who: Record<string, unknown> }> = [];
(globalThis as Record<string, unknown>)['__securitySeen'] = seen;

const extensions = {
  'hooks/guard/index.js': `
    module.exports = ({ filter }, { exceptions }) => {
      filter('items.items.create', (payload, meta, { accountability }) => {
        globalThis.__securitySeen.push({ payload, who: accountability });
        if (payload.title === 'reject me') throw new exceptions.InvalidPayloadException('rejected by the hook');
        return { ...payload, checked: true };
      });
      filter('late_*.items.create', (payload) => payload);
    };`,
};

const asWriter = () => urlAs(roles.writer);
const outcome = (url: string, sql: string, setup: string[] = []) =>
  withClient(url, async (c) => {
    for (const statement of setup) await c.query(statement);
    return c.query(sql).then(
      () => 'ok',
      (e: pg.DatabaseError) => e.code ?? e.message,
    );
  });
const rows = async (sql: string) => (await withClient(db.url, (c) => c.query(sql))).rows;

let tb: TestBridge | undefined;
const FILTER_PORT = await new Promise<number>((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => {
    const { port } = server.address() as { port: number };
    server.close(() => resolve(port));
  });
});

const startBridge = () => startTestBridge(urlAs(roles.bridge), extensions, { filterTransport: 'direct', filterPort: FILTER_PORT, filterTimeoutMs: 2000 });

beforeAll(async () => {
  // What the README tells a superuser to run, once.
  await withClient(db.url, async (c) => {
    await c.query(`create role ${roles.bridge} login replication password '${ROLE_PASSWORD}'`);
    await c.query(`create role ${roles.owner} nologin`);
    await c.query(`create role ${roles.writer} login password '${ROLE_PASSWORD}'`);
    await prepareBridge(c, db.name, roles.bridge);
    await c.query(`grant ${roles.owner} to ${roles.bridge}`);
    // The application's own objects.
    await c.query(`create table items (id serial primary key, title text, checked boolean)`);
    await c.query(`alter table items owner to ${roles.owner}`);
    await c.query(`grant select, insert, update, delete on items to ${roles.writer}`);
    await c.query(`grant usage on sequence items_id_seq to ${roles.writer}`);
    await c.query(`grant create on schema public to ${roles.writer}`);
    await c.query(`create table private_items (id int primary key)`);
  });
  tb = await startBridge();
});

afterAll(async () => {
  await tb?.dispose();
  await dropRoles();
});

describe('filter security, with the README role setup', () => {
  it('filters the writer and tells hooks who it is, whatever it claims', async () => {
    expect(await outcome(asWriter(), `insert into items (title) values ('fine')`, [`set hookbridge."user" = 'alice'`])).toBe('ok');
    expect(await rows(`select title, checked from items`)).toEqual([{ title: 'fine', checked: true }]);
    expect(seen.at(-1)?.who).toMatchObject({ role: roles.writer, admin: false, user: 'alice' });
    expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB400');
  });

  it('keeps dblink, the endpoint, the key and the filter functions out of writers reach', async () => {
    for (const sql of [
      `select hookbridge.dblink_connect('hookbridge_direct_1', 'host=127.0.0.1 port=1')`,
      `select hookbridge.dblink('hookbridge_direct_1', 'select 1')`,
      `select hookbridge.filter_call('{"op":"INSERT"}')`,
      `select hookbridge.filter_submit(0, 'x', '{}')`,
      `select hookbridge.filter_arm(1, '{1}')`,
      `select * from hookbridge.filter_endpoint`,
      `select * from hookbridge.secret`,
      `select * from hookbridge.filter_responses`,
    ]) {
      expect(await outcome(asWriter(), sql), sql).toBe('42501');
    }
    // dblink is nowhere on a writer's path either.
    expect(await outcome(asWriter(), `select dblink_connect('x', 'host=127.0.0.1 port=1')`)).toBe('42883');
    // The one door: called directly, it wants the privilege for the write it names.
    expect(await outcome(asWriter(), `select hookbridge.filter_entry('private_items'::regclass, 'public', 'private_items', 'INSERT', '{}', null)`)).toBe(
      '42501',
    );
  });

  it('gives writers no setting, trigger switch or replication role that skips the filters', async () => {
    expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`, [`set hookbridge.bypass = 'on'`])).toBe('HB400');
    expect(await outcome(asWriter(), `set session_replication_role = replica`)).toBe('42501');
    expect(await outcome(asWriter(), `alter table items disable trigger "~hookbridge_filter"`)).toBe('42501');
    expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`, [`set hookbridge.ticket_hint = '-5'`])).toBe('HB400');
  });

  it("refuses a direct call naming its own table as the trigger's and another table's name", async () => {
    // pg_partition_root() of a table that is no partition is NULL: the check used to let this through,
    // running items' filters on a row the writer made up.
    expect(await outcome(asWriter(), `create table public.writer_scratch_${suffix} (id int)`)).toBe('ok');
    const before = seen.length;
    expect(
      await outcome(
        asWriter(),
        `select hookbridge.filter_entry('public.writer_scratch_${suffix}'::regclass, 'public', 'items', 'INSERT', '{"title": "made up"}', null)`,
      ),
    ).toBe('42501');
    expect(seen.length).toBe(before);
  });

  it('never runs a function or operator a user created, in its own queries', async () => {
    // Objects the bridge's queries would pick over pg_catalog's (better type matches) if `public` were on
    // their search_path: `tgtype & 4` (int2 & int4) when it reads triggers, `hashtextextended($1, 0)`
    // (int4 where pg_catalog wants int8) when it migrates, at every start.
    await withClient(asWriter(), async (c) => {
      await c.query(`create table public.stolen (what text)`);
      await c.query(`grant insert on public.stolen to public`);
      await c.query(`create function public.steal(a int2, b int4) returns int4 language plpgsql as $$
        begin
          execute 'insert into public.stolen select encode(key, ''hex'') from hookbridge.secret';
          return pg_catalog.int4and(a, b);
        end $$`);
      await c.query(`create operator public.& (leftarg = int2, rightarg = int4, function = public.steal)`);
      await c.query(`create function public.hashtextextended(t text, seed int4) returns int8 language plpgsql as $$
        begin
          execute 'insert into public.stolen select conninfo from hookbridge.filter_endpoint';
          return pg_catalog.hashtextextended(t, seed);
        end $$`);
    });
    await tb!.restart();
    // A new table with a filter makes the bridge read the catalog, and its triggers, again.
    await withClient(db.url, async (c) => {
      await c.query(`create table late_arrival (id int primary key)`);
      await c.query(`alter table late_arrival owner to ${roles.owner}`);
    });
    await waitFor(
      async () => (await rows(`select 1 from pg_trigger where tgname = '~hookbridge_filter' and tgrelid = 'late_arrival'::regclass`)).length === 1,
      {
        message: 'the new table never got its trigger',
      },
    );
    expect(await rows(`select * from public.stolen`)).toEqual([]);
  });

  it("runs a writer's casts and domain checks with the writer's rights, never the bridge's", async () => {
    // A type whose cast to json (used when the row is turned into JSON) and a domain whose CHECK (run
    // when the hook's changes are applied) try to read hookbridge's key as whoever runs them.
    await withClient(asWriter(), async (c) => {
      await c.query(`create table public.ran_as (who text, got text)`);
      await c.query(`grant insert, select on public.ran_as to public`);
      await c.query(`create function public.peek() returns boolean language plpgsql as $$
        declare got text;
        begin
          begin
            execute 'select encode(key, ''hex'') from hookbridge.secret' into got;
          exception when others then got := sqlerrm;
          end;
          insert into public.ran_as values (current_user, got);
          return true;
        end $$`);
      await c.query(`create type public.mood as enum ('ok')`);
      await c.query(`create function public.mood_json(public.mood) returns json language plpgsql as $$
        begin perform public.peek(); return to_json($1::text); end $$`);
      await c.query(`create cast (public.mood as json) with function public.mood_json(public.mood)`);
      await c.query(`create domain public.checked_text as text check (public.peek())`);
      await c.query(`create table public.late_moods (id int primary key, m public.mood, title public.checked_text)`);
      await c.query(`grant select, trigger on public.late_moods to ${roles.bridge}`);
    });
    await waitFor(async () => (await rows(`select 1 from pg_trigger where tgname = '~hookbridge_filter' and tgrelid = 'late_moods'::regclass`)).length === 1, {
      message: 'the table never got its trigger',
    });
    expect(await outcome(asWriter(), `insert into late_moods values (1, 'ok', 'x')`)).toBe('ok');
    const ran = (await rows(`select distinct who, got from public.ran_as`)) as Array<{ who: string; got: string }>;
    expect(ran.length).toBeGreaterThan(0);
    for (const r of ran) {
      expect(r.who).toBe(roles.writer);
      expect(r.got).toMatch(/permission denied/);
    }
  });

  it('fails writes closed, never open, while someone squats on the filter tickets', async () => {
    const lockClass = lockClassFor('hookbridge');
    const squatter = new pg.Client({ connectionString: asWriter() });
    await squatter.connect();
    try {
      // Every claim lock: no writer can get a ticket.
      await squatter.query(`select pg_advisory_lock($1, t) from generate_series(0, 63) t`, [lockClass]);
      expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB504');
      expect(await rows(`select count(*)::int as n from items where title = 'reject me'`)).toEqual([{ n: 0 }]);
    } finally {
      await squatter.end();
    }
    expect(await outcome(asWriter(), `insert into items (title) values ('after squatting')`)).toBe('ok');
  });

  it('passes no row in open mode because someone holds the ticket locks (notify transport)', async () => {
    await tb!.stop();
    const open = await startTestBridge(urlAs(roles.bridge), extensions, { filterTransport: 'notify', filterFailureMode: 'open', filterTimeoutMs: 1000 });
    const lockClass = lockClassFor('hookbridge');
    const squatter = new pg.Client({ connectionString: asWriter() });
    await squatter.connect();
    let squatting = true;
    // Grabs every armed lock the bridge lets go of, so it can arm nothing again.
    const grabbing = (async () => {
      while (squatting) await squatter.query(`select count(*) from generate_series(0, 63) t where pg_try_advisory_lock($1, t)`, [lockClass + 1]);
    })();
    try {
      for (let i = 0; i < 5; i++) {
        const result = await outcome(asWriter(), `insert into items (title) values ('reject me')`);
        expect(result).toMatch(/^HB(400|504)$/);
      }
      // Every claim lock, too: no ticket at all.
      await squatter.query(`select pg_advisory_lock($1, t) from generate_series(0, 63) t`, [lockClass]);
      expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB504');
      expect(await rows(`select count(*)::int as n from items where title = 'reject me'`)).toEqual([{ n: 0 }]);
    } finally {
      squatting = false;
      await grabbing;
      await squatter.end();
      await open.dispose();
      await tb!.restart();
    }
  });

  it('lets a second bridge on the same database join as a standby without touching the running one', async () => {
    const own = `select slot, generation, conninfo from hookbridge.filter_endpoint where slot = ${tb!.bridge.filters?.slot ?? -1}`;
    const before = await rows(own);
    expect(before).toHaveLength(1);
    const log = captureLogger('info');
    const second = new Bridge(
      resolveConfig({ databaseUrl: urlAs(roles.bridge), extensionsPath: tb!.extensionsPath, slotName: tb!.slotName, port: 0, filterWorkers: 0 }, {}),
      log.logger,
    );
    try {
      await second.start();
      expect(second.role).toBe('standby');
      // Its own row, in a slot of its own; the running bridge's row as it was.
      expect(await rows(own)).toEqual(before);
      expect(await rows(`select 1 from hookbridge.filter_endpoint where slot = ${second.filters?.slot ?? -1}`)).toHaveLength(1);
      expect(second.filters?.slot).not.toBe(tb!.bridge.filters?.slot);
      expect(tb!.bridge.healthy).toBe(true);
      expect(tb!.bridge.role).toBe('leader');
      expect(await outcome(asWriter(), `insert into items (title) values ('still filtered')`)).toBe('ok');
      expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB400');
      // A standby streams nothing (the leader does).
      expect(second.actions).toBeUndefined();
      expect(tb!.bridge.actions?.streaming).toBe(true);
    } finally {
      await second.stop();
    }
    expect(tb!.bridge.healthy).toBe(true);
    expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB400');
  });

  it('refuses to install filter triggers while a writer could reach dblink, saying what to run', async () => {
    await tb!.stop();
    await withClient(db.url, (c) => c.query(`grant execute on function hookbridge.dblink_connect(text, text) to ${roles.writer}`));
    const log = captureLogger('info');
    const exposed = new Bridge(
      resolveConfig({ databaseUrl: urlAs(roles.bridge), extensionsPath: tb!.extensionsPath, slotName: tb!.slotName, port: 0 }, {}),
      log.logger,
    );
    const error = await exposed.start().then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    expect(error).toMatchObject({ code: 'E_DBLINK_EXPOSED' });
    expect(error?.message).toContain(`REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA "hookbridge" FROM "${roles.writer}";`);
    // The triggers stay, and fail closed: no bridge answers.
    expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB503');
    // doctor says the same, with the statement.
    const doctor = await runCli(['doctor', '--json'], { env: { DATABASE_URL: urlAs(roles.bridge), HOOKBRIDGE_SLOT: tb!.slotName } });
    const check = (JSON.parse(doctor.stdout) as Array<{ name: string; ok: boolean; fix?: string }>).find(
      (c) => c.name === 'dblink reachable by the bridge only',
    );
    expect(check).toMatchObject({ ok: false, fix: expect.stringContaining(`REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA "hookbridge" FROM "${roles.writer}";`) });
    await withClient(db.url, (c) => c.query(`revoke execute on all functions in schema hookbridge from ${roles.writer}`));
    await tb!.restart();
    expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB400');
  });

  it("never sends a row to, nor takes a verdict from, a process squatting on a dead bridge's port (direct transport)", async () => {
    const lockClass = lockClassFor('hookbridge');
    // The running bridge's row (a standby that came and went left its own).
    expect(tb!.bridge.filters?.slot).toBe(0);
    const endpoint = (await rows(`select conninfo from hookbridge.filter_endpoint where slot = 0`))[0] as { conninfo: string };
    const oldPassword = /password='([^']*)'/.exec(endpoint.conninfo)?.[1] ?? '';
    await tb!.stop();

    // The adversary: any role may take advisory locks, so it plays the bridge's locks itself, and a
    // local process binds the old port (libpq hands it the old per-run password).
    const squatter = new pg.Client({ connectionString: asWriter() });
    await squatter.connect();
    const requests: string[] = [];
    const greetings: string[] = [];
    const fake = new WireServer({
      host: '127.0.0.1',
      port: FILTER_PORT,
      password: oldPassword,
      logger: captureLogger('info').logger,
      onQuery: async (query) => {
        if (query.startsWith('HBF2 HELLO')) {
          greetings.push(query);
          return { row: '0'.repeat(64) };
        }
        const ticket = /^HBF2 (\d+) /.exec(query)?.[1];
        if (!ticket) return { command: 'SET' };
        requests.push(query);
        return {
          row: `${'0'.repeat(64)}K`,
          wake: () => void squatter.query(`select pg_advisory_unlock($1, $2)`, [lockClass + 1, Number(ticket)]),
        };
      },
    });
    try {
      // Alive and serving in slot 0, and slot 0's tickets armed.
      await squatter.query(`select pg_advisory_lock($1, 0)`, [lockClass + 2]);
      await squatter.query(`select pg_advisory_lock($1, 0)`, [lockClass + 3]);
      await squatter.query(`select pg_advisory_lock($1, t) from generate_series(0, 63) t`, [lockClass + 1]);
      await fake.listen();
      // A writer checks the bridge's heartbeat (which only the bridge's role can stamp) before it
      // connects, so the squatter must strike within a second of the bridge's death: make that second last.
      await withClient(db.url, (c) => c.query(`select setval('hookbridge.filter_beat_0', (extract(epoch from now()) * 1000 + 60000)::bigint)`));
      expect(await outcome(asWriter(), `insert into items (title) values ('reject me')`)).toBe('HB503');
      // It was asked to prove it holds the key, could not, and never saw the row.
      expect(greetings).toHaveLength(1);
      expect(requests).toEqual([]);
      expect(await rows(`select count(*)::int as n from items where title = 'reject me'`)).toEqual([{ n: 0 }]);
    } finally {
      await fake.close();
      await squatter.end();
    }
    await tb!.restart();
  });
});
