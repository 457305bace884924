/**
 * The replication connection: `pg-logical-replication` speaks the streaming protocol; what it may
 * acknowledge is restricted here, because the library on its own would confirm changes nobody handled:
 *
 * - `acknowledge.auto` would confirm every message as soon as it is *received*: off.
 * - `acknowledge.timeoutSeconds` runs a timer that confirms the last *received* LSN (keepalives
 *   included): off (0).
 * - `acknowledge(lsn)` reports `lsn + 1` as written/flushed/applied; confirming a commit's end LSN E
 *   that way would let Postgres skip a transaction whose commit record starts exactly at E, so we
 *   pass E - 1.
 * - On reconnect it would restart from the last LSN *received*; Postgres starts from
 *   max(requested, slot's confirmed_flush_lsn), so we request what *we* confirmed (everything up to
 *   it is handled, even if Postgres has not heard of it yet).
 * - With flow control, a throwing data handler only makes it emit 'error'; messages it had already
 *   queued keep coming until the connection closes. A Commit after a change that failed to decode
 *   would then confirm a transaction with a hole in it, so after the first failure a connection's
 *   data is ignored.
 *
 * We send our own status updates: on every keepalive that asks for one, whenever the confirmable LSN
 * moves (the stream of confirmable positions, `follow()`; one update per 20 ms burst), at least every
 * `statusIntervalMs`, and every tick (half a ping interval) while reading is paused for backpressure,
 * so `wal_sender_timeout` never trips on a slow handler.
 *
 * What the server sent past the last handled commit (WAL of tables nobody publishes, transactions still
 * open, records between commits) is confirmed too, but only when nothing is pending: every message
 * received before a keepalive was handed out and finished, and the consumer has no transaction open or
 * unfinished (`isSettled`). Then the keepalive's position (the walsender's sentPtr) holds no change we
 * still owe: a transaction open at that point commits later, past it, and is sent in full. Without this
 * a fast shutdown waits on us: a walsender exits only once its client confirmed all it sent.
 *
 * A connection may die without a word (a walsender frozen, a network gone): every `pingIntervalMs` of
 * silence we ask the server for a reply, and a connection that stayed silent for `silentLimitMs` while
 * we were reading it is closed and opened again. While reading is paused (backpressure) silence proves
 * nothing; the status updates we keep writing then surface a connection the server closed.
 *
 * The library keeps its pg connection private: `watchConnection()` is the one place that reaches in.
 */
import { LogicalReplicationService } from 'pg-logical-replication';
import type pg from 'pg';
import type { Logger } from 'pino';
import { auditTime, Subject, type Observable, type Subscription } from 'rxjs';
import { formatLsn, parseLsn, readLsn } from './lsn.js';

/** Confirmations within this long of the first become one status update. */
const STATUS_COALESCE_MS = 20;

type Plugin = Parameters<LogicalReplicationService['subscribe']>[0];

export interface StreamOptions {
  connection: pg.ClientConfig;
  slotName: string;
  publications: string[];
  logger: Logger;
  /** Called for every XLogData payload, in order; returning a promise pauses reading until it settles. */
  onData: (payload: Buffer, walLsn: bigint) => void | Promise<void>;
  /**
   * Called when a connection ended, with why (before a reconnect); the consumer resets partial state.
   * Throwing gives up: the stream does not reconnect and `onFatal` hears the error.
   */
  onDisconnect: (reason: unknown) => Promise<void>;
  /** The stream gave up for good (onDisconnect threw): it is stopped and will not reconnect. */
  onFatal?: (error: unknown) => void;
  /**
   * No transaction handed out is unfinished and none is being assembled: then what the server sent may
   * be confirmed (see the header comment). Without it only handled commits are ever confirmed.
   */
  isSettled?: () => boolean;
  /** The slot's confirmed_flush_lsn at start: what keepalive replies report until we confirm more. */
  startLsn: bigint;
  statusIntervalMs?: number;
  /** Silence after which we ask the server for a reply (default 1 s), and after which the connection is taken as dead (default 3 s). */
  liveness?: { pingIntervalMs?: number; silentLimitMs?: number };
  /**
   * Asked before a silent connection is taken as dead, with its walsender's backend pid: whether that
   * walsender is busy (decoding a large transaction that no publication wants sends nothing, and
   * answers no status update, for up to wal_sender_timeout / 2). Busy: silence is waited out, up to
   * `busyLimitMs`. Not given, or it cannot tell: silence means dead.
   */
  walsenderBusy?: (pid: number) => Promise<boolean | undefined>;
  /** The longest silence a busy walsender is granted (default 65 s: wal_sender_timeout's default + 5 s). */
  busyLimitMs?: number;
  reconnect?: { baseDelayMs?: number; maxDelayMs?: number };
}

