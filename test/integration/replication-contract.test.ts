/**
 * What hookbridge relies on in `pg-logical-replication` (pinned in package.json), pinned through the one
 * module that wraps it (bridge/replication/stream.ts) against a real walsender:
 *
 * - confirming a handled transaction at its commit end LSN E puts the slot's confirmed_flush_lsn at E
 *   exactly (the library reports lsn + 1; the wrapper passes E - 1);
 * - nothing is confirmed before the consumer confirms (no automatic or timed acknowledgement, no
 *   keepalive position), although status updates keep flowing;
 * - after a reconnect the stream restarts from what was confirmed: a confirmed transaction is not sent
 *   again, an unconfirmed one is.
 *
 * The replication connection goes through a proxy that reads every status update the client sends, so
 * "nothing confirmed" is checked on what was said, not only on what the slot shows at some moment.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatLsn, parseLsn } from '../../bridge/replication/lsn.js';
import { PgoutputDecoder } from '../../bridge/replication/pgoutput-decoder.js';
import { dropSlot, ensureSlot } from '../../bridge/replication/setup.js';
import { ReplicationStream } from '../../bridge/replication/stream.js';
import { captureLogger } from '../support/capture-logger.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor } from '../support/helpers.js';

const db = useTestDatabase();

// Slots are cluster-wide and other test files share the server: the name must be our own.
const slotName = `hb_contract_${randomBytes(4).toString('hex')}`;
const publication = 'hb_contract';

/** A transaction as the stream handed it out, on the connection-th connection (0 = the first). */
interface Received {
  connection: number;
  xid: number;
  rows: number;
  endLsn: bigint;
  /** The LSN the wrapper passed with the Commit message (the XLogData header's start). */
  commitWalLsn: bigint;
}

let pool: pg.Pool;
let tap: StatusTap;
let stream: ReplicationStream;
let startLsn: bigint;
let connection = 0;
const received: Received[] = [];
const log = captureLogger('warn');

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: db.url, max: 3 });
  await pool.query(`create table contract_rows (id int primary key, note text)`);
  await pool.query(`create publication ${publication} for table contract_rows`);
  const slot = await ensureSlot(pool, slotName);
  startLsn = parseLsn(slot.confirmedFlushLsn ?? '0/0');
  tap = await startStatusTap(db.url);

  let decoder = new PgoutputDecoder();
  let open: Omit<Received, 'endLsn' | 'commitWalLsn'> | undefined;
  stream = new ReplicationStream({
    connection: { connectionString: tap.url },
    slotName,
    publications: [publication],
    logger: log.logger,
    startLsn,
    // Many status updates, quick reconnects: a fast test. No isSettled: only what the test confirms
    // may ever be confirmed (keepalive positions never are).
    statusIntervalMs: 100,
    reconnect: { baseDelayMs: 20, maxDelayMs: 100 },
    onData: (payload, walLsn) => {
      const message = decoder.decode(payload);
      if (message.tag === 'begin') open = { connection, xid: message.xid, rows: 0 };
      else if (message.tag === 'insert' && open) open.rows += 1;
      else if (message.tag === 'commit' && open) {
        received.push({ ...open, endLsn: message.endLsn, commitWalLsn: walLsn });
        open = undefined;
      }
    },
    onDisconnect: async () => {
      // As action-stream.ts does: a new connection starts a new decoder and no transaction.
      connection += 1;
      decoder = new PgoutputDecoder();
      open = undefined;
    },
  });
  await stream.start();
});

afterAll(async () => {
  await stream?.stop();
  await tap?.close();
  if (pool) {
    await dropSlot(pool, slotName).catch(() => undefined);
    await pool.end();
  }
});

async function commitRows(ids: number[]): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    for (const id of ids) await client.query(`insert into contract_rows values ($1, $2)`, [id, `row ${id}`]);
    await client.query('commit');
  } finally {
    client.release();
  }
}

async function confirmedFlush(): Promise<bigint> {
  const { rows } = await pool.query<{ lsn: string }>(`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = $1`, [slotName]);
  const lsn = rows[0]?.lsn;
  if (!lsn) throw new Error(`the slot ${slotName} is gone or has no confirmed_flush_lsn`);
  return parseLsn(lsn);
}

