/**
 * The bridge's side of the filter wait (see sql/000003.sql): a pool of tickets, each "armed" while the
 * bridge holds its session advisory lock, plus one "alive" lock held for as long as the bridge serves.
 *
 * A writer claims an armed ticket, sends its request and waits for the ticket's lock. The bridge
 * answers and then releases the lock, which wakes the writer; it re-arms the ticket once the writer's
 * claim is gone (a writer that had not started waiting yet would otherwise sleep through its answer).
 * Session locks are counted, so each ticket has one state here and is only ever locked from
 * "released"/"unarmed" — arming twice would leave it held after one release and hang its next writer.
 *
 * All locks live on one dedicated connection, the instance session: if it drops, Postgres releases them,
 * every waiting writer wakes at once, finds no answer and tries another instance (or fails HB503), and
 * the board reconnects and arms again.
 *
 * Several bridges share a database (see sql/000013.sql): each takes a slot of its own ("alive"(slot)),
 * numbers its tickets from slot * 10000, takes "serving"(slot) once writers may choose it, and at most
 * one holds "leader" (actions and schedules). A drain lets go of "serving" first, then of each ticket
 * no writer has claimed, answering the calls already on their way.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { HookbridgeError } from '../../hooks/errors.js';

/**
 * unarmed/released: not held; arming: an arm query is on its way (the database may already hold it, and
 * a writer may already have claimed it, before the answer reaches us); armed: held; busy: a request is
 * being answered; releasing: its unlock is not sent yet (so still held: never re-armed meanwhile).
 */
type TicketState = 'unarmed' | 'arming' | 'armed' | 'busy' | 'releasing' | 'released';

export interface TicketBoardOptions {
  connection: pg.ClientConfig;
  schema: string;
  tickets: number;
  logger: Logger;
  /** After the instance session came back; `slotChanged` when it had to take another slot. */
  onReopen?: (slotChanged: boolean) => void;
  /** The instance session was lost while this instance led the cluster: it leads no more. */
  onLeadershipLost?: () => void;
}

/** How many bridges one database can run at once. */
export const MAX_INSTANCES = 64;
/** Tickets of slot s are numbered from s * TICKETS_PER_SLOT (FILTER_TICKETS is at most this). */
export const TICKETS_PER_SLOT = 10_000;
/** The "leader" lock's second key, in the class of the "alive" locks (slots are below it). */
export const LEADER_KEY = 65_536;

/** How long one try to take "serving" waits for writers testing it to let go (see #takeServing). */
const SERVE_WAIT_MS = 50;
/** Pauses after failed tries to take "serving"; past the last, one a second, logged as an error. */
const SERVE_RETRY_MS = [50, 100, 200, 400];

/** Advisory lock class ids for one hookbridge schema: claim = base, armed = base + 1, alive = base + 2. */
export function lockClassFor(schema: string): number {
  // Multiples of 4 in [4, 2^30): apart from each other's classes, and clear of int4 overflow at + 2.
  return (createHash('sha256').update(`hookbridge.filter:${schema}`).digest().readUInt32BE(0) % (1 << 28)) * 4 + 4;
}

/** Released tickets are re-armed in batches: when few are left armed, or after this long. */
const REARM_AFTER_MS = 20;
const RECONNECT_MS = 1_000;
/** How often the ticket session stamps filter_heartbeat (writers call a stamp older than 1 s stale). */
const HEARTBEAT_MS = 250;

