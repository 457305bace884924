/**
 * The bridge's lifecycle: database (given or embedded) → hook runtime → ready; and back down.
 * `start()` and `stop()` are safe to call twice; `stop()` undoes whatever `start()` got to.
 *
 * Several bridges on one database form a cluster through Postgres (sql/000013.sql): each is an
 * instance that answers filter calls; the one holding the leader lock puts triggers and publications
 * in place, streams the slot (action hooks) and runs schedules, and the others take over within a
 * second or so of its session ending. `stop()` drains: writers choose other instances, the calls on
 * their way are answered, the leader lock is handed over, then everything closes.
 */
import { hostname } from 'node:os';
import pg from 'pg';
import type { Logger } from 'pino';
import { HookRuntime, type LoadReport } from '../hooks/runtime.js';
import { checkExtensionsPath, checkPortFree, redactUrl, type Config } from './config.js';
import { ExtensionGuards } from './extension-guards.js';
import { openHookDatabase, type HookDatabase } from './hook-database.js';
import { closePool, internalConnection, openDatabase, withSessionSettings, type OpenedDatabase } from './database.js';
import { readCluster } from './inspect.js';
import { migrate } from './migrate.js';
import { NewTables } from './new-tables.js';
import { FilterService } from './filters/filter-service.js';
import { startHttp, type HealthReport, type HttpServer } from './http.js';
import { createMetrics, readFailedEvents, readSlotWal, type BridgeMetrics } from './metrics.js';
import { SchemaReader, type SchemaOverview } from './schema-overview.js';
import { createServices } from './services/items-service.js';
import { ActionStream } from './replication/action-stream.js';
import { observeTries } from './replication/delivery.js';
import { listUserTables } from './catalog.js';
import { ensureSlot, preflight, readSlotState, slotProblem, type SlotFailover } from './replication/setup.js';

/** How often a standby tries for the leader lock (a dead leader's session ends at once, so takeover takes about this long). */
const LEADER_POLL_MS = 1_000;
/** How long a new leader waits for the last one's walsender to let go of the slot. */
const SLOT_WAIT_MS = 30_000;
const SLOT_RETRY_MS = 250;
/** How often a standby looks at who holds the leader lock. */
const LEADER_CHECK_MS = 10_000;

export interface DatabaseInfo {
  serverVersion: string;
  walLevel: string;
  role: string;
}

export class Bridge {
  readonly runtime: HookRuntime;
  /** What hooks get as `database` (Knex) and `kysely` outside filters, and what the services run on. */
  #hookDatabase: HookDatabase | undefined;
  /** What filters answered on this thread get as `context.database`: the same, with a lock timeout (see README, self-deadlock). */
  #filterDatabase: HookDatabase | undefined;
  #actions: ActionStream | undefined;
  #filters: FilterService | undefined;
  /** Which extension guarded which table (kept in the database): what a failed extension leaves guarded. */
  #guards: ExtensionGuards | undefined;
  /** The rules and the event trigger that guard new tables in the transaction that creates them. */
  #newTables: NewTables | undefined;
  #http: HttpServer | undefined;
  #schema: SchemaReader | undefined;
  /** The latest schema overview, refreshed in the background: what handlers get as `context.schema`. */
  #latestSchema: SchemaOverview | undefined;
  #catalogTimer: NodeJS.Timeout | undefined;
  #unsubscribeRegistry: (() => void) | undefined;
  readonly metrics: BridgeMetrics;
  /** Runs after hookbridge's schema is installed and before hooks load (the CLI's --demo tables). */
  beforeHooks: ((pool: pg.Pool) => Promise<void>) | undefined;
  /** The bridge cannot go on (its action stream stopped for good: E_SLOT_LOST, E_SLOT_DROPPED): the CLI stops and exits non-zero. */
  onFatal: ((error: Error) => void) | undefined;
  #opened: OpenedDatabase | undefined;
  #pool: pg.Pool | undefined;
  #connection: pg.PoolConfig | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  /** leader: streams actions, runs schedules, manages triggers and publications; standby: answers filter calls. */
  #role: 'leader' | 'standby' = 'standby';
  /** Standbys try for the leader lock this often. */
  #leaderTimer: NodeJS.Timeout | undefined;
  #leadership: Promise<void> = Promise.resolve();
  /** Who leads, as this standby last looked: a bridge's slot, or a session that is no bridge. */
  #leaderSeen: { slot: number } | { heldBy: number } | null = null;
  #leaderCheckedAt = 0;
  #since = new Date();
  /** Aborted once the bridge stops: no action handler is retried after that. */
  readonly #stopped = new AbortController();
  #observeTries: ReturnType<typeof observeTries> | undefined;

