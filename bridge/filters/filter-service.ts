/**
 * The filter path, assembled: a wire-protocol server the triggers call through dblink, the endpoint
 * row that tells triggers where it is, and the triggers themselves — only on tables that have a
 * matching filter hook, for just the operations that do, kept in sync as extensions and tables change.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { HookbridgeError } from '../../hooks/errors.js';
import type { HookRuntime } from '../../hooks/runtime.js';
import type { Config } from '../config.js';
import type { BridgeMetrics } from '../metrics.js';
import { listUserTables, type UserTable } from '../replication/publication.js';
import { answerFilterCall, parseRequest } from './filter-requests.js';
import { SerialQueue } from '../serial-queue.js';
import { WireServer } from './wire-server.js';

export const FILTER_TRIGGER = 'hookbridge_filter';

const OPERATIONS = [
  ['create', 'INSERT'],
  ['update', 'UPDATE'],
  ['delete', 'DELETE'],
] as const;

export interface FilterServiceOptions {
  config: Readonly<Config>;
  pool: pg.Pool;
  runtime: HookRuntime;
  logger: Logger;
  database?: unknown;
  schema?: () => unknown;
  metrics?: Pick<BridgeMetrics, 'filterCalls'>;
}

export class FilterService {
  readonly #options: FilterServiceOptions;
  readonly #logger: Logger;
  #server: WireServer | undefined;
  #primaryKeys = new Map<string, string[]>();
  readonly #syncs = new SerialQueue();
  #inSync = false;
  #requests = 0;

  constructor(options: FilterServiceOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'filters' });
  }

  get healthy(): boolean {
    return this.#server !== undefined && this.#inSync;
  }

  /** Filter calls answered so far. */
  get requests(): number {
    return this.#requests;
  }

  /** Writer sessions connected to the filter server. */
  get connections(): number {
    return this.#server?.connections ?? 0;
  }

  get triggersInSync(): boolean {
    return this.#inSync;
  }

  async start(): Promise<void> {
    const { config, pool } = this.#options;
    const password = randomBytes(24).toString('base64url');
    this.#server = new WireServer({
      host: config.filterListenHost,
      port: config.filterPort,
      password,
      logger: this.#logger,
      onQuery: (query) => this.#answer(query),
    });
    const address = await this.#server.listen();
    const conninfo = [
      `host=${config.filterCallbackHost}`,
      `port=${address.port}`,
      'user=hookbridge',
      'dbname=hookbridge',
      `password=${password}`,
      'application_name=hookbridge-filter',
      `connect_timeout=${Math.max(2, Math.ceil(config.filterTimeoutMs / 1000))}`,
      // A peer that vanished without closing the connection (a partition) fails the write instead of hanging it.
      `tcp_user_timeout=${config.filterTimeoutMs}`,
      'keepalives=1',
      'keepalives_idle=1',
      'keepalives_interval=1',
      `keepalives_count=${Math.max(2, Math.ceil(config.filterTimeoutMs / 1000))}`,
    ].join(' ');
    await pool.query(
      `insert into ${pg.escapeIdentifier(config.schema)}.filter_endpoint (conninfo, failure_mode, timeout_ms, updated_at)
       values ($1, $2, $3, now())
       on conflict (id) do update set conninfo = excluded.conninfo, failure_mode = excluded.failure_mode,
                                      timeout_ms = excluded.timeout_ms, updated_at = now()`,
      [conninfo, config.filterFailureMode, config.filterTimeoutMs],
    );
    this.#logger.info({ port: address.port, callbackHost: config.filterCallbackHost }, 'filter server listening');
    await this.sync(await listUserTables(pool, { exclude: [config.schema] }));
  }

  async stop(): Promise<void> {
    await this.#syncs.idle();
    await this.#server?.close();
    this.#server = undefined;
  }

  /**
   * Puts the trigger on exactly the tables (and operations) that have filter hooks. Serialised. The
   * bridge calls it with the current tables when extensions reload and as the catalog changes.
   */
  sync(tables: UserTable[]): Promise<void> {
    return this.#syncs.run(
      () => this.#syncNow(tables),
      (error) => {
        this.#inSync = false;
        this.#logger.error({ err: error }, 'filter trigger sync failed');
      },
    );
  }

  async #syncNow(tables: UserTable[]): Promise<void> {
    const { config, pool, runtime } = this.#options;
    this.#primaryKeys = new Map(tables.map((t) => [t.collection, t.primaryKey]));
    const wanted = new Map<number, { table: UserTable; events: string[] }>();
    for (const table of tables) {
      const events = OPERATIONS.filter(([action]) => runtime.registry.has('filter', action, table.collection)).map(([, op]) => op);
      if (events.length) wanted.set(table.oid, { table, events });
    }
    const { rows: existing } = await pool.query<{ oid: number; events: string[] }>(
      `select t.tgrelid::int as oid,
              array_remove(array[case when t.tgtype & 4 <> 0 then 'INSERT' end,
                                 case when t.tgtype & 16 <> 0 then 'UPDATE' end,
                                 case when t.tgtype & 8 <> 0 then 'DELETE' end], null) as events
         from pg_trigger t where t.tgname = $1 and t.tgparentid = 0 and not t.tgisinternal`,
      [FILTER_TRIGGER],
    );
    const have = new Map(existing.map((r) => [r.oid, r.events.join(' OR ')]));
    const changes: Array<{ oid: number; create?: { table: UserTable; events: string[] } }> = [];
    for (const [oid, want] of wanted) if (have.get(oid) !== want.events.join(' OR ')) changes.push({ oid, create: want });
    for (const oid of have.keys()) if (!wanted.has(oid)) changes.push({ oid });
    if (changes.length === 0) {
      this.#inSync = true;
      return;
    }
    if (wanted.size > 0) await this.#ensureDblink();

    // One table per transaction with a short lock timeout: a DDL statement waiting for its lock makes
    // every later writer of that table wait too, so never wait long and never hold one table's lock
    // while waiting for another's. A busy table is retried on the next sync.
    let pending = 0;
    const client = await pool.connect();
    try {
      for (const change of changes) {
        try {
          await client.query('begin');
          await client.query(`set local lock_timeout = '200ms'`);
          const { rows } = await client.query<{ name: string | null }>(`select to_regclass($1::oid::regclass::text)::text as name`, [change.oid]);
          const name = rows[0]?.name;
          if (name) {
            await client.query(`drop trigger if exists ${FILTER_TRIGGER} on ${name}`);
            if (change.create) {
              await client.query(
                `create trigger ${FILTER_TRIGGER} before ${change.create.events.join(' or ')} on ${name}
                   for each row execute function ${pg.escapeIdentifier(config.schema)}.filter_trigger()`,
              );
            }
          }
          await client.query('commit');
        } catch (error) {
          await client.query('rollback').catch(() => undefined);
          pending += 1;
          this.#logger.warn({ err: error, oid: change.oid }, 'filter trigger change postponed (table busy?)');
        }
      }
    } finally {
      client.release();
    }
    if (pending > 0) {
      this.#inSync = false;
      return;
    }
    this.#logger.info(
      { tables: [...wanted.values()].map((w) => `${w.table.collection} (${w.events.join(', ')})`) },
      'filter triggers updated',
    );
    this.#inSync = true;
  }

  /**
   * dblink must live in hookbridge's schema (the trigger's search_path has no `public`, so that
   * nothing a user creates there can stand in for a built-in) and must not be callable by PUBLIC
   * (a writer could otherwise point the trigger's connection at a server of its own).
   */
  async #ensureDblink(): Promise<void> {
    const { pool, config } = this.#options;
    const schema = pg.escapeIdentifier(config.schema);
    const fix = `as a superuser: CREATE EXTENSION dblink SCHEMA ${schema} (or ALTER EXTENSION dblink SET SCHEMA ${schema}), then restart the bridge`;
    try {
      const { rows } = await pool.query<{ schema: string }>(
        `select n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'dblink'`,
      );
      if (!rows[0]) await pool.query(`create extension dblink schema ${schema}`);
      else if (rows[0].schema !== config.schema) await pool.query(`alter extension dblink set schema ${schema}`);
      const { rows: functions } = await pool.query<{ fn: string }>(
        `select p.oid::regprocedure::text as fn
           from pg_depend d
           join pg_extension e on e.oid = d.refobjid and e.extname = 'dblink'
           join pg_proc p on p.oid = d.objid
          where d.deptype = 'e' and d.classid = 'pg_proc'::regclass
            and has_function_privilege('public', p.oid, 'execute')`,
      );
      for (const { fn } of functions) await pool.query(`revoke execute on function ${fn} from public`);
    } catch (error) {
      throw new HookbridgeError('E_DBLINK', `filter hooks need dblink in schema ${schema}, callable by the bridge only; ${fix}`, { cause: error });
    }
  }

  async #answer(query: string) {
    const request = parseRequest(query);
    // libpq and dblink send a few set-up statements of their own on connect.
    if (!request) return { command: query.trim().split(/\s+/)[0]?.toUpperCase() || 'EMPTY' };
    this.#requests += 1;
    const { config, runtime, database, metrics } = this.#options;
    const stop = metrics?.filterCalls.startTimer({ collection: request.schema === 'public' ? request.table : `${request.schema}.${request.table}`, operation: request.op });
    const result = await answerFilterCall(request, {
      runtime,
      timeoutMs: config.filterTimeoutMs,
      failureMode: config.filterFailureMode,
      primaryKeyOf: (collection) => this.#primaryKeys.get(collection),
      database,
      schema: this.#options.schema?.(),
      onTimeout: (collection, op) => this.#logger.warn({ collection, op, timeoutMs: config.filterTimeoutMs }, 'filter hooks timed out'),
    });
    stop?.({ outcome: 'error' in result ? result.error.sqlstate : 'row' in result && result.row?.startsWith('M') ? 'modified' : 'kept' });
    return result;
  }
}