/** What we watch on one replication connection. */
interface Link {
  service: LogicalReplicationService;
  /** We see its messages and bytes (the library's internals were where we expect them). */
  watched: boolean;
  /** XLogData messages received, and those whose onData finished: equal when nothing is pending in the library's queue. */
  received: number;
  processed: number;
  lastHeardAt: number;
  /** A question to the server about this link's walsender is on its way. */
  asking?: boolean;
  /** The lastHeardAt of the silence a busy walsender was last granted (logged once per silence). */
  waitingOut?: number;
  /** Ends the connection (it is closed and opened again). */
  dead: (reason: Error) => void;
}

/** What the replication connection calls itself: what synchronous_standby_names would have to name. */
export const REPLICATION_APPLICATION_NAME = 'hookbridge:replication';

/** The plugin only frames START_REPLICATION; decoding is ours (see pgoutput-decoder.ts). */
function rawPgoutput(publications: string[]): Plugin {
  return {
    options: {},
    name: 'pgoutput',
    parse: (buffer: Buffer) => buffer,
    start(client: pg.Client, slotName: string, lsn: string) {
      // Names were validated as plain lower-case identifiers (see config.ts).
      const sql = `START_REPLICATION SLOT "${slotName}" LOGICAL ${lsn} (proto_version '1', publication_names '${publications.join(',')}', messages 'true')`;
      return client.query(sql);
    },
  } as unknown as Plugin;
}

export class ReplicationStream {
  readonly #options: StreamOptions;
  #service: LogicalReplicationService | undefined;
  #link: Link | undefined;
  #confirmed = 0n;
  #lastSent = -1n;
  #lastSentAt = 0;
  /** Each confirmation that moved `#confirmed`; bursts become one status update. */
  readonly #confirmations = new Subject<void>();
  readonly #statusUpdates: Subscription;
  #following: Subscription | undefined;
  #tickTimer: NodeJS.Timeout | undefined;
  #lastTickAt = 0;
  #stopped = false;
  #streaming = false;
  #failure: unknown;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #paused = false;
  #warnedUnwatched = false;

  constructor(options: StreamOptions) {
    this.#options = options;
    this.#confirmed = options.startLsn;
    this.#statusUpdates = this.#confirmations.pipe(auditTime(STATUS_COALESCE_MS)).subscribe(() => this.#sendStatus(false));
  }

  get streaming(): boolean {
    return this.#streaming;
  }

  get confirmed(): bigint {
    return this.#confirmed;
  }

