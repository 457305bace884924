/**
 * Issue 12, finding 8: a writer trying to erase or forge the identity action hooks see. Roles are set
 * up the way the README says (a bridge role, a table owner, a writer; the superuser creates dblink);
 * the writer is an ordinary role with INSERT on a published table and USAGE on hookbridge's schema. It
 * may set any custom setting, emit any logical message, use savepoints and SET ROLE: whatever it does,
 * each of its changes reaches the action hooks with its real role, signed, never `null` (Directus'
 * "system") and never `admin`.
 *
 * And the review of that fix (M2, M4, L6): an identity covers its own table's changes only (a lower
 * role's rows are never credited to the superuser who wrote another table first), a new partition
 * gets the trigger within the 2 s sync, nothing else the key signs passes as an identity, and a
 * replay of an event parked without one hands the handler the unknown writer.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replayFailedEvents } from '../../bridge/failed-events.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { ROLE_PASSWORD, testRoles } from '../support/readme-roles.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
// other: a role the writer may SET ROLE to; low: a role a superuser's session SETs ROLE to (PostgREST style) before writing.
const { roles, urlAs, prepareBridge, drop: dropRoles } = testRoles(db, ['bridge', 'owner', 'writer', 'other', 'low']);

/** What a change no signed identity reached carries: no rights, and not `null` (the system, to Directus). */
const UNKNOWN_WRITER = {
  user: null,
  role: null,
  admin: false,
  app: false,
  ip: null,
  userAgent: null,
  claims: null,
  database: { role: null, applicationName: null, clientAddress: null },
  verified: false,
};

interface Seen {
  title: string;
  who: Record<string, unknown> | null;
}
const seen: Seen[] = [];
(globalThis as Record<string, unknown>)['__accountabilitySeen'] = seen;

/** What the action hooks of the other tables saw: `<collection>:<title or key>` → accountability. */
const others: Array<{ what: string; who: Record<string, unknown> | null }> = [];
(globalThis as Record<string, unknown>)['__accountabilityOthers'] = others;
const OTHER_TABLES = ['pub_a', 'pub_b', 'parts', 'stamped', 'stamp_log', 'children'];

const extensions = {
  'hooks/audit/index.js': `
    module.exports = ({ action }) => {
      action('items.items.create', ({ payload }, { accountability }) => {
        globalThis.__accountabilitySeen.push({ title: payload.title, who: accountability });
      });
      for (const collection of ${JSON.stringify(OTHER_TABLES)}) {
        action(collection + '.items.create', ({ payload }, { accountability }) => {
          globalThis.__accountabilityOthers.push({ what: collection + ':' + payload.title, who: accountability });
        });
      }
      action('children.items.delete', ({ keys }, { accountability }) => {
        globalThis.__accountabilityOthers.push({ what: 'children:deleted ' + keys[0], who: accountability });
      });
    };`,
};

/** Runs the steps as the writer, one by one on one connection: SQL, or code given the connection. */
const asWriter = (steps: Array<string | ((c: pg.Client) => Promise<unknown>)>) =>
  withClient(urlAs(roles.writer), async (c) => {
    for (const step of steps) await (typeof step === 'string' ? c.query(step) : step(c));
  });

/** What the action hooks saw for these titles, once all of them have arrived. */
async function seenFor(titles: string[]): Promise<Map<string, Seen['who']>> {
  await waitFor(() => titles.every((t) => seen.some((s) => s.title === t)), {
    message: () => `actions for ${titles.join(', ')}; seen: ${JSON.stringify(seen.map((s) => s.title))}`,
  });
  return new Map(seen.filter((s) => titles.includes(s.title)).map((s) => [s.title, s.who]));
}

/** What the other tables' action hooks saw for these, once all of them have arrived. */
async function othersFor(whats: string[]): Promise<Map<string, Seen['who']>> {
  await waitFor(() => whats.every((w) => others.some((o) => o.what === w)), {
    timeoutMs: 15_000,
    message: () => `actions for ${whats.join(', ')}; seen: ${JSON.stringify(others.map((o) => o.what))}`,
  });
  return new Map(others.filter((o) => whats.includes(o.what)).map((o) => [o.what, o.who]));
}

