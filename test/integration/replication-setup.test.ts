import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listDefinitions, listMigrations, migrate, migrationsDirectory } from '../../bridge/migrate.js';
import { parseAccountabilityMessage, readAccountabilitySecret } from '../../bridge/replication/accountability.js';
import { listUserTables, type UserTable } from '../../bridge/catalog.js';
import { syncPublications } from '../../bridge/replication/publication.js';
import { uninstall } from '../../bridge/uninstall.js';
import { dropSlot, ensureSlot, preflight, readReplicationFacts } from '../../bridge/replication/setup.js';
import { serverMajor, useTestDatabase } from '../support/database.js';
import { tempDir } from '../support/file-tree.js';
import { findPsql, waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();

const schema = 'hookbridge';
const suffix = randomBytes(4).toString('hex');
// Slots and roles are cluster-wide and other test files share the server: names must be our own.
const slotName = `hb_setup_${suffix}`;
const rawSlot = `hb_raw_${suffix}`;
const publication = `hb_pub_${suffix}`;
const writer = `hb_writer_${suffix}`;
const webRole = `hb_web_${suffix}`;
const password = randomBytes(12).toString('hex');
const APP = 'replication-setup-test';

let pool: pg.Pool;

beforeAll(() => {
  pool = new pg.Pool({ connectionString: db.url, max: 6, application_name: APP });
});

afterAll(async () => {
  for (const slot of [slotName, rawSlot, `${slotName}_other`]) await dropSlot(pool, slot).catch(() => undefined);
  await pool.end();
  await withClient(db.url, async (c) => {
    for (const role of [writer, webRole]) {
      if ((await c.query('select 1 from pg_roles where rolname = $1', [role])).rowCount) {
        await c.query(`drop owned by ${c.escapeIdentifier(role)}`);
        await c.query(`drop role ${c.escapeIdentifier(role)}`);
      }
    }
  });
});

function urlAs(user: string): string {
  const url = new URL(db.url);
  url.username = user;
  url.password = password;
  return url.toString();
}

async function asWriter<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  return withClient(urlAs(writer), fn);
}

