/**
 * A fast shutdown of Postgres never waits on a connected bridge (issue 14): a walsender exits only once
 * its client confirmed everything it sent, so the stream confirms what the server sent whenever nothing
 * is pending. A session holds an open transaction on an unpublished table (WAL moves past the last
 * commit the stream handled); `pg_ctl stop -m fast` (what the embedded server's stop() signals: SIGINT
 * to the postmaster) must finish within 10 s; after a restart every row written before is delivered.
 */
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { waitFor, withClient } from '../support/helpers.js';
import { startOwnServer, startStandaloneStream, type OwnServer } from './replication-faults-support.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const deliveries = new Map<string, string[]>();
(globalThis as Record<string, unknown>)['__faultsDelivered'] = deliveries;
const recorder = (name: string) => ({
  'hooks/recorder/index.js': `
    module.exports = ({ action }) => {
      action('journal.items.create', ({ key }) => {
        const map = globalThis.__faultsDelivered;
        map.set(${JSON.stringify(name)}, [...(map.get(${JSON.stringify(name)}) ?? []), String(key)]);
      });
    };`,
});
const delivered = (name: string) => deliveries.get(name) ?? [];

async function insertJournal(url: string, note: string, count: number): Promise<string[]> {
  return withClient(url, async (c) => {
    const { rows } = await c.query<{ id: string }>(`insert into journal (note) select $1 || g from generate_series(1, $2::int) g returning id`, [note, count]);
    return rows.map((r) => r.id);
  });
}

/** A session in an open transaction that wrote to a table nobody publishes; ended after the shutdown. */
async function holdOpenTransaction(url: string): Promise<pg.Client> {
  const holder = new pg.Client({ connectionString: url });
  holder.on('error', () => undefined);
  await holder.connect();
  await holder.query(`begin; insert into scratch (note) select repeat('x', 200) from generate_series(1, 1000)`);
  return holder;
}

async function timedFastStop(server: OwnServer, what: string): Promise<number> {
  const started = Date.now();
  await server.server.stop();
  const tookMs = Date.now() - started;
  process.stdout.write(`[replication-faults] fast shutdown (${what}) took ${tookMs} ms\n`);
  return tookMs;
}

async function ownServerWithTables(label: string): Promise<OwnServer> {
  const server = await startOwnServer(label);
  cleanups.push(() => server.dispose());
  await withClient(server.url, (c) =>
    c.query(`create table journal (id bigserial primary key, note text); create table scratch (id bigserial primary key, note text)`),
  );
  return server;
}

it('pg_ctl stop -m fast finishes within 10 s while the stream is connected and a session holds an open transaction', async () => {
  const server = await ownServerWithTables('fast-stop-stream');
  const stream = await startStandaloneStream(server.url, recorder('stream'));
  cleanups.push(() => stream.dispose());

  const before = await insertJournal(server.url, 'before ', 20);
  await waitFor(() => before.every((id) => delivered('stream').includes(id)), { message: 'the rows were not delivered before the shutdown' });
  const holder = await holdOpenTransaction(server.url);

  const tookMs = await timedFastStop(server, 'a stream on its own');
  await holder.end().catch(() => undefined);
  expect(tookMs).toBeLessThan(10_000);

  await server.restart();
  await waitFor(() => stream.actions.streaming, { timeoutMs: 60_000, message: 'the stream did not reconnect after the restart' });
  const after = await insertJournal(server.url, 'after ', 5);
  const expected = [...before, ...after];
  await waitFor(() => expected.every((id) => delivered('stream').includes(id)), {
    timeoutMs: 60_000,
    message: () => `lost: ${expected.filter((id) => !delivered('stream').includes(id)).join(', ')}`,
  });
}, 180_000);

it('and with a whole bridge connected', async () => {
  const server = await ownServerWithTables('fast-stop-bridge');
  const tb: TestBridge = await startTestBridge(server.url, recorder('bridge'), { logLevel: 'silent' });
  cleanups.push(() => tb.dispose());
  await waitFor(() => tb.bridge.actions?.streaming, { message: 'the stream never started' });

  const before = await insertJournal(server.url, 'before ', 20);
  await waitFor(() => before.every((id) => delivered('bridge').includes(id)), { message: 'the rows were not delivered before the shutdown' });
  const holder = await holdOpenTransaction(server.url);

  const tookMs = await timedFastStop(server, 'a bridge');
  await holder.end().catch(() => undefined);
  expect(tookMs).toBeLessThan(10_000);

  await server.restart();
  // Its cluster session went with the server: it leads again (or a restarted bridge resumes the slot).
  await waitFor(() => tb.bridge.actions?.streaming, { timeoutMs: 30_000, message: 'the bridge did not stream again' }).catch(() => tb.restart());
  const after = await insertJournal(server.url, 'after ', 5);
  const expected = [...before, ...after];
  await waitFor(() => expected.every((id) => delivered('bridge').includes(id)), {
    timeoutMs: 60_000,
    message: () => `lost: ${expected.filter((id) => !delivered('bridge').includes(id)).join(', ')}`,
  });
}, 180_000);
