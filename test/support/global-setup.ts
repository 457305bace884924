/**
 * Starts ONE Postgres for the whole test run and provides its admin URL to
 * test files (`inject('hookbridgeTestPg')`, see database.ts).
 *
 * Which server, by environment:
 *   (default)                          embedded Postgres 18 under <repo>/.hookbridge/test-pg-<random>
 *   HOOKBRIDGE_TEST_PG=testcontainers  postgres:18 in a container (needs a Docker engine); another image
 *                                      with HOOKBRIDGE_TEST_PG_IMAGE (scripts/docker/prepare.sh builds
 *                                      hookbridge-test/postgres:15-local from Debian's packages, no registry)
 *   HOOKBRIDGE_TEST_DATABASE_URL=...   an existing server; must run with wal_level=logical
 *   HOOKBRIDGE_TEST_PG_VERSION=14..18  the embedded server's major (default 18; the others are fetched once,
 *                                      see pg-versions.ts); every embedded server a test or a spawned
 *                                      `hookbridge` starts uses it too (HOOKBRIDGE_PG_BIN)
 * Also:
 *   HOOKBRIDGE_TEST_KEEP=1             keep the database of a failed test file for inspection
 *                                      (the embedded cluster is then kept on disk too)
 *   HOOKBRIDGE_TEST_PG_LOG=debug       show the embedded server's own output
 */
