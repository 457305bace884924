/**
 * A replication connection that died is noticed within seconds (issue 14): the walsender terminated
 * (pg_terminate_backend) — also while reading is paused for backpressure —, or the connection gone
 * silent without closing (a network partition, through a proxy that stops forwarding): the stream says
 * it is not streaming (so /health turns 503) within 5 s, comes back by itself, and nothing written
 * meanwhile is lost.
 */
import { afterAll, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';
import { startFreezableProxy, startStandaloneStream, type FreezableProxy, type StandaloneStream } from './replication-faults-support.js';

const db = useTestDatabase();
let tb: TestBridge | undefined;
let stream: StandaloneStream | undefined;
let pausedStream: StandaloneStream | undefined;
let proxy: FreezableProxy | undefined;
const gate: { open?: () => void; probed?: boolean; handled: Set<string> } = { handled: new Set() };
(globalThis as Record<string, unknown>)['__pausedGate'] = gate;
afterAll(async () => {
  gate.open?.();
  await tb?.dispose();
  await stream?.dispose();
  await pausedStream?.dispose();
  await proxy?.close();
});

const delivered: string[] = [];
(globalThis as Record<string, unknown>)['__walsenderDelivered'] = delivered;

async function insertJournal(note: string, count: number): Promise<string[]> {
  return withClient(db.url, async (c) => {
    const { rows } = await c.query<{ id: string }>(`insert into journal (note) select $1 || g from generate_series(1, $2::int) g returning id`, [note, count]);
    return rows.map((r) => r.id);
  });
}

const walsenderPid = (slot: string) =>
  withClient(
    db.url,
    async (c) =>
      (await c.query<{ pid: number | null }>(`select active_pid as pid from pg_replication_slots where slot_name = $1`, [slot])).rows[0]?.pid ?? null,
  );

/** Samples a flag every 5 ms: the first moment it says false. */
function watchStreaming(streaming: () => boolean | undefined): { noticedAt: () => number | undefined; stop: () => void } {
  let noticedAt: number | undefined;
  const sampler = setInterval(() => {
    if (noticedAt === undefined && streaming() === false) noticedAt = Date.now();
  }, 5);
  return { noticedAt: () => noticedAt, stop: () => clearInterval(sampler) };
}

it('notices a terminated walsender within 5 s, reconnects, and loses nothing', async () => {
  await withClient(db.url, (c) => c.query(`create table journal (id bigserial primary key, note text)`));
  tb = await startTestBridge(db.url, {
    'hooks/recorder/index.js': `module.exports = ({ action }) => { action('journal.items.create', ({ key }) => { globalThis.__walsenderDelivered.push(String(key)); }); };`,
  });
  const bridge = tb.bridge;
  await waitFor(() => bridge.healthy, { message: 'the bridge never became healthy' });
  const before = await insertJournal('before ', 10);
  await waitFor(() => before.every((id) => delivered.includes(id)), { message: 'rows before were not delivered' });

  const pid = await walsenderPid(tb.slotName);
  expect(pid).not.toBeNull();
  const watch = watchStreaming(() => bridge.actions?.streaming);
  // What /health answers, built on the same flags.
  const health = watchStreaming(() => bridge.health().status === 'ok');
  const killedAt = Date.now();
  await withClient(db.url, (c) => c.query(`select pg_terminate_backend($1)`, [pid]));
  const during = await insertJournal('during ', 10);
  try {
    await waitFor(() => watch.noticedAt() !== undefined && health.noticedAt() !== undefined, {
      timeoutMs: 5_000,
      message: 'the bridge still says it streams (or is healthy) 5 s after its walsender was terminated',
    });
  } finally {
    watch.stop();
    health.stop();
  }
  process.stdout.write(
    `[replication-faults] terminated walsender noticed after ${(watch.noticedAt() as number) - killedAt} ms (health unavailable after ${(health.noticedAt() as number) - killedAt} ms)\n`,
  );

  await waitFor(() => bridge.actions?.streaming && bridge.healthy, { timeoutMs: 30_000, message: 'the stream did not come back' });
  const newPid = await walsenderPid(tb.slotName);
  expect(newPid).not.toBe(pid);
  const after = await insertJournal('after ', 10);
  const expected = [...before, ...during, ...after];
  await waitFor(() => expected.every((id) => delivered.includes(id)), {
    timeoutMs: 30_000,
    message: () => `lost: ${expected.filter((id) => !delivered.includes(id)).join(', ')}`,
  });
});

it('notices a replication connection gone silent within 5 s, reconnects once it can, and loses nothing', async () => {
  await withClient(db.url, (c) => c.query(`create table ledger (id bigserial primary key, note text)`));
  const seen: string[] = [];
  (globalThis as Record<string, unknown>)['__silentDelivered'] = seen;
  proxy = await startFreezableProxy(db.url);
  stream = await startStandaloneStream(
    db.url,
    {
      'hooks/recorder/index.js': `module.exports = ({ action }) => { action('ledger.items.create', ({ key }) => { globalThis.__silentDelivered.push(String(key)); }); };`,
    },
    { replicationUrl: proxy.url },
  );
  const actions = stream.actions;
  const insertLedger = (note: string) =>
    withClient(db.url, async (c) =>
      (await c.query<{ id: string }>(`insert into ledger (note) select $1 || g from generate_series(1, 10) g returning id`, [note])).rows.map((r) => r.id),
    );
  const before = await insertLedger('before ');
  await waitFor(() => before.every((id) => seen.includes(id)), { message: 'rows before were not delivered' });

  const watch = watchStreaming(() => actions.streaming);
  const frozenAt = Date.now();
  proxy.freeze();
  const during = await insertLedger('during ');
  try {
    await waitFor(() => watch.noticedAt() !== undefined, {
      timeoutMs: 5_000,
      message: 'the stream still says it streams 5 s after its connection went silent',
    });
  } finally {
    watch.stop();
  }
  process.stdout.write(`[replication-faults] silent replication connection noticed after ${(watch.noticedAt() as number) - frozenAt} ms\n`);
  expect(actions.healthy).toBe(false);
  expect(stream.fatal).toEqual([]);

  // The partition ends: the old connection is gone on both sides, new ones go through.
  proxy.heal();
  await waitFor(() => actions.streaming, { timeoutMs: 30_000, message: 'the stream did not reconnect' });
  const after = await insertLedger('after ');
  const expected = [...before, ...during, ...after];
  await waitFor(() => expected.every((id) => seen.includes(id)), {
    timeoutMs: 30_000,
    message: () => `lost: ${expected.filter((id) => !seen.includes(id)).join(', ')}`,
  });
});

it('notices a terminated walsender within 5 s while reading is paused for backpressure', async () => {
  // One transaction: a hot row's create and updates up to one short of the pipeline's high-water mark
  // (10,000 changes in flight, pipeline.ts), then a probe row, then more rows. The hot row's changes
  // run one after another, so they hold one handler slot and the probe runs beside them: it is the
  // change that fills the pipeline, and reading stops right after it (until 5,000 are left in flight,
  // which the gate holds off). So once the probe was handled, the stream is paused, not reading.
  const highWater = 10_000;
  const later = 20_000;
  await withClient(db.url, (c) => c.query(`create table heap (id int primary key, v int not null default 0)`));
  pausedStream = await startStandaloneStream(
    db.url,
    {
      // Every handler but the probe's waits for the gate.
      'hooks/gated/index.js': `
        let open;
        const handle = async ({ id, key, keys }) => {
          if ((key ?? keys[0]) === 2) globalThis.__pausedGate.probed = true;
          else await (open ??= new Promise((resolve) => { globalThis.__pausedGate.open = resolve; }));
          globalThis.__pausedGate.handled.add(id);
        };
        module.exports = ({ action }) => {
          action('heap.items.create', handle);
          action('heap.items.update', handle);
        };`,
    },
    { actionTimeoutMs: 600_000 },
  );
  const actions = pausedStream.actions;
  await withClient(db.url, (c) =>
    c.query(`do $$
      begin
        insert into heap (id) values (1);
        for i in 1 .. ${highWater - 2} loop
          update heap set v = i where id = 1;
        end loop;
        insert into heap (id) values (2);
        insert into heap (id) select g from generate_series(3, ${later + 2}) g;
      end $$`),
  );
  const events = highWater + later;
  await waitFor(() => gate.probed, { timeoutMs: 30_000, message: 'the probe was never handled' });
  expect(actions.streaming).toBe(true);

  const pid = await walsenderPid(pausedStream.slotName);
  const watch = watchStreaming(() => actions.streaming);
  const killedAt = Date.now();
  await withClient(db.url, (c) => c.query(`select pg_terminate_backend($1)`, [pid]));
  try {
    await waitFor(() => watch.noticedAt() !== undefined, {
      timeoutMs: 5_000,
      message: 'the paused stream still says it streams 5 s after its walsender was terminated',
    });
  } finally {
    watch.stop();
  }
  process.stdout.write(`[replication-faults] terminated walsender noticed after ${(watch.noticedAt() as number) - killedAt} ms while reading was paused\n`);

  gate.open?.();
  await waitFor(() => actions.streaming, { timeoutMs: 60_000, message: 'the stream did not come back' });
  await waitFor(() => gate.handled.size === events, { timeoutMs: 60_000, message: () => `${gate.handled.size} of ${events} changes delivered` });
}, 120_000);

it('waits out the silence of a walsender decoding a large transaction no publication wants (review: it used to reconnect for ever)', async () => {
  await withClient(db.url, (c) => c.query(`create table bulk_unhooked (id int, note text); create table bulk_after (id bigserial primary key, note text)`));
  const seen: string[] = [];
  (globalThis as Record<string, unknown>)['__bulkDelivered'] = seen;
  // A silence limit of 0.4 s (3 s in production): a transaction of a million rows keeps the walsender
  // silent that long here, where millions were needed against the default.
  const bulk = await startStandaloneStream(
    db.url,
    {
      'hooks/recorder/index.js': `module.exports = ({ action }) => { action('bulk_after.items.create', ({ key }) => { globalThis.__bulkDelivered.push(String(key)); }); };`,
    },
    { liveness: { pingIntervalMs: 150, silentLimitMs: 400 } },
  );
  const waitedOut = () => bulk.log.lines().filter((l) => l['msg'] === 'the walsender is busy decoding: its silence is waited out');
  try {
    const actions = bulk.actions;
    await waitFor(() => actions.streaming, { message: 'the stream never streamed' });
    const watch = watchStreaming(() => actions.streaming);
    try {
      // Transactions the walsender decodes and sends nothing of, until one kept it silent past the limit
      // (else this test would prove nothing: a faster machine decodes a million rows sooner).
      for (let round = 1; waitedOut().length === 0; round++) {
        if (round > 5) throw new Error('no silence of the walsender lasted 0.4 s in 5 transactions of a million rows: nothing was tested');
        await withClient(db.url, (c) => c.query(`insert into bulk_unhooked select g, 'x' from generate_series(1, 1000000) g`));
        const { rows } = await withClient(db.url, (c) => c.query<{ id: string }>(`insert into bulk_after (note) values ('after the bulk') returning id`));
        await waitFor(() => seen.includes(rows[0]?.id as string), { timeoutMs: 120_000, message: 'the row after the bulk insert never arrived' });
      }
      process.stdout.write(`[walsender] silences waited out: ${waitedOut().length}\n`);
      expect(watch.noticedAt()).toBeUndefined();
    } finally {
      watch.stop();
    }
  } finally {
    await bulk.dispose();
  }
}, 180_000);
