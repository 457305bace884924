/**
 * The filter path, assembled: the ticket board (how writers wait), one of two transports (how requests
 * reach the bridge and verdicts reach the writer), the endpoint row that tells triggers which, and the
 * triggers themselves — only on tables that have a matching filter hook, for just the operations that
 * do, kept in sync as extensions and tables change. See sql/000003.sql for the writer's side.
 *
 *   direct  the trigger sends the request over dblink to the bridge's wire server and reads the signed
 *           verdict from it (the database server must reach FILTER_CALLBACK_HOST)
 *   notify  a loopback dblink session commits the request and NOTIFYs; the bridge commits the verdict
 *           into a table (every connection is one the bridge opens, plus the database's own loopback)
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { Kysely } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { HookbridgeError } from '../../hooks/errors.js';
import { tableActionsOf } from '../../hooks/event-name.js';
import type { HookRuntime } from '../../hooks/runtime.js';
import type { Config, FilterTransport } from '../config.js';
import type { ExtensionGuards } from '../extension-guards.js';
import type { BridgeMetrics } from '../metrics.js';
import { readAccountabilitySecret } from '../replication/accountability.js';
import { listUserTables, unmanagedReason, type UserTable } from '../catalog.js';
import { inLockedTransaction } from '../database.js';
import { schemaLockKey } from '../migrate.js';
import { SerialQueue } from '../serial-queue.js';
import { answerBody, KEEP, parseCall, parseHello, rejectionVerdict, type FilterOutcome, type Verdict } from './filter-requests.js';
import { FilterWorkers } from './filter-workers.js';
import { TypeCatalog } from '../typing/type-catalog.js';
import { TicketBoard } from './tickets.js';
import { commandTag, WireServer, type QueryResult } from './wire-server.js';

/**
 * The row trigger's name. Postgres fires a table's BEFORE triggers in name order (byte order), so the
 * name starts with `~`, after every letter and digit: the filter sees the row as the user's own BEFORE
 * triggers left it. `doctor` warns about a trigger that still sorts after it.
 */
export const FILTER_TRIGGER = '~hookbridge_filter';
/** Names it had before; a sync replaces such triggers. */
export const LEGACY_FILTER_TRIGGERS: readonly string[] = ['hookbridge_filter'];

/**
 * How pg_trigger shows a trigger of hookbridge's that names `table` and is enabled: its arguments
 * (schema, table) as `tgargs` hex, then `tgenabled` 'O'. Anything else is not ours any more.
 */
function triggerArgsShape(table: UserTable): string {
  return `${Buffer.from(`${table.schema}\0${table.name}\0`, 'utf8').toString('hex')}O`;
}

/** Tables the bridge may not alter: a trigger already on one stays (it still guards, and dropping it would fail). */
function untouchable(tables: readonly UserTable[]): Set<number> {
  return new Set(tables.filter((t) => t.mayTrigger === false).map((t) => t.oid));
}

/**
 * The statement-level BEFORE TRUNCATE trigger (sql/000007.sql) on tables with delete or truncate
 * filters. Named after the row trigger, so it too sorts after the user's own triggers.
 */
export const FILTER_TRUNCATE_TRIGGER = `${FILTER_TRIGGER}_truncate`;

const OPERATIONS = [
  ['create', 'INSERT'],
  ['update', 'UPDATE'],
  ['delete', 'DELETE'],
] as const;

/** How often the bridge walks the writers' whole path to itself (what /health reports). */
const PROBE_INTERVAL_MS = 5_000;

export interface FilterServiceOptions {
  config: Readonly<Config>;
  /** The bridge's own pool (pg_catalog-only search_path). */
  pool: pg.Pool;
  /** The same database, for the ticket and listener sessions the service opens itself. */
  connection: pg.ClientConfig;
  /** What filters' `database` connects with (the user's search_path, a lock timeout), for the workers. */
  hooksConnection?: pg.ClientConfig;
  runtime: HookRuntime;
  logger: Logger;
  /** Filters' `database` and `kysely` when they run on this thread (FILTER_WORKERS=0). */
  database?: Knex;
  kysely?: Kysely<any>;
  schema?: () => unknown;
  metrics?: Pick<BridgeMetrics, 'filterCalls' | 'filterUnfiltered'>;
  /** Tables guarded by extensions that are not loaded: their triggers stay, their writes are refused. */
  guards?: Pick<ExtensionGuards, 'filterOperations' | 'failedFilter' | 'failedFilters' | 'onApply'>;
  /**
   * Whether this instance puts triggers in place (the cluster's leader does; the others only answer
   * calls for the triggers it made). Always, when not given.
   */
  managesTriggers?: () => boolean;
  /** The instance session was lost while this instance led the cluster. */
  onLeadershipLost?: () => void;
}

