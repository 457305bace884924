/**
 * A slot invalidated while the stream runs (issue 14): the bridge lags (a handler blocks, so nothing is
 * confirmed), WAL passes max_slot_wal_keep_size, a checkpoint invalidates the slot. The stream stops
 * for good with the E_SLOT_LOST a start gives (onFatal: the bridge exits on it, see
 * replication-faults-slot-lost-cli.test.ts), and `status` and `doctor` say the slot is lost and which
 * changes are gone. Before that, a healthy slot's retained WAL and distance to invalidation are shown.
 */
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { resolveConfig } from '../../bridge/config.js';
import { doctor, formatSlotStatus, status } from '../../bridge/inspect.js';
import { ensureSlot } from '../../bridge/replication/setup.js';
import { parseLsn } from '../../bridge/replication/lsn.js';
import { waitFor, withClient } from '../support/helpers.js';
import { outrunSlot, startOwnServer, startStandaloneStream, waitForSlotLost, type OwnServer, type StandaloneStream } from './replication-faults-support.js';

let server: OwnServer | undefined;
let stream: StandaloneStream | undefined;
let pool: pg.Pool | undefined;
const release: { fn?: () => void } = {};
(globalThis as Record<string, unknown>)['__slotLostRelease'] = release;
afterAll(async () => {
  release.fn?.();
  await stream?.dispose().catch(() => undefined);
  await pool?.end().catch(() => undefined);
  await server?.dispose();
});

it('stops with E_SLOT_LOST when the slot is invalidated under it, and status and doctor say what is gone', async () => {
  // max_slot_wal_keep_size below one segment: a slot behind the checkpoint's segment is invalidated by it.
  server = await startOwnServer('slot-lost', { max_slot_wal_keep_size: '1MB' });
  const url = server.url;
  await withClient(url, (c) => c.query(`create table orders (id bigserial primary key, note text); create table filler (id bigserial primary key, note text)`));
  stream = await startStandaloneStream(
    url,
    {
      'hooks/blocker/index.js': `
        module.exports = ({ action }) => {
          action('orders.items.create', () => new Promise((resolve) => { globalThis.__slotLostRelease.fn = resolve; }));
        };`,
    },
    { actionTimeoutMs: 600_000 },
  );
  const actions = stream.actions;
  const config = resolveConfig({ databaseUrl: url, slotName: stream.slotName }, {});
  pool = new pg.Pool({ connectionString: url, max: 2 });

  // The bridge lags from here: the handler of this row does not return.
  await withClient(url, (c) => c.query(`insert into orders (note) values ('stuck')`));
  await waitFor(() => release.fn !== undefined, { message: 'the handler never ran' });
  // What the bridge confirmed before it (on 14, the empty transactions of the CREATE TABLEs) reaches the
  // server within one status update: read the slot once it has, so that both name the same position.
  const position = (lsn: string | null | undefined) => (lsn ? parseLsn(lsn) : undefined);
  await waitFor(async () => position((await status(pool!, config)).slot.confirmedFlushLsn) === position(actions.confirmedLsn), {
    message: () => `the server never heard the bridge's confirmed position ${actions.confirmedLsn ?? '?'}`,
  });

  // A healthy slot: the WAL it retains and how much more may come before it is invalidated.
  const healthy = await status(pool, config);
  expect(healthy.slot).toMatchObject({ exists: true, lost: null, maxSlotWalKeepSize: '1MB' });
  expect(healthy.slot.retainedWalBytes).toBeGreaterThanOrEqual(0);
  expect(typeof healthy.slot.safeWalBytes).toBe('number');
  expect(formatSlotStatus(healthy.slot)).toMatch(/retains .* of WAL; (.* more before|past) max_slot_wal_keep_size \(1MB\)/);
  const confirmed = healthy.slot.confirmedFlushLsn as string;

  const checkpointAt = await outrunSlot(url);
  const lost = await waitForSlotLost(url, stream.slotName).then(() => true);
  expect(lost).toBe(true);

  await waitFor(() => stream?.fatal.length, {
    timeoutMs: 10_000,
    message: () =>
      `the stream did not give up:\n${stream?.log
        .lines()
        .map((l) => l['msg'])
        .join('\n')}`,
  });
  process.stdout.write(`[replication-faults] invalidated slot: the stream gave up ${Date.now() - checkpointAt} ms after the checkpoint\n`);
  const fatal = stream.fatal[0] as Error & { code?: string };
  expect(fatal.code).toBe('E_SLOT_LOST');
  expect(fatal.message).toContain(`The replication slot "${stream.slotName}" was invalidated`);
  expect(fatal.message).toContain(`changes committed after ${confirmed}`);
  expect(fatal.message).toContain(`SELECT pg_drop_replication_slot('${stream.slotName}')`);
  expect(actions.failure).toBe(fatal);
  expect(actions.healthy).toBe(false);
  expect(actions.streaming).toBe(false);
  // It stays down: no reconnect loop. A reconnect is announced as the connection is lost, before its
  // delay, and none was.
  const messages = () => stream!.log.lines().map((l) => l['msg']);
  expect(messages()).not.toContain('replication connection lost; reconnecting');
  // Nothing marks the stream's end for good, so give a reconnect attempt the time to show anyway: the
  // first comes within 250 ms (reconnectDelay in stream.ts) and logs 'replication: subscribing' at once.
  await new Promise((resolve) => setTimeout(resolve, 500));
  expect(actions.streaming).toBe(false);
  expect(messages().filter((m) => m === 'replication: subscribing')).toHaveLength(1);
  expect(messages().filter((m) => m === 'replication streaming')).toHaveLength(1);

  // A start says the same.
  const atStart = await ensureSlot(pool, stream.slotName).then(
    () => undefined,
    (error: Error & { code?: string }) => error,
  );
  expect(atStart?.code).toBe('E_SLOT_LOST');
  expect(atStart?.message).toContain(`changes committed after ${confirmed}`);

  // status and doctor: lost, and from where.
  const after = await status(pool, config);
  expect(after.slot.walStatus).toBe('lost');
  expect(after.slot.lost).toContain(`changes committed after ${confirmed}`);
  expect(after.slot.lost).toMatch(/WAL before [0-9A-F]+\/[0-9A-F]+ is removed/);
  expect(formatSlotStatus(after.slot)).toContain('✗ lost');
  const checks = await doctor(pool, config);
  const slotCheck = checks.find((c) => c.name === `replication slot "${stream?.slotName}"`);
  expect(slotCheck).toMatchObject({ ok: false });
  expect(slotCheck?.detail).toContain(`changes committed after ${confirmed}`);
  expect(slotCheck?.fix).toContain('pg_drop_replication_slot');
}, 120_000);