const summary = (w: Seen['who']) => (w === null ? null : { role: w['role'], admin: w['admin'], verified: w['verified'] });
const UNKNOWN = { role: null, admin: false, verified: false };

/** Each title's action saw this role, signed, not admin (all titles at once, so a failure shows them all). */
function expectRoles(who: Map<string, Seen['who']>, expected: Record<string, string>): void {
  expect(Object.fromEntries([...who].map(([title, w]) => [title, summary(w)]))).toEqual(
    Object.fromEntries(Object.entries(expected).map(([title, role]) => [title, { role, admin: false, verified: true }])),
  );
}
const allWriter = (titles: string[]) => Object.fromEntries(titles.map((t) => [t, roles.writer]));

/** What the writer emits to impersonate: a superuser, unsigned or with a made-up signature. */
const forgedDoc = `{"role" : "postgres", "admin" : true, "application_name" : null, "client_addr" : null, "user" : "mallory", "claims" : null}`;
const forgeries = [pg.escapeLiteral(`${forgedDoc}\n${'0'.repeat(64)}`), pg.escapeLiteral(forgedDoc), `''`];
const emit = (content: string, transactional: boolean) => `select pg_logical_emit_message(${transactional}, 'hookbridge.accountability', ${content})`;

/** The marker hookbridge's trigger compared before migration 000005 (sql/000001.sql), computed by the writer. */
const OLD_MARKER = `pg_current_xact_id()::text || e'\\n' || coalesce(nullif(current_setting('role'), 'none'), session_user::text) || e'\\n'
  || coalesce(current_setting('hookbridge.user', true), '') || e'\\n' || coalesce(current_setting('request.jwt.claims', true), '') || e'\\n'
  || current_setting('application_name') || e'\\n' || coalesce(current_setting('hookbridge.bypass', true), '')`;