describe('migrate', () => {
  it('applies each migration once when two bridges migrate at the same time', async () => {
    const all = await listMigrations();
    const definitions = await listDefinitions();
    expect(all.length).toBeGreaterThan(0);
    expect(definitions.map((d) => d.name)).toContain('filter_call.sql');
    const results = await Promise.all([migrate(pool, { schema }), migrate(pool, { schema })]);
    expect(results.flatMap((r) => r.applied).sort()).toEqual(
      [...all.map((m) => m.name), ...definitions.map((d) => `definitions/${d.name}@${d.revision}`)].sort(),
    );
    const { rows } = await pool.query(`select id, name from hookbridge.migrations order by id`);
    expect(rows).toEqual(all.map((m) => ({ id: m.id, name: m.name })));
    expect(await migrate(pool, { schema })).toEqual({ applied: [] });
  });

  it('records a checksum of each file, refuses a file changed after it was applied, and records one applied before checksums', async () => {
    const dir = await tempDir('hookbridge-sql-');
    try {
      await cp(migrationsDirectory(), dir.path, { recursive: true });
      const target = { schema: 'hb_checksums', directory: dir.path };
      await migrate(pool, target);
      const { rows } = await pool.query(`select id, checksum from hb_checksums.migrations order by id`);
      expect(rows.every((r) => /^[0-9a-f]{64}$/.test(r.checksum))).toBe(true);
      // As installed by a hookbridge from before checksums: recorded at the next start.
      await pool.query(`update hb_checksums.migrations set checksum = null where id = 2`);
      await migrate(pool, target);
      expect((await pool.query(`select checksum from hb_checksums.migrations where id = 2`)).rows[0].checksum).toBe(rows[1].checksum);
      // CRLF line endings are the same file.
      const second = join(dir.path, '000002.sql');
      await writeFile(second, (await readFile(second, 'utf8')).replace(/\n/g, '\r\n'));
      await expect(migrate(pool, target)).resolves.toEqual({ applied: [] });
      await appendFile(second, '\n-- an edit after release\n');
      const error = await migrate(pool, target).catch((e: unknown) => e);
      expect(error).toMatchObject({
        code: 'E_MIGRATION_CHANGED',
        message: expect.stringMatching(/^Migration 000002\.sql was changed after it was applied to schema "hb_checksums"/),
      });
    } finally {
      await pool.query('drop schema if exists hb_checksums cascade');
      await dir.remove();
    }
  });

  it('applies a definition whose revision is newer, keeps a newer one, and refuses one edited without a new revision', async () => {
    const dir = await tempDir('hookbridge-sql-');
    try {
      await cp(migrationsDirectory(), dir.path, { recursive: true });
      const target = { schema: 'hb_definitions', directory: dir.path };
      await migrate(pool, target);
      const file = join(dir.path, 'definitions', 'filter_call.sql');
      const released = await readFile(file, 'utf8');
      const revision = Number(/^-- revision: (\d+)/.exec(released)?.[1]);
      const recorded = async () => (await pool.query(`select revision from hb_definitions.definitions where name = 'filter_call.sql'`)).rows[0]?.revision;
      const probe = async () => (await pool.query(`select hb_definitions.filter_call('{}', 64) as v`)).rows[0]?.v as string;
      expect(await recorded()).toBe(revision);
      // The next revision (a function that answers differently, to see which text runs).
      const next = released
        .replace(/^-- revision: \d+/, `-- revision: ${revision + 1}`)
        .replace(/\nbegin\n/, `\nbegin\n  if p_slot = 64 then return 'Xnext'; end if;\n`);
      await writeFile(file, next);
      expect(await migrate(pool, target)).toEqual({ applied: [`definitions/filter_call.sql@${revision + 1}`] });
      expect(await probe()).toBe('Xnext');
      // An older bridge starting beside it keeps the newer revision.
      await writeFile(file, released);
      expect(await migrate(pool, target)).toEqual({ applied: [] });
      expect(await probe()).toBe('Xnext');
      // The same revision, edited: refused, and nothing changes.
      await writeFile(file, next.replace("'Xnext'", "'Xedited'"));
      const error = await migrate(pool, target).catch((e: unknown) => e);
      expect(error).toMatchObject({
        code: 'E_MIGRATION_CHANGED',
        message: expect.stringMatching(/^sql\/definitions\/filter_call\.sql was changed without raising its revision/),
      });
      expect(await probe()).toBe('Xnext');
    } finally {
      await pool.query('drop schema if exists hb_definitions cascade');
      await dir.remove();
    }
  });

  it('leaves a function that moved to definitions/ to its definition: no later numbered migration creates or drops it', async () => {
    // The last numbered migration before each definition took over (a new definition adds its line here).
    const movedAfter: Record<string, number> = { 'filter_call.sql': 13 };
    const definitions = await listDefinitions();
    expect(definitions.map((d) => d.name).sort()).toEqual(Object.keys(movedAfter).sort());
    for (const migration of await listMigrations()) {
      const text = await readFile(migration.path, 'utf8');
      for (const definition of definitions) {
        if (migration.id <= (movedAfter[definition.name] ?? 0)) continue;
        const name = definition.name.replace(/\.sql$/, '');
        // Numbered files run before the definitions: one that changed the function would make upgraded
        // databases and fresh ones differ.
        expect(text, `${migration.name} mentions ${name}, which lives in sql/definitions/`).not.toMatch(
          new RegExp(`function\\s+(if\\s+exists\\s+)?:"schema"\\.${name}\\b`, 'i'),
        );
      }
    }
  });

  it('refuses a schema name it could not quote safely everywhere', async () => {
    await expect(migrate(pool, { schema: 'Bad"Name' })).rejects.toMatchObject({ code: 'E_SCHEMA_NAME' });
  });

  it('leaves the files usable with psql -v schema=...', async (ctx) => {
    const psql = findPsql();
    if (!psql) return ctx.skip();
    const file = `${migrationsDirectory()}/000001.sql`;
    const args = [db.url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-v', 'schema=hb_psql', '-1', '-f', file];
    await promisify(execFile)(psql, args); // twice: idempotent
    await promisify(execFile)(psql, args);
    for (const definition of await listDefinitions()) {
      await promisify(execFile)(psql, [...args.slice(0, -1), `${migrationsDirectory()}/definitions/${definition.name}`]);
    }
    const { rows } = await pool.query(`select count(*)::int as n from hb_psql.secret`);
    expect(rows[0].n).toBe(1);
    await pool.query('drop schema hb_psql cascade');
  });

  it('parks a failed event once per (event, extension, event name), counting attempts', async () => {
    const park = (eventId: string, extension: string, attempts: number) =>
      pool.query(
        `insert into hookbridge.failed_events (event_id, extension, event, collection, action, commit_lsn, xid, meta, error, attempts)
         values ($1, $2, 'items.create', 'articles', 'create', '0/16B3748', 42, '{"key":1}', '{"message":"boom"}', $3)
         on conflict (event_id, extension, event) do update set attempts = failed_events.attempts + excluded.attempts`,
        [eventId, extension, attempts],
      );
    await park('0/16B3748:1', 'audit', 5);
    await park('0/16B3748:1', 'audit', 5);
    await park('0/16B3748:1', 'mailer', 5);
    const { rows } = await pool.query(`select extension, attempts from hookbridge.failed_events order by extension`);
    expect(rows).toEqual([
      { extension: 'audit', attempts: 10 },
      { extension: 'mailer', attempts: 5 },
    ]);
  });
});

describe('preflight and the slot', () => {
  beforeAll(async () => {
    await pool.query(`create role ${pg.escapeIdentifier(writer)} login password ${pg.escapeLiteral(password)}`);
    await pool.query(`create role ${pg.escapeIdentifier(webRole)} nologin`);
    await pool.query(`grant ${pg.escapeIdentifier(webRole)} to ${pg.escapeIdentifier(writer)}`);
  });

  it('passes on the test server and refuses a role without REPLICATION', async () => {
    await preflight(pool, { slotName });
    const error = await asWriter((c) => preflight(c, { slotName })).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'ReplicationSetupError', code: 'E_REPLICATION_PRIVILEGE' });
    expect((error as Error).message).toContain(`ALTER ROLE ${writer} REPLICATION`.replace(writer, `"${writer}"`));
  });

  it('creates the slot once, then reuses it; dropSlot drops it', async () => {
    const first = await ensureSlot(pool, slotName);
    expect(first.created).toBe(true);
    expect(first.confirmedFlushLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const again = await ensureSlot(pool, slotName);
    expect(again).toEqual({ created: false, confirmedFlushLsn: first.confirmedFlushLsn });
    await dropSlot(pool, slotName);
    await dropSlot(pool, slotName); // missing: no error
    expect((await pool.query('select 1 from pg_replication_slots where slot_name = $1', [slotName])).rowCount).toBe(0);
  });

  it('makes a failover slot on PostgreSQL 17+ (created so, or an existing one altered), and refuses to before 17', async () => {
    if (serverMajor() < 17) {
      await expect(preflight(pool, { slotName, slotFailover: true })).rejects.toMatchObject({ code: 'E_SLOT_FAILOVER' });
      return;
    }
    await preflight(pool, { slotName, slotFailover: true });
    const failoverOf = async () =>
      (await pool.query<{ failover: boolean }>('select failover from pg_replication_slots where slot_name = $1', [slotName])).rows[0]?.failover;
    const failover = { connection: { connectionString: db.url }, alter: true };
    expect((await ensureSlot(pool, slotName, failover)).created).toBe(true);
    expect(await failoverOf()).toBe(true);
    await dropSlot(pool, slotName);
    // A slot made before HOOKBRIDGE_SLOT_FAILOVER was set keeps its position and becomes one.
    const plain = await ensureSlot(pool, slotName);
    expect(await failoverOf()).toBe(false);
    expect(await ensureSlot(pool, slotName, failover)).toEqual({ created: false, confirmedFlushLsn: plain.confirmedFlushLsn });
    expect(await failoverOf()).toBe(true);
    await dropSlot(pool, slotName);
  });

  it('tolerates a concurrent creator', async () => {
    const results = await Promise.all([ensureSlot(pool, slotName), ensureSlot(pool, slotName), ensureSlot(pool, slotName)]);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    await dropSlot(pool, slotName);
  });

  it('refuses a slot of the same name that is not ours to use', async () => {
    await pool.query(`select pg_create_logical_replication_slot($1, 'test_decoding')`, [rawSlot]);
    await expect(ensureSlot(pool, rawSlot)).rejects.toMatchObject({ code: 'E_SLOT_PLUGIN' });
    await dropSlot(pool, rawSlot);
    await pool.query(`select pg_create_physical_replication_slot($1)`, [rawSlot]);
    await expect(ensureSlot(pool, rawSlot)).rejects.toMatchObject({ code: 'E_SLOT_PHYSICAL' });
    await pool.query(`select pg_drop_replication_slot($1)`, [rawSlot]);
  });

  it('ends a walsender streaming from the slot before dropping it', async () => {
    await pool.query(`create publication ${pg.escapeIdentifier(`${publication}_probe`)}`);
    await ensureSlot(pool, slotName);
    const service = new LogicalReplicationService({ connectionString: db.url }, { acknowledge: { auto: false, timeoutSeconds: 0 } });
    service.on('error', () => undefined); // the termination below is expected
    const streaming = service.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [`${publication}_probe`] }), slotName).catch(() => undefined);
    await waitFor(async () => (await pool.query('select 1 from pg_replication_slots where slot_name = $1 and active', [slotName])).rowCount, {
      message: 'the walsender to take the slot',
    });
    // A role without pg_read_all_stats must still see other roles' walsenders, or preflight undercounts.
    const facts = await asWriter((c) => readReplicationFacts(c, slotName));
    expect(facts).toMatchObject({ slotExists: true, slotActive: true });
    expect(facts.activeWalSenders).toBeGreaterThanOrEqual(1);
    await dropSlot(pool, slotName);
    await service.stop();
    await streaming;
    expect((await pool.query('select 1 from pg_replication_slots where slot_name = $1', [slotName])).rowCount).toBe(0);
    await pool.query(`drop publication ${pg.escapeIdentifier(`${publication}_probe`)}`);
  });
});

