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
 * All locks live on one dedicated connection: if it drops, Postgres releases them, every waiting writer
 * wakes at once and finds no answer (HB503), and the board reconnects and arms again.
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
}

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

  /** Tickets a writer could claim right now. */
  get armed(): number {
    return this.#states.filter((s) => s === 'armed').length;
  }

  /**
   * Takes the alive lock and arms every ticket. Refuses, touching nothing, when another bridge already
   * serves this database's filter calls.
   */
  async open(): Promise<void> {
    const client = new pg.Client({ ...this.#options.connection, application_name: 'hookbridge:tickets' });
    client.on('error', (error) => this.#lost(client, error));
    client.on('end', () => this.#lost(client, new Error('the ticket connection ended')));
    await client.connect();
    try {
      const { rows } = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1, 0) as ok', [this.lockClass + 2]);
      if (!rows[0]?.ok) {
        // Any role may take advisory locks: say who holds it, so an impostor is easy to tell from a bridge.
        const { rows: holders } = await client.query<{ pid: number; role: string | null; application: string | null }>(
          `select l.pid, a.usename::text as role, a.application_name as application
             from pg_catalog.pg_locks l left join pg_catalog.pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.classid = $1::oid and l.objid = 0 and l.objsubid = 2 and l.granted`,
          [this.lockClass + 2],
        );
        const who = holders.map((h) => `pid ${h.pid}${h.role ? ` (role ${h.role}${h.application ? `, ${h.application}` : ''})` : ''}`).join(', ');
        throw new HookbridgeError(
          'E_BRIDGE_RUNNING',
          `another hookbridge already serves filter calls on this database (schema "${this.#options.schema}"; its lock is held by ${who || 'another session'}); ` +
            'this one stops without touching it. Stop the running bridge first (a session that is not a bridge holding that lock can be ended with pg_terminate_backend), ' +
            'or give this one its own HOOKBRIDGE_SCHEMA and HOOKBRIDGE_SLOT.',
          { details: { holders } },
        );
      }
    } catch (error) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw error;
    }
    this.#client = client;
    this.#states.fill('unarmed');
    await this.#rearm();
    await this.#beat(client);
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      if (this.#client) void this.#beat(this.#client).catch(() => undefined);
    }, HEARTBEAT_MS);
    this.#heartbeat.unref();
  }

  #beat(client: pg.Client): Promise<unknown> {
    // A sequence: writers read it whatever their snapshot.
    return this.#query(
      client,
      `select pg_catalog.setval('${pg.escapeIdentifier(this.#options.schema)}.filter_beat', (extract(epoch from clock_timestamp()) * 1000)::bigint)`,
    );
  }

  /**
   * Marks a ticket as being answered and returns the request's token, or 0 for a ticket this bridge
   * does not hold (stale or forged). A ticket still "arming" counts as held: the writer could only claim
   * it once the database held it. A request on a ticket already being answered supersedes the one
   * before (that writer gave up, and a new one claimed the ticket): only the newest may wake it.
   */
  take(ticket: number): number {
    const state = this.#states[ticket];
    if (state !== 'armed' && state !== 'arming' && state !== 'busy') return 0;
    this.#states[ticket] = 'busy';
    const token = ++this.#lastToken;
    this.#owners[ticket] = token;
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
    const wake = token !== 0 && this.#states[ticket] === 'busy' && this.#owners[ticket] === token;
    if (wake) this.#states[ticket] = 'releasing';
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
    for (const ticket of tickets) if (this.#states[ticket] === 'releasing') this.#states[ticket] = 'released';
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
    if (this.#closed) return;
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
    const pending = this.#states.flatMap((state, ticket) => (state === 'released' || state === 'unarmed' ? [ticket] : []));
    if (pending.length === 0) return;
    this.#rearming = true;
    for (const ticket of pending) this.#states[ticket] = 'arming';
    try {
      const { rows } = await this.#query<{ armed: number[] }>(
        client,
        `select ${pg.escapeIdentifier(this.#options.schema)}.filter_arm($1, $2::int[]) as armed`,
        [this.lockClass, pending],
      );
      if (client !== this.#client) return;
      // Every ticket this session holds now (pg_locks), so a failed round can never make us lock one twice.
      const held = new Set(rows[0]?.armed ?? []);
      // A ticket already taken meanwhile stays busy; one whose writer still holds its claim is tried again shortly.
      let missing = 0;
      for (const ticket of pending) {
        if (this.#states[ticket] !== 'arming') continue;
        this.#states[ticket] = held.has(ticket) ? 'armed' : 'released';
        if (!held.has(ticket)) missing += 1;
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
    if (this.#closed) return;
    this.#options.logger.error({ err: error }, 'lost the filter ticket connection: writers get HB503 until it is back');
    const retry = () => {
      this.#reconnectTimer = undefined;
      if (this.#closed) return;
      this.open().catch((reason: unknown) => {
        this.#options.logger.warn({ err: reason }, 'reconnecting the filter ticket connection failed');
        this.#reconnectTimer = setTimeout(retry, RECONNECT_MS);
      });
    };
    this.#reconnectTimer = setTimeout(retry, RECONNECT_MS);
  }
}