  /** The backend pid of the walsender the current connection reads from. */
  get walsenderPid(): number | undefined {
    return (this.#link?.service as unknown as { _client?: { processID?: number } } | undefined)?._client?.processID;
  }

  /** Why the stream gave up for good (onDisconnect threw), if it did. */
  get failure(): unknown {
    return this.#failure;
  }

  /** Starts streaming; resolves once the first connection streams (rejects if it cannot). */
  start(): Promise<void> {
    let firstStart!: { resolve: () => void; reject: (error: unknown) => void };
    const started = new Promise<void>((resolve, reject) => (firstStart = { resolve, reject }));
    this.#loop = this.#run(firstStart);
    // Deliberately not unref'd: while the stream runs, the process must not exit even if every
    // connection is momentarily gone (Postgres restarting).
    this.#lastTickAt = Date.now();
    this.#tickTimer = setInterval(() => this.#tick(), this.#tickMs);
    return started;
  }

  /** Records that everything up to `lsn` is handled; Postgres hears of it shortly. */
  confirm(lsn: bigint): void {
    if (lsn <= this.#confirmed) return;
    this.#confirmed = lsn;
    this.#confirmations.next();
  }

  /** Confirms each position of a stream of confirmable positions (the action pipeline's), until stopped. */
  follow(positions: Observable<bigint>): void {
    this.#following?.unsubscribe();
    this.#following = positions.subscribe((lsn) => this.confirm(lsn));
  }

  /** Stops handing out data (what is not handed out is sent again after the next start). */
  pauseReading(): void {
    this.#paused = true;
  }

  /** Sends the final confirmation and closes the connection. Safe to call twice. */
  async stop(): Promise<void> {
    // What was confirmed goes in the final status update below, not in a throttled one.
    this.#quiet();
    if (this.#stopped) return void (await this.#loop);
    this.#stopped = true;
    this.#sendStatus(true);
    this.#wake?.();
    await this.#service?.stop().catch(() => undefined);
    await this.#loop;
  }

  /** No more ticks, followed positions nor throttled status updates (stopped, or given up). */
  #quiet(): void {
    clearInterval(this.#tickTimer);
    this.#following?.unsubscribe();
    this.#statusUpdates.unsubscribe();
  }

  get #pingIntervalMs(): number {
    return this.#options.liveness?.pingIntervalMs ?? 1_000;
  }

  get #silentLimitMs(): number {
    return this.#options.liveness?.silentLimitMs ?? 3_000;
  }

  get #statusIntervalMs(): number {
    return this.#options.statusIntervalMs ?? 10_000;
  }

  /** Often enough to notice silence within half a ping interval of the limit. */
  get #tickMs(): number {
    return Math.min(this.#pingIntervalMs / 2, this.#statusIntervalMs);
  }

