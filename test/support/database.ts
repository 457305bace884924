/**
 * One fresh database per test file on the run's shared server.
 *
 * Databases are plain `CREATE DATABASE ... TEMPLATE template0`: measured on
 * Postgres 18 here, cloning a prepared template was no faster (both copy the
 * same ~8 MB of catalog), and template0 cannot have been touched by anyone,
 * also on an external server. dblink needs no preparation: it ships with the
 * server and each test creates it if it wants it.
 *
 * Dropping is also the leak check: a database that still has client
 * connections or replication slots when its tests are done means some test
 * (or the code under test) forgot to close something. The drop fails with
 * the list of leaks, after cleaning up anyway so the rest of the run is
 * unaffected.
 *
 * HOOKBRIDGE_TEST_KEEP=1: a test file that failed keeps its database (and the
 * run keeps the server) for inspection; the database name is printed.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import type { RunnerTask, RunnerTestFile, RunnerTestSuite } from 'vitest';
import './context.js';
import { waitFor, withClient } from './helpers.js';

export interface TestDatabase {
  /** Connection URL for the new database (same credentials as the admin URL). */
  url: string;
  name: string;
  /** Checks for leaked connections and slots, removes the database, and throws if something leaked. Idempotent. */
  drop(): Promise<void>;
}

const LEAK_GRACE_MS = 3_000;

function adminUrl(): string {
  return inject('hookbridgeTestPg').adminUrl;
}

function databaseUrl(name: string): string {
  const url = new URL(adminUrl());
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}

function makeName(label: string | undefined): string {
  const prefix = inject('hookbridgeTestPg').databasePrefix;
  const cleaned = (label ?? 'db')
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 63 - prefix.length - 9);
  return `${prefix}${cleaned || 'db'}_${randomBytes(4).toString('hex')}`;
}

export async function createTestDatabase(label?: string): Promise<TestDatabase> {
  const name = makeName(label);
  await withClient(adminUrl(), (c) => c.query(`create database ${c.escapeIdentifier(name)} template template0 encoding 'UTF8'`));
  let dropping: Promise<void> | undefined;
  return {
    url: databaseUrl(name),
    name,
    drop() {
      dropping ??= dropWithLeakCheck(name);
      return dropping;
    },
  };
}

interface Activity {
  pid: number;
  backend_type: string;
  application_name: string;
  state: string | null;
  query: string;
}

interface Slot {
  slot_name: string;
  slot_type: string;
  active_pid: number | null;
}

async function dropWithLeakCheck(name: string): Promise<void> {
  await withClient(adminUrl(), async (c) => {
    const connections = async () =>
      (
        await c.query<Activity>(
          // Only what a test opened counts; autovacuum and friends come and go on their own.
          `select pid, backend_type, application_name, state, left(query, 120) as query
             from pg_stat_activity
            where datname = $1 and pid <> pg_backend_pid()
              and backend_type in ('client backend', 'walsender')
            order by pid`,
          [name],
        )
      ).rows;
    const slots = async () =>
      (await c.query<Slot>('select slot_name, slot_type, active_pid from pg_replication_slots where database = $1 order by slot_name', [name])).rows;

    // client.end() resolves before the server backend has fully exited, so a
    // just-closed connection may still be listed for a moment.
    let leakedConnections: Activity[] = [];
    try {
      await waitFor(async () => (leakedConnections = await connections()).length === 0, {
        timeoutMs: LEAK_GRACE_MS,
        intervalMs: 50,
        message: 'connections to close',
      });
    } catch {
      // reported below
    }
    const leakedSlots = await slots();

    await forceDrop(c, name);

    if (leakedConnections.length > 0 || leakedSlots.length > 0) {
      const parts: string[] = [];
      if (leakedConnections.length > 0) {
        parts.push(
          `${leakedConnections.length} open connection(s): ` +
            leakedConnections
              .map(
                (a) =>
                  `[pid ${a.pid} ${a.backend_type}${a.application_name ? ` app=${JSON.stringify(a.application_name)}` : ''} state=${a.state ?? '?'} last query=${JSON.stringify(a.query)}]`,
              )
              .join(', '),
        );
      }
      if (leakedSlots.length > 0) {
        parts.push(
          `${leakedSlots.length} replication slot(s): ` +
            leakedSlots.map((s) => `[${s.slot_name} (${s.slot_type}${s.active_pid ? `, active pid ${s.active_pid}` : ''})]`).join(', '),
        );
      }
      throw new Error(
        `test database ${name} leaked ${parts.join(' and ')}. Close clients/pools/replication streams and drop slots before the file ends. (The database was dropped anyway.)`,
      );
    }
  });
}