export class FilterService {
  readonly #options: FilterServiceOptions;
  readonly #logger: Logger;
  readonly #board: TicketBoard;
  #server: WireServer | undefined;
  #workers: FilterWorkers | undefined;
  #workersFailed = false;
  /** The load of workers started after start(), until the first trigger sync waited for it. */
  #firstLoad: Promise<void> | undefined;
  readonly #stopping = new AbortController();
  /** stop() was called (it aborts #stopping, which also ends a wait for the workers' first load). */
  get #stopped(): boolean {
    return this.#stopping.signal.aborted;
  }
  #unsubscribe: (() => void) | undefined;
  #listener: pg.Client | undefined;
  #listenerRetry: NodeJS.Timeout | undefined;
  #key: Buffer | undefined;
  #transport: Exclude<FilterTransport, 'auto'> | undefined;
  /** Why writers cannot reach this bridge right now, if they cannot. */
  #problem: string | undefined = 'not started';
  #probeTimer: NodeJS.Timeout | undefined;
  #primaryKeys = new Map<string, string[]>();
  /** Tables with filter hooks the bridge may not put its trigger on, and why. */
  #unmanaged: Array<{ collection: string; reason: string }> = [];
  /** Column types for FILTER_WORKERS=0 (each worker has its own). */
  #catalog: TypeCatalog;
  readonly #syncs = new SerialQueue();
  #inSync = false;
  #wanted = 0;
  /** Tables that get the TRUNCATE trigger. */
  #wantedTruncate = 0;
  #requests = 0;
  #draining = false;
  #http: string | undefined;
  /** The published connection string, kept for a republish after the instance session came back in another slot. */
  #published: { transport: 'direct' | 'notify'; conninfo: string } | undefined;

  constructor(options: FilterServiceOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'filters' });
    this.#catalog = new TypeCatalog(options.pool);
    // The workers learn which writes not-loaded extensions guard in the same step as the main thread
    // (a reload swaps them before the workers are told to reload), not at the next sync.
    options.guards?.onApply(() => this.#workers?.setNotLoadedFilters(options.guards?.failedFilters() ?? []));
    this.#board = new TicketBoard({
      connection: options.connection,
      schema: options.config.schema,
      tickets: options.config.filterTickets,
      logger: this.#logger,
      onReopen: (slotChanged) => void this.#reopened(slotChanged),
      onLeadershipLost: () => options.onLeadershipLost?.(),
    });
  }

  /** Triggers match the hooks, and writers of filtered tables can reach this bridge. */
  get healthy(): boolean {
    return this.#inSync && (this.#wanted + this.#wantedTruncate === 0 || this.#problem === undefined);
  }

  /** The transport writers use, once chosen. */
  get transport(): Exclude<FilterTransport, 'auto'> | undefined {
    return this.#transport;
  }

  /** Why writers cannot reach the bridge, when they cannot. */
  get problem(): string | undefined {
    return this.#problem;
  }

  /** Filter calls answered so far. */
  get requests(): number {
    return this.#requests;
  }

  /** Writer sessions connected to the filter server (direct transport). */
  get connections(): number {
    return this.#server?.connections ?? 0;
  }

  get tickets(): { size: number; armed: number } {
    return { size: this.#board.size, armed: this.#board.armed };
  }

  /** This instance's slot in the cluster (see sql/000013.sql), once claimed. */
  get slot(): number | undefined {
    return this.#board.currentSlot;
  }

  /** Writers of filtered tables can reach this instance (whoever put the triggers in place). */
  get reachable(): boolean {
    return this.#wanted + this.#wantedTruncate === 0 || this.#problem === undefined;
  }

  /** Whether writers may choose this instance now. */
  get serving(): boolean {
    return this.#board.serving;
  }

  get leading(): boolean {
    return this.#board.leading;
  }

  /** Takes the cluster's leader lock if it is free; whether this instance leads. */
  tryLead(): Promise<boolean> {
    return this.#board.tryLead();
  }

  resign(): Promise<void> {
    return this.#board.resign();
  }

  /**
   * Stops taking filter calls (writers choose other instances) and answers those already on their
   * way, for up to `timeoutMs`; the number left unanswered.
   */
  async drain(timeoutMs: number): Promise<number> {
    clearInterval(this.#probeTimer);
    this.#draining = true;
    return this.#board.drain(timeoutMs);
  }

  /** What `hookbridge status` shows of this instance: where its HTTP API listens. */
  async announce(http: string): Promise<void> {
    this.#http = http;
    await this.#options.pool
      .query(`update ${pg.escapeIdentifier(this.#options.config.schema)}.filter_endpoint set http = $2 where slot = $1`, [this.#board.slot, http])
      .catch((error: unknown) => this.#logger.warn({ err: error }, 'publishing the HTTP address failed'));
  }

  get triggersInSync(): boolean {
    return this.#inSync;
  }

  /** Tables with filter hooks the bridge may not put its trigger on, and why. */
  get unmanaged(): ReadonlyArray<{ collection: string; reason: string }> {
    return this.#unmanaged;
  }

  /**
   * Takes this database's filter calls: the alive lock and the tickets. Refuses (E_BRIDGE_RUNNING),
   * touching nothing, while another bridge serves them.
   */
  async claim(): Promise<void> {
    await this.#board.open();
  }

  async start(): Promise<void> {
    const { config, pool, runtime } = this.#options;
    this.#key = await readAccountabilitySecret(pool, config.schema);
    // Before the workers start (about a second of CPU each, loading the extensions): a dblink that writers
    // could reach, or none where filters are needed, ends the start here.
    const dblink = await this.#prepareDblink().then(
      () => undefined,
      (error: unknown) => error,
    );
    if (dblink && this.#wantedTables(await listUserTables(pool, { exclude: [config.schema] })).size > 0) throw dblink;
    if (config.filterWorkers > 0) {
      // The workers follow the main thread's reloads (which decide the triggers); the first reload that
      // brings write filters starts them.
      this.#unsubscribe = runtime.registry.onChange(() => (this.#workers ? this.#workers.reload() : this.#startWorkersIfWanted()));
      await this.#startWorkersIfWanted()?.ready();
      this.#firstLoad = undefined;
    }
    if (dblink) {
      this.#problem = (dblink as Error).message;
      this.#logger.warn({ err: dblink }, 'filter hooks are unavailable until dblink is usable; no extension needs them now');
    } else {
      // Looked at again: a GRANT made while the workers loaded counts too.
      if (this.#workers) await refuseExposedDblink(pool);
      await this.#chooseTransport();
      this.#probeTimer = setInterval(() => void this.#probe(), PROBE_INTERVAL_MS);
      this.#probeTimer.unref();
    }
    // Listed once the workers loaded: tables created meanwhile are filtered too.
    await this.sync(await listUserTables(pool, { exclude: [config.schema] }));
  }

  /**
   * Worker threads only while some extension has filters on writes: each loads every extension (about
   * half a second of CPU and tens of MB), which an action-only bridge never needs; once started they stay.
   * Until then a call (a table a not-loaded extension guards, a trigger left from an earlier run) is
   * answered here against no hooks at all (#verdictHere), and so is refused; once started, calls go to
   * the workers and wait for one to be ready within their deadline. The first trigger put in place after
   * they started waits for them to load, up to FILTER_TIMEOUT_MS (#syncNow). Called at start, at every
   * registry change and every sync (a failed start is tried again).
   */
  #startWorkersIfWanted(): FilterWorkers | undefined {
    const { config, runtime } = this.#options;
    if (config.filterWorkers === 0 || this.#stopped || this.#workers) return undefined;
    if (!runtime.registry.itemPatterns('filter').some((pattern) => tableActionsOf(pattern).length > 0)) return undefined;
    try {
      this.#workers = new FilterWorkers(
        {
          extensionsPath: config.extensionsPath,
          env: config.env,
          schema: config.schema,
          hooksConnection: this.#options.hooksConnection ?? this.#options.connection,
          internalConnection: this.#options.connection,
          timeoutMs: config.filterTimeoutMs,
          actionTimeoutMs: config.actionTimeoutMs,
          failureMode: config.filterFailureMode,
          userMap: config.userMap,
          logLevel: config.logLevel,
        },
        config.filterWorkers,
        this.#logger,
      );
    } catch (error) {
      // Tried again at each sync (every 2 s): said once until they start.
      if (!this.#workersFailed) this.#logger.error({ err: error }, 'filter workers could not start: writes with filters are refused until they do');
      this.#workersFailed = true;
      return undefined;
    }
    this.#workersFailed = false;
    this.#workers.setPrimaryKeys(this.#primaryKeys);
    if (this.#options.guards) this.#workers.setNotLoadedFilters(this.#options.guards.failedFilters());
    this.#logger.info({ workers: config.filterWorkers }, 'filter workers starting (an extension has write filters)');
    this.#firstLoad = this.#workers.ready().catch((error: unknown) => this.#logger.error({ err: error }, 'filter workers are not ready'));
    return this.#workers;
  }

  async stop(): Promise<void> {
    this.#stopping.abort();
    this.#unsubscribe?.();
    clearInterval(this.#probeTimer);
    clearTimeout(this.#listenerRetry);
    await this.#syncs.idle();
    await this.#closeListener();
    await this.#server?.close();
    this.#server = undefined;
    await this.#board.close();
    await this.#workers?.stop();
    this.#workers = undefined;
  }

  /**
   * Puts the trigger on exactly the tables (and operations) that have filter hooks. Serialised. The
   * bridge calls it with the current tables when extensions reload and as the catalog changes.
   */
  sync(tables: UserTable[]): Promise<void> {
    return this.#syncs.run(
      async () => {
        await this.#pruneStoppedInstances();
        await this.#syncNow(tables);
        await this.#syncTruncateTriggers(tables);
      },
      (error) => {
        this.#inSync = false;
        this.#logger.error({ err: error }, 'filter trigger sync failed');
      },
    );
  }

  /**
   * The leader deletes the rows of instances that stopped (no session holds their slot's "alive"
   * lock): writers stop looking at them, and open mode is decided by the instances of late.
   */
  async #pruneStoppedInstances(): Promise<void> {
    if (this.#options.managesTriggers?.() === false) return;
    await this.#options.pool
      .query(
        `delete from ${pg.escapeIdentifier(this.#options.config.schema)}.filter_endpoint e
          where not exists (select 1 from pg_catalog.pg_locks l
                             where l.locktype = 'advisory' and l.granted and l.mode = 'ExclusiveLock'
                               and l.database = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
                               and l.classid = (e.lock_class + 2)::oid and l.objid = e.slot::oid and l.objsubid = 2)`,
      )
      .catch((error: unknown) => this.#logger.warn({ err: error }, 'pruning the rows of stopped bridges failed'));
  }

  #wantedTables(tables: UserTable[]): Map<number, { table: UserTable; events: string[] }> {
    const { runtime, guards } = this.#options;
    const wanted = new Map<number, { table: UserTable; events: string[] }>();
    const unmanaged: Array<{ collection: string; reason: string }> = [];
    for (const table of tables) {
      // A table an extension that is not loaded guarded keeps its trigger: its writes are refused, not let through.
      const held = guards?.filterOperations(table.collection) ?? [];
      const events = OPERATIONS.filter(([action]) => held.includes(action) || runtime.registry.has('filter', action, table.collection)).map(([, op]) => op);
      if (!events.length) continue;
      // A table the bridge may not put a trigger on is listed (health, status, doctor) and never stops the others.
      if (table.mayTrigger === false) unmanaged.push({ collection: table.collection, reason: unmanagedReason(table, 'trigger') });
      else wanted.set(table.oid, { table, events });
    }
    if (unmanaged.map((u) => u.collection).join(',') !== this.#unmanaged.map((u) => u.collection).join(',')) {
      for (const u of unmanaged)
        this.#logger.error({ collection: u.collection, reason: u.reason }, 'a table with filter hooks cannot get its trigger: its writes are not filtered');
    }
    this.#unmanaged = unmanaged;
    return wanted;
  }

  async #syncNow(tables: UserTable[]): Promise<void> {
    const { config, pool } = this.#options;
    this.#startWorkersIfWanted();
    this.#primaryKeys = new Map(tables.map((t) => [t.collection, t.primaryKey]));
    // The catalog may have changed (a column's type, say): read column types afresh.
    this.#catalog.forget();
    this.#workers?.setPrimaryKeys(this.#primaryKeys);
    if (this.#options.guards) this.#workers?.setNotLoadedFilters(this.#options.guards.failedFilters());
    const wanted = this.#wantedTables(tables);
    this.#wanted = wanted.size;
    // What each trigger does (its operations), whom it names (its arguments: schema and table), and
    // whether it is still as made: enabled, no WHEN clause, a BEFORE ROW trigger calling hookbridge's
    // function (an owner may have replaced it with one of the same name), under today's name.
    const { rows: existing } = await pool.query<{ oid: number; name: string; events: string[]; args: string }>(
      `select t.tgrelid::int as oid, t.tgname::text as name,
              array_remove(array[case when t.tgtype::int4 & 4 <> 0 then 'INSERT' end,
                                 case when t.tgtype::int4 & 16 <> 0 then 'UPDATE' end,
                                 case when t.tgtype::int4 & 8 <> 0 then 'DELETE' end], null) as events,
              encode(t.tgargs, 'hex') || t.tgenabled::text || case when t.tgqual is null then '' else ' when' end
                || case when t.tgfoid = to_regprocedure($2)::oid and t.tgtype::int4 & 3 = 3 then '' else ' foreign' end
                || case when t.tgname = $1 then '' else ' renamed' end as args
         from pg_trigger t where t.tgname = any ($3::text[]) and t.tgparentid = 0 and not t.tgisinternal`,
      [FILTER_TRIGGER, `${pg.escapeIdentifier(config.schema)}.filter_trigger()`, [FILTER_TRIGGER, ...LEGACY_FILTER_TRIGGERS]],
    );
    const shape = (events: string[], args: string) => `${events.join(' OR ')} ${args}`;
    // A trigger someone disabled, gave a WHEN clause or pointed at another function is not ours any more: it is made again.
    const have = new Map<number, string>();
    const stale = new Map<number, string[]>();
    for (const r of existing) {
      have.set(r.oid, have.has(r.oid) ? 'several' : shape(r.events, r.args));
      stale.set(r.oid, [...(stale.get(r.oid) ?? []), r.name]);
    }
    const changes: Array<{ oid: number; drop: string[]; create?: { table: UserTable; events: string[] } }> = [];
    for (const [oid, want] of wanted)
      if (have.get(oid) !== shape(want.events, triggerArgsShape(want.table))) changes.push({ oid, drop: stale.get(oid) ?? [], create: want });
    const keep = untouchable(tables);
    for (const oid of have.keys()) if (!wanted.has(oid) && !keep.has(oid)) changes.push({ oid, drop: stale.get(oid) ?? [] });
    if (changes.length === 0) {
      this.#inSync = true;
      return;
    }
    // In a cluster the leader puts triggers in place; another instance only says they differ from its hooks.
    if (this.#options.managesTriggers?.() === false) {
      this.#inSync = false;
      return;
    }
    if (wanted.size > 0) {
      // Workers started by a reload load the extensions before the trigger goes in, so that writers do not
      // wait for them; once, and not past FILTER_TIMEOUT_MS (writers would wait as long, then be refused).
      const loading = this.#firstLoad;
      this.#firstLoad = undefined;
      if (loading)
        await Promise.race([loading, delay(config.filterTimeoutMs, undefined, { signal: this.#stopping.signal, ref: false }).catch(() => undefined)]);
      // Never put a trigger in place that a writer could get around (dblink within its reach).
      await this.#prepareDblink();
    }

    const pending = await this.#alterEachTable(
      changes,
      'filter trigger change postponed (table busy?)',
      (change) => ({ oid: change.oid }),
      async (client, change) => {
        const { rows } = await client.query<{ name: string | null }>(`select to_regclass($1::oid::regclass::text)::text as name`, [change.oid]);
        const name = rows[0]?.name;
        if (!name) return;
        for (const old of new Set([FILTER_TRIGGER, ...change.drop])) await client.query(`drop trigger if exists ${pg.escapeIdentifier(old)} on ${name}`);
        if (change.create) {
          await client.query(
            `create trigger ${pg.escapeIdentifier(FILTER_TRIGGER)} before ${change.create.events.join(' or ')} on ${name}
             for each row execute function ${pg.escapeIdentifier(config.schema)}.filter_trigger(
               ${pg.escapeLiteral(change.create.table.schema)}, ${pg.escapeLiteral(change.create.table.name)})`,
          );
        }
      },
    );
    if (pending > 0) {
      this.#inSync = false;
      return;
    }
    this.#logger.info({ tables: [...wanted.values()].map((w) => `${w.table.collection} (${w.events.join(', ')})`) }, 'filter triggers updated');
    this.#inSync = true;
  }

  /**
   * The TRUNCATE trigger on every table whose TRUNCATE the filters decide — one with delete filters
   * (a TRUNCATE would bypass them, so it is refused unless a truncate filter allows it) or truncate
   * filters, loaded or held for an extension that is not — and on each of its partitions, which a
   * writer may truncate alone (statement triggers are not cloned to partitions). Each names the table
   * the hooks know. Runs after the row triggers' sync, on the same terms: one table per transaction,
   * a short lock timeout, a busy table retried on the next sync (and /health out of sync meanwhile).
   */
  async #syncTruncateTriggers(tables: UserTable[]): Promise<void> {
    const { config, pool, runtime, guards } = this.#options;
    const decides = (table: UserTable) => {
      const held = guards?.filterOperations(table.collection) ?? [];
      return (['delete', 'truncate'] as const).some((action) => held.includes(action) || runtime.registry.has('filter', action, table.collection));
    };
    const wanted = new Map(tables.filter((t) => t.mayTrigger !== false && decides(t)).map((t) => [t.oid, t]));
    this.#wantedTruncate = wanted.size;
    const fn = `${pg.escapeIdentifier(config.schema)}.filter_truncate_trigger()`;
    // Each trigger by the table it guards (a partition's is its root's), with what makes it ours:
    // BEFORE TRUNCATE FOR EACH STATEMENT (tgtype 2 | 32), hookbridge's function, enabled, no WHEN, its arguments.
    const { rows: existing } = await pool.query<{ root: number; oid: number; shape: string }>(
      `select coalesce(pg_partition_root(t.tgrelid), t.tgrelid)::int as root, t.tgrelid::int as oid,
              encode(t.tgargs, 'hex') || t.tgenabled::text || case when t.tgqual is null then '' else ' when' end
                || case when t.tgfoid = to_regprocedure($2)::oid and t.tgtype::int4 = 34 then '' else ' foreign' end as shape
         from pg_trigger t where t.tgname = $1 and not t.tgisinternal`,
      [FILTER_TRUNCATE_TRIGGER, fn],
    );
    const { rows: trees } = wanted.size
      ? await pool.query<{ root: number; oid: number }>(
          `select distinct root.oid::int as root, c.oid::int as oid
             from unnest($1::oid[]) as root(oid)
             cross join lateral (select root.oid as relid union all select relid from pg_partition_tree(root.oid)) tree
             join pg_class c on c.oid = tree.relid
            where c.relkind in ('r', 'p')`,
          [[...wanted.keys()]],
        )
      : { rows: [] };
    const describe = (entries: Array<{ oid: number; shape: string }>) =>
      entries
        .map((e) => `${e.oid}:${e.shape}`)
        .sort()
        .join(',');
    const have = new Map<number, Array<{ oid: number; shape: string }>>();
    for (const r of existing) have.set(r.root, [...(have.get(r.root) ?? []), r]);
    const want = new Map<number, Array<{ oid: number; shape: string }>>();
    for (const r of trees) want.set(r.root, [...(want.get(r.root) ?? []), { oid: r.oid, shape: triggerArgsShape(wanted.get(r.root) as UserTable) }]);
    const changes: Array<{ drop: number[]; create?: { table: UserTable; oids: number[] } }> = [];
    for (const [root, table] of wanted) {
      const target = want.get(root) ?? [];
      if (describe(have.get(root) ?? []) !== describe(target))
        changes.push({ drop: (have.get(root) ?? []).map((e) => e.oid), create: { table, oids: target.map((e) => e.oid) } });
    }
    const keep = untouchable(tables);
    for (const [root, entries] of have) if (!wanted.has(root) && !keep.has(root)) changes.push({ drop: entries.map((e) => e.oid) });
    if (changes.length === 0) return;
    if (this.#options.managesTriggers?.() === false) {
      this.#inSync = false;
      return;
    }
    // Never put a trigger in place that a writer could get around (dblink within its reach).
    if (changes.some((change) => change.create)) await this.#prepareDblink();

    const trigger = pg.escapeIdentifier(FILTER_TRUNCATE_TRIGGER);
    const pending = await this.#alterEachTable(
      changes,
      'filter TRUNCATE trigger change postponed (table busy?)',
      (change) => ({ tables: change.create?.table.collection }),
      async (client, change) => {
        const oids = [...new Set([...change.drop, ...(change.create?.oids ?? [])])];
        const { rows: names } = await client.query<{ oid: number; name: string | null }>(
          `select o::int as oid, to_regclass(o::regclass::text)::text as name from unnest($1::oid[]) as o`,
          [oids],
        );
        const nameOf = new Map(names.map((r) => [r.oid, r.name]));
        for (const oid of change.drop) {
          const name = nameOf.get(oid);
          if (name) await client.query(`drop trigger if exists ${trigger} on ${name}`);
        }
        for (const oid of change.create?.oids ?? []) {
          const name = nameOf.get(oid);
          if (!name || !change.create) continue;
          await client.query(
            `create or replace trigger ${trigger} before truncate on ${name}
             for each statement execute function ${pg.escapeIdentifier(config.schema)}.filter_truncate_trigger(
               ${pg.escapeLiteral(change.create.table.schema)}, ${pg.escapeLiteral(change.create.table.name)})`,
          );
        }
      },
    );
    if (pending > 0) {
      this.#inSync = false;
      return;
    }
    this.#logger.info({ tables: [...wanted.values()].map((t) => t.collection) }, 'filter TRUNCATE triggers updated');
  }

  /**
   * Applies each change to its table in a transaction of its own with a short lock timeout: a DDL
   * statement waiting for its lock makes every later writer of that table wait too, so never wait long
   * and never hold one table's lock while waiting for another's. A busy table is logged and retried on
   * the next sync. Returns how many were postponed.
   */
  async #alterEachTable<C>(
    changes: readonly C[],
    postponed: string,
    describe: (change: C) => Record<string, unknown>,
    apply: (client: pg.PoolClient, change: C) => Promise<void>,
  ): Promise<number> {
    let pending = 0;
    const client = await this.#options.pool.connect();
    try {
      for (const change of changes) {
        try {
          await client.query('begin');
          await client.query(`set local lock_timeout = '200ms'`);
          await apply(client, change);
          await client.query('commit');
        } catch (error) {
          await client.query('rollback').catch(() => undefined);
          pending += 1;
          this.#logger.warn({ err: error, ...describe(change) }, postponed);
        }
      }
    } finally {
      client.release();
    }
    return pending;
  }

  /**
   * dblink must live in hookbridge's schema (the trigger's search_path has no `public`, so that
   * nothing a user creates there can stand in for a built-in), and no role but the bridge's may reach
   * it: a writer that can call dblink can point the trigger's connection at a server of its own, or
   * send requests of its own over it.
   */
  async #prepareDblink(): Promise<void> {
    const { pool, config } = this.#options;
    const schema = pg.escapeIdentifier(config.schema);
    const fix = `as a superuser: CREATE EXTENSION dblink SCHEMA ${schema} (or ALTER EXTENSION dblink SET SCHEMA ${schema}), then restart the bridge`;
    try {
      // Under the schema's lock: bridges starting together take turns (and the later one finds the
      // extension made and the grants done).
      await inLockedTransaction(pool, schemaLockKey(config.schema), async (client) => {
        const { rows } = await client.query<{ schema: string }>(
          `select n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'dblink'`,
        );
        if (!rows[0]) await client.query(`create extension if not exists dblink schema ${schema}`);
        else if (rows[0].schema !== config.schema) await client.query(`alter extension dblink set schema ${schema}`);
        // Best effort: as a non-owner of the functions (a superuser created the extension) this only warns,
        // which is why the check below decides.
        const { rows: functions } = await client.query<{ fn: string }>(`${DBLINK_FUNCTIONS} and pg_catalog.has_function_privilege('public', p.oid, 'execute')`);
        for (const { fn } of functions) await client.query(`revoke execute on function ${fn} from public`);
        // Writers' statements call these (the trigger functions, and the one door to the bridge): after a
        // superuser's REVOKE ... ON ALL FUNCTIONS IN SCHEMA they need granting again.
        await client.query(
          `grant execute on function ${schema}.filter_trigger(), ${schema}.accountability_trigger(), ${schema}.filter_truncate_trigger(),
                                   ${schema}.filter_entry(oid, text, text, text, json, json) to public`,
        );
      });
    } catch (error) {
      throw new HookbridgeError('E_DBLINK', `filter hooks need dblink in schema ${schema}, callable by the bridge only; ${fix}`, { cause: error });
    }
    if (!(await bridgeMayUseDblink(pool))) {
      throw new HookbridgeError(
        'E_DBLINK',
        `the bridge's role may not execute dblink's functions; as a superuser, run: GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${schema} TO CURRENT_USER ` +
          `(as the bridge's role's name), then restart the bridge`,
      );
    }
    await refuseExposedDblink(pool);
  }

  /** FILTER_TRANSPORT: `auto` tries direct (can the database reach us?), then notify. */
  async #chooseTransport(): Promise<void> {
    const wanted = this.#options.config.filterTransport;
    const reasons: string[] = [];
    if (wanted !== 'notify') {
      const problem = await this.#tryTransport('direct');
      if (!problem) return;
      reasons.push(`direct: ${problem}`);
      if (wanted === 'direct') {
        throw new HookbridgeError(
          'E_FILTER_TRANSPORT',
          `the database server could not reach the bridge's filter server (${problem}); set FILTER_CALLBACK_HOST to an address ` +
            'the server can connect to, or FILTER_TRANSPORT=notify (or auto), where the database never connects to the bridge',
        );
      }
      this.#logger.info({ reason: problem }, 'the database cannot reach the bridge directly: using the notify transport');
    }
    const problem = await this.#tryTransport('notify');
    if (!problem) return;
    reasons.push(`notify: ${problem}`);
    throw new HookbridgeError('E_FILTER_TRANSPORT', `no filter transport works: ${reasons.join('; ')}`);
  }

  /** Sets the transport up, publishes it to the triggers and walks a writer's path once; the problem if that failed. */
  async #tryTransport(transport: 'direct' | 'notify'): Promise<string | undefined> {
    let conninfo: string;
    try {
      conninfo = transport === 'direct' ? await this.#startServer() : await this.#startListener();
    } catch (error) {
      return (error as Error).message;
    }
    await this.#publish(transport, conninfo);
    this.#transport = transport;
    const problem = await this.#probeOnce();
    this.#problem = problem;
    if (problem === undefined) {
      // Probed: writers may choose this instance from now on.
      await this.#board.serve();
      this.#logger.info({ transport, tickets: this.#board.size, slot: this.#board.slot }, 'filter transport ready');
      return undefined;
    }
    this.#transport = undefined;
    if (transport === 'direct') {
      await this.#server?.close();
      this.#server = undefined;
    } else {
      await this.#closeListener();
    }
    return problem;
  }

  /** This instance's row in filter_endpoint: how writers reach it (one row per slot). */
  async #publish(transport: 'direct' | 'notify', conninfo: string): Promise<void> {
    const { config, pool } = this.#options;
    this.#published = { transport, conninfo };
    await pool.query(
      `insert into ${pg.escapeIdentifier(config.schema)}.filter_endpoint
              (slot, conninfo, failure_mode, timeout_ms, transport, tickets, first_ticket, lock_class, generation,
               started_at, process, http, backend_pid, updated_at)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10, $11, $12, now())
       on conflict (slot) do update set conninfo = excluded.conninfo, failure_mode = excluded.failure_mode,
              timeout_ms = excluded.timeout_ms, transport = excluded.transport, tickets = excluded.tickets,
              first_ticket = excluded.first_ticket, lock_class = excluded.lock_class, generation = excluded.generation,
              started_at = excluded.started_at, process = excluded.process, http = excluded.http,
              backend_pid = excluded.backend_pid, updated_at = now()`,
      [
        this.#board.slot,
        conninfo,
        config.filterFailureMode,
        config.filterTimeoutMs,
        transport,
        this.#board.size,
        this.#board.firstTicket,
        this.#board.lockClass,
        randomInt(1, 2 ** 47),
        `${hostname()}:${process.pid}`,
        this.#http ?? null,
        this.#board.backendPid ?? null,
      ],
    );
  }

  /**
   * The instance session came back (its locks were gone meanwhile: writers chose other instances), on the
   * same server or, after a failover, another. In another slot, this instance publishes itself there and
   * listens on that slot's channel.
   */
  async #reopened(slotChanged: boolean): Promise<void> {
    if (this.#stopped || !this.#published) return;
    try {
      if (slotChanged) {
        this.#logger.warn({ slot: this.#board.slot }, 'the instance session came back in another slot: publishing this instance there');
        if (this.#published.transport === 'notify') {
          await this.#closeListener();
          await this.#listen();
        }
      }
      // Its row again (the instance session's pid changed), then, in a new slot, writers may choose it. The
      // loopback is asked again: the session may have come back on another server (a promoted standby).
      const reached = this.#published.transport === 'notify' ? await this.#loopbackConninfo() : this.#published.conninfo;
      await this.#publish(this.#published.transport, reached);
      if (slotChanged && !this.#draining) await this.#board.serve();
    } catch (error) {
      this.#logger.error({ err: error }, 'publishing this instance again failed');
    }
  }

  /** Walks the writers' path now and again: /health tells whether writers can reach this bridge. */
  async #probe(): Promise<void> {
    if (this.#stopped || this.#draining || !this.#transport) return;
    if (this.#transport === 'notify') {
      // Answers nobody came for (their writer gave up) are kept a minute.
      await this.#options.pool
        .query(`delete from ${pg.escapeIdentifier(this.#options.config.schema)}.filter_responses where created_at < now() - interval '1 minute'`)
        .catch((error: unknown) => this.#logger.warn({ err: error }, 'clearing old filter answers failed'));
    }
    const problem = await this.#probeOnce();
    if (this.#stopped) return;
    if (problem !== this.#problem) {
      if (problem) this.#logger.error({ transport: this.#transport, problem }, 'writers cannot reach this bridge for filter calls');
      else this.#logger.info({ transport: this.#transport }, 'writers reach this bridge for filter calls again');
    }
    this.#problem = problem;
  }

  /** The writers' whole path, from one of the bridge's own sessions; what failed, if anything. */
  async #probeOnce(): Promise<string | undefined> {
    let problem: string | undefined;
    // A session of its own each time, as a new writer's: a pooled one keeps its dblink connection,
    // which would go on answering after the filter server stopped taking new ones.
    const client = new pg.Client({ ...this.#options.connection, application_name: 'hookbridge:probe', connectionTimeoutMillis: PROBE_INTERVAL_MS });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{ verdict: string }>(`select ${pg.escapeIdentifier(this.#options.config.schema)}.filter_probe($1) as verdict`, [
        this.#board.slot,
      ]);
      const verdict = rows[0]?.verdict ?? '';
      if (verdict !== 'K') problem = verdict.slice(1) || 'no answer';
    } catch (error) {
      problem = (error as Error).message;
    } finally {
      await client.end().catch(() => undefined);
    }
    return problem;
  }

  async #startServer(): Promise<string> {
    const { config, pool } = this.#options;
    const { rows } = await pool.query<{ encoding: string }>(`select current_setting('server_encoding') as encoding`);
    if (rows[0]?.encoding !== 'UTF8') {
      // dblink talks to the filter server in the database's encoding; the filter server speaks UTF-8 only.
      throw new HookbridgeError(
        'E_FILTER_TRANSPORT',
        `the direct transport needs a UTF8 database (this one is ${rows[0]?.encoding ?? '?'}); use the notify transport`,
      );
    }
    const password = randomBytes(24).toString('base64url');
    this.#server = new WireServer({
      host: config.filterListenHost,
      port: config.filterPort,
      password,
      logger: this.#logger,
      onQuery: (query) => this.#answerWire(query),
    });
    const address = await this.#server.listen();
    this.#logger.info({ port: address.port, callbackHost: config.filterCallbackHost }, 'filter server listening');
    const waitSeconds = Math.max(2, Math.ceil(config.filterTimeoutMs / 1000));
    return conninfo({
      host: config.filterCallbackHost,
      port: String(address.port),
      user: 'hookbridge',
      dbname: 'hookbridge',
      password,
      application_name: 'hookbridge-filter',
      connect_timeout: String(waitSeconds),
      // A peer that vanished without closing the connection (a partition) fails the write instead of hanging it.
      tcp_user_timeout: String(config.filterTimeoutMs),
      keepalives: '1',
      keepalives_idle: '1',
      keepalives_interval: '1',
      keepalives_count: String(waitSeconds),
    });
  }

  /** The notify transport: LISTEN for tickets, and the loopback the triggers use to reach this database. */
  async #startListener(): Promise<string> {
    await this.#listen();
    return this.#loopbackConninfo();
  }

  /**
   * How the triggers reach this database as the bridge's role: the server's own address, asked of the
   * server each time (after a failover it is another one). Its password, if it has one, is stored with
   * the endpoint, which only that role can read.
   */
  async #loopbackConninfo(): Promise<string> {
    const { config, pool, connection } = this.#options;
    const { rows } = await pool.query<{ addr: string | null; port: string; sockets: string | null; db: string; role: string; superuser: boolean }>(
      // unix_socket_directories is readable only by superusers and pg_read_all_settings: asked only when needed.
      `select host(inet_server_addr()) as addr, current_setting('port') as port,
              case when inet_server_addr() is null then current_setting('unix_socket_directories', true) end as sockets,
              current_database() as db, current_user as role, current_setting('is_superuser')::boolean as superuser`,
    );
    const server = rows[0];
    if (!server) throw new Error('the database did not describe itself');
    const password = typeof connection.password === 'string' && connection.password !== '' ? connection.password : undefined;
    if (!password && !server.superuser) {
      throw new HookbridgeError(
        'E_FILTER_TRANSPORT',
        `the notify transport needs the password of the bridge's role (${server.role}) in DATABASE_URL: the database's loopback to ` +
          'itself goes through dblink, which requires one for roles that are not superusers',
      );
    }
    return conninfo({
      host: server.addr ?? server.sockets?.split(',')[0]?.trim() ?? '/tmp',
      port: server.port,
      dbname: server.db,
      user: server.role,
      ...(password ? { password } : {}),
      application_name: 'hookbridge:notify',
      connect_timeout: String(Math.max(2, Math.ceil(config.filterTimeoutMs / 1000))),
      options: `-c search_path=pg_catalog,${config.schema} -c synchronous_commit=off`,
    });
  }

  async #listen(): Promise<void> {
    const listener = new pg.Client({ ...this.#options.connection, application_name: 'hookbridge:listen' });
    const lost = (error: unknown) => {
      if (this.#listener !== listener) return;
      this.#listener = undefined;
      if (this.#stopped) return;
      this.#logger.error({ err: error }, 'lost the filter listener connection; reconnecting');
      const retry = () => {
        this.#listenerRetry = undefined;
        if (this.#stopped) return;
        this.#listen().catch((reason: unknown) => {
          this.#logger.warn({ err: reason }, 'reconnecting the filter listener failed');
          this.#listenerRetry = setTimeout(retry, 1_000);
        });
      };
      this.#listenerRetry = setTimeout(retry, 1_000);
    };
    listener.on('error', lost);
    listener.on('end', () => lost(new Error('the listener connection ended')));
    listener.on(
      'notification',
      (message) =>
        void this.#answerNotify(message.payload ?? '').catch((error: unknown) => this.#logger.error({ err: error }, 'answering a filter request failed')),
    );
    await listener.connect();
    this.#listener = listener;
    await listener.query(`listen ${pg.escapeIdentifier(notifyChannel(this.#key ?? Buffer.alloc(0), this.#board.slot))}`);
    // pg_stat_activity shows a session's last statement: not the channel's name.
    await listener.query('select 1');
    // Requests committed while no one listened (a reconnect) still wait for their answer.
    const { rows } = await this.#options.pool.query<{ ticket: number }>(
      `select ticket from ${pg.escapeIdentifier(this.#options.config.schema)}.filter_requests where ticket >= $1 and ticket < $2`,
      [this.#board.firstTicket, this.#board.firstTicket + this.#board.size],
    );
    for (const { ticket } of rows)
      void this.#answerNotify(String(ticket)).catch((error: unknown) => this.#logger.error({ err: error }, 'answering a filter request failed'));
  }

  async #closeListener(): Promise<void> {
    const listener = this.#listener;
    this.#listener = undefined;
    if (!listener) return;
    listener.removeAllListeners('end');
    await listener.end().catch(() => undefined);
  }

  async #answerWire(query: string): Promise<QueryResult> {
    const key = this.#key ?? Buffer.alloc(0);
    const call = parseCall(query);
    if (!call) {
      const hello = parseHello(query);
      if (hello) return { row: createHash('sha256').update(key).update(`hello ${hello}`, 'utf8').digest('hex') };
      // libpq and dblink send a few set-up statements of their own on connect.
      return { command: commandTag(query) };
    }
    const token = this.#board.take(call.ticket);
    const verdict = await this.#verdict(call.body);
    return { row: signVerdict(key, call.id, verdict), wake: () => void this.#board.release(call.ticket, token) };
  }

  /** `<ticket> <call id> <request>`, or `<ticket>` for a request too large for NOTIFY (then in filter_requests). */
  async #answerNotify(payload: string): Promise<void> {
    const { pool, config } = this.#options;
    const schema = pg.escapeIdentifier(config.schema);
    const match = /^(\d{1,9})(?: ([0-9a-f-]{36}) )?/.exec(payload);
    const ticket = Number(match?.[1]);
    if (!match || !this.#board.owns(ticket)) return;
    let request: { id: string; body: string } | undefined = match[2] ? { id: match[2], body: payload.slice(match[0].length) } : undefined;
    if (!request) {
      try {
        // Taking the row makes a repeated notification find nothing to answer.
        ({
          rows: [request],
        } = await pool.query<{ id: string; body: string }>(`delete from ${schema}.filter_requests where ticket = $1 returning id, body`, [ticket]));
      } catch (error) {
        this.#logger.error({ err: error, ticket }, 'reading a filter request failed');
      }
      if (!request) return;
    }
    // A ticket this bridge does not hold (someone else holds its lock) is answered all the same: the
    // writer finds the answer by its call id, once its wait runs out.
    const token = this.#board.take(ticket);
    if (token === 0) this.#logger.warn({ ticket }, 'a filter request arrived on a ticket this bridge does not hold (see pg_locks)');
    const verdict = await this.#verdict(request.body);
    // Committed before the writer wakes; a failure wakes it anyway, to find no answer (as for a dead bridge).
    const deliver =
      `insert into ${schema}.filter_responses (id, ticket, verdict) values (${pg.escapeLiteral(request.id)}, ${ticket}, ${pg.escapeLiteral(verdict)}) ` +
      'on conflict (id) do update set verdict = excluded.verdict';
    await this.#board.release(ticket, token, deliver);
  }

  /** The verdict for one request; never throws (an internal failure refuses the write). */
  async #verdict(body: string): Promise<Verdict> {
    if (body === PROBE) return KEEP;
    this.#requests += 1;
    const { config, metrics } = this.#options;
    const started = process.hrtime.bigint();
    let outcome: FilterOutcome;
    try {
      outcome = this.#workers ? await this.#workers.call(body) : await this.#verdictHere(body);
    } catch (error) {
      this.#logger.error({ err: error }, 'filter request failed inside the bridge');
      return rejectionVerdict({ sqlstate: 'HB500', message: 'hookbridge: internal error while filtering' });
    }
    if (outcome.timedOut && config.filterFailureMode === 'open') metrics?.filterUnfiltered.inc({ reason: 'timeout' });
    if (outcome.collection && outcome.op) {
      const kind = outcome.verdict[0];
      const result =
        kind === 'E'
          ? (JSON.parse(outcome.verdict.slice(1)) as { sqlstate: string }).sqlstate
          : kind === 'M'
            ? 'modified'
            : kind === 'W'
              ? 'unfiltered'
              : 'kept';
      metrics?.filterCalls.observe({ collection: outcome.collection, operation: outcome.op, outcome: result }, Number(process.hrtime.bigint() - started) / 1e9);
    }
    return outcome.verdict;
  }

  /**
   * FILTER_WORKERS=0: the hooks run here, on the main thread. Otherwise, before the workers started, the
   * call is answered against no hooks (refused, naming a not-loaded extension where one guarded the write):
   * a reload that brings filters meanwhile never runs them on this thread.
   */
  #verdictHere(body: string): Promise<FilterOutcome> {
    const { config, runtime, database, kysely } = this.#options;
    return answerBody(body, {
      runtime,
      withoutHooks: config.filterWorkers > 0,
      timeoutMs: config.filterTimeoutMs,
      failureMode: config.filterFailureMode,
      primaryKeyOf: (name) => this.#primaryKeys.get(name),
      notLoadedFilter: (collection, action) => this.#options.guards?.failedFilter(collection, action),
      catalog: this.#catalog,
      userMap: config.userMap,
      database,
      kysely,
      schema: this.#options.schema?.(),
      logger: this.#logger,
    });
  }
}

