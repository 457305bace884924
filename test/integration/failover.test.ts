/**
 * A database failover under a running bridge (PostgreSQL 17+: failover slots). A primary and a physical
 * standby that synchronises slots; the bridge is given both (`postgres://…@primary,standby/db`) and
 * HOOKBRIDGE_SLOT_FAILOVER=true. Rows are written, the primary is killed (SIGQUIT: an immediate stop, as
 * a crash), the standby promoted: the bridge follows it, every committed row reaches the action hooks
 * (duplicates allowed), and filters answer again on the new primary.
 *
 * The standby is a copy of the primary's data dir taken while it is stopped: the embedded binaries have
 * no pg_basebackup, and a cold copy is as good a base backup.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile, chown } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { runCli, startCli, type RunningCli } from '../support/cli.js';
import { testPgBin } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const run = promisify(execFile);
const info = inject('hookbridgeTestPg');
const STANDBY_SLOT = 'hb_standby';
const FILTER_TIMEOUT_MS = 3_000;

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

// Filter: notes are upper-cased, 'reject' is refused. Action: every created key is appended to a file.
const extension = `
  const { appendFileSync } = require('node:fs');
  module.exports = ({ filter, action }, { env }) => {
    filter('orders.items.create', (payload) => {
      if (payload.note === 'reject') throw new Error('rejected by the filter');
      return { ...payload, note: String(payload.note).toUpperCase() };
    });
    action('orders.items.create', (meta) => { appendFileSync(env.RECORD_FILE, meta.key + '\\n'); });
  };`;

async function recorded(file: string): Promise<Set<string>> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return new Set(text.split('\n').filter(Boolean));
}

/**
 * A writer's pause between its inserts. Unpaced, the writer committed ~7,600 rows a run while the test
 * waited for the standby to synchronise the slot (its worker naps up to 30 s), each one filtered and
 * waited for by the synchronous standby: ~140 s of CPU for this file, the suite's most. Paced, a few
 * hundred rows still stream, from a few hundred commits, before and across the failover.
 */
const WRITER_PAUSE_MS = 20;

