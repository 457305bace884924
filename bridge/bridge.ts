/**
 * The bridge's lifecycle: database (given or embedded) → hook runtime → ready; and back down.
 * `start()` and `stop()` are safe to call twice; `stop()` undoes whatever `start()` got to.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { HookRuntime, type LoadReport } from '../hooks/runtime.js';
import { redactUrl, type Config } from './config.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';

export interface DatabaseInfo {
  serverVersion: string;
  walLevel: string;
  role: string;
}

export class Bridge {
  readonly runtime: HookRuntime;
  #embedded: EmbeddedPostgres | undefined;
  #pool: pg.Pool | undefined;
  #connection: pg.PoolConfig | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(
    readonly config: Readonly<Config>,
    readonly logger: Logger,
  ) {
    this.runtime = new HookRuntime({
      extensionsPath: config.extensionsPath,
      logger: logger.child({ component: 'hooks' }),
      env: config.env,
      autoReload: config.extensionsAutoReload,
    });
  }

  /** The URL of the embedded Postgres, when the bridge started one. */
  get embeddedUrl(): string | undefined {
    return this.#embedded?.url;
  }

  get pool(): pg.Pool {
    if (!this.#pool) throw new Error('the bridge is not started');
    return this.#pool;
  }

  get extensions(): LoadReport | undefined {
    return this.runtime.report;
  }

  start(): Promise<void> {
    this.#starting ??= this.#start().catch(async (error) => {
      await this.#teardown();
      throw error;
    });
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#connection = await this.#connectionConfig();
    this.#pool = new pg.Pool({ ...this.#connection, max: 10, application_name: 'hookbridge' });
    this.#pool.on('error', (error) => this.logger.warn({ err: error }, 'idle database connection failed'));
    const info = await this.#checkDatabase(this.#pool);
    this.logger.info({ serverVersion: info.serverVersion, role: info.role }, 'connected to Postgres');
    if (info.walLevel !== 'logical') {
      this.logger.warn({ walLevel: info.walLevel }, 'wal_level is not logical: action hooks need ALTER SYSTEM SET wal_level = logical and a restart');
    }

    const report = await this.runtime.start();
    await this.runtime.dispatchServerEvent('start');
    this.logger.info(
      { extensions: report.loaded.length, failed: report.failed.length, database: this.#describeDatabase() },
      'ready',
    );
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    const started = await this.#starting?.then(
      () => true,
      () => false,
    );
    if (started) await this.runtime.dispatchServerEvent('stop');
    await this.#teardown();
  }

  /** Releases whatever exists; each step forgets its resource, so a second call does nothing. */
  async #teardown(): Promise<void> {
    await this.runtime.stop();
    await this.#pool?.end().catch((error) => this.logger.warn({ err: error }, 'closing the pool failed'));
    this.#pool = undefined;
    await this.#embedded?.stop();
    this.#embedded = undefined;
  }

  async #connectionConfig(): Promise<pg.PoolConfig> {
    const source = this.config.database;
    if (source.kind === 'url') return { connectionString: source.url };
    if (source.kind === 'pg-env') {
      const { host, port, user, password, database } = source;
      return { host, port, user, password, database };
    }
    this.logger.info({ dataDir: source.dataDir }, 'no DATABASE_URL: starting an embedded Postgres');
    this.#embedded = await startEmbeddedPostgres({
      dataDir: source.dataDir,
      persistent: true,
      logger: this.logger,
    });
    return { connectionString: this.#embedded.url };
  }

  async #checkDatabase(pool: pg.Pool): Promise<DatabaseInfo> {
    const { rows } = await pool.query<{ server_version: string; wal_level: string; role: string }>(
      `select current_setting('server_version') as server_version,
              current_setting('wal_level') as wal_level,
              current_user as role`,
    );
    const row = rows[0];
    if (!row) throw new Error('the database answered the version query with no row');
    return { serverVersion: row.server_version, walLevel: row.wal_level, role: row.role };
  }

  #describeDatabase(): string {
    const source = this.config.database;
    if (source.kind === 'url') return redactUrl(source.url);
    if (source.kind === 'pg-env') return `${source.host}:${source.port}/${source.database ?? ''}`;
    return `embedded (${source.dataDir})`;
  }
}
