/**
 * The action path, assembled: slot and publications → replication stream → pgoutput decoding →
 * transaction assembly → pipeline (order, concurrency, backpressure) → delivery (retries, parking)
 * → confirmation back to Postgres.
 */
import type { Knex } from 'knex';
import type { Kysely } from 'kysely';
import type pg from 'pg';
import type { Logger } from 'pino';
import { Subject } from 'rxjs';
import type { Config } from '../config.js';
import type { ExtensionGuards } from '../extension-guards.js';
import { replayHeldEvents } from '../failed-events.js';
import type { BridgeMetrics } from '../metrics.js';
import type { HookRuntime } from '../../hooks/runtime.js';
import { TABLE_ACTIONS, type EventRef } from '../../hooks/event-name.js';
import type { HookContext } from '../../hooks/types.js';
import { parseIdentityMessage, parseSignedMessage, withMappedUser, readAccountabilitySecret, readLegacyIdentityCutoff } from './accountability.js';
import { catchUpTypes, NewTableCatchUp, readCatchUpMessage } from './catch-up.js';
import {
  actionMeta,
  CATCH_UP_PREFIX,
  HEARTBEAT_PREFIX,
  TransactionAssembler,
  truncateMeta,
  type ChangeEvent,
  type StreamEvent,
  type TruncateEvent,
} from './change-events.js';
import { deliver, observeTries, type DeliveryOptions } from './delivery.js';
import { formatLsn, parseLsn } from './lsn.js';
import { PgoutputDecoder } from './pgoutput-decoder.js';
import { TypeCatalog } from '../typing/type-catalog.js';
import { builtinShape, fromText } from '../typing/values.js';
import { ChangePipeline } from './pipeline.js';
import { SerialQueue } from '../serial-queue.js';
import { withSessionSettings } from '../database.js';
import { listUserTables, unmanagedReason, type UserTable } from '../catalog.js';
import { syncPublications } from './publication.js';
import { checkSlotStillUsable, ensureSlot, FAILOVER_SETUP_FIX, preflight, readSynchronizedStandbySlots } from './setup.js';
import { ReplicationStream, type StreamOptions } from './stream.js';
import { CommitVisibility } from './visibility.js';

export interface ActionStreamOptions {
  config: Readonly<Config>;
  pool: pg.Pool;
  connection: pg.ClientConfig;
  runtime: HookRuntime;
  logger: Logger;
  /** What handlers get as `context.database` (Knex) and `context.kysely`. */
  database?: Knex;
  kysely?: Kysely<any>;
  /** What handlers get as `context.schema`. */
  schema?: () => unknown;
  metrics?: BridgeMetrics;
  /** Tables guarded by extensions that are not loaded: they stay published, their changes are held. */
  guards?: Pick<ExtensionGuards, 'holdsActions' | 'heldFor'>;
  /**
   * The stream stopped for good and will not come back by itself: its slot was invalidated
   * (E_SLOT_LOST) or dropped (E_SLOT_DROPPED) while it ran. The bridge should stop and say why.
   */
  onFatal?: (error: Error) => void;
  /** How long the replication connection may be silent (see ReplicationStream); the defaults suit production, tests shorten them. */
  liveness?: StreamOptions['liveness'];
}

/** How often the slot is looked at while a lost connection waits for handlers to finish. */
const SLOT_CHECK_MS = 1_000;

export class ActionStream {
  readonly #options: ActionStreamOptions;
  readonly #logger: Logger;
  readonly #abort = new AbortController();
  #stream: ReplicationStream | undefined;
  #pipeline: ChangePipeline | undefined;
  #visibility: CommitVisibility | undefined;
  /** Aborted when the replication connection is lost (and at stop): what waited for it is not taken. */
  #connectionScope = new AbortController();
  #heartbeat: NodeJS.Timeout | undefined;
  readonly #syncs = new SerialQueue();
  #publishedKey = '';
  #lastFullSync = 0;
  #inSync = false;
  /** New tables join the publication with the rows they hold (where no event trigger joined them at CREATE TABLE). */
  readonly #catchUp: NewTableCatchUp;
  #unmanaged: Array<{ collection: string; reason: string }> = [];
  /** Primary keys by table oid, from the catalog (pgoutput cannot tell them under REPLICA IDENTITY FULL). */
  #primaryKeys = new Map<number, string[]>();
  #delivery: DeliveryOptions | undefined;
  /** Why the stream stopped for good (onFatal). */
  #fatal: Error | undefined;