  async #run(firstStart: { resolve: () => void; reject: (error: unknown) => void }): Promise<void> {
    let attempt = 0;
    let everStarted = false;
    while (!this.#stopped) {
      const service = new LogicalReplicationService(
        { ...this.#options.connection, application_name: REPLICATION_APPLICATION_NAME },
        { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
      );
      this.#service = service;
      let silent!: (reason: Error) => void;
      const ended = new Promise<unknown>((resolve) => {
        service.on('error', (error: Error) => resolve(error));
        silent = resolve;
      });
      const link: Link = { service, watched: false, received: 0, processed: 0, lastHeardAt: Date.now(), dead: silent };
      service.on('start', () => {
        attempt = 0;
        link.lastHeardAt = Date.now();
        link.watched = watchConnection(service, {
          heard: () => (link.lastHeardAt = Date.now()),
          xlogData: () => (link.received += 1),
          keepalive: (walEnd, replyRequested) => this.#keepalive(link, walEnd, replyRequested),
        });
        if (!link.watched && !this.#warnedUnwatched) {
          this.#warnedUnwatched = true;
          this.#options.logger.warn(
            'pg-logical-replication keeps its connection elsewhere than this version expects: a dead replication connection is noticed late, and a fast Postgres shutdown may wait on the bridge',
          );
        }
        this.#link = link;
        this.#streaming = true;
        this.#lastSent = -1n;
        this.#options.logger.info({ slot: this.#options.slotName, from: formatLsn(this.#confirmed) }, 'replication streaming');
        if (!everStarted) {
          everStarted = true;
          firstStart.resolve();
        }
      });
      // Only when the connection is not watched (see watchConnection): keepalives are handled there.
      service.on('heartbeat', (_lsn: string, _time: number, shouldRespond: boolean) => {
        if (!link.watched && shouldRespond) this.#sendStatus(true);
      });
      let poisoned = false;
      service.on('data', (lsn: string, payload: Buffer) => {
        // Never resolves: the library's queue stops here, and nothing more is read before we close.
        if (poisoned || this.#paused) return new Promise<void>(() => {});
        const processed = () => void (link.processed += 1);
        try {
          const pending = this.#options.onData(payload, parseLsn(lsn));
          if (!pending) return processed();
          return pending.then(processed, (error: unknown) => {
            poisoned = true;
            throw error;
          });
        } catch (error) {
          poisoned = true;
          throw error;
        }
      });

      this.#options.logger.debug({ attempt }, 'replication: subscribing');
      const outcome = await Promise.race([
        service.subscribe(rawPgoutput(this.#options.publications), this.#options.slotName, formatLsn(this.#confirmed)).then(
          () => new Error('the replication stream ended'),
          (error: unknown) => error,
        ),
        ended,
      ]);
      this.#streaming = false;
      this.#link = undefined;
      this.#options.logger.debug({ err: outcome }, 'replication: subscription ended; closing');
      // With START_REPLICATION running, this destroys the socket: no goodbye awaited from a dead peer.
      await service.stop().catch(() => undefined);
      this.#options.logger.debug('replication: closed');
      service.removeAllListeners();
      if (this.#stopped) break;

      if (!everStarted) {
        firstStart.reject(outcome);
        this.#stopped = true;
        this.#quiet();
        break;
      }
      try {
        await this.#options.onDisconnect(outcome);
      } catch (error) {
        this.#failure = error;
        this.#stopped = true;
        this.#quiet();
        this.#options.logger.debug({ err: error }, 'replication: giving up');
        try {
          this.#options.onFatal?.(error);
        } catch (listenerError) {
          this.#options.logger.error({ err: listenerError }, 'a listener of a fatal replication error threw');
        }
        break;
      }
      if (this.#stopped) break;
      attempt += 1;
      const delay = reconnectDelay(attempt, this.#options.reconnect);
      this.#options.logger.warn({ err: outcome, attempt, retryInMs: delay }, 'replication connection lost; reconnecting');
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, delay);
      });
    }
  }

  /** A primary keepalive: confirm what the server sent if nothing is pending, and reply if asked to. */
  #keepalive(link: Link, walEnd: bigint, replyRequested: boolean): void {
    if (this.#link !== link) return;
    const settled = !this.#paused && link.received === link.processed && (this.#options.isSettled?.() ?? false);
    if (settled && walEnd > this.#confirmed) {
      this.#confirmed = walEnd;
      this.#sendStatus(false);
    } else if (replyRequested) {
      this.#sendStatus(true);
    }
  }

  /**
   * Liveness and steady status updates. Silence counts only while we read: not while the library's
   * queue waits on us (backpressure), and not across a stretch in which this process itself was
   * stalled (a late tick: what arrived meanwhile has not been read yet).
   */
  #tick(): void {
    const now = Date.now();
    const late = now - this.#lastTickAt > this.#tickMs + 1_000;
    this.#lastTickAt = now;
    const link = this.#link;
    if (!link || !this.#streaming) return;
    const reading = link.watched && !this.#paused && link.received === link.processed;
    if (!reading || late) link.lastHeardAt = now;
    const silentFor = now - link.lastHeardAt;
    if (silentFor >= this.#silentLimitMs) {
      const busyLimit = this.#options.busyLimitMs ?? 65_000;
      const pid = this.walsenderPid;
      const judge = this.#options.walsenderBusy;
      if (judge && pid && silentFor < busyLimit) {
        // Dead, or busy decoding what it does not send? Ask the server on another connection.
        if (!link.asking) {
          link.asking = true;
          const silentSince = link.lastHeardAt;
          // A server that does not answer within 2 s cannot vouch for it either.
          Promise.race([judge(pid), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 2_000).unref())])
            .catch(() => undefined)
            .then((busy) => {
              link.asking = false;
              if (this.#link !== link || !this.#streaming) return;
              if (busy !== true) return this.#silentDeath(link, Date.now() - link.lastHeardAt);
              // Said once per silence (the one this question was about; it may have ended meanwhile).
              if (link.waitingOut !== silentSince) {
                link.waitingOut = silentSince;
                this.#options.logger.debug(
                  { silentSoFarMs: Date.now() - silentSince, walsenderPid: pid },
                  'the walsender is busy decoding: its silence is waited out',
                );
              }
            });
        }
      } else {
        this.#silentDeath(link, silentFor);
        return;
      }
    }
    if (!reading) {
      // A connection the server closed shows when we write to it, read or not.
      this.#sendStatus(true);
    } else if (silentFor >= this.#pingIntervalMs) {
      this.#sendStatus(true, true);
    } else if (now - this.#lastSentAt >= this.#statusIntervalMs) {
      this.#sendStatus(true);
    }
  }