const weird = ['Mixed Case', 'with "quotes" and spaces', 'ünïcødé ✓'];

describe('publications and triggers', () => {
  let tables: UserTable[];

  beforeAll(async () => {
    for (const name of weird) await pool.query(`create table ${pg.escapeIdentifier(name)} (id int primary key, v text)`);
    await pool.query(`
      create schema "Other Schema";
      create table "Other Schema"."Items" (id int primary key, v text);
      create table events (id int, at date, v text, primary key (id, at)) partition by range (at);
      create table events_2024 partition of events for values from ('2024-01-01') to ('2025-01-01');
      create table events_2025 partition of events for values from ('2025-01-01') to ('2026-01-01');
      create table no_pk (a int, b text);
      create table deferred_pk (id int primary key deferrable initially deferred, v text);
      create table acct (id serial primary key, v text);
      create unlogged table scratch (id int);
      create view a_view as select 1 as x;
      insert into no_pk values (1, 'one'), (2, 'two');
      insert into deferred_pk values (1, 'one'), (2, 'two');
      insert into events values (1, '2024-06-01', 'x'), (2, '2025-06-01', 'y');
      grant select, insert, update, delete on acct, no_pk to ${pg.escapeIdentifier(webRole)}, ${pg.escapeIdentifier(writer)};
      grant usage on sequence acct_id_seq to ${pg.escapeIdentifier(webRole)}, ${pg.escapeIdentifier(writer)};
    `);
  });

  it('lists user tables by collection, without partitions, views, unlogged or hookbridge tables', async () => {
    tables = await listUserTables(pool, { exclude: [schema] });
    const summary = Object.fromEntries(tables.map((t) => [t.collection, [t.schema, t.name, t.replicaIdentity, t.hasIdentityKey]]));
    expect(summary).toEqual({
      'Mixed Case': ['public', 'Mixed Case', 'default', true],
      'Other Schema.Items': ['Other Schema', 'Items', 'default', true],
      acct: ['public', 'acct', 'default', true],
      deferred_pk: ['public', 'deferred_pk', 'default', false],
      events: ['public', 'events', 'default', true],
      no_pk: ['public', 'no_pk', 'default', false],
      'with "quotes" and spaces': ['public', 'with "quotes" and spaces', 'default', true],
      'ünïcødé ✓': ['public', 'ünïcødé ✓', 'default', true],
    });
    expect(tables.every((t) => typeof t.oid === 'number' && t.oid > 0)).toBe(true);
  });

  const published = async () =>
    (
      await pool.query<{ pubname: string; schemaname: string; tablename: string }>(
        `select pubname, schemaname, tablename from pg_publication_tables where pubname like $1 order by 1, 2, 3`,
        [`${publication}%`],
      )
    ).rows.map((r) => `${r.pubname === publication ? 'full' : 'inserts'}:${r.schemaname}.${r.tablename}`);
  const triggered = async () =>
    (await pool.query<{ t: string }>(`select tgrelid::regclass::text as t from pg_trigger where tgname = 'hookbridge_accountability' order by 1`)).rows.map(
      (r) => r.t,
    );
  const snapshot = async () =>
    (await pool.query(`select prpubid, prrelid, xmin::text from pg_publication_rel union all select tgfoid, tgrelid, xmin::text from pg_trigger order by 1, 2`))
      .rows;

  it('puts tables without an identity key in the inserts-only publication, so their UPDATE/DELETE keep working', async () => {
    const result = await syncPublications(pool, { publication, tables, schema });
    expect(result.insertOnly).toEqual(['deferred_pk', 'no_pk']);
    expect(result.full).toEqual(['Mixed Case', 'Other Schema.Items', 'acct', 'events', 'with "quotes" and spaces', 'ünïcødé ✓']);
    expect(result.added).toHaveLength(8);
    expect(result.removed).toEqual([]);
    expect(await published()).toContain('inserts:public.no_pk');
    expect(await published()).toContain('full:public.events');
    expect(await triggered()).toEqual(expect.arrayContaining(['events', 'events_2024', 'events_2025', '"Other Schema"."Items"', '"ünïcødé ✓"']));

    await pool.query(`update no_pk set b = 'uno' where a = 1`);
    await pool.query(`delete from no_pk where a = 2`);
    await pool.query(`update deferred_pk set v = 'uno' where id = 1`);
    await pool.query(`delete from deferred_pk where id = 2`);
    await asWriter((c) => c.query(`update no_pk set b = 'eins' where a = 1`));
    await pool.query(`update events set v = 'z'`);

    // The reason for two publications: the same UPDATE fails once no_pk publishes updates.
    await withClient(db.url, async (c) => {
      await c.query('begin');
      await c.query('create publication probe_all_changes for table no_pk');
      await expect(c.query(`update no_pk set b = 'x'`)).rejects.toThrow(/does not have a replica identity/);
      await c.query('rollback');
    });
  });

  it('changes nothing when called again with the same tables', async () => {
    const before = await snapshot();
    const result = await syncPublications(pool, { publication, tables, schema });
    expect(result.added).toEqual([]);
    expect(result.removed).toEqual([]);
    expect(await snapshot()).toEqual(before);
  });

  it('moves a table when its identity changes, even if the caller listed it before the change', async () => {
    await pool.query('alter table no_pk replica identity full');
    await pool.query(`alter table ${pg.escapeIdentifier('Mixed Case')} drop constraint ${pg.escapeIdentifier('Mixed Case_pkey')}`);
    const result = await syncPublications(pool, { publication, tables, schema }); // stale list
    expect(result.full).toContain('no_pk');
    expect(result.insertOnly).toEqual(['Mixed Case', 'deferred_pk']);
    expect(result.added).toEqual([]);
    expect(result.removed).toEqual([]);
    await pool.query(`update ${pg.escapeIdentifier('Mixed Case')} set v = 'still works'`);
    await pool.query(`update no_pk set b = 'full now'`);
    tables = await listUserTables(pool, { exclude: [schema] });
    expect(tables.find((t) => t.name === 'no_pk')).toMatchObject({ replicaIdentity: 'full', hasIdentityKey: true });
  });

  it('drops a table left out of the list from the publications and removes its trigger', async () => {
    const kept = tables.filter((t) => t.name !== 'events' && t.name !== 'no_pk');
    const result = await syncPublications(pool, { publication, tables: kept, schema });
    expect(result.removed).toEqual(['events', 'no_pk']);
    expect((await published()).filter((p) => /events|no_pk/.test(p))).toEqual([]);
    expect((await triggered()).filter((t) => /events|no_pk/.test(t))).toEqual([]);
    await syncPublications(pool, { publication, tables, schema });
  });

  it('changes each table in a transaction of its own: a busy table is left for later and holds up no other', async () => {
    await pool.query(`create table busy_one (id int primary key); create table free_one (id int primary key)`);
    const withNew = await listUserTables(pool, { exclude: [schema] });
    await withClient(db.url, async (holder) => {
      // A writer's open transaction: its lock conflicts with creating busy_one's trigger.
      await holder.query('begin');
      await holder.query('insert into busy_one values (1)');
      const error = await syncPublications(pool, { publication, tables: withNew, schema, lockTimeoutMs: 200 }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'E_PUBLICATION_LOCK_TIMEOUT', details: { tables: ['busy_one'] } });
      // free_one is done, and its writers are not held by anything of the sync.
      expect(await published()).toContain('full:public.free_one');
      expect(await triggered()).toContain('free_one');
      expect(await triggered()).not.toContain('busy_one');
      await withClient(db.url, (c) => c.query(`set lock_timeout = 1000; insert into free_one values (1)`));
      await holder.query('commit');
    });
    const result = await syncPublications(pool, { publication, tables: withNew, schema });
    expect(result.added).toEqual(['busy_one']);
    expect(await triggered()).toContain('busy_one');
    await syncPublications(pool, { publication, tables, schema });
    await pool.query(`drop table busy_one, free_one`);
  });

  it('moves a table that someone put in both publications when it loses its key, and keeps the UPDATEs working', async () => {
    await pool.query(`create table both_pubs (id int primary key, v text); insert into both_pubs values (1, 'a')`);
    const withNew = await listUserTables(pool, { exclude: [schema] });
    await syncPublications(pool, { publication, tables: withNew, schema });
    await pool.query(`alter publication ${pg.escapeIdentifier(`${publication}_inserts`)} add table both_pubs`);
    await pool.query(`alter table both_pubs drop constraint both_pubs_pkey`);
    const result = await syncPublications(pool, { publication, tables: withNew, schema });
    expect(result.insertOnly).toContain('both_pubs');
    expect(result.full).not.toContain('both_pubs');
    expect((await published()).filter((p) => p.endsWith('.both_pubs'))).toEqual(['inserts:public.both_pubs']);
    await pool.query(`update both_pubs set v = 'b'`);
    await pool.query(`drop table both_pubs`);
    await syncPublications(pool, { publication, tables, schema });
  });

  it('stops at once, naming the backend, when the publication itself stays locked', async () => {
    await pool.query(`create table late_one (id int primary key); create table late_two (id int primary key)`);
    const withNew = await listUserTables(pool, { exclude: [schema] });
    await withClient(db.url, async (holder) => {
      // An open transaction that changed the publication (as a migration creating a guarded table does).
      await holder.query('begin');
      await holder.query(`alter publication ${pg.escapeIdentifier(publication)} drop table acct`);
      const pid = (holder as unknown as { processID: number }).processID;
      const outcome = await syncPublications(pool, { publication, tables: withNew, schema, lockTimeoutMs: 200 }).catch((e: unknown) => e);
      // ALTER PUBLICATION locks the publication itself from PostgreSQL 15 on; before, nothing waits.
      if (serverMajor() >= 15) expect(outcome).toMatchObject({ code: 'E_PUBLICATION_LOCK_TIMEOUT', details: { pid } });
      else expect(outcome).not.toBeInstanceOf(Error);
      await holder.query('rollback');
    });
    await syncPublications(pool, { publication, tables, schema });
    await pool.query(`drop table late_one, late_two`);
  });

  it('sends the writer identity, signed for its transaction, before the rows of each statement', async () => {
    const secret = await readAccountabilitySecret(pool, schema);
    await pool.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [rawSlot]);

    // 1. superuser, three statements
    await withClient(db.url, async (c) => {
      await c.query(`set application_name = '${APP}'`);
      await c.query('begin');
      await c.query(`insert into acct (v) values ('a')`);
      await c.query(`insert into acct (v) values ('b')`);
      await c.query(`update acct set v = 'c'`);
      await c.query('commit');
    });
    // 2. a plain role naming its application user; 3. PostgREST style: claims and SET LOCAL ROLE
    await asWriter(async (c) => {
      await c.query(`set hookbridge."user" = 'alice'`);
      await c.query(`insert into acct (v) values ('alice')`);
      await c.query('reset hookbridge."user"');
      await c.query('begin');
      await c.query(`select set_config('request.jwt.claims', '{"sub":"bob","role":"web"}', true)`);
      await c.query(`set local role ${pg.escapeIdentifier(webRole)}`);
      await c.query(`insert into acct (v) values ('bob')`);
      await c.query('commit');
      // 4. the role changes twice inside one transaction
      await c.query('begin');
      await c.query(`insert into acct (v) values ('as writer')`);
      await c.query(`set local role ${pg.escapeIdentifier(webRole)}`);
      await c.query(`insert into acct (v) values ('as web')`);
      await c.query(`update acct set v = 'as web again' where v = 'as web'`);
      await c.query('set local role none');
      await c.query(`insert into acct (v) values ('as writer again')`);
      await c.query('commit');
      // 5. a forgery, and an attempt to read the key
      await expect(c.query('select key from hookbridge.secret')).rejects.toThrow(/permission denied/);
      await c.query(`select pg_logical_emit_message(true, 'hookbridge.accountability', $1::text)`, [
        `{"role" : "postgres", "admin" : true, "user" : "mallory"}\n${'0'.repeat(64)}`,
      ]);
    });

    const { rows } = await pool.query<{ data: Buffer }>(
      `select data from pg_logical_slot_get_binary_changes($1, null, null, 'proto_version', '1', 'publication_names', $2, 'messages', 'true')`,
      [rawSlot, publication],
    );
    await dropSlot(pool, rawSlot);
    const transactions = groupByTransaction(rows.map((r) => r.data));
    expect(transactions).toHaveLength(5);
    const [superuser, alice, bob, switching, forged] = transactions.map((t) => t.messages.map((m) => parseAccountabilityMessage(m, secret, t.xid)));

    expect(transactions[0]?.changes).toBe(4);
    // One message per statement (a writer can no longer talk the trigger out of it), all alike here.
    expect(superuser).toEqual(
      Array(3).fill(expect.objectContaining({ role: 'postgres', admin: true, user: null, userAgent: APP, ip: '127.0.0.1', claims: null, verified: true })),
    );
    expect(alice).toEqual([expect.objectContaining({ role: writer, admin: false, user: 'alice', claims: null })]);
    expect(bob).toEqual([expect.objectContaining({ role: webRole, admin: false, user: 'bob', claims: { sub: 'bob', role: 'web' } })]);
    expect(switching?.map((a) => a?.role)).toEqual([writer, webRole, webRole, writer]);
    expect(forged).toEqual([undefined]);
    // Signed for its own transaction only.
    const [first, second] = transactions;
    expect(parseAccountabilityMessage(first?.messages[0] as Buffer, secret, (first?.xid ?? 0) + 1)).toBeUndefined();
    expect(parseAccountabilityMessage(second?.messages[0] as Buffer, secret, second?.xid)).toBeDefined();
  });

  it('uninstall removes everything hookbridge made and leaves user tables and rows alone', async () => {
    const counts = async () =>
      (await pool.query(`select (select count(*) from acct) a, (select count(*) from events) e, (select count(*) from no_pk) n`)).rows[0];
    const before = await counts();
    await ensureSlot(pool, slotName);
    await uninstall(pool, { schema, slotName, publication });
    await uninstall(pool, { schema, slotName, publication }); // again: nothing left, no error

    expect(await counts()).toEqual(before);
    expect((await pool.query('select 1 from pg_replication_slots where slot_name = $1', [slotName])).rowCount).toBe(0);
    expect((await pool.query('select 1 from pg_publication where pubname like $1', [`${publication}%`])).rowCount).toBe(0);
    expect((await pool.query('select 1 from pg_namespace where nspname = $1', [schema])).rowCount).toBe(0);
    expect(await triggered()).toEqual([]);
    await pool.query(`update no_pk set b = 'after uninstall'`);
    await pool.query(`insert into acct (v) values ('after uninstall')`);
  });
});

/**
 * pgoutput v1 framing: Begin 'B' (final lsn, commit time, xid) ... Commit 'C'; a Message 'M' is flags,
 * lsn, prefix\0, length, content.
 */
function groupByTransaction(messages: Buffer[]): { xid: number; messages: Buffer[]; changes: number }[] {
  const transactions: { xid: number; messages: Buffer[]; changes: number }[] = [];
  let current: { xid: number; messages: Buffer[]; changes: number } | undefined;
  for (const data of messages) {
    const tag = String.fromCharCode(data[0] ?? 0);
    if (tag === 'B') transactions.push((current = { xid: data.readUInt32BE(17), messages: [], changes: 0 }));
    else if (tag === 'C') current = undefined;
    else if (tag === 'M') {
      const prefixEnd = data.indexOf(0, 10);
      if (data.toString('utf8', 10, prefixEnd) !== 'hookbridge.accountability') continue;
      const length = data.readInt32BE(prefixEnd + 1);
      current?.messages.push(data.subarray(prefixEnd + 5, prefixEnd + 5 + length));
    } else if ('IUDT'.includes(tag) && current) current.changes++;
  }
  return transactions;
}