export class TicketBoard {
  readonly #options: TicketBoardOptions;
  readonly lockClass: number;
  readonly #states: TicketState[];
  /** The token of the request each busy ticket is answering. */
  readonly #owners: number[];
  #lastToken = 0;
  #client: pg.Client | undefined;
  /** This instance's slot, once open (kept across reconnects when it can be). */
  #slot: number | undefined;
  /** Writers may choose this instance (it holds "serving"). */
  #serving = false;
  /** serve() was asked for: "serving" is taken (again) whenever this session can. */
  #wantServing = false;
  #serveTimer: NodeJS.Timeout | undefined;
  /** Failed tries to take "serving" since it was last taken (or the session opened). */
  #serveTries = 0;
  /** The take of "serving" under way (see #takeServing). */
  #taking: Promise<void> | undefined;
  #leading = false;
  #draining = false;
  #rearmTimer: NodeJS.Timeout | undefined;
  #rearming = false;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #closed = false;
  /** Releases asked for in this turn of the event loop, sent together. */
  #releases: Array<{ ticket: number | undefined; deliver: string | undefined; resolve: () => void }> = [];
  /** One query at a time on the lock connection, in the order asked. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: TicketBoardOptions) {
    this.#options = options;
    this.lockClass = lockClassFor(options.schema);
    this.#states = Array.from({ length: options.tickets }, () => 'unarmed');
    this.#owners = Array.from({ length: options.tickets }, () => 0);
  }

  get size(): number {
    return this.#states.length;
  }

  /** This instance's slot in the cluster. */
  get slot(): number {
    if (this.#slot === undefined) throw new Error('the instance session is not open');
    return this.#slot;
  }

  /** This instance's slot, or undefined before the instance session first opened. */
  get currentSlot(): number | undefined {
    return this.#slot;
  }

  /** The first ticket number of this instance (tickets are numbered across the cluster). */
  get firstTicket(): number {
    return this.slot * TICKETS_PER_SLOT;
  }

  /** Whether `ticket` (a cluster-wide number) is one of this instance's. */
  owns(ticket: number): boolean {
    return this.#slot !== undefined && Number.isInteger(ticket) && ticket >= this.firstTicket && ticket < this.firstTicket + this.size;
  }

  /** The backend pid of the instance session (what pg_locks shows holding this instance's locks). */
  get backendPid(): number | undefined {
    return (this.#client as unknown as { processID?: number } | undefined)?.processID;
  }

  get leading(): boolean {
    return this.#leading;
  }

  get serving(): boolean {
    return this.#serving;
  }

  /** Tickets a writer could claim right now. */
  get armed(): number {
    return this.#states.filter((s) => s === 'armed').length;
  }

  /**
   * Takes the alive lock and arms every ticket. Refuses, touching nothing, when another bridge already
   * serves this database's filter calls.
   */
  async open(): Promise<void> {
    const client = new pg.Client({ ...this.#options.connection, application_name: 'hookbridge:instance' });
    client.on('error', (error) => this.#lost(client, error));
    client.on('end', () => this.#lost(client, new Error('the instance connection ended')));
    await client.connect();
    const previous = this.#slot;
    let slot: number | undefined;
    try {
      // The slot this instance had before a reconnect, if it is still free; else the lowest free one.
      // (The scan stops at the first lock it gets: no ORDER BY, which would try every slot.)
      if (previous !== undefined) {
        const { rows } = await client.query<{ ok: boolean }>('select pg_catalog.pg_try_advisory_lock($1, $2) as ok', [this.lockClass + 2, previous]);
        if (rows[0]?.ok) slot = previous;
      }
      if (slot === undefined) {
        const { rows } = await client.query<{ slot: number }>(
          `select s as slot from pg_catalog.generate_series(0, $2 - 1) s where pg_catalog.pg_try_advisory_lock($1, s) limit 1`,
          [this.lockClass + 2, MAX_INSTANCES],
        );
        slot = rows[0]?.slot;
      }
      if (slot === undefined) {
        throw new HookbridgeError(
          'E_BRIDGE_RUNNING',
          `${MAX_INSTANCES} hookbridge instances already serve this database (schema "${this.#options.schema}"); this one stops without touching them`,
        );
      }
      // Each instance stamps a beat of its own: writers read it whatever their snapshot (a sequence).
      await client.query(`create sequence if not exists ${this.#beatSequence(slot)}`);
      await client.query(`revoke all on sequence ${this.#beatSequence(slot)} from public`);
    } catch (error) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw error;
    }
    this.#slot = slot;
    this.#client = client;
    this.#states.fill('unarmed');
    await this.#rearm();
    await this.#beat(client);
    this.#serveTries = 0;
    // Back in its slot, it serves again at once (its row still says how to reach it); in another slot,
    // only once the row there is published (onReopen, then serve()).
    if (this.#wantServing && slot === previous) await this.#takeServing().catch((error: unknown) => this.#servingFailed(error));
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      if (this.#client) void this.#beat(this.#client).catch(() => undefined);
    }, HEARTBEAT_MS);
    this.#heartbeat.unref();
    if (previous !== undefined) this.#options.onReopen?.(slot !== previous);
  }

  #beatSequence(slot: number): string {
    return `${pg.escapeIdentifier(this.#options.schema)}.${pg.escapeIdentifier(`filter_beat_${slot}`)}`;
  }

  /** Writers may choose this instance from now on (its transport is published and probed). */
  async serve(): Promise<void> {
    this.#wantServing = true;
    await this.#takeServing();
  }

  /**
   * Takes "serving", waiting at most SERVE_WAIT_MS each time: writers take it shared for a moment to
   * test it, and a request that waits makes their tests fail (they take this instance as serving), so
   * such a moment never costs a second. Bounded, because any role may hold an advisory lock and a
   * request that waits stalls this session's queue (every answer's wake-up). Held longer, it is tried
   * again after SERVE_RETRY_MS, then every second, logged with the holder. One take at a time (a
   * timer's, serve()'s, a reopen's): two would hold it twice, and a drain lets go once.
   */
  async #takeServing(): Promise<void> {
    while (this.#taking) await this.#taking.catch(() => undefined);
    this.#taking = this.#takeServingNow().finally(() => (this.#taking = undefined));
    return this.#taking;
  }

  async #takeServingNow(): Promise<void> {
    clearTimeout(this.#serveTimer);
    const client = this.#client;
    if (!client || this.#serving || this.#draining || this.#closed || !this.#wantServing) return;
    const took = await this.#waitForServing(client);
    // Its session went meanwhile, and the lock with it (a reopen takes it again).
    if (client !== this.#client) return;
    if (took && (this.#draining || this.#closed || !this.#wantServing)) {
      // A drain began meanwhile: it found nothing to let go of, so this take does.
      await this.#query(client, 'select pg_catalog.pg_advisory_unlock($1, $2)', [this.lockClass + 3, this.slot]).catch(() => undefined);
      return;
    }
    if (took) {
      this.#serving = true;
      this.#serveTries = 0;
      return;
    }
    const pauseMs = SERVE_RETRY_MS[this.#serveTries];
    this.#serveTries += 1;
    if (pauseMs !== undefined) {
      this.#options.logger.debug({ slot: this.slot, tries: this.#serveTries }, "this instance's serving lock is held by another session: trying again");
    } else {
      const { pids: holders } = await this.#servingHolders(client).catch(() => ({ pids: [] as number[] }));
      this.#options.logger.error(
        { slot: this.slot, holders },
        "another session holds this instance's serving lock: writers do not choose it until that session lets go (pg_terminate_backend on its pid)",
      );
    }
    this.#retryServing(pauseMs ?? 1_000);
  }

  #retryServing(pauseMs: number): void {
    clearTimeout(this.#serveTimer);
    this.#serveTimer = setTimeout(() => void this.#takeServing().catch((error: unknown) => this.#servingFailed(error)), pauseMs);
    this.#serveTimer.unref();
  }

  /** A try that failed otherwise than by waiting too long (a cancel, say): said, and tried again while this session lasts. */
  #servingFailed(error: unknown): void {
    if (!this.#client || this.#closed || this.#draining || !this.#wantServing) return;
    this.#options.logger.warn({ err: error, slot: this.slot }, "taking this instance's serving lock failed: trying again");
    this.#retryServing(1_000);
  }

  /**
   * One bounded wait for "serving" (a session lock: it outlives the statement's implicit transaction,
   * which a timeout ends, leaving nothing to roll back); false if it stayed held by others.
   */
  async #waitForServing(client: pg.Client): Promise<boolean> {
    try {
      // Numbers of our own making, in one round trip (a simple query takes no parameters).
      await this.#query(client, `set local lock_timeout = ${SERVE_WAIT_MS}; select pg_catalog.pg_advisory_lock(${this.lockClass + 3}, ${this.slot})`);
      return true;
    } catch (error) {
      if ((error as { code?: unknown }).code !== '55P03') throw error;
      // Granted just as the wait timed out, Postgres keeps the lock and still fails the statement.
      return (await this.#servingHolders(client)).mine;
    }
  }

  /** The sessions that hold "serving" (writers testing it, one that keeps it), and whether this one is among them. */
  async #servingHolders(client: pg.Client): Promise<{ pids: number[]; mine: boolean }> {
    const { rows } = await this.#query<{ pid: number; mine: boolean }>(
      client,
      `select l.pid, l.pid = pg_catalog.pg_backend_pid() as mine from pg_catalog.pg_locks l
        where l.locktype = 'advisory' and l.granted and l.classid = $1::oid and l.objid = $2::oid and l.objsubid = 2
          and l.database = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())`,
      [this.lockClass + 3, this.slot],
    );
    return { pids: rows.map((r) => r.pid), mine: rows.some((r) => r.mine) };
  }

  /** Takes the leader lock if no instance holds it; whether this instance leads now. */
  async tryLead(): Promise<boolean> {
    const client = this.#client;
    if (!client || this.#draining) return false;
    if (this.#leading) return true;
    const { rows } = await this.#query<{ ok: boolean }>(client, 'select pg_catalog.pg_try_advisory_lock($1, $2) as ok', [this.lockClass + 2, LEADER_KEY]);
    this.#leading = rows[0]?.ok === true && client === this.#client;
    return this.#leading;
  }

  /** Lets another instance lead. */
  async resign(): Promise<void> {
    const client = this.#client;
    if (!this.#leading) return;
    this.#leading = false;
    if (client) await this.#query(client, 'select pg_catalog.pg_advisory_unlock($1, $2)', [this.lockClass + 2, LEADER_KEY]).catch(() => undefined);
  }

  /**
   * Stops taking filter calls: lets go of "serving" (writers choose other instances), then disarms each
   * ticket no writer has claimed, and answers the calls already claimed until none is left or
   * `timeoutMs` passed. Resolves with the number of calls still unanswered then.
   */
  async drain(timeoutMs: number): Promise<number> {
    this.#draining = true;
    this.#wantServing = false;
    clearTimeout(this.#rearmTimer);
    clearTimeout(this.#serveTimer);
    const client = this.#client;
    if (!client) return 0;
    if (this.#serving) {
      this.#serving = false;
      // Until this session holds it no more: held twice (never meant to be), one unlock would leave it held.
      for (let times = 0; times < 8; times += 1) {
        await this.#query(client, 'select pg_catalog.pg_advisory_unlock($1, $2)', [this.lockClass + 3, this.slot]).catch(() => undefined);
        if (!(await this.#servingHolders(client).catch(() => undefined))?.mine) break;
      }
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const armed = this.#states.flatMap((state, ticket) => (state === 'armed' ? [this.firstTicket + ticket] : []));
      if (armed.length > 0 && client === this.#client) {
        try {
          const { rows } = await this.#query<{ held: number[] }>(
            client,
            `select ${pg.escapeIdentifier(this.#options.schema)}.filter_disarm($1, $2::int[]) as held`,
            [this.lockClass, armed],
          );
          const held = new Set(rows[0]?.held ?? []);
          for (const ticket of armed) {
            const index = ticket - this.firstTicket;
            if (this.#states[index] === 'armed' && !held.has(ticket)) this.#states[index] = 'unarmed';
          }
        } catch (error) {
          this.#options.logger.warn({ err: error }, 'disarming filter tickets failed');
        }
      }
      const open = this.#states.filter((state) => state !== 'unarmed' && state !== 'released').length;
      if (open === 0 || client !== this.#client || Date.now() >= deadline) return client === this.#client ? open : 0;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  #beat(client: pg.Client): Promise<unknown> {
    // A sequence: writers read it whatever their snapshot.
    return this.#query(client, `select pg_catalog.setval($1, (extract(epoch from pg_catalog.clock_timestamp()) * 1000)::bigint)`, [
      this.#beatSequence(this.slot),
    ]);
  }

  /**
   * Marks a ticket as being answered and returns the request's token, or 0 for a ticket this bridge
   * does not hold (stale or forged). A ticket still "arming" counts as held: the writer could only claim
   * it once the database held it. A request on a ticket already being answered supersedes the one
   * before (that writer gave up, and a new one claimed the ticket): only the newest may wake it.
   */
  take(ticket: number): number {
    if (!this.owns(ticket)) return 0;
    const index = ticket - this.firstTicket;
    const state = this.#states[index];
    if (state !== 'armed' && state !== 'arming' && state !== 'busy') return 0;
    this.#states[index] = 'busy';
    const token = ++this.#lastToken;
    this.#owners[index] = token;
    return token;
  }

  /**
   * Wakes the ticket's writer: call once its answer is delivered, or pass the statement that commits
   * the answer (`deliver`), which then runs in its own transaction just before, in the same round trip.
   * A superseded request does not wake: its writer gave up, and the ticket's current writer must not be
   * woken by it (its answer is still delivered: answers are keyed by call). Releases made in the same
   * turn of the event loop go out as one statement. Resolves when the writer has been woken.
   */
  release(ticket: number, token: number, deliver?: string): Promise<void> {
    const index = ticket - (this.#slot ?? 0) * TICKETS_PER_SLOT;
    const wake = token !== 0 && this.owns(ticket) && this.#states[index] === 'busy' && this.#owners[index] === token;
    if (wake) this.#states[index] = 'releasing';
    if (!wake && !deliver) return Promise.resolve();
    return new Promise((resolve) => {
      this.#releases.push({ ticket: wake ? ticket : undefined, deliver, resolve });
      if (this.#releases.length === 1) setImmediate(() => void this.#flushReleases());
    });
  }

  async #flushReleases(): Promise<void> {
    const batch = this.#releases;
    this.#releases = [];
    const client = this.#client;
    const tickets = batch.flatMap((r) => (r.ticket === undefined ? [] : [r.ticket]));
    // Queued below, before any arm query that could see them: from here on they count as let go.
    for (const ticket of tickets) {
      const index = ticket - this.firstTicket;
      if (this.#states[index] === 'releasing') this.#states[index] = 'released';
    }
    const delivers = batch.flatMap((r) => (r.deliver ? [r.deliver] : []));
    // Simple-query protocol with literal numbers: one message, no parse/bind, for the hottest statement.
    const unlock = tickets.length ? `select pg_advisory_unlock(${this.lockClass + 1}, t) from unnest('{${tickets.join(',')}}'::int[]) t` : '';
    if (client) {
      try {
        await this.#query(client, [delivers.length ? `begin; ${delivers.join('; ')}; commit` : '', unlock].filter(Boolean).join('; '));
      } catch (error) {
        this.#options.logger.warn({ err: error, tickets }, 'answering filter calls failed');
        // An error inside BEGIN leaves the session in a failed transaction: end it, then wake the writers
        // all the same (they find no answer and fail as for a dead bridge).
        await this.#query(client, ['rollback', unlock].filter(Boolean).join('; ')).catch(() => undefined);
      }
    }
    for (const r of batch) r.resolve();
    if (tickets.length === 0) return;
    if (this.armed < this.#states.length / 2) this.#scheduleRearm(0);
    else this.#scheduleRearm(REARM_AFTER_MS);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#leading = false;
    this.#serving = false;
    this.#wantServing = false;
    clearTimeout(this.#serveTimer);
    clearInterval(this.#heartbeat);
    clearTimeout(this.#rearmTimer);
    clearTimeout(this.#reconnectTimer);
    const client = this.#client;
    this.#client = undefined;
    this.#states.fill('unarmed');
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
    }
  }

  #scheduleRearm(delayMs: number): void {
    if (this.#closed || this.#draining) return;
    if (this.#rearmTimer) {
      if (delayMs > 0) return;
      clearTimeout(this.#rearmTimer);
    }
    this.#rearmTimer = setTimeout(() => {
      this.#rearmTimer = undefined;
      void this.#rearm().catch((error: unknown) => {
        if (!this.#closed) this.#options.logger.warn({ err: error }, 'arming filter tickets failed');
      });
    }, delayMs);
  }

  async #rearm(): Promise<void> {
    const client = this.#client;
    // Without a connection there is nothing to arm: open() arms everything when it is back.
    if (!client) return;
    if (this.#rearming) return this.#scheduleRearm(REARM_AFTER_MS);
    // A draining instance arms nothing again.
    if (this.#draining) return;
    const pending = this.#states.flatMap((state, ticket) => (state === 'released' || state === 'unarmed' ? [ticket] : []));
    if (pending.length === 0) return;
    const first = this.firstTicket;
    this.#rearming = true;
    for (const ticket of pending) this.#states[ticket] = 'arming';
    try {
      const { rows } = await this.#query<{ armed: number[] }>(
        client,
        `select ${pg.escapeIdentifier(this.#options.schema)}.filter_arm($1, $2::int[]) as armed`,
        [this.lockClass, pending.map((ticket) => first + ticket)],
      );
      if (client !== this.#client) return;
      // Every ticket this session holds now (pg_locks), so a failed round can never make us lock one twice.
      const held = new Set(rows[0]?.armed ?? []);
      // A ticket already taken meanwhile stays busy; one whose writer still holds its claim is tried again shortly.
      let missing = 0;
      for (const ticket of pending) {
        if (this.#states[ticket] !== 'arming') continue;
        this.#states[ticket] = held.has(first + ticket) ? 'armed' : 'released';
        if (!held.has(first + ticket)) missing += 1;
      }
      if (missing > 0) this.#scheduleRearm(REARM_AFTER_MS);
    } catch (error) {
      // Locks taken before the failure stay held; the next round reads which from pg_locks.
      for (const ticket of pending) if (this.#states[ticket] === 'arming') this.#states[ticket] = 'unarmed';
      throw error;
    } finally {
      this.#rearming = false;
    }
  }

  #query<R extends pg.QueryResultRow = pg.QueryResultRow>(client: pg.Client, sql: string, params?: unknown[]): Promise<pg.QueryResult<R>> {
    const result = this.#queue.then(() => (params ? client.query<R>(sql, params) : client.query<R>(sql)));
    this.#queue = result.catch(() => undefined);
    return result;
  }

  #lost(client: pg.Client, error: unknown): void {
    if (client !== this.#client) return;
    this.#client = undefined;
    this.#states.fill('unarmed');
    // "Serving" went with the session; a try pending for it would take it on the next one, twice.
    this.#serving = false;
    clearTimeout(this.#serveTimer);
    // Its locks went with the session: the leader lock too.
    if (this.#leading) {
      this.#leading = false;
      this.#options.onLeadershipLost?.();
    }
    if (this.#closed) return;
    this.#options.logger.error({ err: error }, 'lost the instance connection: writers choose other instances (or get HB503) until it is back');
    const retry = () => {
      this.#reconnectTimer = undefined;
      if (this.#closed) return;
      this.open().catch((reason: unknown) => {
        this.#options.logger.warn({ err: reason }, 'reconnecting the instance connection failed');
        this.#reconnectTimer = setTimeout(retry, RECONNECT_MS);
      });
    };
    this.#reconnectTimer = setTimeout(retry, RECONNECT_MS);
  }
}