async function forceDrop(c: pg.Client, name: string): Promise<void> {
  // Walsenders must die before their slots can be dropped, and an active
  // logical slot blocks DROP DATABASE even WITH (FORCE).
  await c.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`, [name]);
  await waitFor(async () => (await c.query('select 1 from pg_replication_slots where database = $1 and active_pid is not null', [name])).rowCount === 0, {
    timeoutMs: 10_000,
    message: `replication slots of ${name} to become inactive after terminating their walsenders`,
  });
  const { rows } = await c.query<{ slot_name: string }>('select slot_name from pg_replication_slots where database = $1', [name]);
  for (const { slot_name } of rows) {
    await c.query('select pg_drop_replication_slot($1)', [slot_name]).catch((err: unknown) => {
      // It may have vanished in the meantime; anything else resurfaces in DROP DATABASE.
      if (!(err instanceof Error && /does not exist/.test(err.message))) throw err;
    });
  }
  await c.query(`drop database if exists ${c.escapeIdentifier(name)} with (force)`);
}

export interface TestDatabaseHandle {
  /** Valid inside tests and hooks of the file (after its beforeAll ran). */
  readonly url: string;
  readonly name: string;
}

/**
 * Registers beforeAll/afterAll in the calling file (or describe block): a
 * fresh database before its tests, the leak-checked drop after them. Call it
 * before registering your own afterAll cleanup: afterAll hooks run in reverse
 * order, so yours (closing pools, stopping streams) then runs before the check.
 */
/** The major version (14…18) of this run's server: for behaviour that differs between versions. */
export function serverMajor(): number {
  return inject('hookbridgeTestPg').serverMajor;
}

/**
 * A run of `npm run test:matrix` on one version (HOOKBRIDGE_TEST_MATRIX=1): a test whose subject does not
 * depend on the server's version (a type check, a server of its own) ran in `npm test` and skips here.
 */
export const inMatrixRun = process.env['HOOKBRIDGE_TEST_MATRIX'] === '1';

/** The embedded binaries of this run's major (HOOKBRIDGE_TEST_PG_VERSION), for tests that start a server of their own. */
export function testPgBin(): string | undefined {
  return inject('hookbridgeTestPg').pgBin;
}

export function useTestDatabase(label?: string): TestDatabaseHandle {
  let db: TestDatabase | undefined;
  const current = (): TestDatabase => {
    if (!db) throw new Error('useTestDatabase(): the database exists only inside tests and hooks, after beforeAll ran');
    return db;
  };
  beforeAll(async (suite) => {
    db = await createTestDatabase(label ?? labelFromFile(suite));
  });
  afterAll(async (suite) => {
    if (!db) return;
    if (inject('hookbridgeTestPg').keepFailed && hasFailure(suite)) {
      process.stderr.write(`[hookbridge-test] HOOKBRIDGE_TEST_KEEP=1: kept database ${db.name} of failed ${suite.name}\n`);
      return;
    }
    await db.drop();
  });
  return {
    get url() {
      return current().url;
    },
    get name() {
      return current().name;
    },
  };
}

function labelFromFile(suite: Readonly<RunnerTestSuite | RunnerTestFile>): string {
  const file = suite.file?.name ?? suite.name;
  return path.basename(file).replace(/\.test\.[cm]?[jt]s$/, '');
}

function hasFailure(task: Readonly<RunnerTask>): boolean {
  if (task.result?.state === 'fail' || (task.result?.errors?.length ?? 0) > 0) return true;
  return 'tasks' in task && task.tasks.some((t) => hasFailure(t));
}