/** Inserts one row at a time until stopped; returns the keys of the committed ones. */
function startWriter(url: string, from: number) {
  const committed: string[] = [];
  let running = true;
  const done = (async () => {
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => undefined);
    await client.connect();
    try {
      for (let id = from; running; id++) {
        const { rows } = await client.query<{ id: number }>(`insert into orders (id, note) values ($1, 'row') returning id`, [id]);
        committed.push(String(rows[0]?.id));
        await new Promise((resolve) => setTimeout(resolve, WRITER_PAUSE_MS));
      }
    } catch {
      // The primary went away under it: what committed is in `committed`.
    } finally {
      await client.end().catch(() => undefined);
    }
  })();
  return {
    committed,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function postmasterPid(dataDir: string): Promise<number> {
  return Number.parseInt((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0] ?? '', 10);
}

describe.skipIf(info.source !== 'embedded' || info.serverMajor < 17)('database failover (PostgreSQL 17+, embedded)', () => {
  it.each(['direct', 'notify'] as const)(
    'the bridge follows a promoted standby: no committed row lost, filters answer again (%s transport)',
    async (transport) => {
      const parent = fileURLToPath(new URL('../../.hookbridge/', import.meta.url));
      const root = await mkdtemp(join(parent, 'failover-'));
      // As root the servers run as the postgres OS user, which must reach the data dirs.
      await chmod(root, 0o755);
      const primaryDir = join(root, 'primary');
      const standbyDir = join(root, 'standby');
      const servers: EmbeddedPostgres[] = [];
      cleanups.push(async () => {
        for (const server of servers) await server.stop().catch(() => undefined);
        await rm(root, { recursive: true, force: true });
      });

      // 1. The primary, with what the standby needs, then a cold copy of it.
      let primary = await startEmbeddedPostgres({ binDir: testPgBin(), dataDir: primaryDir, persistent: true });
      servers.push(primary);
      const password = decodeURIComponent(new URL(primary.url).password);
      await withClient(primary.url, async (c) => {
        await c.query(`select pg_create_physical_replication_slot($1)`, [STANDBY_SLOT]);
        await c.query('create database app');
      });
      const appOnPrimary = withDatabase(primary.url, 'app');
      await withClient(appOnPrimary, (c) => c.query('create table orders (id int primary key, note text)'));
      await primary.stop();
      await run('cp', ['-a', primaryDir, standbyDir]);
      // The copy must not keep the primary's own physical slot, nor its logs.
      await rm(join(standbyDir, 'pg_replslot', STANDBY_SLOT), { recursive: true, force: true });
      await rm(join(standbyDir, 'log'), { recursive: true, force: true });
      const owner = await stat(primaryDir);
      await writeFile(join(standbyDir, 'standby.signal'), '');
      await chown(join(standbyDir, 'standby.signal'), owner.uid, owner.gid);

      // 2. Both running: commits wait for the standby (synchronous_standby_names), logical decoding waits
      // for it too (synchronized_standby_slots), and the standby copies failover slots (sync_replication_slots).
      primary = await startEmbeddedPostgres({
        binDir: testPgBin(),
        dataDir: primaryDir,
        persistent: true,
        port: primary.port,
        settings: { synchronous_standby_names: STANDBY_SLOT, synchronized_standby_slots: STANDBY_SLOT },
      });
      servers.push(primary);
      const standby = await startEmbeddedPostgres({
        binDir: testPgBin(),
        dataDir: standbyDir,
        persistent: true,
        settings: {
          primary_conninfo: `host=127.0.0.1 port=${primary.port} user=postgres password=${password} dbname=postgres application_name=${STANDBY_SLOT}`,
          primary_slot_name: STANDBY_SLOT,
          hot_standby_feedback: 'on',
          sync_replication_slots: 'on',
        },
      });
      servers.push(standby);
      const appOnStandby = withDatabase(standby.url, 'app');

      // 3. The bridge, given both servers.
      const dir = await tempDir();
      cleanups.push(() => dir.remove());
      await writeTree(dir.path, { 'hooks/orders/index.js': extension });
      const file = join(dir.path, 'delivered.log');
      const both = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/app`;
      const cli: RunningCli = startCli(['start', '-e', dir.path], {
        env: {
          DATABASE_URL: both,
          HOOKBRIDGE_SLOT_FAILOVER: 'true',
          FILTER_TRANSPORT: transport,
          FILTER_TIMEOUT_MS: String(FILTER_TIMEOUT_MS),
          RECORD_FILE: file,
          LOG_LEVEL: 'info',
        },
      });
      cleanups.push(async () => void (await cli.stop('SIGKILL')));
      await cli.waitForLog('ready');
      // doctor, through the same host list, sees the primary's side of the failover set-up.
      const doctor = await runCli(['doctor'], { env: { DATABASE_URL: both, HOOKBRIDGE_SLOT_FAILOVER: 'true' } });
      expect(doctor.stdout).toContain(`✓ failover slot: synchronized_standby_slots = '${STANDBY_SLOT}'; slot "hookbridge" is a failover slot`);
      await withClient(appOnPrimary, async (c) => {
        await c.query(`insert into orders values (0, 'first')`);
        expect((await c.query(`select note from orders where id = 0`)).rows).toEqual([{ note: 'FIRST' }]);
      });

      // 4. Writes flow; the standby holds a synchronised copy of the slot (a failover slot).
      const before = startWriter(appOnPrimary, 1);
      await waitFor(
        async () => {
          const { rows } = await withClient(appOnStandby, (c) =>
            c.query<{ synced: boolean; temporary: boolean; failover: boolean }>(
              `select synced, temporary, failover from pg_replication_slots where slot_name = 'hookbridge'`,
            ),
          );
          return rows[0]?.synced === true && rows[0].temporary === false && rows[0].failover === true;
        },
        { timeoutMs: 60_000, message: () => `the standby never synchronised the failover slot:\n${cli.output()}` },
      );
      await waitFor(async () => (await recorded(file)).size >= 100 && before.committed.length >= 200, {
        timeoutMs: 60_000,
        message: () => `deliveries never started:\n${cli.output()}`,
      });

      // 5. The primary dies mid-stream (an immediate stop: no shutdown checkpoint, sessions cut), the standby is promoted.
      process.kill(await postmasterPid(primaryDir), 'SIGQUIT');
      await before.stop();
      await waitFor(async () => !(await readFile(join(primaryDir, 'postmaster.pid'), 'utf8').catch(() => '')), {
        timeoutMs: 30_000,
        message: 'the primary did not go',
      });
      await withClient(standby.url, (c) => c.query('select pg_promote(true, 60)'));
      const promotedAt = Date.now();

      // 6. Filters answer on the new primary: each try is filtered or refused, never passed unfiltered.
      let filteredAfterMs: number | undefined;
      await withClient(appOnStandby, async (c) => {
        for (let id = 1_000_000; filteredAfterMs === undefined; id++) {
          try {
            await c.query(`insert into orders values ($1, 'after')`, [id]);
            const { rows } = await c.query<{ note: string }>(`select note from orders where id = $1`, [id]);
            expect(rows).toEqual([{ note: 'AFTER' }]);
            filteredAfterMs = Date.now() - promotedAt;
          } catch (error) {
            if (error instanceof Error && error.message.includes('expected')) throw error;
            expect((error as { code?: string }).code, String(error)).toMatch(/^HB50[34]$/);
            if (Date.now() - promotedAt > 60_000) throw new Error(`filters never answered on the new primary:\n${cli.output()}`, { cause: error });
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        }
        await expect(c.query(`insert into orders values (2000000, 'reject')`)).rejects.toThrow(/rejected by the filter/);
      });

      // 7. More writes on the new primary; every committed row of both reaches the action hooks.
      const after = startWriter(appOnStandby, 100_000);
      await waitFor(() => after.committed.length >= 100, { timeoutMs: 30_000, message: 'the writer did not run on the new primary' });
      await after.stop();
      const committed = ['0', ...before.committed, ...after.committed];
      await waitFor(
        async () => {
          const got = await recorded(file);
          return committed.every((key) => got.has(key));
        },
        { timeoutMs: 60_000, message: 'every committed row delivered' },
      ).catch(() => undefined);
      const got = await recorded(file);
      const lost = committed.filter((key) => !got.has(key));
      process.stdout.write(
        `[failover ${transport}] committed=${committed.length} delivered=${got.size} lost=${lost.length}; filters answered ${filteredAfterMs} ms after the promotion\n`,
      );
      expect(lost, cli.output()).toEqual([]);
      // The stream started again on the new primary (its instance session, hence its leadership, went with
      // the old one: a new stream, from the synchronised slot's own position).
      expect(cli.logLines().filter((l) => l['msg'] === 'replication streaming').length, cli.output()).toBeGreaterThanOrEqual(2);
      expect(await cli.stop('SIGTERM')).toBe(0);
    },
    180_000,
  );
});
