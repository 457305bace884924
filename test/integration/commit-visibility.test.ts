/**
 * Action hooks run once other sessions see their transaction (replication/visibility.ts). A walsender
 * sends a commit as soon as it is flushed; under synchronous replication the writer's session makes it
 * visible only once a standby acknowledged it. With synchronous_standby_names naming a standby that is
 * not there, every commit stops in that window for as long as the test likes: the hook must not run
 * until the write is released (past 5 s, /health says why action events wait), and then it reads its
 * row back. A synchronous_standby_names that names the bridge's own replication connection ('*')
 * makes commits wait for the bridge itself: that must not deadlock, also while the bridge catches up
 * after a reconnect. A server of its own: the setting is server-wide and would stop every other test's
 * commits.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { resolveConfig } from '../../bridge/config.js';
import { doctor } from '../../bridge/inspect.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { waitFor, withClient } from '../support/helpers.js';
import { startOwnServer, type OwnServer } from './replication-faults-support.js';

const seen: Array<{ name: string; readBack: string | null }> = [];
(globalThis as Record<string, unknown>)['__visibilitySeen'] = seen;
let server: OwnServer;
let tb: TestBridge;

async function setSynchronousStandbys(names: string | undefined): Promise<void> {
  await withClient(server.url, async (c) => {
    await c.query(names === undefined ? `alter system reset synchronous_standby_names` : `alter system set synchronous_standby_names = '${names}'`);
    await c.query(`select pg_reload_conf()`);
  });
}

/** What `hookbridge doctor` says about synchronous replication. */
async function synchronousCheck() {
  const pool = new pg.Pool({ connectionString: server.url, max: 1 });
  try {
    const checks = await doctor(pool, resolveConfig({ databaseUrl: server.url, slotName: tb.slotName }, {}));
    return checks.find((c) => c.name === 'synchronous replication');
  } finally {
    await pool.end();
  }
}

beforeAll(async () => {
  server = await startOwnServer('commit-visibility');
  await withClient(server.url, (c) => c.query(`create table notes (id serial primary key, name text not null)`));
  tb = await startTestBridge(server.url, {
    'hooks/read-back/index.js': `
      module.exports = ({ action }) => {
        action('notes.items.create', async ({ key, payload }, { database }) => {
          const row = await database('notes').select('name').where('id', key).first();
          globalThis.__visibilitySeen.push({ name: payload.name, readBack: row ? row.name : null });
        });
      };`,
  });
  await waitFor(() => tb.bridge.actions?.streaming, { message: 'the stream never started' });
}, 120_000);

afterAll(async () => {
  await setSynchronousStandbys(undefined).catch(() => undefined);
  await tb?.dispose();
  await server?.dispose();
});

it('runs an action hook only once its write is visible: a commit held by synchronous replication waits, then is read back', async () => {
  await setSynchronousStandbys('standby_that_is_not_there');
  // A standby of its own name is no concern of doctor's.
  expect(await synchronousCheck()).toMatchObject({ ok: true, detail: "synchronous_standby_names = 'standby_that_is_not_there'" });
  const writer = new pg.Client({ connectionString: server.url, application_name: 'held-writer' });
  await writer.connect();
  try {
    const written = writer.query(`insert into notes (name) values ('held')`);
    written.catch(() => undefined);
    // Flushed and sent to the bridge, not yet visible: the writer waits for the standby.
    await waitFor(
      async () =>
        (await withClient(server.url, (c) => c.query(`select 1 from pg_stat_activity where application_name = 'held-writer' and wait_event = 'SyncRep'`)))
          .rowCount === 1,
      { message: 'the commit never waited for the standby' },
    );
    const heldXid = (
      await withClient(server.url, (c) =>
        c.query<{ xid: string }>(`select backend_xid::text as xid from pg_stat_activity where application_name = 'held-writer'`),
      )
    ).rows[0]?.xid;
    const waitLogged = () =>
      tb.log.lines().some((l) => l['msg'] === 'action hooks wait until other sessions see a transaction' && String(l['xid']) === heldXid);
    await waitFor(() => waitLogged() || seen.length > 0, { message: 'the bridge never received the held transaction' });
    expect(seen, 'the hook ran while the write was invisible to other sessions').toEqual([]);
    // Held past 5 s: a warning, and /health says why action events wait.
    await waitFor(() => String(tb.bridge.health()['reason']).includes('a committed transaction is not visible to other sessions yet'), {
      message: () => `health never named the wait: ${JSON.stringify(tb.bridge.health()['reason'])}`,
    });
    expect(seen).toEqual([]);

    await setSynchronousStandbys(undefined);
    await written;
    await waitFor(() => seen.length > 0, { message: 'the action never ran after the commit was released' });
    expect(seen).toEqual([{ name: 'held', readBack: 'held' }]);
    await waitFor(() => tb.bridge.health().status === 'ok', { message: () => `health stayed unavailable: ${JSON.stringify(tb.bridge.health()['reason'])}` });
    expect(await synchronousCheck()).toMatchObject({ ok: true, detail: 'off (synchronous_standby_names is empty)' });
  } finally {
    await setSynchronousStandbys(undefined);
    await writer.end();
  }
}, 60_000);

it("does not deadlock when synchronous_standby_names names the bridge's own connection, also across a reconnect: commits go through, once warned", async () => {
  seen.length = 0;
  await setSynchronousStandbys('*');
  try {
    await waitFor(
      async () =>
        (
          await withClient(server.url, (c) =>
            c.query(`select 1 from pg_stat_replication where application_name = 'hookbridge:replication' and sync_state = 'sync'`),
          )
        ).rowCount === 1,
      { message: "the bridge's walsender never became the synchronous standby" },
    );
    const notices: string[] = [];
    await withClient(server.url, async (c) => {
      c.on('notice', (notice) => notices.push(notice.message ?? ''));
      // A deadlock would hold a commit forever (statement_timeout ends before the commit): it is
      // cancelled after 30 s, which Postgres reports as a warning the test fails on.
      const pid = (await c.query<{ pid: number }>(`select pg_backend_pid() as pid`)).rows[0]!.pid;
      const canceller = setInterval(
        () => void withClient(server.url, (admin) => admin.query(`select pg_cancel_backend($1)`, [pid])).catch(() => undefined),
        30_000,
      );
      try {
        await c.query(`insert into notes (name) values ('first')`);
        await c.query(`insert into notes (name) values ('second')`);
        // The walsender gone, the next commit waits until the bridge is back and has caught up.
        await c.query(`select pg_terminate_backend(pid) from pg_stat_replication where application_name = 'hookbridge:replication'`);
        await c.query(`insert into notes (name) values ('after a reconnect')`);
      } finally {
        clearInterval(canceller);
      }
    });
    expect(notices).toEqual([]);
    await waitFor(() => seen.length === 3, { message: () => `the actions did not run: ${JSON.stringify(seen)}` });
    const warnings = tb.log.lines().filter((l) => String(l['msg']).startsWith("synchronous_standby_names names this bridge's replication connection"));
    expect(warnings).toHaveLength(1);
    expect(await synchronousCheck()).toMatchObject({ ok: false, fix: expect.stringMatching(/^name the standbys in synchronous_standby_names/) });
  } finally {
    await setSynchronousStandbys(undefined);
  }
}, 120_000);