async function walsenderPid(): Promise<number | null> {
  const { rows } = await pool.query<{ pid: number | null }>(`select active_pid as pid from pg_replication_slots where slot_name = $1`, [slotName]);
  return rows[0]?.pid ?? null;
}

/** Ends the walsender, then waits until the stream streams again on a new one. */
async function terminateWalsender(): Promise<void> {
  const pid = await walsenderPid();
  if (pid === null) throw new Error(`no walsender streams from ${slotName}`);
  const before = connection;
  await pool.query('select pg_terminate_backend($1)', [pid]);
  await waitFor(async () => connection > before && stream.streaming && ![null, pid].includes(await walsenderPid()), {
    message: `the stream to reconnect after walsender ${pid} was terminated`,
  });
}

/**
 * Waits until the walsender has processed the status update `index` entirely (confirming a position
 * comes last in its handling, after its reply to a ping): it has moved on to a later one.
 * pg_stat_replication.reply_time shows the timestamp of the last update it took in, which the tap read
 * off the wire. (pg-logical-replication 2.5.0 miscomputes them, about 7 days ahead, but they differ
 * from one millisecond to the next and are compared as sent.)
 */
async function processedThrough(index: number): Promise<void> {
  await waitFor(
    async () => {
      const { rows } = await pool.query<{ micros: string | null }>(
        `select ((extract(epoch from r.reply_time) - extract(epoch from timestamptz '2000-01-01 UTC')) * 1000000)::bigint::text as micros
           from pg_stat_replication r join pg_replication_slots s on s.active_pid = r.pid
          where s.slot_name = $1`,
        [slotName],
      );
      const micros = rows[0]?.micros;
      if (micros == null) return false;
      return tap.updates.findIndex((u) => u.sentAt === BigInt(micros)) > index;
    },
    { message: `the walsender to take in a status update after number ${index}` },
  );
}

const updatesOn = (n: number) => tap.updates.filter((u) => u.connection === n);

it('runs against the exact version pinned in package.json and package-lock.json', async () => {
  const readJson = async (path: string) => JSON.parse(await readFile(new URL(path, import.meta.url), 'utf8'));
  const ours = (await readJson('../../package.json')) as { dependencies: Record<string, string> };
  const pinned = ours.dependencies['pg-logical-replication'];
  expect(pinned, 'pg-logical-replication must be pinned to one version: run this test before changing it').toMatch(/^\d+\.\d+\.\d+$/);
  const lock = (await readJson('../../package-lock.json')) as { packages: Record<string, { version?: string; dependencies?: Record<string, string> }> };
  expect(lock.packages['']?.dependencies?.['pg-logical-replication']).toBe(pinned);
  expect(lock.packages['node_modules/pg-logical-replication']?.version).toBe(pinned);
  expect(((await readJson('../../node_modules/pg-logical-replication/package.json')) as { version: string }).version).toBe(pinned);
});