let tb: TestBridge | undefined;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create role ${roles.bridge} login replication password '${ROLE_PASSWORD}'`);
    await c.query(`create role ${roles.owner} nologin`);
    await c.query(`create role ${roles.writer} login password '${ROLE_PASSWORD}'`);
    await c.query(`create role ${roles.other} nologin`);
    await c.query(`create role ${roles.low} nologin`);
    await c.query(`grant ${roles.other} to ${roles.writer}`);
    await prepareBridge(c, db.name, roles.bridge);
    await c.query(`grant ${roles.owner} to ${roles.bridge}`);
    await c.query(`create table items (id serial primary key, title text not null)`);
    await c.query(`alter table items owner to ${roles.owner}`);
    for (const role of [roles.writer, roles.other]) {
      await c.query(`grant select, insert on items to ${role}`);
      await c.query(`grant usage on sequence items_id_seq to ${role}`);
    }
    // M2: tables written one after another in a transaction, a partitioned table, a trigger writing
    // another table (with its owner's rights), a cascade.
    await c.query(`create table pub_a (id serial primary key, title text not null)`);
    await c.query(`create table pub_b (id serial primary key, title text not null)`);
    await c.query(`create table parts (id int primary key, title text not null) partition by range (id)`);
    await c.query(`create table parts_1 partition of parts for values from (0) to (100)`);
    await c.query(`create table stamped (id serial primary key, title text not null)`);
    await c.query(`create table stamp_log (id serial primary key, title text not null)`);
    await c.query(`create table parents (id int primary key)`);
    await c.query(`create table children (id int primary key, parent_id int not null references parents on delete cascade, title text not null)`);
    // SECURITY DEFINER, owned by the superuser: the log row is still the writer's.
    await c.query(`create function stamp() returns trigger language plpgsql security definer set search_path = public as $$
                   begin insert into stamp_log (title) values ('log:' || new.title); return new; end $$`);
    await c.query(`create trigger stamp after insert on stamped for each row execute function stamp()`);
    for (const table of ['pub_a', 'pub_b', 'parts', 'parts_1', 'stamped', 'stamp_log', 'parents', 'children']) {
      await c.query(`alter table ${table} owner to ${roles.owner}`);
      await c.query(`grant select, insert, delete on ${table} to ${roles.writer}, ${roles.low}`);
    }
    await c.query(`grant usage on all sequences in schema public to ${roles.writer}, ${roles.low}`);
    await c.query(`insert into parents values (1), (2)`);
    await c.query(`insert into children values (1, 1, 'child-1'), (2, 1, 'child-2'), (3, 2, 'child-3')`);
  });
  tb = await startTestBridge(urlAs(roles.bridge), extensions);
  const published = ['items', 'parts_1', ...OTHER_TABLES];
  await waitFor(
    async () =>
      (
        await withClient(db.url, (c) =>
          c.query(`select 1 from pg_trigger where tgname = 'hookbridge_accountability' and tgrelid::regclass::text = any ($1)`, [published]),
        )
      ).rowCount === published.length,
    { message: 'the bridge never installed its accountability triggers' },
  );
});

afterAll(async () => {
  await tb?.dispose();
  await dropRoles();
});

describe('a partition created while the bridge runs', () => {
  // First in this file: the bridge's full sync, which used to be the only one to see new partitions,
  // ran at its start and next runs 30 s later.
  it('gets the accountability trigger within the 2 s sync, so its direct writes are signed', async () => {
    await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query(`create table parts_2 partition of parts for values from (100) to (200)`);
      await c.query(`alter table parts_2 owner to ${roles.owner}`);
      await c.query(`grant select, insert on parts_2 to ${roles.writer}`);
      await c.query('commit');
    });
    await waitFor(
      async () =>
        (await withClient(db.url, (c) => c.query(`select 1 from pg_trigger where tgname = 'hookbridge_accountability' and tgrelid = 'parts_2'::regclass`)))
          .rowCount === 1,
      { timeoutMs: 6_000, message: 'the new partition did not get the accountability trigger within 6 s' },
    );
    await asWriter([`insert into parts_2 (id, title) values (150, 'direct')`, `insert into parts (id, title) values (151, 'through-root')`]);
    const who = await othersFor(['parts:direct', 'parts:through-root']);
    expect(Object.fromEntries([...who].map(([what, w]) => [what, summary(w)]))).toEqual({
      'parts:direct': { role: roles.writer, admin: false, verified: true },
      'parts:through-root': { role: roles.writer, admin: false, verified: true },
    });
  });
});

describe('accountability a writer cannot erase or forge', () => {
  it('is emitted however the writer sets hookbridge.accountability_emitted (or hookbridge.bypass)', async () => {
    await asWriter([
      // The value that made the old trigger skip, and anything else.
      'begin',
      `select set_config('hookbridge.accountability_emitted', ${OLD_MARKER}, true)`,
      `insert into items (title) values ('marker-1')`,
      `insert into items (title) values ('marker-2')`,
      'commit',
      // And the bridge's own opt-out of action hooks, which only its own role may use.
      `set hookbridge.accountability_emitted = 'anything'`,
      `set hookbridge.bypass = 'on'`,
      `insert into items (title) values ('marker-3')`,
      `reset hookbridge.bypass`,
      // Set by the writer's own statement, between two of its writes.
      'begin',
      `insert into items (title) values ('marker-4')`,
      `select set_config('hookbridge.accountability_emitted', ${OLD_MARKER}, true)`,
      `set local role ${roles.other}`,
      `select set_config('hookbridge.accountability_emitted', ${OLD_MARKER}, true)`,
      `insert into items (title) values ('marker-5')`,
      'commit',
    ]);
    const titles = ['marker-1', 'marker-2', 'marker-3', 'marker-4', 'marker-5'];
    expectRoles(await seenFor(titles), { ...allWriter(titles), 'marker-5': roles.other });
  });

  it('survives unsigned and forged messages, transactional or not, before, between and after the writes', async () => {
    const all = (transactional: boolean[]) => forgeries.flatMap((f) => transactional.map((t) => emit(f, t)));
    await asWriter([
      'begin',
      ...all([true, false]),
      `insert into items (title) values ('forged-1')`,
      ...all([true, false]),
      `insert into items (title) values ('forged-2')`,
      `insert into items (title) values ('forged-3'), ('forged-4')`,
      ...all([false, true]),
      'commit',
      // Autocommit: the forgery is a transaction of its own, or follows the write in one statement.
      ...all([true, false]),
      `insert into items (title) values ('forged-5')`,
      `with w as (insert into items (title) values ('forged-6') returning id)
       select pg_logical_emit_message(true, 'hookbridge.accountability', ${forgeries[0]}) from w`,
    ]);
    const titles = ['forged-1', 'forged-2', 'forged-3', 'forged-4', 'forged-5', 'forged-6'];
    expectRoles(await seenFor(titles), allWriter(titles));
  });

  it('is not erased by rolled-back savepoints, nor by a marker copied out of one', async () => {
    let stolen: string | null = null;
    await asWriter([
      'begin',
      // A write whose identity message goes with the savepoint; the writer keeps the marker it saw
      // (outside the database: a rollback undoes settings too) and sets it again.
      'savepoint s1',
      `insert into items (title) values ('savepoint-lost-1')`,
      async (c) => {
        stolen = (await c.query<{ m: string | null }>(`select current_setting('hookbridge.accountability_emitted', true) as m`)).rows[0]?.m ?? null;
      },
      'rollback to savepoint s1',
      (c) => c.query(`select set_config('hookbridge.accountability_emitted', $1, true)`, [stolen ?? '']),
      `insert into items (title) values ('savepoint-1')`,
      // A forgery in a subtransaction that commits.
      'savepoint s2',
      emit(forgeries[0] as string, true),
      'release savepoint s2',
      `insert into items (title) values ('savepoint-2')`,
      // Another role's write rolled back, then the writer's own.
      'savepoint s3',
      `set local role ${roles.other}`,
      `insert into items (title) values ('savepoint-lost-2')`,
      'rollback to savepoint s3',
      `insert into items (title) values ('savepoint-3')`,
      // A forgery followed by a write, both rolled back, and a plpgsql exception block doing the same.
      'savepoint s4',
      emit(forgeries[1] as string, true),
      `insert into items (title) values ('savepoint-lost-3')`,
      'rollback to savepoint s4',
      `do $$ begin
         insert into items (title) values ('savepoint-lost-4');
         perform pg_logical_emit_message(true, 'hookbridge.accountability', 'forged');
         raise exception 'undo';
       exception when others then
         perform pg_logical_emit_message(true, 'hookbridge.accountability', 'forged');
       end $$`,
      `insert into items (title) values ('savepoint-4')`,
      'commit',
    ]);
    const titles = ['savepoint-1', 'savepoint-2', 'savepoint-3', 'savepoint-4'];
    expectRoles(await seenFor(titles), allWriter(titles));
    expect(seen.filter((s) => s.title.startsWith('savepoint-lost'))).toEqual([]);
  });

  it("does not believe a genuinely signed identity from another transaction (a superuser's, replayed)", async () => {
    // The writer cannot read the key nor the WAL; suppose a signed message leaked all the same.
    const key = (await withClient(db.url, (c) => c.query<{ key: Buffer }>('select key from hookbridge.secret'))).rows[0]?.key as Buffer;
    const otherXid = (await withClient(db.url, (c) => c.query<{ xid: string }>('select pg_current_xact_id()::text as xid'))).rows[0]?.xid as string;
    const doc = `{"xid" : "${otherXid}", "role" : "postgres", "admin" : true, "application_name" : null, "client_addr" : null, "user" : null, "claims" : null, "bypass" : false}`;
    const signed = `${doc}\n${createHash('sha256').update(key).update(doc).digest('hex')}`;
    await asWriter([
      'begin',
      `insert into items (title) values ('replayed-1')`,
      emit(pg.escapeLiteral(signed), true),
      `insert into items (title) values ('replayed-2')`,
      'commit',
    ]);
    const titles = ['replayed-1', 'replayed-2'];
    expectRoles(await seenFor(titles), allWriter(titles));
  });

  it('marks a change no signed identity reached as unverified: never null, never admin', async () => {
    // No writer can keep the trigger from firing; a superuser can, with session_replication_role.
    await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query('set local session_replication_role = replica');
      await c.query(`insert into items (title) values ('unsigned-1')`);
      await c.query(emit(pg.escapeLiteral(`${forgedDoc}\n${'0'.repeat(64)}`), true));
      await c.query(`insert into items (title) values ('unsigned-2')`);
      await c.query('commit');
    });
    const who = await seenFor(['unsigned-1', 'unsigned-2']);
    for (const [, w] of who) {
      expect(w).toEqual(UNKNOWN_WRITER);
    }
  });
});

describe("an identity covers its own table's changes only (review M2)", () => {
  it("credits a lower role's rows written without their table's trigger to nobody, not to the superuser who wrote before", async () => {
    // A superuser's session writes one table, then SET ROLE (PostgREST style) and another table whose
    // statement trigger does not fire (its owner disabled it; here inside the transaction).
    await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query(`insert into pub_a (title) values ('m2-super')`);
      await c.query(`alter table pub_b disable trigger hookbridge_accountability`);
      await c.query(`set local role ${roles.low}`);
      await c.query(`insert into pub_b (title) values ('m2-low')`);
      await c.query(`insert into pub_a (title) values ('m2-low-a')`);
      await c.query('reset role');
      await c.query(`alter table pub_b enable trigger hookbridge_accountability`);
      await c.query('commit');
    });
    const who = await othersFor(['pub_a:m2-super', 'pub_b:m2-low', 'pub_a:m2-low-a']);
    expect(Object.fromEntries([...who].map(([what, w]) => [what, summary(w)]))).toEqual({
      'pub_a:m2-super': { role: 'postgres', admin: true, verified: true },
      'pub_b:m2-low': UNKNOWN,
      'pub_a:m2-low-a': { role: roles.low, admin: false, verified: true },
    });
  });

  it("gives the writer's identity to every table one statement writes: a writable CTE, a trigger's writes, a cascade", async () => {
    await asWriter([
      `with a as (insert into pub_a (title) values ('cte-a') returning id) insert into pub_b (title) select 'cte-b' from a`,
      // stamp() is SECURITY DEFINER, owned by the superuser: the row it writes is still the writer's.
      `insert into stamped (title) values ('stamped')`,
      // The foreign key's ON DELETE CASCADE deletes the children as the table's owner, for the writer.
      `delete from parents where id = 1`,
    ]);
    const whats = ['pub_a:cte-a', 'pub_b:cte-b', 'stamped:stamped', 'stamp_log:log:stamped', 'children:deleted 1', 'children:deleted 2'];
    const who = await othersFor(whats);
    expect(Object.fromEntries([...who].map(([what, w]) => [what, summary(w)]))).toEqual(
      Object.fromEntries(whats.map((what) => [what, { role: roles.writer, admin: false, verified: true }])),
    );
  });
});

describe('nothing else the key signs passes as an identity (review M4)', () => {
  /** `<json>\n<hex sha256(key || json)>`, signed by the database with its key: what is in the WAL. */
  const signedBare = (doc: string) =>
    withClient(db.url, async (c) => {
      const { rows } = await c.query<{ content: string }>(
        `select convert_from(convert_to($1, 'UTF8') || '\x0a'::bytea || convert_to(encode(sha256(s.key || convert_to($1, 'UTF8')), 'hex'), 'UTF8'), 'UTF8') as content
           from hookbridge.secret s`,
        [doc],
      );
      return rows[0]?.content as string;
    });
  /** Emitted by the writer inside its own statement, after the statement's trigger and before its row. */
  const insertAfter = (content: string, title: string) =>
    `with m as (select pg_logical_emit_message(true, 'hookbridge.accountability', ${pg.escapeLiteral(content)}) as lsn)
     insert into items (title) select ${pg.escapeLiteral(title)} from m`;

  it("does not take an unfiltered-row notice (filter_entry's document) for the writer", async () => {
    // Exactly what filter_entry() (sql/000006.sql) emits as hookbridge.unfiltered in open mode; someone
    // who reads WAL bytes has copies.
    const notice = await signedBare(
      (
        await withClient(db.url, (c) =>
          c.query<{ doc: string }>(`select json_build_object('schema', 'public', 'table', 'items', 'op', 'INSERT', 'reason', 'unreachable')::text as doc`),
        )
      ).rows[0]?.doc as string,
    );
    await asWriter([insertAfter(notice, 'm4-unfiltered')]);
    expectRoles(await seenFor(['m4-unfiltered']), allWriter(['m4-unfiltered']));
  });

  it("does not take a document signed before migration 000005 (no xid) — not even the bridge's own bypass", async () => {
    // What the bridge's { emitEvents: false } writes emitted then: action hooks skip changes it covers.
    const bypass = await signedBare(
      `{"role" : "${roles.bridge}", "admin" : false, "application_name" : null, "client_addr" : null, "user" : null, "claims" : null, "bypass" : true}`,
    );
    await asWriter([insertAfter(bypass, 'm4-bypass')]);
    expectRoles(await seenFor(['m4-bypass']), allWriter(['m4-bypass']));
  });
});

describe('documents signed the 000005 way (review M4: a bridge upgraded with a backlog)', () => {
  /**
   * A transaction whose only identity is a document signed as migration 000005's trigger signed it
   * (bare key, naming this transaction): a superuser with the trigger off, emitting it (someone who
   * reads WAL bytes could have the key's signatures; here the test reads the key).
   */
  const writeSignedTheOldWay = (title: string) =>
    withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query('set local session_replication_role = replica');
      await c.query(
        `select pg_logical_emit_message(true, 'hookbridge.accountability',
                  convert_to(d.doc, 'UTF8') || '\x0a'::bytea || convert_to(encode(sha256(s.key || convert_to(d.doc, 'UTF8')), 'hex'), 'UTF8'))
           from (select json_build_object('xid', pg_current_xact_id()::text, 'role', 'hb_legacy', 'admin', false, 'application_name', null,
                                          'client_addr', null, 'user', null, 'claims', null, 'bypass', false)::text as doc) d
          cross join hookbridge.secret s`,
      );
      await c.query(`insert into items (title) values ($1)`, [title]);
      await c.query('commit');
    });
  const cutoff = () =>
    withClient(db.url, async (c) => (await c.query<{ x: string }>(`select before_xid::text as x from hookbridge.accountability_legacy`)).rows[0]?.x);
  const setCutoff = (xid: string) => withClient(db.url, (c) => c.query(`update hookbridge.accountability_legacy set before_xid = $1::xid8`, [xid]));

  it('are refused in a transaction from after the upgrade, and believed in one from before it, still in the slot', async () => {
    await writeSignedTheOldWay('legacy-after');
    expect(summary((await seenFor(['legacy-after'])).get('legacy-after') ?? null)).toEqual(UNKNOWN);

    // As if the next transaction had run before migration 000010: the stored xid above it, a bridge
    // that was stopped, starting on the backlog.
    const stored = (await cutoff()) as string;
    const bridge = tb as TestBridge;
    await bridge.stop();
    try {
      const next = await withClient(
        db.url,
        async (c) => (await c.query<{ x: string }>(`select (pg_snapshot_xmax(pg_current_snapshot())::text::numeric + 1000)::text as x`)).rows[0]?.x as string,
      );
      await setCutoff(next);
      await writeSignedTheOldWay('legacy-before');
      await bridge.restart();
      expect(summary((await seenFor(['legacy-before'])).get('legacy-before') ?? null)).toEqual({ role: 'hb_legacy', admin: false, verified: true });
    } finally {
      await setCutoff(stored);
    }
  });
});

describe('a replay of an event parked before every change had an identity (review L6)', () => {
  it('hands the handler the unknown writer, not null (the system)', async () => {
    await withClient(db.url, (c) =>
      c.query(
        `insert into hookbridge.failed_events (event_id, extension, event, collection, action, commit_lsn, xid, meta, accountability, error, attempts)
         values ('0/1:0', 'audit', 'items.items.create', 'items', 'create', '0/1', 1, $1, null, '{"message":"down"}', 5)`,
        [JSON.stringify({ collection: 'items', key: 1, payload: { id: 1, title: 'parked-before' } })],
      ),
    );
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      expect(await replayFailedEvents(pool, 'hookbridge', (tb as TestBridge).bridge.runtime)).toEqual([expect.objectContaining({ ok: true })]);
    } finally {
      await pool.end();
    }
    const who = (await seenFor(['parked-before'])).get('parked-before');
    expect(who).toEqual(UNKNOWN_WRITER);
  });
});
