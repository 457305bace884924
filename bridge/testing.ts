/**
 * `import { startTestBridge } from 'hookbridge/testing'`: a real Postgres and a bridge running the
 * given extensions, for hook authors' own tests.
 *
 *   const hb = await startTestBridge({ extensionsPath: './extensions' });
 *   // ... write through hb.url with any client, assert on what the hooks did ...
 *   await hb.stop();
 *
 * Postgres: `databaseUrl` if given (a fresh slot name is used and dropped at stop; the schema,
 * publications and filter endpoint are per database, so run one bridge per database at a time); else
 * `postgres: 'testcontainers'` (needs Docker and the optional `@testcontainers/postgresql` package);
 * else an embedded PostgreSQL 18 in a temporary folder, removed at stop.
 *
 * In a container, Postgres cannot reach the bridge on this host's loopback: FILTER_TRANSPORT=auto (the
 * default) then chooses the notify transport, where the database never connects to the bridge.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { HookbridgeError } from '../hooks/errors.js';
import { Bridge } from './bridge.js';
import { resolveConfig, type ConfigOptions } from './config.js';
import { startEmbeddedPostgres } from './embedded-postgres.js';
import { createLogger } from './logger.js';
import { nonEmpty } from './settings.js';
import { dropSlot } from './replication/setup.js';

export interface TestBridgeOptions {
  /** A folder of extensions (as EXTENSIONS_PATH). */
  extensionsPath?: string;
  /** Or extension files from strings: `{ 'hooks/mine/index.js': '...' }`. */
  extensions?: Record<string, string>;
  databaseUrl?: string;
  postgres?: 'embedded' | 'testcontainers';
  /**
   * With `postgres: 'testcontainers'`: the image (default `postgres:18`). Any image that honours the official
   * `postgres` image's contract (POSTGRES_USER/PASSWORD/DB, `-c` settings as arguments) and ships dblink.
   */
  image?: string;
  /** Runs before the bridge starts (create your tables here, so triggers go on at once). */
  setup?: (url: string) => Promise<void>;
  /** Any other bridge setting. */
  config?: ConfigOptions;
  /** What extensions see as `env`. */
  env?: Record<string, string>;
  logger?: Logger;
}

export interface TestBridge {
  /** Connection URL of the database the bridge watches. */
  url: string;
  /** Where that database runs: `databaseUrl` (external), a container, or an embedded server. */
  postgres: 'external' | 'testcontainers' | 'embedded';
  bridge: Bridge;
  stop(): Promise<void>;
}

interface Database {
  url: string;
  kind: TestBridge['postgres'];
  stop(): Promise<void>;
}

const DEFAULT_TESTCONTAINERS_IMAGE = 'postgres:18';

async function startDatabase(options: TestBridgeOptions, scratch: string): Promise<Database> {
  if (options.databaseUrl) return { url: options.databaseUrl, kind: 'external', stop: async () => {} };
  if (options.postgres === 'testcontainers') {
    const moduleName = '@testcontainers/postgresql';
    let containers: typeof import('@testcontainers/postgresql');
    try {
      containers = (await import(moduleName)) as typeof import('@testcontainers/postgresql');
    } catch (error) {
      throw new HookbridgeError(
        'E_TESTCONTAINERS',
        'postgres: "testcontainers" needs the @testcontainers/postgresql package: npm install -D @testcontainers/postgresql',
        { cause: error },
      );
    }
    const image = options.image ?? DEFAULT_TESTCONTAINERS_IMAGE;
    const container = await new containers.PostgreSqlContainer(image)
      // A throwaway cluster: initdb need not fsync it (the official image's variable), seconds sooner on small machines.
      .withEnvironment({ POSTGRES_INITDB_ARGS: '--no-sync' })
      .withCommand(['postgres', '-c', 'wal_level=logical', '-c', 'max_replication_slots=20', '-c', 'max_wal_senders=20'])
      .start()
      .catch((error: unknown) => {
        throw new HookbridgeError(
          'E_TESTCONTAINERS',
          `postgres: "testcontainers" could not start ${image} (${error instanceof Error ? error.message : String(error)}); it needs a running ` +
            'Docker engine, and the image in it or a registry to pull it from. Without Docker, use postgres: "embedded"',
          { cause: error },
        );
      });
    return { url: container.getConnectionUri(), kind: 'testcontainers', stop: async () => void (await container.stop()) };
  }
  // As the bridge reads it: the option, else HOOKBRIDGE_PG_BIN, else the installed binaries.
  const binDir = options.config?.pgBin ?? nonEmpty(process.env['HOOKBRIDGE_PG_BIN']);
  const server = await startEmbeddedPostgres({ dataDir: join(scratch, 'pg'), persistent: false, binDir });
  return { url: server.url, kind: 'embedded', stop: () => server.stop() };
}

export async function startTestBridge(options: TestBridgeOptions = {}): Promise<TestBridge> {
  const scratch = await mkdtemp(join(tmpdir(), 'hookbridge-test-'));
  const slotName = `hb_test_${randomBytes(4).toString('hex')}`;
  let database: Database | undefined;
  const cleanup = async () => {
    try {
      if (options.databaseUrl) {
        const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 1 });
        await dropSlot(pool, slotName).finally(() => pool.end());
      }
      await database?.stop();
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  };
  try {
    // When tests run as root, the embedded server runs as the postgres user and must get in.
    await chmod(scratch, 0o755);
    let extensionsPath = options.extensionsPath;
    if (options.extensions) {
      extensionsPath = join(scratch, 'extensions');
      for (const [path, content] of Object.entries(options.extensions)) {
        await mkdir(dirname(join(extensionsPath, path)), { recursive: true });
        await writeFile(join(extensionsPath, path), content);
      }
    }
    database = await startDatabase(options, scratch);
    await options.setup?.(database.url);
    const config = resolveConfig(
      // Without a folder of its own, the default (./extensions), which may be missing.
      { port: 0, logLevel: 'warn', ...options.config, databaseUrl: database.url, ...(extensionsPath !== undefined ? { extensionsPath } : {}), slotName },
      options.env ?? {},
    );
    const bridge = new Bridge(config, options.logger ?? createLogger({ logLevel: config.logLevel, logFormat: 'json' }));
    await bridge.start();
    let stopping: Promise<void> | undefined;
    return {
      url: database.url,
      postgres: database.kind,
      bridge,
      stop: () => (stopping ??= bridge.stop().finally(cleanup)),
    };
  } catch (error) {
    await cleanup().catch(() => undefined);
    throw error;
  }
}