describe('one transaction, received, then confirmed', () => {
  let first: Received;

  it('confirms nothing before the consumer does, while status updates keep flowing', async () => {
    await commitRows([1, 2, 3]);
    first = await waitFor(() => received[0], { message: 'the first transaction to be handed out' });
    expect(first).toMatchObject({ connection: 0, rows: 3 });
    // The LSN passed with a message is its XLogData start: for a Commit, the commit's end (heartbeat
    // markers are confirmed at theirs, change-events.ts).
    expect(formatLsn(first.commitWalLsn)).toBe(formatLsn(first.endLsn));
    // The library keeps its pg connection where watchConnection() looks (keepalives, liveness).
    expect(log.lines().filter((line) => /keeps its connection elsewhere/.test(String(line['msg'])))).toEqual([]);

    // The first update the tap reads from now on may have been written just before the Commit came in;
    // the one after it was written with the transaction in hand (updates go out every 100 ms).
    const afterReceipt = tap.updates.length + 1;
    await waitFor(() => tap.updates.length > afterReceipt, { message: 'status updates after the transaction came in' });
    await processedThrough(afterReceipt);
    expect(tap.updates.map((u) => formatLsn(u.flush))).toEqual(tap.updates.map(() => formatLsn(startLsn)));
    expect(formatLsn(await confirmedFlush())).toBe(formatLsn(startLsn));
  });

  it('puts confirmed_flush_lsn exactly at the commit end LSN the consumer confirmed', async () => {
    expect(first.endLsn).toBeGreaterThan(startLsn);
    // As action-stream.ts does once every change of the transaction is handled (pipeline.ts).
    stream.confirm(first.endLsn);
    await waitFor(async () => (await confirmedFlush()) !== startLsn, { message: 'confirmed_flush_lsn to move after the confirmation' });
    expect(formatLsn(await confirmedFlush())).toBe(formatLsn(first.endLsn));
    // What went over the wire: the start position, then the commit end, and never anything else.
    const said = [...new Set(tap.updates.map((u) => formatLsn(u.flush)))];
    expect(said).toEqual([formatLsn(startLsn), formatLsn(first.endLsn)]);
  });

  it('after a reconnect, does not send the confirmed transaction again', async () => {
    await terminateWalsender();
    await commitRows([4, 5]);
    const second = await waitFor(() => received.find((r) => r.connection === 1), { message: 'a transaction on the new connection' });
    // Transactions come in commit order: had the first one been sent again, it would have come first.
    expect(second).toMatchObject({ rows: 2 });
    expect(second.xid).not.toBe(first.xid);
    expect(second.endLsn).toBeGreaterThan(first.endLsn);
    expect(updatesOn(1).every((u) => u.flush === first.endLsn)).toBe(true);
  });

  it('after a reconnect, sends an unconfirmed transaction again', async () => {
    const second = received.find((r) => r.connection === 1) as Received;
    await terminateWalsender();
    const again = await waitFor(() => received.find((r) => r.connection === 2), { message: 'a transaction on the third connection' });
    expect(again).toEqual({ ...second, connection: 2 });
    expect(formatLsn(await confirmedFlush())).toBe(formatLsn(first.endLsn));
    stream.confirm(again.endLsn);
    await waitFor(async () => (await confirmedFlush()) === again.endLsn, { message: `confirmed_flush_lsn to reach ${formatLsn(again.endLsn)}` });
  });
});

interface StatusUpdate {
  connection: number;
  /** What the client said it flushed (what Postgres confirms on a logical slot). */
  flush: bigint;
  /** The update's own timestamp, as sent: what pg_stat_replication.reply_time shows once taken in. */
  sentAt: bigint;
}

interface StatusTap {
  /** The database URL, through the tap. */
  url: string;
  /** Every Standby Status Update clients sent through the tap, in order. */
  updates: StatusUpdate[];
  close(): Promise<void>;
}

/** A TCP proxy on loopback in front of the database that reads the status updates clients send. */
async function startStatusTap(databaseUrl: string): Promise<StatusTap> {
  const target = new URL(databaseUrl);
  const updates: StatusUpdate[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    const read = statusUpdateReader(connections++, (update) => updates.push(update));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', end).on('close', () => {
        sockets.delete(socket);
        end();
      });
    }
    client.on('data', (chunk: Buffer) => {
      read(chunk);
      upstream.write(chunk);
    });
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(databaseUrl);
  url.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: url.toString(),
    updates,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Splits what a client sends into protocol messages and reports its Standby Status Updates: CopyData
 * ('d') holding 'r', write, flush, apply (8 bytes each), timestamp (8), reply requested (1).
 */
function statusUpdateReader(connection: number, onUpdate: (update: StatusUpdate) => void): (chunk: Buffer) => void {
  let pending = Buffer.alloc(0);
  // SSLRequest and the StartupMessage come without a type byte; typed messages follow the latter.
  let startup = true;
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      const head = startup ? 0 : 1;
      if (pending.length < head + 4) return;
      const end = head + pending.readInt32BE(head);
      if (pending.length < end) return;
      const message = pending.subarray(0, end);
      pending = pending.subarray(end);
      if (startup) {
        // Protocol major version 3: the StartupMessage (an SSLRequest's code has major 1234).
        if (message.readInt32BE(4) >>> 16 === 3) startup = false;
      } else if (message[0] === 0x64 && message[5] === 0x72 && message.length >= 39) {
        onUpdate({ connection, flush: message.readBigUInt64BE(14), sentAt: message.readBigInt64BE(30) });
      }
    }
  };
}
