/**
 * Issue 12, finding 8: a writer trying to erase or forge the identity action hooks see. Roles are set
 * up the way the README says (a bridge role, a table owner, a writer; the superuser creates dblink);
 * the writer is an ordinary role with INSERT on a published table and USAGE on hookbridge's schema. It
 * may set any custom setting, emit any logical message, use savepoints and SET ROLE: whatever it does,
 * each of its changes reaches the action hooks with its real role, signed, never `null` (Directus'
 * "system") and never `admin`.
 */
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const suffix = randomBytes(3).toString('hex');
const roles = {
  bridge: `hb_bridge_${suffix}`,
  owner: `hb_owner_${suffix}`,
  writer: `hb_writer_${suffix}`,
  /** A role the writer may SET ROLE to. */
  other: `hb_other_${suffix}`,
};
const password = 'secret-pw';

interface Seen {
  title: string;
  who: Record<string, unknown> | null;
}
const seen: Seen[] = [];
(globalThis as Record<string, unknown>)['__accountabilitySeen'] = seen;

const extensions = {
  'hooks/audit/index.js': `
    module.exports = ({ action }) => {
      action('items.items.create', ({ payload }, { accountability }) => {
        globalThis.__accountabilitySeen.push({ title: payload.title, who: accountability });
      });
    };`,
};

function urlAs(role: string): string {
  const url = new URL(db.url);
  url.username = role;
  url.password = password;
  return url.toString();
}

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

/** Each title's action saw this role, signed, not admin (all titles at once, so a failure shows them all). */
function expectRoles(who: Map<string, Seen['who']>, expected: Record<string, string>): void {
  const summary = (w: Seen['who']) => (w === null ? null : { role: w['role'], admin: w['admin'], verified: w['verified'] });
  expect(Object.fromEntries([...who].map(([title, w]) => [title, summary(w)]))).toEqual(
    Object.fromEntries(Object.entries(expected).map(([title, role]) => [title, { role, admin: false, verified: true }])),
  );
}
const allWriter = (titles: string[]) => Object.fromEntries(titles.map((t) => [t, roles.writer]));

/** What the writer emits to impersonate: a superuser, unsigned or with a made-up signature. */
const forgedDoc = `{"role" : "postgres", "admin" : true, "application_name" : null, "client_addr" : null, "user" : "mallory", "claims" : null}`;
const forgeries = [
  pg.escapeLiteral(`${forgedDoc}\n${'0'.repeat(64)}`),
  pg.escapeLiteral(forgedDoc),
  `''`,
];
const emit = (content: string, transactional: boolean) =>
  `select pg_logical_emit_message(${transactional}, 'hookbridge.accountability', ${content})`;

/** The marker hookbridge's trigger compared before migration 000005 (sql/000001.sql), computed by the writer. */
const OLD_MARKER = `pg_current_xact_id()::text || e'\\n' || coalesce(nullif(current_setting('role'), 'none'), session_user::text) || e'\\n'
  || coalesce(current_setting('hookbridge.user', true), '') || e'\\n' || coalesce(current_setting('request.jwt.claims', true), '') || e'\\n'
  || current_setting('application_name') || e'\\n' || coalesce(current_setting('hookbridge.bypass', true), '')`;

let tb: TestBridge | undefined;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create role ${roles.bridge} login replication password '${password}'`);
    await c.query(`create role ${roles.owner} nologin`);
    await c.query(`create role ${roles.writer} login password '${password}'`);
    await c.query(`create role ${roles.other} nologin`);
    await c.query(`grant ${roles.other} to ${roles.writer}`);
    await c.query(`grant create on database ${c.escapeIdentifier(db.name)} to ${roles.bridge}`);
    await c.query(`create schema hookbridge authorization ${roles.bridge}`);
    await c.query(`create extension dblink schema hookbridge`);
    await c.query(`revoke execute on all functions in schema hookbridge from public`);
    await c.query(`grant execute on all functions in schema hookbridge to ${roles.bridge}`);
    await c.query(`grant ${roles.owner} to ${roles.bridge}`);
    await c.query(`create table items (id serial primary key, title text not null)`);
    await c.query(`alter table items owner to ${roles.owner}`);
    for (const role of [roles.writer, roles.other]) {
      await c.query(`grant select, insert on items to ${role}`);
      await c.query(`grant usage on sequence items_id_seq to ${role}`);
    }
  });
  tb = await startTestBridge(urlAs(roles.bridge), extensions);
  await waitFor(async () => (await withClient(db.url, (c) => c.query(`select 1 from pg_trigger where tgname = 'hookbridge_accountability'`))).rowCount === 1, {
    message: 'the bridge never installed its accountability trigger',
  });
});

afterAll(async () => {
  await tb?.dispose();
  await withClient(db.url, async (c) => {
    for (const role of Object.values(roles)) {
      await c.query(`reassign owned by ${role} to postgres`).catch(() => undefined);
      await c.query(`drop owned by ${role}`).catch(() => undefined);
      await c.query(`drop role if exists ${role}`);
    }
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
      expect(w).toEqual({
        user: null,
        role: null,
        admin: false,
        app: false,
        ip: null,
        userAgent: null,
        claims: null,
        database: { role: null, applicationName: null, clientAddress: null },
        verified: false,
      });
    }
  });
});