/** The body of filter_probe()'s request: answered by the main thread, without hooks. */
const PROBE = '{"op":"PROBE"}';

/** `<hex sha256(key || call id || verdict)><verdict>`: what filter_call checks before it believes a verdict. */
export function signVerdict(key: Buffer, id: string, verdict: Verdict): string {
  return createHash('sha256').update(key).update(id, 'utf8').update(verdict, 'utf8').digest('hex') + verdict;
}

/**
 * The notify transport's channel of one instance: named after the key, so that only the bridge's role
 * can listen to it, and after the instance's slot (filter_submit in sql/000013.sql).
 */
export function notifyChannel(key: Buffer, slot: number): string {
  return `hookbridge_${createHash('sha256').update(key).update('filter channel', 'utf8').digest('hex').slice(0, 40)}_${slot}`;
}

/** A libpq connection string; every value quoted, so spaces and quotes in passwords are safe. */
export function conninfo(parameters: Readonly<Record<string, string>>): string {
  return Object.entries(parameters)
    .map(([key, value]) => `${key}='${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}

/** dblink's functions (the extension's members), by signature. */
const DBLINK_FUNCTIONS = `select p.oid, p.oid::regprocedure::text as fn, p.pronamespace
   from pg_catalog.pg_depend d
   join pg_catalog.pg_extension e on e.oid = d.refobjid and e.extname = 'dblink'
   join pg_catalog.pg_proc p on p.oid = d.objid
  where d.deptype = 'e' and d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass`;

/** Whether the connected role (the bridge's) may execute every dblink function. */
export async function bridgeMayUseDblink(pool: Pick<pg.Pool, 'query'>): Promise<boolean> {
  const { rows } = await pool.query<{ ok: boolean | null }>(
    `select bool_and(pg_catalog.has_function_privilege(f.oid, 'execute')) as ok from (${DBLINK_FUNCTIONS}) f`,
  );
  return rows[0]?.ok !== false;
}

/**
 * Which roles other than the bridge's (and roles that are members of it, which can act as it anyway)
 * could call dblink — EXECUTE on a function *and* USAGE on its schema — with the statement a superuser
 * runs to close it; undefined when none can.
 */
export async function dblinkExposure(pool: Pick<pg.Pool, 'query'>): Promise<{ message: string; statement: string } | undefined> {
  const { rows } = await pool.query<{ grantee: string | null; schema: string }>(
    `select distinct g.rolname as grantee, n.nspname as schema
       from (${DBLINK_FUNCTIONS}) f
       join pg_catalog.pg_namespace n on n.oid = f.pronamespace
       cross join lateral (
         select null::name as rolname, null::oid as oid
         union all
         select r.rolname, r.oid from pg_catalog.pg_roles r
          where not r.rolsuper and r.rolname !~ '^pg_' and not pg_catalog.pg_has_role(r.oid, current_user, 'MEMBER')
       ) g
      where case when g.oid is null
                 then pg_catalog.has_function_privilege('public', f.oid, 'execute')
                      and pg_catalog.has_schema_privilege('public', f.pronamespace, 'usage')
                 else pg_catalog.has_function_privilege(g.oid, f.oid, 'execute')
                      and pg_catalog.has_schema_privilege(g.oid, f.pronamespace, 'usage')
            end`,
  );
  if (rows.length === 0) return undefined;
  const schema = pg.escapeIdentifier(rows[0]?.schema ?? 'hookbridge');
  const grantees = rows.map((r) => (r.grantee === null ? 'PUBLIC' : pg.escapeIdentifier(r.grantee))).sort();
  // The bridge grants its own writer-facing functions again at every start.
  const statement = `REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA ${schema} FROM ${grantees.join(', ')};`;
  return {
    statement,
    message:
      `dblink (in schema ${schema}) can be called by ${grantees.join(', ')}, who could switch filter hooks off or answer them ` +
      `with a server of their own; the bridge installs no filter trigger until only its own role can reach dblink. As a superuser, run: ${statement}`,
  };
}

/** E_DBLINK_EXPOSED when anyone but the bridge's role could call dblink (see dblinkExposure). */
async function refuseExposedDblink(pool: Pick<pg.Pool, 'query'>): Promise<void> {
  const exposed = await dblinkExposure(pool);
  if (exposed) throw new HookbridgeError('E_DBLINK_EXPOSED', exposed.message, { details: { statement: exposed.statement } });
}
