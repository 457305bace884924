import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, inject, test } from 'vitest';
import { PASSWORD_FILE, startEmbeddedPostgres, type EmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { testPgBin, useTestDatabase } from '../support/database.js';
import { findPsql, waitFor, withClient } from '../support/helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('test database', () => {
  const db = useTestDatabase('harness');

  test('is fresh: no user tables, only plpgsql', async () => {
    await withClient(db.url, async (c) => {
      const tables = await c.query(
        `select table_schema, table_name from information_schema.tables
          where table_schema not in ('pg_catalog', 'information_schema')`,
      );
      expect(tables.rows).toEqual([]);
      const extensions = await c.query<{ extname: string }>('select extname from pg_extension order by 1');
      expect(extensions.rows.map((r) => r.extname)).toEqual(['plpgsql']);
      expect((await c.query<{ db: string }>('select current_database() as db')).rows[0]?.db).toBe(db.name);
    });
  });

  test('runs with wal_level=logical', async () => {
    await withClient(db.url, async (c) => {
      const { rows } = await c.query<{ wal_level: string }>('show wal_level');
      expect(rows[0]?.wal_level).toBe('logical');
    });
  });

  test('can create the dblink extension', async () => {
    await withClient(db.url, async (c) => {
      await c.query('create extension dblink');
      const { rows } = await c.query<{ conns: string[] | null }>('select dblink_get_connections() as conns');
      expect(rows[0]?.conns).toBeNull();
    });
  });

  test('can create, decode from and drop a pgoutput logical slot', async () => {
    const slot = `harness_${randomBytes(3).toString('hex')}`;
    await withClient(db.url, async (c) => {
      await c.query('create table slot_probe (id int primary key, note text)');
      await c.query('create publication slot_probe_pub for table slot_probe');
      await c.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
      try {
        await c.query(`insert into slot_probe values (1, 'hello')`);
        const changes = await c.query<{ n: string }>(
          `select count(*) as n from pg_logical_slot_peek_binary_changes($1, null, null,
             'proto_version', '1', 'publication_names', 'slot_probe_pub')`,
          [slot],
        );
        // BEGIN, RELATION, INSERT, COMMIT at least.
        expect(Number(changes.rows[0]?.n)).toBeGreaterThanOrEqual(4);
      } finally {
        await c.query('select pg_drop_replication_slot($1)', [slot]);
      }
      const left = await c.query('select 1 from pg_replication_slots where slot_name = $1', [slot]);
      expect(left.rowCount).toBe(0);
    });
  });

  test('accepts connections and writes from the psql client', async (ctx) => {
    const psql = findPsql();
    if (!psql) return ctx.skip('psql not found on PATH or in /usr/lib/postgresql/15/bin');
    await withClient(db.url, (c) => c.query('create table psql_probe (id int primary key, who text)'));

    // Password through the environment, so it never shows up in `ps`.
    const url = new URL(db.url);
    const password = decodeURIComponent(url.password);
    url.password = '';
    const result = spawnSync(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url.toString(), '-c', `insert into psql_probe values (1, 'psql')`], {
      env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.error).toBeUndefined();
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);

    const { rows } = await withClient(db.url, (c) => c.query('select id, who from psql_probe'));
    expect(rows).toEqual([{ id: 1, who: 'psql' }]);
  });
});