  constructor(options: ActionStreamOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'replication' });
    this.#catchUp = new NewTableCatchUp({
      pool: options.pool,
      schema: options.config.schema,
      publication: options.config.publicationName,
      logger: this.#logger,
    });
  }

  /** True once the stream runs and the publications match the loaded hooks. */
  get healthy(): boolean {
    return (this.#stream?.streaming ?? false) && this.#inSync && this.#pipeline?.failure === undefined && this.#fatal === undefined;
  }

  /** Why the stream stopped for good, if it did (see `onFatal`). */
  get failure(): Error | undefined {
    return this.#fatal;
  }

  get confirmedLsn(): string | undefined {
    return this.#stream ? formatLsn(this.#stream.confirmed) : undefined;
  }

  get streaming(): boolean {
    return this.#stream?.streaming ?? false;
  }

  /** Why action hooks wait for a transaction to become visible, once that has lasted (visibility.ts). */
  get visibilityProblem(): string | undefined {
    return this.#visibility?.problem;
  }

  get publicationsInSync(): boolean {
    return this.#inSync;
  }

  /** Tables with action hooks the bridge may not publish, and why. */
  get unmanaged(): ReadonlyArray<{ collection: string; reason: string }> {
    return this.#unmanaged;
  }

  /** A row some trigger let through without its filters (open mode, no bridge reachable). */
  #unfiltered(content: Buffer, secret: Buffer): void {
    // Anyone may emit a logical message: only filter_entry's, signed with the key, counts.
    const detail = parseSignedMessage(content, secret);
    if (!detail) return;
    const reason = detail['reason'] === 'timeout' ? 'timeout' : 'unreachable';
    this.#options.metrics?.filterUnfiltered.inc({ reason });
    this.#logger.warn(
      { table: `${String(detail['schema'])}.${String(detail['table'])}`, op: detail['op'], reason },
      'a row was written without its filter hooks (FILTER_FAILURE_MODE=open)',
    );
  }

  /** WAL bytes between the server's current position and the slot's confirmed one. */
  async lagBytes(): Promise<number | undefined> {
    const { rows } = await this.#options.pool.query<{ lag: string | null }>(
      `select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text as lag from pg_replication_slots where slot_name = $1`,
      [this.#options.config.slotName],
    );
    return rows[0]?.lag == null ? undefined : Number(rows[0].lag);
  }

  async start(): Promise<void> {
    const { config, pool } = this.#options;
    await preflight(pool, { slotName: config.slotName, slotFailover: config.slotFailover });
    const slot = await ensureSlot(pool, config.slotName, config.slotFailover ? { connection: this.#options.connection, alter: true } : undefined);
    if (config.slotFailover && (await readSynchronizedStandbySlots(pool)) === '') {
      this.#logger.warn({ fix: FAILOVER_SETUP_FIX }, 'HOOKBRIDGE_SLOT_FAILOVER: synchronized_standby_slots is not set on this server');
    }
    if (slot.created) this.#logger.info({ slot: config.slotName }, 'created replication slot');
    await this.syncPublications(await listUserTables(pool, { exclude: [config.schema] }));
    // Changes held while an extension was not loaded go to it now, before newer ones stream in.
    if (this.#options.guards) {
      await replayHeldEvents({
        pool,
        schema: config.schema,
        runtime: this.#options.runtime,
        logger: this.#logger,
        delivery: this.#deliveryOptions(),
        context: this.#context(null),
      });
    }

    const secret = await readAccountabilitySecret(pool, config.schema);
    // Identities signed before migration 000010 are believed only in the transactions before it (accountability.ts).
    const legacyBefore = await readLegacyIdentityCutoff(pool, config.schema);
    // Column types the decoder cannot know alone (composites, domains, arrays of them) come from the catalog.
    const catalog = new TypeCatalog(pool);
    const newDecoder = () => new PgoutputDecoder({ parserFor: (column) => catalog.textParser(column.typeOid, fromText) });
    let decoder = newDecoder();
    const newAssembler = () =>
      new TransactionAssembler(
        (content, xid) => parseIdentityMessage(content, secret, xid, legacyBefore),
        (relation) => this.#primaryKeys.get(relation.oid),
        (content) => this.#unfiltered(content, secret),
        (content, xid) => readCatchUpMessage(content, secret, xid, (oid) => catalog.textParser(oid, fromText)),
      );
    let assembler = newAssembler();
    // The stream of changes (decoded and assembled, in commit order) into the pipeline; its stream of
    // confirmable positions is what the replication stream confirms (pipeline.ts says what stays plain code).
    const changes = new Subject<StreamEvent>();
    const pipeline = new ChangePipeline({
      changes,
      handleChange: (change) => this.#deliverChange(change),
      handleTruncate: (truncate) => this.#deliverTruncate(truncate),
      logger: this.#logger,
    });
    this.#pipeline = pipeline;

    // Status updates must reach the walsender well within wal_sender_timeout, even while reading is
    // paused by a slow handler (0 disables the timeout).
    const { rows } = await pool.query<{ ms: number }>(`select setting::int as ms from pg_settings where name = 'wal_sender_timeout'`);
    const senderTimeoutMs = rows[0]?.ms ?? 60_000;
    const statusIntervalMs = senderTimeoutMs > 0 ? Math.max(100, Math.min(10_000, Math.floor(senderTimeoutMs / 3))) : 10_000;

    const visibility = new CommitVisibility({
      connection: this.#options.connection,
      walsenderPid: () => this.#stream?.walsenderPid,
      logger: this.#logger,
    });
    this.#visibility = visibility;

    this.#stream = new ReplicationStream({
      statusIntervalMs,
      liveness: this.#options.liveness,
      // A walsender decoding a large transaction no publication wants is silent (and answers no status
      // update) for up to wal_sender_timeout / 2: one working is waited out, one waiting on us is dead.
      walsenderBusy: (pid) => walsenderBusy(pool, pid),
      busyLimitMs: senderTimeoutMs > 0 ? senderTimeoutMs + 5_000 : 3_600_000,
      // pgoutput prints values with the walsender's settings: fix the ones the typing reads (bridge/typing).
      connection: withSessionSettings(this.#options.connection, { DateStyle: 'ISO', IntervalStyle: 'postgres', bytea_output: 'hex', extra_float_digits: '1' }),
      slotName: config.slotName,
      publications: [config.publicationName, `${config.publicationName}_inserts`],
      startLsn: slot.confirmedFlushLsn ? parseLsn(slot.confirmedFlushLsn) : 0n,
      logger: this.#logger,
      onData: (payload, walLsn) => {
        const message = decoder.decode(payload);
        const current = assembler;
        const take = (): Promise<void> | undefined => {
          // The connection was lost while this waited: the next one sends it again, to a new assembler.
          if (assembler !== current) return;
          const event = current.next(message, walLsn);
          if (!event) return;
          changes.next(event);
          return pipeline.waitForCapacity();
        };
        if (message.tag === 'begin') {
          // Hooks see what they are told about: a transaction waits until other sessions see it (visibility.ts).
          const visible = visibility.wait(message.xid, this.#connectionScope.signal);
          // Stopped while it waited: nothing more is read (the stream is closing).
          if (visible) return visible.then((ok) => (ok ? take() : new Promise<void>(() => {})));
        }
        if (message.tag === 'relation') {
          // Before any of its rows: reading stops until the catalog has answered.
          // Sent again after the table (or a type of it) changed: read its user-defined types afresh.
          const userTypes = message.relation.columns.map((c) => c.typeOid).filter((oid) => builtinShape(oid) === undefined);
          if (userTypes.length) return catalog.load(userTypes, true).then(take);
        }
        if (message.tag === 'message' && message.prefix === CATCH_UP_PREFIX) {
          // A row a new table held when it joined: its user-defined types first, as for a relation.
          const userTypes = catchUpTypes(message.content, secret).filter((oid) => builtinShape(oid) === undefined);
          if (userTypes.length) return catalog.load(userTypes).then(take);
        }
        return take();
      },
      isSettled: () => pipeline.settled,
      onDisconnect: async () => {
        // Changes already handed out finish; a transaction cut off mid-way will be sent again. Meanwhile
        // (handlers may take long) the slot is looked at: one invalidated or dropped under the stream
        // cannot deliver what it missed, so the stream gives up (onFatal) instead of retrying.
        const idle = pipeline.whenIdle().then(() => true);
        for (;;) {
          await checkSlotStillUsable(pool, config.slotName, this.confirmedLsn ?? '?');
          if (this.#abort.signal.aborted) return;
          let timer: NodeJS.Timeout | undefined;
          const done = await Promise.race([idle, new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), SLOT_CHECK_MS)))]);
          clearTimeout(timer);
          if (done) break;
        }
        pipeline.resetOpenTransactions();
        // A Begin the lost connection still waits on will not be taken (see take): stop asking for it.
        this.#connectionScope.abort();
        this.#connectionScope = new AbortController();
        decoder = newDecoder();
        assembler = newAssembler();
      },
      onFatal: (error) => this.#giveUp(error),
    });
    this.#stream.follow(pipeline.positions);
    try {
      await this.#stream.start();
    } catch (error) {
      // Invalidated between ensureSlot and START_REPLICATION: say so as a start would have.
      await checkSlotStillUsable(pool, config.slotName, this.confirmedLsn ?? '?');
      throw error;
    }
    this.#heartbeat = setInterval(() => void this.#emitHeartbeat(), 5_000);
    this.#heartbeat.unref();
  }

  /**
   * Stops reading, lets in-flight handlers finish for up to `graceMs`, confirms what finished, and
   * closes the connection. What did not finish is delivered again after the next start.
   */
  async stop(graceMs = 10_000): Promise<void> {
    clearInterval(this.#heartbeat);
    // Stop taking new changes first, or "idle" might never come.
    this.#stream?.pauseReading();
    const pipeline = this.#pipeline;
    if (pipeline) {
      const idle = pipeline.whenIdle();
      const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
      if ((await Promise.race([idle, timer])) === 'timeout') {
        this.#logger.warn({ inFlight: pipeline.inFlight }, 'handlers still running at shutdown; their changes will be delivered again');
      }
    }
    this.#abort.abort();
    this.#connectionScope.abort();
    await this.#stream?.stop();
    await this.#visibility?.close();
    pipeline?.close();
    await this.#syncs.idle();
  }

  #giveUp(error: unknown): void {
    const fatal = error instanceof Error ? error : new Error(String(error));
    this.#fatal = fatal;
    this.#logger.error({ err: fatal, code: (fatal as { code?: unknown }).code }, `the action stream stopped: ${fatal.message}`);
    try {
      this.#options.onFatal?.(fatal);
    } catch (listenerError) {
      this.#logger.error({ err: listenerError }, 'a listener of a fatal action stream error threw');
    }
  }

  /**
   * Makes the publications cover exactly the tables that have action hooks. Serialised. The bridge
   * calls it with the current tables when extensions reload and as the catalog changes.
   */
  syncPublications(tables: UserTable[]): Promise<void> {
    return this.#syncs.run(
      () => this.#syncNow(tables),
      (error) => {
        this.#inSync = false;
        this.#logger.error({ err: error }, 'publication sync failed');
      },
    );
  }

  async #syncNow(tables: UserTable[]): Promise<void> {
    const { config, pool, runtime } = this.#options;
    this.#primaryKeys = new Map(tables.map((t) => [t.oid, t.primaryKey]));
    // A table an extension that is not loaded heard stays published: its changes are held for it.
    const guards = this.#options.guards;
    const matching = tables.filter(
      (t) => guards?.holdsActions(t.collection) || TABLE_ACTIONS.some((action) => runtime.registry.has('action', action, t.collection)),
    );
    // A table the bridge may not publish is listed (health, status) and never stops the others.
    const wanted = matching.filter((t) => t.mayPublish !== false);
    const unmanaged = matching.filter((t) => t.mayPublish === false).map((t) => ({ collection: t.collection, reason: unmanagedReason(t, 'publish') }));
    if (unmanaged.map((u) => u.collection).join(',') !== this.#unmanaged.map((u) => u.collection).join(',')) {
      for (const u of unmanaged)
        this.#logger.error({ collection: u.collection, reason: u.reason }, 'a table with action hooks cannot be published: its changes do not reach them');
    }
    this.#unmanaged = unmanaged;
    // Tables new to the bridge join with the rows they hold (catch-up.ts); one whose writers hold it
    // waits for the next sync, left out of the publication until then so that its rows are caught up.
    let waiting = await this.#catchUp.join(tables, wanted);
    if (waiting.size && this.#publishedKey === '' && this.#lastFullSync === 0) {
      // The very first sync on a fresh install: the publications do not exist yet, so the new tables
      // could not join. Create them (with the tables that need no catch-up), then join the rest now.
      await syncPublications(pool, { publication: config.publicationName, tables: wanted.filter((t) => !waiting.has(t.oid)), schema: config.schema });
      waiting = await this.#catchUp.join(tables, wanted);
    }
    // Partitions are in the key: each needs the accountability trigger, so a new one is synced within
    // 2 s. A full sync also runs every 30 s (a trigger someone dropped).
    const key = wanted.map((t) => `${t.oid}:${t.hasIdentityKey}:${t.partitions?.join(' ') ?? ''}`).join(',');
    if (key !== this.#publishedKey || Date.now() - this.#lastFullSync > 30_000) {
      this.#lastFullSync = Date.now();
      const result = await syncPublications(pool, {
        publication: config.publicationName,
        tables: wanted.filter((t) => !waiting.has(t.oid)),
        schema: config.schema,
      });
      this.#publishedKey = waiting.size ? '' : key;
      // A table still waiting to join (its writers held it) is not published yet: not in sync.
      if (waiting.size) {
        this.#inSync = false;
        return;
      }
      if (result.added.length || result.removed.length) {
        this.#logger.info({ added: result.added, removed: result.removed }, 'publication updated');
      }
      for (const collection of result.insertOnly) {
        this.#logger.warn(
          { collection },
          'table has no primary key or replica identity: only its inserts and truncates reach action hooks; ' +
            'ALTER TABLE ... REPLICA IDENTITY FULL (or add a primary key) to get updates and deletes',
        );
      }
    }
    this.#inSync = true;
  }

  async #emitHeartbeat(): Promise<void> {
    if (!this.#stream?.streaming) return;
    try {
      await this.#options.pool.query(`select pg_logical_emit_message(false, $1, ''::text)`, [HEARTBEAT_PREFIX]);
    } catch (error) {
      this.#logger.warn({ err: error }, 'heartbeat failed');
    }
  }

  #context(accountability: ChangeEvent['accountability']): Partial<HookContext> {
    // Parked with the event, so a replay sees the same user.
    const mapped = withMappedUser(accountability, this.#options.config.userMap);
    return { database: this.#options.database, kysely: this.#options.kysely, schema: this.#options.schema?.(), accountability: mapped };
  }

  #deliverChange(change: ChangeEvent): Promise<void> {
    // Written by the bridge's own services with { emitEvents: false }.
    if (change.accountability?.['bypass'] === true) return Promise.resolve();
    return deliver(
      {
        event: { scope: 'items', action: change.action, collection: change.collection },
        id: change.id,
        meta: actionMeta(change),
        context: this.#context(change.accountability),
        commitLsn: change.transaction.lsn,
        xid: change.transaction.xid,
      },
      this.#deliveryOptions(),
    );
  }

  async #deliverTruncate(truncate: TruncateEvent): Promise<void> {
    for (const table of truncate.tables) {
      await deliver(
        {
          event: { scope: 'items', action: 'truncate', collection: table.collection },
          id: table.id,
          meta: truncateMeta(truncate, table),
          context: this.#context(truncate.accountability),
          commitLsn: truncate.transaction.lsn,
          xid: truncate.transaction.xid,
        },
        this.#deliveryOptions(),
      );
    }
  }

  readonly #heldFor = (event: EventRef) => this.#options.guards?.heldFor(event.collection, event.action) ?? [];

  /** Made once: every change shares it, and its action policy. */
  #deliveryOptions(): DeliveryOptions {
    if (this.#delivery) return this.#delivery;
    const { config, pool, runtime } = this.#options;
    return (this.#delivery = {
      runtime,
      pool,
      schema: config.schema,
      logger: this.#logger,
      policy: {
        attempts: config.actionAttempts,
        timeoutMs: config.actionTimeoutMs,
        signal: this.#abort.signal,
        observe: this.#options.metrics ? observeTries(this.#options.metrics) : undefined,
      },
      metrics: this.#options.metrics,
      heldFor: this.#heldFor,
    });
  }
}

/**
 * Whether a walsender is at work (decoding) rather than waiting: waiting for WAL, or to write to a
 * client that does not read, while its client hears nothing, means the connection between them is
 * gone. Undefined when the server cannot tell (no such backend: dead too).
 */
async function walsenderBusy(pool: pg.Pool, pid: number): Promise<boolean | undefined> {
  const { rows } = await pool.query<{ wait_event: string | null }>(
    `select wait_event from pg_catalog.pg_stat_activity where pid = $1 and backend_type = 'walsender'`,
    [pid],
  );
  const row = rows[0];
  if (!row) return false;
  // Spelled WalSenderWaitForWAL before PostgreSQL 16 and WalSenderWaitForWal since.
  return !['walsendermain', 'walsenderwaitforwal', 'walsenderwritedata'].includes((row.wait_event ?? '').toLowerCase());
}
