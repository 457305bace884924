/**
 * For the replication-faults tests: an embedded Postgres of a test's own (to stop, restart or starve
 * of WAL), and an action stream on its own — without a bridge's cluster session, whose loss at a
 * shutdown would stop the stream before the walsender's own behaviour shows.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { resolveConfig } from '../../bridge/config.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { testPgBin } from '../support/database.js';
import { migrate } from '../../bridge/migrate.js';
import { ActionStream, type ActionStreamOptions } from '../../bridge/replication/action-stream.js';
import { dropSlot } from '../../bridge/replication/setup.js';
import { HookRuntime } from '../../hooks/runtime.js';
import { captureLogger, type CapturedLogger } from '../support/capture-logger.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

export interface OwnServer {
  readonly url: string;
  readonly server: EmbeddedPostgres;
  /** Stops it (SIGINT: a fast shutdown) and starts it again on the same port and data. */
  restart(): Promise<void>;
  dispose(): Promise<void>;
}

export async function startOwnServer(label: string, settings?: Record<string, string | number>): Promise<OwnServer> {
  const parent = fileURLToPath(new URL('../../.hookbridge/', import.meta.url));
  const dataDir = await mkdtemp(join(parent, `${label}-`));
  await chmod(dataDir, 0o755);
  const start = (port?: number) => startEmbeddedPostgres({ binDir: testPgBin(), dataDir: join(dataDir, 'pg'), persistent: true, settings, port });
  let server = await start();
  const handle: OwnServer = {
    get url() {
      return server.url;
    },
    get server() {
      return server;
    },
    async restart() {
      await server.stop();
      server = await start(server.port);
    },
    async dispose() {
      await server.stop().catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return handle;
}

/**
 * Moves WAL on past a lagging slot's segment (a table `filler` that nobody publishes, then
 * pg_switch_wal) and checkpoints: with max_slot_wal_keep_size below a segment, the slot is invalidated.
 * Returns when the checkpoint was asked for.
 */
export async function outrunSlot(url: string): Promise<number> {
  await withClient(url, async (c) => {
    for (let i = 0; i < 3; i++) {
      await c.query(`insert into filler (note) select repeat('x', 500) from generate_series(1, 2000)`);
      await c.query(`select pg_switch_wal()`);
    }
  });
  const checkpointAt = Date.now();
  await withClient(url, (c) => c.query(`checkpoint`));
  return checkpointAt;
}

/** Resolves once the server shows the slot invalidated (`wal_status` lost: final); fails after 30 s. */
export async function waitForSlotLost(url: string, slotName: string): Promise<void> {
  await waitFor(
    async () =>
      (await withClient(url, (c) => c.query<{ wal_status: string }>(`select wal_status from pg_replication_slots where slot_name = $1`, [slotName]))).rows[0]
        ?.wal_status === 'lost',
    { timeoutMs: 30_000, message: 'the checkpoint did not invalidate the slot' },
  );
}

export interface StandaloneStream {
  actions: ActionStream;
  log: CapturedLogger;
  slotName: string;
  /** Errors the stream gave up on (onFatal). */
  fatal: unknown[];
  stop(): Promise<void>;
  /** Stops it and drops its slot and files. */
  dispose(): Promise<void>;
}

export async function startStandaloneStream(
  url: string,
  extensions: Record<string, string>,
  options: { actionTimeoutMs?: number; actionAttempts?: number; replicationUrl?: string; liveness?: ActionStreamOptions['liveness'] } = {},
): Promise<StandaloneStream> {
  const dir = await tempDir('hookbridge-faults-');
  await writeTree(dir.path, extensions);
  const slotName = `hb_faults_${randomBytes(4).toString('hex')}`;
  const log = captureLogger('debug');
  const { replicationUrl, liveness, ...configOptions } = options;
  const config = resolveConfig({ databaseUrl: url, extensionsPath: dir.path, slotName, logLevel: 'debug', port: 0, ...configOptions }, {});
  const pool = new pg.Pool({ connectionString: url, max: 5 });
  pool.on('error', () => undefined);
  await migrate(pool, { schema: config.schema, logger: log.logger });
  const runtime = new HookRuntime({ extensionsPath: dir.path, logger: log.logger });
  await runtime.start();
  const fatal: unknown[] = [];
  const actions = new ActionStream({
    config,
    pool,
    connection: { connectionString: replicationUrl ?? url },
    runtime,
    logger: log.logger,
    onFatal: (error) => fatal.push(error),
    liveness,
  });
  await actions.start();
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await actions.stop(1_000);
      await runtime.stop();
    })());
  return {
    actions,
    log,
    slotName,
    fatal,
    stop,
    async dispose() {
      await stop();
      try {
        await dropSlot(pool, slotName).catch(() => undefined);
        await pool.end();
      } finally {
        await dir.remove();
      }
    },
  };
}

export interface FreezableProxy {
  /** The database URL, through the proxy. */
  url: string;
  /** Stops forwarding on the connections open now, both ways, without closing them: a network gone silent. */
  freeze(): void;
  /** Ends the frozen connections (both sides: the server's backend sees its client go). New ones pass. */
  heal(): void;
  close(): Promise<void>;
}

/** A TCP proxy on loopback in front of a test's own Postgres. */
export async function startFreezableProxy(databaseUrl: string): Promise<FreezableProxy> {
  const target = new URL(databaseUrl);
  const pairs = new Set<{ client: Socket; upstream: Socket; frozen: boolean }>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    const pair = { client, upstream, frozen: false };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(databaseUrl);
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    freeze() {
      for (const pair of pairs) {
        pair.frozen = true;
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.client);
        pair.client.pause();
        pair.upstream.pause();
      }
    },
    heal() {
      for (const pair of [...pairs]) {
        if (!pair.frozen) continue;
        pairs.delete(pair);
        pair.client.destroy();
        pair.upstream.destroy();
      }
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
