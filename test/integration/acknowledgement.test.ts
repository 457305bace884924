/**
 * The slot is never confirmed past a change whose handler has not finished, whatever else the
 * stream sees meanwhile (later transactions, heartbeats, keepalives).
 */
import { afterAll, expect, it } from 'vitest';
import { HEARTBEAT_PREFIX } from '../../bridge/replication/change-events.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
let tb: TestBridge | undefined;
const release: { fn?: () => void } = {};
(globalThis as Record<string, unknown>)['__release'] = release;
afterAll(async () => {
  release.fn?.();
  await tb?.dispose();
});

const confirmedFlush = (slot: string) =>
  withClient(db.url, async (c) => {
    const { rows } = await c.query<{ lsn: string }>(`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = $1`, [slot]);
    return rows[0]?.lsn as string;
  });
const lsnLessThan = (a: string, b: string) =>
  withClient(db.url, async (c) => (await c.query<{ lt: boolean }>(`select $1::pg_lsn < $2::pg_lsn as lt`, [a, b])).rows[0]?.lt);

it('holds the confirmed position before an unfinished handler, then moves on once it finishes', async () => {
  await withClient(db.url, (c) => c.query(`create table acks (id int primary key)`));
  const handled: number[] = [];
  (globalThis as Record<string, unknown>)['__handled'] = handled;
  tb = await startTestBridge(
    db.url,
    {
      'hooks/blocker/index.js': `
      module.exports = ({ action }) => {
        action('acks.items.create', async ({ key }) => {
          if (key === 1) await new Promise((resolve) => { globalThis.__release.fn = resolve; });
          globalThis.__handled.push(key);
        });
      };`,
    },
    { actionTimeoutMs: 600_000 },
  );

  // Where WAL stands right after row 1's commit (the insert position: at or past its commit record's
  // end, whatever synchronous_commit says). What lies before may be confirmed (a heartbeat written
  // while row 1's transaction was open, say: Postgres re-sends a transaction that commits past the
  // confirmed position in full); nothing after may, while row 1's handler runs.
  const row1Committed = await withClient(db.url, async (c) => {
    await c.query(`insert into acks values (1)`);
    const lsn = (await c.query<{ lsn: string }>(`select pg_current_wal_insert_lsn()::text as lsn`)).rows[0]?.lsn as string;
    for (let i = 2; i <= 5; i++) await c.query(`insert into acks values ($1)`, [i]);
    return lsn;
  });
  await waitFor(() => handled.length === 4, { message: 'later transactions were not handled' });
  // A heartbeat (the message the bridge writes every 5 s; written here so as not to wait for one), then
  // row 6: the stream hands messages out in WAL order, so once row 6 is handled the heartbeat has been
  // through the pipeline.
  await withClient(db.url, async (c) => {
    await c.query(`select pg_logical_emit_message(false, $1, ''::text)`, [HEARTBEAT_PREFIX]);
    await c.query(`insert into acks values (6)`);
  });
  await waitFor(() => handled.length === 5, { message: 'the row after the heartbeat was not handled' });
  // Row 7, written once row 6 was handled. Waiting for it, the walsender sent a keepalive (it does
  // whenever it waits for WAL while less is confirmed than it sent), and before sending it, it read
  // the status updates sent so far. The stream handles a keepalive as it arrives, before what follows.
  await withClient(db.url, (c) => c.query(`insert into acks values (7)`));
  await waitFor(() => handled.length === 6, { message: 'the row after the keepalive was not handled' });
  // Confirming row 1, or anything after it (rows 2-7, heartbeats, keepalives), would put the bridge's
  // confirmed position, and the slot's, past `row1Committed`.
  expect(await lsnLessThan(row1Committed, tb.bridge.actions?.confirmedLsn as string)).toBe(false);
  const held = await confirmedFlush(tb.slotName);
  expect(await lsnLessThan(row1Committed, held)).toBe(false);
  const afterAll = await withClient(db.url, async (c) => (await c.query<{ lsn: string }>(`select pg_current_wal_lsn()::text as lsn`)).rows[0]?.lsn as string);
  release.fn?.();
  await waitFor(async () => !(await lsnLessThan(await confirmedFlush(tb!.slotName), afterAll)), {
    timeoutMs: 20_000,
    message: 'the slot did not advance after the handler finished',
  });
});
