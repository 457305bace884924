/**
 * Writers test an instance's "serving" lock by taking it shared for a moment (sql/000013.sql,
 * filter_call). An instance that starts while one of them holds it must not stop serving for a second
 * (a loaded machine stretches that moment): in CI, a bridge started beside a leader missed it once,
 * and when the leader was killed a second later, every writer found no bridge serving. The instance
 * waits a moment for the lock (a request that waits makes writers' tests fail, so they take it as
 * serving), and says nothing unless a session keeps it (cluster.test.ts covers that one).
 */
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { lockClassFor } from '../../bridge/filters/tickets.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor } from '../support/helpers.js';

const db = useTestDatabase();
let tb: TestBridge | undefined;
afterAll(async () => {
  await tb?.dispose();
});

it('takes its serving lock once a writer testing it lets go, without an error', async () => {
  const holder = new pg.Client({ connectionString: db.url });
  const watcher = new pg.Client({ connectionString: db.url });
  await holder.connect();
  await watcher.connect();
  const serving = lockClassFor('hookbridge') + 3;
  let released = false;
  let starting: Promise<TestBridge> | undefined;
  try {
    // The first instance on a database takes slot 0.
    await holder.query(`select pg_advisory_lock_shared($1, 0)`, [serving]);
    starting = startTestBridge(db.url, {});
    // Let go while the instance's request waits (a writer's moment, stretched).
    await waitFor(
      async () => {
        const { rowCount } = await watcher.query(
          `select 1 from pg_locks where locktype = 'advisory' and not granted and classid = $1::oid and objid = 0 and objsubid = 2`,
          [serving],
        );
        if (rowCount) await holder.query(`select pg_advisory_unlock_shared($1, 0)`, [serving]);
        released = rowCount === 1;
        return released;
      },
      { timeoutMs: 20_000, intervalMs: 5, message: 'the instance never waited for its serving lock (it only tried it)' },
    );
    tb = await starting;
    await waitFor(() => tb?.bridge.health()['instance'] && (tb.bridge.health()['instance'] as { serving: boolean }).serving, {
      message: 'the instance never served',
    });
    const errors = tb.log.lines().filter((l) => String(l['msg']).startsWith("another session holds this instance's serving lock"));
    expect(errors).toEqual([]);
  } finally {
    if (!released) await holder.query(`select pg_advisory_unlock_all()`).catch(() => undefined);
    // A failed wait above leaves the start running: stopped here, not leaked.
    tb ??= await starting?.catch(() => undefined);
    await holder.end();
    await watcher.end();
  }
}, 60_000);