import { randomBytes } from 'node:crypto';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import type { TestProject } from 'vitest/node';
import { PASSWORD_FILE, startEmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import type { TestPgInfo, TestPgSource } from './context.js';
import { embeddedBinDir, parseMajor } from './pg-versions.js';
import { describeUrl, withClient } from './helpers.js';
import { containerStartError, postgresCommand, testPgImage, THROWAWAY_INITDB } from './testcontainers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const stateDir = path.join(repoRoot, '.hookbridge');

interface Server {
  adminUrl: string;
  source: TestPgSource;
  stop(): Promise<void>;
  /** Shown when HOOKBRIDGE_TEST_KEEP kept something around. */
  keptHint?: string;
}

// The server is disposable, so durability is not worth its fsyncs. Not
// synchronous_commit=off though: logical decoding only sees flushed WAL, so
// it would delay every action by up to wal_writer_delay.
const throwawaySettings = {
  fsync: 'off',
  full_page_writes: 'off',
} as const;

const log = pino({ name: 'hookbridge-test', level: process.env['HOOKBRIDGE_TEST_PG_LOG'] ?? 'error' }, pino.destination(2));

async function startEmbedded(keep: boolean, binDir: string | undefined): Promise<Server> {
  await removeAbandonedTestClusters();
  const dataDir = path.join(stateDir, `test-pg-${randomBytes(4).toString('hex')}`);
  const startedAt = performance.now();
  const pg = await startEmbeddedPostgres({
    dataDir,
    binDir,
    persistent: keep,
    logger: log,
    settings: throwawaySettings,
  });
  log.info({ ms: Math.round(performance.now() - startedAt), port: pg.port, major: pg.major }, 'embedded Postgres started');
  return {
    adminUrl: pg.url,
    source: 'embedded',
    stop: () => pg.stop(),
    keptHint: `embedded cluster kept in ${dataDir} (password in ${PASSWORD_FILE}; restart it with startEmbeddedPostgres({ dataDir, persistent: true }))`,
  };
}

/**
 * A SIGKILLed run leaves its non-persistent cluster on disk. Only clear
 * directories that are clearly abandoned (old and without a live postmaster),
 * since other runs in this checkout may be using theirs right now.
 */
async function removeAbandonedTestClusters(): Promise<void> {
  const entries = await readdir(stateDir).catch(() => [] as string[]);
  const cutoff = Date.now() - 6 * 60 * 60 * 1000;
  for (const entry of entries) {
    if (!entry.startsWith('test-pg-')) continue;
    const dir = path.join(stateDir, entry);
    try {
      if ((await stat(dir)).mtimeMs > cutoff) continue;
      const pidText = await readFile(path.join(dir, 'postmaster.pid'), 'utf8').catch(() => '');
      const pid = Number.parseInt(pidText.split('\n')[0] ?? '', 10);
      if (pid > 0 && isAlive(pid)) continue;
      await rm(dir, { recursive: true, force: true });
      log.info({ dir }, 'removed abandoned test cluster');
    } catch {
      // best effort only
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function startTestcontainers(image: string): Promise<Server> {
  const { getContainerRuntimeClient, ImageName } = await import('testcontainers');
  let client: Awaited<ReturnType<typeof getContainerRuntimeClient>>;
  try {
    client = await getContainerRuntimeClient();
  } catch (err) {
    throw new Error(
      'HOOKBRIDGE_TEST_PG=testcontainers needs a running Docker (or compatible) container engine, and none was found ' +
        `(${err instanceof Error ? err.message : String(err)}). Run scripts/docker/prepare.sh (it starts one, as root), ` +
        'or unset HOOKBRIDGE_TEST_PG to use the embedded Postgres instead.',
      { cause: err },
    );
  }
  const local = await client.image.exists(ImageName.fromString(image));
  log.info({ image, local }, 'starting Postgres with testcontainers');
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const settings: Record<string, string | number> = {
    wal_level: 'logical',
    max_replication_slots: 20,
    max_wal_senders: 20,
    max_connections: 200,
    ...throwawaySettings,
  };
  const container = await new PostgreSqlContainer(image)
    .withDatabase('postgres')
    .withUsername('postgres')
    .withPassword(randomBytes(18).toString('base64url'))
    .withEnvironment(THROWAWAY_INITDB)
    .withCommand(postgresCommand(settings))
    .start()
    .catch((err: unknown) => {
      // Where no registry answers, a missing image ends in a pull error that names neither the cause nor the fix.
      throw containerStartError(image, local, err);
    });
  return {
    adminUrl: container.getConnectionUri(),
    source: 'testcontainers',
    stop: async () => {
      await container.stop();
    },
  };
}

async function useExternal(url: string): Promise<Server> {
  return { adminUrl: url, source: 'external', stop: async () => {} };
}

/** Fails early, with a fix in the message, when the server cannot host the bridge. */
async function checkServer(server: Server): Promise<number> {
  const where = `${server.source} server at ${describeUrl(server.adminUrl)}`;
  const facts = await withClient(server.adminUrl, async (c) => {
    const { rows } = await c.query<{ major: number; wal_level: string; slots: string; senders: string; can_create: boolean; can_replicate: boolean }>(
      `select current_setting('server_version_num')::int / 10000 as major,
              current_setting('wal_level') as wal_level,
              current_setting('max_replication_slots') as slots,
              current_setting('max_wal_senders') as senders,
              (r.rolsuper or r.rolcreatedb) as can_create,
              (r.rolsuper or r.rolreplication) as can_replicate
         from pg_roles r where r.rolname = current_user`,
    );
    return rows[0];
  }).catch((err: unknown) => {
    throw new Error(`cannot connect to the ${where}: ${err instanceof Error ? err.message : String(err)}`);
  });
  if (!facts) throw new Error(`cannot read the role of the connecting user on the ${where}`);
  const problems: string[] = [];
  if (facts.wal_level !== 'logical') {
    problems.push(`wal_level is '${facts.wal_level}' but must be 'logical' (ALTER SYSTEM SET wal_level = logical; then restart the server)`);
  }
  if (Number(facts.slots) < 10) problems.push(`max_replication_slots is ${facts.slots}; tests need at least 10`);
  if (Number(facts.senders) < 10) problems.push(`max_wal_senders is ${facts.senders}; tests need at least 10`);
  if (!facts.can_create) problems.push('the user may not CREATE DATABASE');
  if (!facts.can_replicate) problems.push('the user lacks the REPLICATION attribute');
  if (problems.length > 0) {
    throw new Error(`the ${where} cannot be used for hookbridge tests:\n  - ${problems.join('\n  - ')}`);
  }
  return facts.major;
}

async function listSlots(adminUrl: string): Promise<Array<{ slot_name: string; database: string | null }>> {
  return withClient(
    adminUrl,
    async (c) => (await c.query<{ slot_name: string; database: string | null }>('select slot_name, database from pg_replication_slots')).rows,
  );
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const keepFailed = process.env['HOOKBRIDGE_TEST_KEEP'] === '1';
  const externalUrl = process.env['HOOKBRIDGE_TEST_DATABASE_URL'];
  const mode = process.env['HOOKBRIDGE_TEST_PG'];
  const versionText = process.env['HOOKBRIDGE_TEST_PG_VERSION']?.trim() || undefined;
  let pgBin: string | undefined;
  if (versionText !== undefined) {
    if (externalUrl || (mode !== undefined && mode !== '' && mode !== 'embedded')) {
      throw new Error('HOOKBRIDGE_TEST_PG_VERSION chooses the embedded server; it cannot be combined with HOOKBRIDGE_TEST_DATABASE_URL or HOOKBRIDGE_TEST_PG');
    }
    pgBin = await embeddedBinDir(parseMajor(versionText, 'HOOKBRIDGE_TEST_PG_VERSION'));
    // Inherited by the test workers and every `hookbridge` they spawn.
    if (pgBin !== undefined) process.env['HOOKBRIDGE_PG_BIN'] = pgBin;
  }

  let server: Server;
  if (externalUrl) {
    server = await useExternal(externalUrl);
  } else if (mode === 'testcontainers') {
    server = await startTestcontainers(testPgImage());
  } else if (mode === undefined || mode === '' || mode === 'embedded') {
    server = await startEmbedded(keepFailed, pgBin);
  } else {
    throw new Error(`unknown HOOKBRIDGE_TEST_PG=${mode}; use 'embedded' (default) or 'testcontainers', or set HOOKBRIDGE_TEST_DATABASE_URL`);
  }

  let baselineSlots: Set<string>;
  let serverMajor: number;
  try {
    serverMajor = await checkServer(server);
    baselineSlots = new Set((await listSlots(server.adminUrl)).map((s) => s.slot_name));
  } catch (err) {
    await server.stop().catch(() => undefined);
    throw err;
  }

  const databasePrefix = `hbtest_${randomBytes(3).toString('hex')}_`;
  const info: TestPgInfo = { adminUrl: server.adminUrl, source: server.source, serverMajor, pgBin, databasePrefix, keepFailed };
  log.info({ source: server.source, major: serverMajor }, 'test server');
  project.provide('hookbridgeTestPg', info);

  return async () => {
    let leftovers: Leftovers = { descriptions: [], databases: [], slots: [] };
    try {
      leftovers = await findLeftovers(server, databasePrefix, baselineSlots);
      // A shared external server outlives the run, so it must not keep our junk.
      if (!keepFailed && server.source === 'external') await removeLeftovers(server.adminUrl, leftovers);
    } finally {
      // With KEEP the embedded cluster is persistent, so stopping keeps its data.
      await server.stop();
      if (keepFailed && leftovers.descriptions.length > 0) {
        process.stderr.write(
          `[hookbridge-test] HOOKBRIDGE_TEST_KEEP=1 kept: ${leftovers.descriptions.join(', ')}${server.keptHint ? `\n[hookbridge-test] ${server.keptHint}` : ''}\n`,
        );
      }
    }
    if (leftovers.descriptions.length > 0 && !keepFailed) {
      throw new Error(
        `test run left things behind on the ${server.source} Postgres (each test file must drop what it creates):\n  - ${leftovers.descriptions.join('\n  - ')}`,
      );
    }
  };
}

interface Leftovers {
  descriptions: string[];
  databases: string[];
  slots: string[];
}

async function findLeftovers(server: Server, prefix: string, baselineSlots: Set<string>): Promise<Leftovers> {
  return withClient(server.adminUrl, async (c) => {
    const found: Leftovers = { descriptions: [], databases: [], slots: [] };
    const dbs = await c.query<{ datname: string }>(`select datname from pg_database where starts_with(datname, $1) order by datname`, [prefix]);
    for (const { datname } of dbs.rows) {
      found.databases.push(datname);
      found.descriptions.push(`database ${datname}`);
    }
    const slots = await c.query<{ slot_name: string; database: string | null; slot_type: string; active_pid: number | null }>(
      'select slot_name, database, slot_type, active_pid from pg_replication_slots order by slot_name',
    );
    for (const s of slots.rows) {
      if (baselineSlots.has(s.slot_name)) continue;
      // On a shared server, other people's new slots are none of our business.
      const ours = server.source !== 'external' || s.database === null || s.database.startsWith(prefix);
      if (!ours) continue;
      found.slots.push(s.slot_name);
      found.descriptions.push(
        `replication slot ${s.slot_name} (${s.slot_type}${s.database ? ` in ${s.database}` : ''}${s.active_pid ? `, active pid ${s.active_pid}` : ''})`,
      );
    }
    return found;
  });
}

async function removeLeftovers(adminUrl: string, leftovers: Leftovers): Promise<void> {
  await withClient(adminUrl, async (c) => {
    for (const slot of leftovers.slots) {
      await c.query('select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1 and active_pid is not null', [slot]);
    }
    for (const slot of leftovers.slots) {
      await c.query('select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1', [slot]).catch(() => undefined);
    }
    for (const db of leftovers.databases) {
      await c.query(`drop database if exists ${c.escapeIdentifier(db)} with (force)`).catch(() => undefined);
    }
  });
}