  constructor(
    readonly config: Readonly<Config>,
    readonly logger: Logger,
  ) {
    this.runtime = new HookRuntime({
      extensionsPath: config.extensionsPath,
      logger: logger.child({ component: 'hooks' }),
      env: config.env,
      autoReload: config.extensionsAutoReload,
      // Once per tick for the whole cluster: on its leader.
      runSchedules: () => this.#leads,
      // Emitted, server and read events: the timeout of committed changes, and one try: they carry no id a
      // handler could tell a retry by (and Directus runs them once), and nothing durable to park.
      actionPolicy: {
        attempts: 1,
        timeoutMs: config.actionTimeoutMs,
        signal: this.#stopped.signal,
        observe: (...args) => (this.#observeTries ??= observeTries(this.metrics))(...args),
      },
      provide: () => ({
        database: this.#hookDatabase?.knex,
        kysely: this.#hookDatabase?.kysely,
        getSchema: () => this.getSchema(),
        services: this.#hookDatabase ? createServices({ database: this.#hookDatabase.services, runtime: this.runtime, getSchema: () => this.getSchema() }) : {},
      }),
    });
    this.metrics = createMetrics({
      filterConnections: () => this.#filters?.connections ?? 0,
      replicationLag: async () => this.#actions?.lagBytes(),
      replicationStreaming: () => this.#actions?.streaming ?? false,
      // Read at each scrape, on every instance (one database, the same answer): what waits now, and the slot's WAL.
      failedEvents: async () => (this.#pool ? readFailedEvents(this.#pool, config.schema) : undefined),
      slotWal: async () => (this.#pool ? readSlotWal(this.#pool, config.slotName) : undefined),
      role: () => this.#role,
      slot: () => this.#filters?.slot,
    });
  }

  /** The user's tables, columns, keys and relations (cached; re-read when the catalog changes). */
  getSchema(): Promise<SchemaOverview> {
    if (!this.#schema) return Promise.reject(new Error('the bridge is not started'));
    return this.#schema.getSchema();
  }

  /** The HTTP port, once listening. */
  get httpPort(): number | undefined {
    return this.#http?.port;
  }

  health(): HealthReport {
    const actions = this.#actions;
    const filters = this.#filters;
    const report = this.runtime.report;
    const problems = this.#problems();
    return {
      status: problems.length === 0 ? 'ok' : 'unavailable',
      // Why not ok (null when ok); the HTTP thread says so itself when this thread is blocked.
      reason: problems.length === 0 ? null : problems.join('; '),
      role: this.#role,
      // A standby's view of who leads (null: nobody, for a moment, or not looked yet).
      leader: this.#role === 'leader' ? { slot: filters?.slot ?? null } : this.#leaderSeen,
      instance: { slot: filters?.slot ?? null, since: this.#since.toISOString(), serving: filters?.serving ?? false },
      replication: {
        streaming: actions?.streaming ?? false,
        publicationsInSync: actions?.publicationsInSync ?? false,
        confirmedLsn: actions?.confirmedLsn ?? null,
        // Tables with action hooks the bridge may not publish (their changes do not reach the hooks), and why.
        unmanaged: actions?.unmanaged ?? [],
      },
      filters: {
        transport: filters?.transport ?? null,
        reachable: filters !== undefined && filters.problem === undefined,
        problem: filters?.problem ?? null,
        triggersInSync: filters?.triggersInSync ?? false,
        // Tables with filter hooks the bridge may not put its trigger on (their writes are not filtered), and why.
        unmanaged: filters?.unmanaged ?? [],
        tickets: filters?.tickets ?? { size: 0, armed: 0 },
        connections: filters?.connections ?? 0,
      },
      extensions: {
        loaded: report?.loaded.length ?? 0,
        failed: report?.failed.length ?? 0,
        // Extensions that guard tables and are not loaded: writes they covered are refused, their changes held.
        notLoaded: (this.#guards?.notLoaded ?? []).map((g) => ({ extension: g.extension, reason: g.reason, tables: g.tables.map((t) => t.collection) })),
      },
    };
  }

  /**
   * The leader: replication streams and publications and filter triggers match the loaded hooks. A
   * standby: writers can reach it for filter calls (it streams nothing and changes no trigger).
   */
  get healthy(): boolean {
    return this.#problems().length === 0;
  }

  /** What keeps this instance from being healthy (see `healthy`), in words for /health. */
  #problems(): string[] {
    if (this.#stopping) return ['stopping'];
    const filters = this.#filters;
    if (!filters) return ['not started'];
    const problems: string[] = [];
    if (!filters.reachable) problems.push(`writers cannot reach this bridge for filter calls: ${filters.problem ?? 'unknown'}`);
    if (this.#role === 'standby') return problems;
    if (!filters.triggersInSync) problems.push('the filter triggers are not in sync with the hooks yet');
    const actions = this.#actions;
    if (!actions) problems.push('the action stream is not running');
    else if (!actions.streaming) problems.push('replication is not streaming: action events wait');
    else if (!actions.publicationsInSync) problems.push('the publications are not in sync with the hooks yet');
    else if (actions.visibilityProblem) problems.push(actions.visibilityProblem);
    else if (!actions.healthy) problems.push('the action pipeline failed');
    return problems;
  }

  /** Leads now: the role, and the lock still held (a lost session takes it before the role follows). */
  get #leads(): boolean {
    return this.#role === 'leader' && this.#filters?.leading === true;
  }

  /** `leader` or `standby` in the cluster of bridges on this database. */
  get role(): 'leader' | 'standby' {
    return this.#role;
  }

  get filters(): FilterService | undefined {
    return this.#filters;
  }

  get actions(): ActionStream | undefined {
    return this.#actions;
  }

  /** The URL of the embedded Postgres, when the bridge started one. */
  get embeddedUrl(): string | undefined {
    return this.#opened?.embedded?.url;
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
      // The start error is the one worth reporting; teardown problems are only logged.
      await this.#teardown().catch(() => undefined);
      throw error;
    });
    return this.#starting;
  }

  async #start(): Promise<void> {
    // Before anything is touched: a configured extensions folder that does not exist is a mistake (E_CONFIG).
    checkExtensionsPath(this.config);
    // So is a busy HTTP port (E_CONFIG), found before the database is opened, let alone changed.
    await checkPortFree(this.config);
    this.#opened = await openDatabase(this.config.database, { owner: true, logger: this.logger });
    // The bridge's own sessions see only pg_catalog (see internalConnection); hooks' pools keep the user's search_path.
    this.#connection = internalConnection(this.#opened.connection);
    this.#pool = new pg.Pool({ ...this.#connection, max: 10, application_name: 'hookbridge' });
    this.#pool.on('error', (error) => this.logger.warn({ err: error }, 'idle database connection failed'));
    const info = await this.#checkDatabase(this.#pool);
    this.logger.info({ serverVersion: info.serverVersion, role: info.role }, 'connected to Postgres');

    const logger = this.logger;
    this.#hookDatabase = openHookDatabase(this.#opened.connection, {
      applicationName: 'hookbridge:hooks',
      max: 10,
      servicesApplicationName: 'hookbridge:services',
      servicesMax: 5,
      logger,
    });
    // A filter runs while the writer holds its row's lock: a filter that touches that row would wait
    // for a transaction that waits for the filter. A short lock timeout turns that into a clear error,
    // well within the filter's own timeout (a third: on a loaded machine, half left too little room).
    const lockTimeoutMs = Math.max(100, Math.min(2_000, Math.floor(this.config.filterTimeoutMs / 3)));
    const filterConnection = withSessionSettings(this.#opened.connection, { lock_timeout: String(lockTimeoutMs) });
    this.#filterDatabase = openHookDatabase(filterConnection, { applicationName: 'hookbridge:filters', max: 10, servicesMax: 2, logger });
    // What would stop the action path is found before hookbridge installs anything: such a start leaves the database as it was.
    await this.#checkReplication(this.#pool);
    await migrate(this.#pool, { schema: this.config.schema, logger: this.logger });
    this.#guards = new ExtensionGuards({ pool: this.#pool, schema: this.config.schema, runtime: this.runtime, logger: this.logger });
    // Before anything else changes: a second bridge on this database stops here, touching nothing.
    this.#filters = new FilterService({
      config: this.config,
      pool: this.#pool,
      connection: this.#connection,
      hooksConnection: filterConnection,
      runtime: this.runtime,
      logger: this.logger,
      database: this.#filterDatabase.knex,
      kysely: this.#filterDatabase.kysely,
      schema: () => this.#latestSchema,
      metrics: this.metrics,
      guards: this.#guards,
      managesTriggers: () => this.#leads,
      onLeadershipLost: () => void this.#stepDown('the instance session was lost'),
    });
    // A slot in the cluster (several bridges may serve one database).
    await this.#filters.claim();
    await this.beforeHooks?.(this.#hookDatabase.pool);
    this.#schema = new SchemaReader(this.#pool, [this.config.schema]);
    this.#latestSchema = await this.#schema.getSchema();

    const report = await this.runtime.start();
    // What the extensions guard, remembered, before triggers and publications follow the loaded hooks.
    await this.#guards.update(await listUserTables(this.#pool, { exclude: [this.config.schema] }));
    this.#newTables = new NewTables({ pool: this.#pool, schema: this.config.schema, publication: this.config.publicationName, logger: this.logger });
    // The first bridge on a database leads it at once; a later one joins as a standby.
    if (await this.#filters.tryLead()) {
      this.#role = 'leader';
      // Tables created from now on are guarded inside their CREATE TABLE (where the event trigger may exist).
      await this.#newTables.start();
      await this.#newTables.update(this.runtime.registry, this.#guards.notLoaded);
    }
    await this.#filters.start();
    if (this.#role === 'leader') await this.#startActions();
    else {
      this.logger.info(
        { slot: this.#filters.slot },
        'another bridge leads this database: joining as a standby (filter calls only; taking over when the leader goes)',
      );
      // The slot keeps changes from now on even while no bridge leads (none has yet, on a new database).
      await ensureSlot(this.#pool, this.config.slotName, this.#slotFailover()).catch((error: unknown) =>
        this.logger.warn({ err: error }, 'making sure the replication slot exists failed'),
      );
    }
    this.#leaderTimer = setInterval(() => void this.#tryLeading(), LEADER_POLL_MS);
    this.#leaderTimer.unref();
    this.#http = await startHttp({
      host: this.config.host,
      port: this.config.port,
      runtime: this.runtime,
      metrics: this.metrics,
      health: () => this.health(),
      logger: this.logger,
    });
    // One catalog read feeds both syncs (filter triggers and publications follow reloads and new
    // tables), and the schema handlers see is refreshed on the same beat.
    this.#unsubscribeRegistry = this.runtime.registry.onChange(() => void this.#syncCatalog());
    this.#catalogTimer = setInterval(() => void this.#syncCatalog(), 2_000);
    this.#catalogTimer.unref();
    // Where other machines reach this instance's HTTP API (status lists it): not a wildcard listen address.
    const host = ['0.0.0.0', '::', ''].includes(this.config.host) ? hostname() : this.config.host;
    await this.#filters.announce(`${host}:${this.#http.port}`);
    await this.runtime.dispatchServerEvent('start', { server: this.#http.server });
    this.logger.info(
      { extensions: report.loaded.length, failed: report.failed.length, database: this.#describeDatabase(), role: this.#role, slot: this.#filters.slot },
      'ready',
    );
  }

  /** Starts streaming the slot (the leader's work). A slot the previous leader's walsender still holds is waited for. */
  async #startActions(): Promise<void> {
    const pool = this.#pool;
    if (!pool || !this.#connection) return;
    const deadline = Date.now() + SLOT_WAIT_MS;
    for (let attempt = 1; ; attempt += 1) {
      const actions = new ActionStream({
        config: this.config,
        pool,
        connection: this.#connection,
        runtime: this.runtime,
        logger: this.logger,
        database: this.#hookDatabase?.knex,
        kysely: this.#hookDatabase?.kysely,
        schema: () => this.#latestSchema,
        metrics: this.metrics,
        guards: this.#guards,
        // Its slot was invalidated or dropped under it: nothing more can be delivered from it.
        onFatal: (error) => this.onFatal?.(error),
      });
      this.#actions = actions;
      let started = false;
      try {
        await actions.start();
        started = true;
      } catch (error) {
        this.#actions = undefined;
        await actions.stop(0).catch(() => undefined);
        // 55006 object_in_use: "replication slot ... is active for PID ...": the last leader's walsender has not ended yet.
        const busy = (error as { code?: unknown }).code === '55006';
        // The leader lock may have gone meanwhile (its session lost): then another instance leads.
        if (!busy || Date.now() >= deadline || this.#filters?.leading !== true || this.#stopping) throw error;
        if (attempt === 1)
          this.logger.info({ slot: this.config.slotName }, "the replication slot is still in use (the last leader's session ending?): waiting for it");
        await new Promise((resolve) => setTimeout(resolve, SLOT_RETRY_MS));
      }
      if (!started) continue;
      // Led no more while it started (the instance session went): stop at once, another leads.
      if (this.#filters?.leading !== true) {
        this.#actions = undefined;
        await actions.stop();
        throw new Error('the leader lock was lost while the action stream started');
      }
      return;
    }
  }

  /** A standby takes the leader lock when no instance holds it, and starts the leader's work. */
  #tryLeading(): Promise<void> {
    this.#leadership = this.#leadership.then(async () => {
      const filters = this.#filters;
      if (this.#role === 'leader' || this.#stopping || !filters || !this.#newTables || !this.#guards) return;
      if (!(await filters.tryLead().catch(() => false))) return this.#lookAtLeader();
      this.#role = 'leader';
      this.logger.info({ slot: filters.slot }, 'this bridge leads the database now: streaming action events and running schedules');
      try {
        await this.#newTables.start();
        await this.#newTables.update(this.runtime.registry, this.#guards.notLoaded);
        await this.#syncCatalog();
        await this.#startActions();
      } catch (error) {
        this.logger.error({ err: error }, 'taking over as leader failed; another bridge may take over');
        await this.#stepDownNow();
        // A slot lost or dropped is lost for every instance: stop, as a start would.
        const code = (error as { code?: unknown }).code;
        if (code === 'E_SLOT_LOST' || code === 'E_SLOT_DROPPED') this.onFatal?.(error as Error);
      }
    });
    return this.#leadership;
  }

  /**
   * Who holds the leader lock, looked at now and again by a standby: any role may take advisory locks,
   * and a session that is no bridge holding it would stop action hooks and schedules for good.
   */
  async #lookAtLeader(): Promise<void> {
    const pool = this.#pool;
    if (!pool || Date.now() < this.#leaderCheckedAt + LEADER_CHECK_MS) return;
    this.#leaderCheckedAt = Date.now();
    const cluster = await readCluster(pool, this.config.schema).catch(() => undefined);
    if (!cluster) return;
    const leader = cluster.instances.find((i) => i.role === 'leader');
    const heldBy = cluster.leaderLockHeldBy;
    if (heldBy !== null && !(this.#leaderSeen && 'heldBy' in this.#leaderSeen && this.#leaderSeen.heldBy === heldBy)) {
      this.logger.error(
        { pid: heldBy },
        `a session that is no bridge holds hookbridge's leader lock: no bridge streams action events or runs schedules while it does; as a superuser: select pg_terminate_backend(${heldBy})`,
      );
    }
    this.#leaderSeen = heldBy !== null ? { heldBy } : leader ? { slot: leader.slot } : null;
  }

  /** Stops the leader's work (the lock is gone, or being handed over). */
  #stepDown(reason: string): Promise<void> {
    if (this.#role !== 'leader') return this.#leadership;
    this.logger.warn({ reason }, 'this bridge no longer leads the database: action events stop here (another bridge takes over)');
    this.#leadership = this.#leadership.then(() => this.#stepDownNow());
    return this.#leadership;
  }

  async #stepDownNow(): Promise<void> {
    this.#role = 'standby';
    const actions = this.#actions;
    this.#actions = undefined;
    await actions?.stop().catch((error: unknown) => this.logger.warn({ err: error }, 'stopping the action stream failed'));
    await this.#filters?.resign();
  }

  async #syncCatalog(): Promise<void> {
    const pool = this.#pool;
    if (!pool) return;
    let tables;
    try {
      tables = await listUserTables(pool, { exclude: [this.config.schema] });
    } catch (error) {
      this.logger.warn({ err: error }, 'reading the tables failed');
      return;
    }
    // The guards first: both syncs keep what extensions that are not loaded guarded. A failed update
    // (logged) leaves the last known guards in force.
    await this.#guards?.update(tables).catch(() => undefined);
    if (this.#role === 'leader') await this.#newTables?.update(this.runtime.registry, this.#guards?.notLoaded ?? []).catch(() => undefined);
    // Each sync reports its own failure (and marks itself out of sync for /health).
    await Promise.all([
      this.#filters?.sync(tables).catch(() => undefined),
      this.#actions?.syncPublications(tables).catch(() => undefined),
      this.#schema?.getSchema().then(
        (overview) => (this.#latestSchema = overview),
        (error) => this.logger.warn({ err: error }, 'reading the schema failed'),
      ),
    ]);
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
    clearInterval(this.#leaderTimer);
    if (started) {
      // Drain: writers choose other instances, and the calls already on their way here are answered.
      const left = await this.#filters?.drain(this.config.filterTimeoutMs + 1_000);
      if (left) this.logger.warn({ calls: left }, 'stopping: filter calls still unanswered after the drain');
      await this.runtime.dispatchServerEvent('stop', { server: this.#http?.server });
      this.#stopped.abort();
      // Hand the leader lock over once the stream is stopped and its position confirmed.
      await this.#leadership;
      if (this.#role === 'leader') await this.#stepDownNow();
    }
    this.#stopped.abort();
    await this.#teardown();
  }

  /** Releases whatever exists; each step forgets its resource, so a second call does nothing. */
  /**
   * Releases whatever exists, in order; each step forgets its resource, so a second call does nothing,
   * and a step that fails is logged without skipping the ones after it (an embedded Postgres must not
   * outlive the bridge because a handler misbehaved on the way out).
   */
  async #teardown(): Promise<void> {
    clearInterval(this.#catalogTimer);
    clearInterval(this.#leaderTimer);
    this.#unsubscribeRegistry?.();
    this.#unsubscribeRegistry = undefined;
    const step = async (what: string, run: () => Promise<unknown> | undefined) => {
      try {
        await run();
      } catch (error) {
        this.logger.warn({ err: error }, `stopping: ${what} failed`);
      }
    };
    await step('closing the HTTP server', () => this.#http?.close());
    this.#http = undefined;
    await step('stopping the action stream', () => this.#actions?.stop());
    this.#actions = undefined;
    await step('stopping the filter server', () => this.#filters?.stop());
    this.#filters = undefined;
    await step('stopping the hook runtime', () => this.runtime.stop());
    await step("closing the filters' database", () => this.#filterDatabase?.close());
    this.#filterDatabase = undefined;
    await step("closing the hooks' database", () => this.#hookDatabase?.close());
    this.#hookDatabase = undefined;
    await step('closing the pool', () => this.#pool && closePool(this.#pool));
    this.#pool = undefined;
    this.#schema = undefined;
    this.#newTables = undefined;
    await step('releasing the database', () => this.#opened?.release());
    this.#opened = undefined;
  }

  /** What a standby's ensureSlot needs to create a failover slot (HOOKBRIDGE_SLOT_FAILOVER), or undefined. */
  #slotFailover(): SlotFailover | undefined {
    return this.config.slotFailover && this.#connection ? { connection: this.#connection, alter: false } : undefined;
  }

  /**
   * Read-only: the server's replication settings and privileges (preflight), and a slot of our name
   * that exists but is no use to us (another database's, physical, another plugin, invalidated).
   * Standbys check too: they take over the slot when the leader goes.
   */
  async #checkReplication(pool: pg.Pool): Promise<void> {
    await preflight(pool, { slotName: this.config.slotName, slotFailover: this.config.slotFailover });
    const slot = await readSlotState(pool, this.config.slotName);
    const problem = slot && slotProblem(slot);
    if (problem) throw problem;
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
