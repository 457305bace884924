/**
 * A writer's wait for a verdict is bounded, whatever state the bridge is in — its event loop blocked by
 * a hook, stopped with SIGSTOP — and pg_cancel_backend and statement_timeout end it, leaving nothing
 * behind. On the run's server (18 by default) and 15 (Debian's), for both transports; dblink
 * itself cannot be interrupted before 17, which is why writers wait on a lock instead.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { dropTestSlot } from '../support/bridge.js';
import { startCli, type RunningCli } from '../support/cli.js';
import { inMatrixRun, serverMajor, useTestDatabase } from '../support/database.js';
import { debianPostgresAvailable, startDebianPostgres, type DebianPostgres } from '../support/debian-postgres.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
let pg15: DebianPostgres | undefined;

const BUSY_MS = 4_000;
const TIMEOUT_MS = 1_000;

const extension = `
  module.exports = ({ filter }) => {
    filter('jobs.items.create', (payload) => {
      // A hook that blocks the bridge's event loop: no timer of the bridge can fire meanwhile.
      if (payload.title === 'busy') { const end = Date.now() + ${BUSY_MS}; while (Date.now() < end) {} }
      return { ...payload, title: payload.title + ' (filtered)' };
    });
  };`;

// Debian's 15 beside the run's server where that is not 15 already — and not in `test:matrix`, whose
// runs on 14 to 17 cover each version with the run's own server.
const major = serverMajor();
const servers = [
  { name: `PostgreSQL ${major} (the run's server)`, url: async () => db.url },
  ...(major !== 15 && !inMatrixRun && debianPostgresAvailable(15)
    ? [
        {
          name: 'PostgreSQL 15 (Debian)',
          url: async () => {
            pg15 ??= await startDebianPostgres(15);
            return pg15.url;
          },
        },
      ]
    : []),
];
const cases = servers.flatMap((server) => (['direct', 'notify'] as const).map((transport) => ({ ...server, transport })));

afterAll(async () => {
  await pg15?.stop();
});

type Outcome = { code: string | undefined; message: string } | 'written';
const insert = (url: string, title: string, setup: string[] = []): Promise<Outcome> =>
  withClient(url, async (c) => {
    for (const statement of setup) await c.query(statement);
    return c.query(`insert into jobs (title) values ($1)`, [title]).then(
      () => 'written' as const,
      (e: pg.DatabaseError) => ({ code: e.code, message: e.message }),
    );
  });

describe.each(cases)('$name, $transport transport', ({ url: serverUrl, transport }) => {
  let url: string;
  let cli: RunningCli;
  let removeDir: () => Promise<void>;
  const slot = `hb_bounds_${transport}`;

  beforeAll(async () => {
    url = await serverUrl();
    await withClient(url, (c) => c.query(`create table if not exists jobs (id serial primary key, title text)`));
    const dir = await tempDir();
    removeDir = dir.remove;
    await writeTree(dir.path, { 'hooks/jobs/index.js': extension });
    cli = startCli(['start', '-e', dir.path], {
      // Two filter workers, the default (the test helper's is one): while a blocked hook holds one and it is
      // replaced, the other serves the next writer (with one, each test after a block waits for the new worker).
      env: { DATABASE_URL: url, HOOKBRIDGE_SLOT: slot, FILTER_TIMEOUT_MS: String(TIMEOUT_MS), FILTER_TRANSPORT: transport, FILTER_WORKERS: '2' },
    });
    const ready = await cli.waitForLog('filter transport ready');
    expect(ready['transport']).toBe(transport);
    await cli.waitForLog('ready');
  });

  afterAll(async () => {
    if (cli.child.signalCode === null && cli.child.exitCode === null) cli.child.kill('SIGCONT');
    await cli?.stop('SIGTERM');
    await dropTestSlot(url, slot);
    await removeDir?.();
  });

  /** Once the bridge is itself again, a plain write is filtered as usual. */
  const recovered = () =>
    waitFor(async () => (await insert(url, 'after')) === 'written', { timeoutMs: 30_000, message: 'writes never went through the bridge again' });

  it('gives the writer HB504 while a hook blocks the bridge, instead of waiting for it', async () => {
    const outcome = await insert(url, 'busy');
    expect(outcome).toMatchObject({ code: 'HB504' });
    await recovered();
    const titles = (await withClient(url, (c) => c.query<{ title: string }>(`select title from jobs`))).rows.map((r) => r.title);
    expect(titles).not.toContain('busy');
    expect(titles).not.toContain('busy (filtered)');
  });

  it('gives writers HB504 while the bridge is stopped (SIGSTOP), and serves them again after SIGCONT', async () => {
    await withClient(url, async (session) => {
      const write = (title: string) =>
        session.query(`insert into jobs (title) values ($1)`, [title]).then(
          () => 'written',
          (e: pg.DatabaseError) => e.code,
        );
      expect(await write('before')).toBe('written');
      cli.child.kill('SIGSTOP');
      try {
        // A session that reached the bridge before: it waits on its ticket, which times out.
        expect(await write('frozen')).toBe('HB504');
        // A new session, once the bridge's heartbeat is stale (1 s), does not even try to connect
        // (from PostgreSQL 17, dblink's connect would wait for a stopped bridge for ever). Stale as
        // the trigger judges it (filter_call), for every instance a writer may choose.
        await withClient(url, (admin) =>
          waitFor(
            async () =>
              (
                await admin.query<{ stale: boolean | null }>(
                  `select bool_and(hookbridge.filter_beat_of(slot) < extract(epoch from clock_timestamp()) * 1000 - 1000) as stale
                     from hookbridge.filter_endpoint where tickets > 0`,
                )
              ).rows[0]?.stale === true,
            { message: "the stopped bridge's heartbeat never went stale" },
          ),
        );
        expect(await insert(url, 'frozen, new session')).toMatchObject({ code: 'HB504' });
      } finally {
        cli.child.kill('SIGCONT');
      }
    });
    await recovered();
  });

  it('lets pg_cancel_backend end a waiting writer, which keeps no lock and writes again afterwards', async () => {
    let pid = 0;
    const writer = withClient(url, async (c) => {
      pid = (c as unknown as { processID: number }).processID;
      const first = await c.query(`insert into jobs (title) values ('busy')`).then(
        () => 'written',
        (e: pg.DatabaseError) => e.code,
      );
      const locks = await c.query<{ n: number }>(`select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()`);
      // The bridge may still be busy with the cancelled call: retry until it answers.
      let second = '';
      await waitFor(
        async () =>
          (second = await c.query(`insert into jobs (title) values ('same session')`).then(
            () => 'written',
            (e: pg.DatabaseError) => e.code ?? '',
          )) === 'written',
        { timeoutMs: 30_000, message: () => `the cancelled session never wrote again (last: ${second})` },
      );
      return { first, locks: locks.rows[0]?.n };
    });
    // One connection, opened before the writer waits: the cancel must land within FILTER_TIMEOUT_MS of
    // the wait starting (else the bridge's own HB504 comes first), also on a loaded machine.
    await withClient(url, async (admin) => {
      await waitFor(async () => (await admin.query(`select 1 from pg_stat_activity where pid = $1 and wait_event_type = 'Lock'`, [pid])).rowCount === 1, {
        intervalMs: 5,
        message: 'the writer never waited for its verdict',
      });
      await admin.query(`select pg_cancel_backend($1)`, [pid]);
    });
    expect(await writer).toEqual({ first: '57014', locks: 0 });
  });

  it('lets statement_timeout end a waiting writer', async () => {
    await recovered();
    expect(await insert(url, 'busy', [`set statement_timeout = 300`])).toMatchObject({ code: '57014' });
    await recovered();
  });

  it('does not end a writer whose statement_timeout was lowered inside its statement (PostgreSQL armed no timer)', async () => {
    await recovered();
    const outcome = await withClient(url, (c) =>
      c
        .query(`do $$ begin perform set_config('statement_timeout', '100ms', true); perform pg_sleep(0.3); insert into jobs (title) values ('lowered'); end $$`)
        .then(
          () => 'written',
          (e: pg.DatabaseError) => e.code,
        ),
    );
    expect(outcome).toBe('written');
  });

  it('keeps statement_timeout when the writer is starved while it and a wait slice fall due', async (ctx) => {
    await recovered();
    const outcome = await withClient(url, async (c) => {
      const pid = (c as unknown as { processID: number }).processID;
      try {
        process.kill(pid, 0);
      } catch {
        return 'cannot signal the server';
      }
      await c.query(`set statement_timeout = 300`);
      const write = c.query(`insert into jobs (title) values ('busy')`).then(
        () => 'written',
        (e: pg.DatabaseError) => ({ code: e.code, message: e.message }),
      );
      // Stopped from 150 to 750 ms: a wait slice's lock_timeout (due before 300) and statement_timeout
      // both fire before the backend runs again, and PostgreSQL reports only the lock timeout.
      await new Promise((resolve) => setTimeout(resolve, 150));
      process.kill(pid, 'SIGSTOP');
      await new Promise((resolve) => setTimeout(resolve, 600));
      process.kill(pid, 'SIGCONT');
      return write;
    });
    if (typeof outcome === 'string' && outcome !== 'written') return ctx.skip(outcome);
    expect(outcome).toMatchObject({ code: '57014', message: 'canceling statement due to statement timeout' });
    await recovered();
  });
});
