/** Barriers on a bridge's replication slot, for tests that assert something did not happen. */
import { waitFor, withClient } from './helpers.js';

/**
 * Waits until the slot is confirmed past where WAL stands now. The confirmed position only moves past
 * transactions whose changes were all handled or parked (bridge/replication/pipeline.ts), or past a
 * keepalive's position while nothing is owed (stream.ts): so when it returns, every change committed
 * before the call has been through its action hooks, and one that did not reach them never will
 * (short of a redelivery after a restart).
 */
export async function waitUntilHandled(url: string, slotName: string, options: { timeoutMs?: number } = {}): Promise<void> {
  await withClient(url, async (c) => {
    const target = (await c.query<{ lsn: string }>(`select pg_current_wal_lsn()::text as lsn`)).rows[0]?.lsn as string;
    await waitFor(
      async () =>
        (
          await c.query<{ passed: boolean | null }>(`select confirmed_flush_lsn >= $2::pg_lsn as passed from pg_replication_slots where slot_name = $1`, [
            slotName,
            target,
          ])
        ).rows[0]?.passed === true,
      { timeoutMs: options.timeoutMs ?? 20_000, message: `slot ${slotName} confirmed past ${target}, where WAL stood` },
    );
  });
}
