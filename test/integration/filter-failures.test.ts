/**
 * The filter path's failure modes with a real bridge process: SIGKILLed in the middle of a call,
 * and FILTER_FAILURE_MODE=open.
 */
import { afterAll, expect, it } from 'vitest';
import pg from 'pg';
import { dropTestSlot } from '../support/bridge.js';
import { startCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const SLOT = 'hb_filter_failures';
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await dropTestSlot(db.url, SLOT);
});

const slowFilter = `
  module.exports = ({ filter }) => {
    filter('notes.items.create', async (payload) => {
      if (payload.body === 'slow') await new Promise((r) => setTimeout(r, 3000));
      return { ...payload, body: payload.body + ' (filtered)' };
    });
  };`;

async function setup() {
  const dir = await tempDir();
  cleanups.push(() => dir.remove());
  await writeTree(dir.path, { 'hooks/notes/index.js': slowFilter });
  return dir.path;
}

it('fails a writer whose bridge is SIGKILLed mid-call, quickly, and works again after a restart', async () => {
  await withClient(db.url, (c) => c.query(`create table notes (id int primary key, body text)`));
  const dir = await setup();
  const env = { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: SLOT, FILTER_TIMEOUT_MS: '10000' };
  let cli = startCli(['start', '-e', dir], { env });
  await cli.waitForLog('ready');

  const writer = withClient(db.url, (c) => c.query(`insert into notes values (1, 'slow')`)).then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  // The writer is inside the trigger, waiting for the (slow) verdict.
  await waitFor(
    () =>
      withClient(db.url, async (c) => {
        const { rows } = await c.query(
          `select 1 from pg_stat_activity where datname = current_database() and state = 'active' and query like 'insert into notes values (1,%'`,
        );
        return rows.length === 1;
      }),
    { message: 'the insert never reached the trigger' },
  );
  await cli.stop('SIGKILL');
  // No hang: the writer hears of the dead bridge long before even the filter timeout would fire.
  const outcome = await Promise.race([writer, new Promise((resolve) => setTimeout(() => resolve('still waiting'), 20_000))]);
  expect(outcome).toMatchObject({ code: 'HB503' });
  expect(await withClient(db.url, async (c) => (await c.query(`select count(*)::int as n from notes`)).rows[0])).toEqual({ n: 0 });

  cli = startCli(['start', '-e', dir], { env });
  try {
    await cli.waitForLog('ready');
    await withClient(db.url, (c) => c.query(`insert into notes values (2, 'fast')`));
    expect(await withClient(db.url, async (c) => (await c.query(`select body from notes`)).rows)).toEqual([{ body: 'fast (filtered)' }]);
  } finally {
    expect(await cli.stop('SIGTERM')).toBe(0);
  }
});

it('lets writes pass unfiltered, with a warning, in failure mode "open"', async () => {
  const dir = await setup();
  const env = { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: SLOT, FILTER_FAILURE_MODE: 'open', FILTER_TIMEOUT_MS: '1000' };
  const cli = startCli(['start', '-e', dir], { env });
  await cli.waitForLog('ready');
  const warnings: string[] = [];
  await withClient(db.url, async (c) => {
    c.on('notice', (n) => warnings.push(n.message ?? ''));
    await c.query(`insert into notes values (10, 'slow')`);
  });
  expect(warnings.join('\n')).toMatch(/did not answer within 1000 ms; the row was written unfiltered/);
  const metrics = async (bridge: typeof cli) => {
    const port = bridge.logLines().find((l) => l['msg'] === 'http listening')?.['port'];
    return (await fetch(`http://127.0.0.1:${String(port)}/metrics`)).text();
  };
  expect(await metrics(cli)).toMatch(/hookbridge_filter_unfiltered_total\{reason="timeout"\} 1/);
  expect(await cli.stop('SIGTERM')).toBe(0);
  await withClient(db.url, async (c) => {
    c.on('notice', (n) => warnings.push(n.message ?? ''));
    await c.query(`insert into notes values (11, 'bridge down')`);
  });
  expect(warnings.join('\n')).toMatch(/INSERT row of public.notes written unfiltered/);
  // Anyone may emit a logical message: a forged one does not count.
  const after = await withClient(db.url, async (c) => {
    await c.query(`select pg_logical_emit_message(false, 'hookbridge.unfiltered', '{"reason":"unreachable"}')`);
    return (await c.query<{ lsn: string }>(`select pg_current_wal_lsn()::text as lsn`)).rows[0]?.lsn;
  });
  // Passes made while no bridge ran are counted once one reads the WAL again.
  const again = startCli(['start', '-e', dir], { env });
  try {
    await again.waitForLog('ready');
    await waitFor(
      () =>
        withClient(
          db.url,
          async (c) =>
            (await c.query(`select confirmed_flush_lsn >= $1::pg_lsn as ok from pg_replication_slots where slot_name = $2`, [after, SLOT])).rows[0]?.ok ===
            true,
        ),
      { timeoutMs: 20_000, message: 'the bridge never read past the forged message' },
    );
    expect(await metrics(again)).toMatch(/hookbridge_filter_unfiltered_total\{reason="unreachable"\} 1\n/);
  } finally {
    expect(await again.stop('SIGTERM')).toBe(0);
  }
  expect(await withClient(db.url, async (c) => (await c.query(`select id, body from notes where id >= 10 order by id`)).rows)).toEqual([
    { id: 10, body: 'slow' },
    { id: 11, body: 'bridge down' },
  ]);
});
