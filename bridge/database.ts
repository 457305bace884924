/**
 * Where the bridge's database is: a URL, libpq's PG* variables, or the embedded Postgres under the
 * data dir. The embedded server belongs to the bridge that started it (its pid is written beside the
 * data); other commands (`hookbridge failed ...`) connect to it while that bridge runs, and a second
 * `hookbridge start` on the same data dir is refused instead of stopping the first one's server.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { parse as parseConnectionString } from 'pg-connection-string';
import type { Logger } from 'pino';
import { HookbridgeError } from '../hooks/errors.js';
import type { DatabaseSource } from './config.js';
import { PASSWORD_FILE, startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';
import { connectionFromUrl } from './multi-host.js';

const OWNER_FILE = 'hookbridge-owner.pid';

export interface OpenedDatabase {
  connection: pg.ClientConfig;
  /** Set when this process started an embedded server (stop it on the way out). */
  embedded?: EmbeddedPostgres;
  release(): Promise<void>;
}

/** Whether process `pid` exists (EPERM: it does, as someone else). */
export function processRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readInt(path: string, line = 0): Promise<number | undefined> {
  try {
    const value = Number.parseInt((await readFile(path, 'utf8')).split('\n')[line] ?? '', 10);
    return Number.isInteger(value) && value > 0 ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The URL of the embedded server under `dataDir` if one runs for a live bridge, else undefined. */
export async function runningEmbeddedUrl(dataDir: string): Promise<string | undefined> {
  const owner = await readInt(join(dataDir, OWNER_FILE));
  const postmaster = await readInt(join(dataDir, 'postmaster.pid'));
  // postmaster.pid's fourth line is the port.
  const port = await readInt(join(dataDir, 'postmaster.pid'), 3);
  if (!owner || !processRunning(owner) || !postmaster || !processRunning(postmaster) || !port) return undefined;
  const password = (await readFile(join(dataDir, PASSWORD_FILE), 'utf8')).trim();
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
}

/**
 * Opens the configured database. `owner`: this process runs the bridge and owns an embedded server
 * (refused if a live bridge already does); otherwise an embedded server that runs is reused and one
 * that does not is started just for this command.
 */
export async function openDatabase(source: DatabaseSource, options: { owner: boolean; logger: Logger }): Promise<OpenedDatabase> {
  if (source.kind === 'url') return { connection: connectionFromUrl(source.url), release: async () => {} };
  if (source.kind === 'pg-env') {
    const { host, port, user, password, database } = source;
    return { connection: { host, port, user, password, database }, release: async () => {} };
  }

  const running = await runningEmbeddedUrl(source.dataDir);
  if (running && options.owner) {
    const owner = await readInt(join(source.dataDir, OWNER_FILE));
    throw new HookbridgeError(
      'E_DATA_DIR_IN_USE',
      `another hookbridge (pid ${owner}) runs the embedded Postgres in ${source.dataDir}; stop it first, or use another --data-dir`,
    );
  }
  if (running) return { connection: { connectionString: running }, release: async () => {} };

  options.logger.info({ dataDir: source.dataDir }, 'no DATABASE_URL: starting an embedded Postgres');
  const embedded = await startEmbeddedPostgres({ dataDir: source.dataDir, binDir: source.binDir, persistent: true, logger: options.logger });
  const ownerFile = join(source.dataDir, OWNER_FILE);
  if (options.owner) await writeFile(ownerFile, `${process.pid}\n`);
  return {
    connection: { connectionString: embedded.url },
    embedded,
    release: async () => {
      if (options.owner) await rm(ownerFile, { force: true });
      await embedded.stop();
    },
  };
}

/**
 * The same connection with server settings for every session it opens (libpq `options`). A settings
 * string inside a connection string would otherwise override these, so the URL is taken apart first.
 */
export function withSessionSettings(connection: pg.ClientConfig, settings: Readonly<Record<string, string>>): pg.ClientConfig {
  const { connectionString, ...rest } = connection;
  const base = (connectionString ? { ...rest, ...parseConnectionString(connectionString) } : rest) as pg.ClientConfig;
  const extra = Object.entries(settings).map(([name, value]) => `-c ${name}=${value}`);
  return { ...base, options: [base.options, ...extra].filter(Boolean).join(' ') };
}

/**
 * For hookbridge's own sessions: only pg_catalog on the search path, so no function or operator a user
 * created (in public, say) can be picked by the bridge's queries and run with the bridge's rights.
 * Hooks' `database` keeps the user's search_path.
 */
export function internalConnection(connection: pg.ClientConfig, settings: Readonly<Record<string, string>> = {}): pg.ClientConfig {
  return withSessionSettings(connection, { search_path: 'pg_catalog', ...settings });
}

const trackedClients = new WeakMap<pg.Pool, Set<pg.PoolClient>>();

/**
 * Remembers the pool's connections, so that `closePool` can end the ones never given back: hooks'
 * pools, where a handler may leave a transaction open (it would hold its locks past the bridge's stop).
 */
export function trackClients(pool: pg.Pool): pg.Pool {
  const clients = new Set<pg.PoolClient>();
  trackedClients.set(pool, clients);
  pool.on('connect', (client) => clients.add(client));
  pool.on('remove', (client) => clients.delete(client));
  return pool;
}

/**
 * Ends `pool` and waits until every connection it had is closed. pg's `pool.end()` resolves once it has
 * *asked* its clients to end: a server stopped right after (the embedded one, at the end of a command)
 * still finds them connected and ends them with an error, which the pool then emits. Bounded: pg waits
 * for a client that was never released for ever, so after `timeoutMs` a tracked pool's remaining
 * connections are ended (the server rolls back what they left open) and the wait stops.
 */
export async function closePool(pool: pg.Pool, timeoutMs = 5_000): Promise<void> {
  const open = pool.totalCount;
  let removed = 0;
  const closed = new Promise<void>((resolve) => {
    if (open === 0) return resolve();
    pool.on('remove', () => {
      if (++removed >= open) resolve();
    });
  });
  const ended = pool.end().then(() => closed);
  if (await settlesWithin(ended, timeoutMs)) return;
  for (const client of trackedClients.get(pool) ?? []) {
    // Public API: ends the socket whatever the client is doing.
    (client as unknown as pg.Client).end().catch(() => undefined);
  }
  await settlesWithin(ended, 1_000);
}

/** Whether `promise` settled within `ms` (its outcome is the caller's to read elsewhere). */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A pool's idle clients report their connection's loss as an `error` event of the pool, which would
 * end the process if nobody listened. Logged in one line (the message and code, never the client).
 */
export function watchPool(pool: pg.Pool, logger: Logger, what = 'idle database connection failed'): pg.Pool {
  pool.on('error', (error: Error & { code?: string }) => logger.warn({ code: error.code, reason: error.message }, what));
  return pool;
}

/**
 * Runs `work` in one transaction on a client of `pool`: committed when it returns, rolled back when it
 * throws (the error goes on). A client whose ROLLBACK failed is in an unknown state, so it is
 * destroyed instead of going back to the pool.
 */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('begin');
    try {
      const result = await work(client);
      await client.query('commit');
      return result;
    } catch (error) {
      await client
        .query('rollback')
        .catch((rollbackError: unknown) => (broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError))));
      throw error;
    }
  } finally {
    client.release(broken);
  }
}

/**
 * inTransaction, after the transaction-scoped advisory lock `key`: whoever shares the key takes turns.
 * Read committed whatever default_transaction_isolation says, so that each statement after the lock sees
 * what the previous holder committed.
 */
export async function inLockedTransaction<T>(pool: pg.Pool, key: string, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return inTransaction(pool, async (client) => {
    await client.query('set transaction isolation level read committed');
    await client.query('select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1, 0))', [key]);
    return work(client);
  });
}