  #silentDeath(link: Link, silentFor: number): void {
    if (Date.now() - link.lastHeardAt < this.#silentLimitMs) return;
    this.#streaming = false;
    link.dead(new Error(`the replication connection was silent for ${silentFor} ms (no reply to status updates asking for one)`));
  }

  #sendStatus(force: boolean, ping = false): void {
    const service = this.#service;
    // Nothing to report before the slot has a position (a fresh slot reports it in its first keepalive).
    if (!service || !this.#streaming || this.#confirmed === 0n) return;
    if (!force && this.#confirmed === this.#lastSent) return;
    this.#lastSent = this.#confirmed;
    this.#lastSentAt = Date.now();
    // The library reports lsn + 1; see the header comment.
    const reported = this.#confirmed > 0n ? this.#confirmed - 1n : 0n;
    service.acknowledge(formatLsn(reported), ping).catch((error: unknown) => {
      this.#options.logger.warn({ err: error }, 'sending a replication status update failed');
    });
  }
}

interface ConnectionWatch {
  /** Bytes arrived (part of a message counts: a large row takes a while). */
  heard: () => void;
  xlogData: () => void;
  keepalive: (walEnd: bigint, replyRequested: boolean) => void;
}

/**
 * Listens to the replication connection beside the library: its pg `Connection` (`_connection`, set
 * while subscribed) emits every CopyData message, and its socket the bytes. Listeners added after the
 * library's see each message after it did: an XLogData is queued (or handed out) before we count it.
 * Returns false, changing nothing, if the library keeps them elsewhere.
 */
function watchConnection(service: LogicalReplicationService, watch: ConnectionWatch): boolean {
  const connection = (service as unknown as { _connection?: unknown })._connection as
    (NodeJS.EventEmitter & { stream?: NodeJS.EventEmitter }) | null | undefined;
  if (!connection || typeof connection.on !== 'function' || !connection.stream || typeof connection.stream.on !== 'function') return false;
  connection.stream.on('data', watch.heard);
  connection.on('copyData', (message: { chunk?: unknown }) => {
    const chunk = message.chunk;
    if (!Buffer.isBuffer(chunk) || chunk.length === 0) return;
    // XLogData: 'w', start, end, time, payload. Primary keepalive: 'k', walEnd (8), time (8), reply requested (1).
    if (chunk[0] === 0x77) watch.xlogData();
    else if (chunk[0] === 0x6b && chunk.length >= 18) watch.keepalive(readLsn(chunk, 1), chunk[17] !== 0);
  });
  return true;
}

export function reconnectDelay(attempt: number, options: StreamOptions['reconnect'] = {}): number {
  const base = options.baseDelayMs ?? 250;
  const cap = options.maxDelayMs ?? 30_000;
  const exponential = Math.min(cap, base * 2 ** Math.min(attempt - 1, 20));
  return Math.round(exponential / 2 + Math.random() * (exponential / 2));
}