describe('startEmbeddedPostgres', () => {
  // These start their own clusters; only meaningful for the embedded flavour
  // of the harness but cheap enough to run always.
  const dirs: string[] = [];
  const running: EmbeddedPostgres[] = [];
  const newDataDir = () => {
    const dir = path.join(repoRoot, '.hookbridge', `test-embedded-${randomBytes(4).toString('hex')}`);
    dirs.push(dir);
    return dir;
  };
  const start = async (dataDir: string) => {
    const pg = await startEmbeddedPostgres({ binDir: testPgBin(), dataDir, persistent: true });
    running.push(pg);
    return pg;
  };

  afterAll(async () => {
    for (const pg of running) await pg.stop().catch(() => undefined);
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  test('keeps data and password across restarts; a dead pid in postmaster.pid does not block start', async () => {
    const dataDir = newDataDir();
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'beforeExit'] as const;
    const listenersBefore = signals.map((s) => process.listenerCount(s));
    const first = await start(dataDir);
    // embedded-postgres' own exit hooks would call process.exit() behind the CLI's back.
    expect(signals.map((s) => process.listenerCount(s))).toEqual(listenersBefore);
    const passwordFile = path.join(dataDir, PASSWORD_FILE);
    const password = (await readFile(passwordFile, 'utf8')).trim();
    expect(password.length).toBeGreaterThanOrEqual(24);
    expect((await stat(passwordFile)).mode & 0o777).toBe(0o600);
    expect(decodeURIComponent(new URL(first.url).password)).toBe(password);
    expect(new URL(first.url).hostname).toBe('127.0.0.1');
    expect(JSON.stringify(first)).not.toContain(password);

    await withClient(first.url, async (c) => {
      await c.query('create table survives_restart (v text)');
      await c.query(`insert into survives_restart values ('kept')`);
    });
    await first.stop();
    await first.stop(); // idempotent

    // A pid that surely is dead, as left behind by a crashed server.
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
    await writeFile(path.join(dataDir, 'postmaster.pid'), `${deadPid}\n${dataDir}\n`);

    const second = await start(dataDir);
    expect((await readFile(passwordFile, 'utf8')).trim()).toBe(password);
    expect(decodeURIComponent(new URL(second.url).password)).toBe(password);
    const { rows } = await withClient(second.url, (c) => c.query('select v from survives_restart'));
    expect(rows).toEqual([{ v: 'kept' }]);
    await second.stop();
  });

  test('runs in a data dir whose path a shell would read as commands (pg_ctl starts the server through one)', async () => {
    const parent = newDataDir();
    const dataDir = path.join(parent, 'd $(touch pwned) `touch pwned2` "q\'s');
    const pg = await start(dataDir);
    const { rows } = await withClient(pg.url, (c) => c.query<{ dir: string }>(`select current_setting('data_directory') as dir`));
    expect(rows[0]?.dir).toBe(dataDir);
    await pg.stop();
    for (const where of [repoRoot, parent, dataDir]) {
      await expect(stat(path.join(where, 'pwned'))).rejects.toThrow();
      await expect(stat(path.join(where, 'pwned2'))).rejects.toThrow();
    }
  });

  test('takes over from a server left running by a SIGKILLed owner', async () => {
    const dataDir = newDataDir();
    // Another process (the built module, as `hookbridge start` runs it) owns the server and is killed
    // without any cleanup: the server (in a session of its own) outlives it, and the next start on the
    // data dir stops it and starts afresh.
    const owner = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `
        import { startEmbeddedPostgres } from ${JSON.stringify(path.join(repoRoot, 'dist', 'bridge', 'embedded-postgres.js'))};
        await startEmbeddedPostgres({ dataDir: process.env.DATA_DIR, persistent: true, binDir: process.env.PG_BIN || undefined });
        process.stdout.write('ready\\n');
        setInterval(() => {}, 1 << 30);
        `,
      ],
      { cwd: repoRoot, env: { ...process.env, DATA_DIR: dataDir, PG_BIN: testPgBin() ?? '' }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      let out = '';
      owner.stdout.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor(() => out.includes('ready') || owner.exitCode !== null, { timeoutMs: 60_000, message: 'the owner process to start its server' });
      expect(owner.exitCode).toBeNull();
    } catch (err) {
      owner.kill('SIGKILL');
      throw err;
    }
    const stalePid = Number.parseInt((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0] ?? '', 10);
    owner.kill('SIGKILL');
    await waitFor(() => owner.exitCode !== null || owner.signalCode !== null, { message: 'the owner process to die' });
    expect(isAlive(stalePid)).toBe(true);

    const fresh = await start(dataDir);
    expect(isAlive(stalePid)).toBe(false);
    const { rows } = await withClient(fresh.url, (c) => c.query<{ ok: number }>('select 1 as ok'));
    expect(rows).toEqual([{ ok: 1 }]);
    await fresh.stop();
  });
});

test('the harness describes its server', () => {
  const info = inject('hookbridgeTestPg');
  expect(['embedded', 'testcontainers', 'external']).toContain(info.source);
  expect(info.databasePrefix).toMatch(/^hbtest_[0-9a-f]{6}_$/);
  const chosen = process.env['HOOKBRIDGE_TEST_PG_VERSION'];
  if (info.source === 'embedded') expect(info.serverMajor).toBe(chosen ? Number(chosen) : 18);
  // Servers the tests (and the bridges they spawn) start themselves run the same major.
  expect(process.env['HOOKBRIDGE_PG_BIN']).toBe(info.pgBin);
});

// With the embedded default the run's server and the ones tests start are of one major; a container's is its image's.
test.skipIf(inject('hookbridgeTestPg').source !== 'embedded')('a server a test starts itself runs the chosen major', async () => {
  const dataDir = path.join(repoRoot, '.hookbridge', `test-embedded-${randomBytes(4).toString('hex')}`);
  const pg = await startEmbeddedPostgres({ binDir: testPgBin(), dataDir, persistent: false });
  try {
    const { rows } = await withClient(pg.url, (c) => c.query<{ major: number }>(`select current_setting('server_version_num')::int / 10000 as major`));
    expect(rows[0]?.major).toBe(inject('hookbridgeTestPg').serverMajor);
    expect(pg.major).toBe(rows[0]?.major);
  } finally {
    await pg.stop();
  }
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // An exited but unreaped postmaster (orphans are reaped by pid 1) is gone for our purposes.
  try {
    const stat = spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim();
    return stat !== '' && !stat.startsWith('Z');
  } catch {
    return true;
  }
}
