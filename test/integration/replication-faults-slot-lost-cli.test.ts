/**
 * The CLI's side of a slot invalidated while it runs (issue 14): the bridge exits non-zero with
 * E_SLOT_LOST (its action stream's onFatal), `status` and `doctor` say the slot is lost and which
 * changes are gone, and a start refuses with the same message.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { runCli, startCli, type RunningCli } from '../support/cli.js';
import { serverMajor } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';
import { outrunSlot, startOwnServer, waitForSlotLost } from './replication-faults-support.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

it('the CLI exits non-zero with E_SLOT_LOST when its slot is invalidated while it runs', async () => {
  const own = await startOwnServer('slot-lost-cli', { max_slot_wal_keep_size: '1MB' });
  cleanups.push(() => own.dispose());
  await withClient(own.url, (c) =>
    c.query(`create table orders (id bigserial primary key, note text); create table filler (id bigserial primary key, note text)`),
  );
  const dir = await tempDir();
  cleanups.push(() => dir.remove());
  // The handler returns only once the CLI gave up on its lost slot (RELEASE_FILE): the bridge lags behind
  // its slot until then, and stops without waiting out its 10 s grace for a handler that never returns.
  await writeTree(dir.path, {
    'hooks/blocker/index.js': `
      const { existsSync } = require('node:fs');
      module.exports = ({ action }, { env }) => {
        action('orders.items.create', () => new Promise((resolve) => {
          const poll = setInterval(() => { if (existsSync(env.RELEASE_FILE)) { clearInterval(poll); resolve(); } }, 50);
        }));
      };`,
  });
  const release = join(dir.path, 'release');
  const slot = `hb_lost_${randomBytes(3).toString('hex')}`;
  const env = { DATABASE_URL: own.url, HOOKBRIDGE_SLOT: slot, ACTION_TIMEOUT_MS: '600000', RELEASE_FILE: release };
  const cli: RunningCli = startCli(['start', '-e', dir.path], { env });
  cleanups.push(() => cli.stop('SIGKILL'));
  await cli.waitForLog('ready');
  // The walsender sent the row on to the bridge, whose handler for it never returns.
  await withClient(own.url, async (c) => {
    await c.query(`insert into orders (note) values ('stuck')`);
    const { rows } = await c.query<{ lsn: string }>(`select pg_current_wal_lsn()::text as lsn`);
    await waitFor(
      async () =>
        (
          await c.query<{ sent: boolean | null }>(
            `select r.sent_lsn >= $2::pg_lsn as sent from pg_stat_replication r join pg_replication_slots s on s.active_pid = r.pid where s.slot_name = $1`,
            [slot, rows[0]?.lsn],
          )
        ).rows[0]?.sent === true,
      { message: 'the walsender never sent the row' },
    );
  });

  const exited = new Promise<number | null>((resolve) => cli.child.on('close', resolve));
  const checkpointAt = await outrunSlot(own.url);
  await waitForSlotLost(own.url, slot);
  // The CLI gives up with E_SLOT_LOST while its handler still blocks; only then is the handler let go,
  // which spares the CLI its 10 s shutdown grace.
  const isFatal = (l: Record<string, unknown>) => (l['err'] as { code?: string } | undefined)?.code === 'E_SLOT_LOST' || l['code'] === 'E_SLOT_LOST';
  await waitFor(() => cli.logLines().some(isFatal), { timeoutMs: 30_000, message: () => `the CLI never gave up with E_SLOT_LOST:\n${cli.output()}` });
  await writeFile(release, '');
  const code = await Promise.race([exited, new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 30_000))]);
  process.stdout.write(
    `[replication-faults] invalidated slot: the CLI exited ${code === 'running' ? 'not at all' : `(code ${String(code)}) ${Date.now() - checkpointAt} ms after the checkpoint`}\n`,
  );
  expect(code, cli.output()).not.toBe('running');
  expect(code).not.toBe(0);
  const fatal = cli.logLines().find(isFatal);
  expect(fatal, cli.output()).toBeDefined();

  // status says so, through the binary; doctor fails on it.
  const text = await runCli(['status', '-e', dir.path], { env });
  expect(text.stdout).toMatch(
    // PostgreSQL 17 and newer say why a slot was invalidated.
    new RegExp(
      `^slot ${slot}: ✗ lost \\(invalidated${serverMajor() >= 17 ? ': wal_removed' : ''}\\): changes committed after [0-9A-F]+/[0-9A-F]+ were never delivered`,
      'm',
    ),
  );
  const doctorRun = await runCli(['doctor'], { env });
  expect(doctorRun.stdout).toMatch(new RegExp(`✗ replication slot "${slot}": lost`));
  expect(doctorRun.code).toBe(1);
  // And a start refuses with the same message.
  const restart = await runCli(['start', '-e', dir.path], { env, timeoutMs: 60_000 });
  expect(restart.code).not.toBe(0);
  expect(restart.stdout + restart.stderr).toContain(`The replication slot "${slot}" was invalidated`);
}, 150_000);
