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
 * moves (throttled), and every `statusIntervalMs` even while reading is paused for backpressure, so
 * `wal_sender_timeout` never trips on a slow handler.
 */
import { LogicalReplicationService } from 'pg-logical-replication';
import type pg from 'pg';
import type { Logger } from 'pino';
import { formatLsn, parseLsn } from './lsn.js';

type Plugin = Parameters<LogicalReplicationService['subscribe']>[0];

export interface StreamOptions {
  connection: pg.ClientConfig;
  slotName: string;
  publications: string[];
  logger: Logger;
  /** Called for every XLogData payload, in order; returning a promise pauses reading until it settles. */
  onData: (payload: Buffer, walLsn: bigint) => void | Promise<void>;
  /** Called when a connection ended (before a reconnect); the consumer resets partial state. */
  onDisconnect: () => Promise<void>;
  /** The slot's confirmed_flush_lsn at start: what keepalive replies report until we confirm more. */
  startLsn: bigint;
  statusIntervalMs?: number;
  reconnect?: { baseDelayMs?: number; maxDelayMs?: number };
}

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
  #confirmed = 0n;
  #lastSent = -1n;
  #sendTimer: NodeJS.Timeout | undefined;
  #statusTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  #streaming = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #paused = false;

  constructor(options: StreamOptions) {
    this.#options = options;
    this.#confirmed = options.startLsn;
  }

  get streaming(): boolean {
    return this.#streaming;
  }

  get confirmed(): bigint {
    return this.#confirmed;
  }

  /** Starts streaming; resolves once the first connection streams (rejects if it cannot). */
  start(): Promise<void> {
    let firstStart!: { resolve: () => void; reject: (error: unknown) => void };
    const started = new Promise<void>((resolve, reject) => (firstStart = { resolve, reject }));
    this.#loop = this.#run(firstStart);
    // Deliberately not unref'd: while the stream runs, the process must not exit even if every
    // connection is momentarily gone (Postgres restarting).
    this.#statusTimer = setInterval(() => this.#sendStatus(true), this.#options.statusIntervalMs ?? 10_000);
    return started;
  }

  /** Records that everything up to `lsn` is handled; Postgres hears of it shortly. */
  confirm(lsn: bigint): void {
    if (lsn <= this.#confirmed) return;
    this.#confirmed = lsn;
    // Coalesce bursts of confirmations into one status update.
    this.#sendTimer ??= setTimeout(() => {
      this.#sendTimer = undefined;
      this.#sendStatus(false);
    }, 20);
  }

  /** Stops handing out data (what is not handed out is sent again after the next start). */
  pauseReading(): void {
    this.#paused = true;
  }

  /** Sends the final confirmation and closes the connection. Safe to call twice. */
  async stop(): Promise<void> {
    clearInterval(this.#statusTimer);
    if (this.#stopped) return void (await this.#loop);
    this.#stopped = true;
    clearTimeout(this.#sendTimer);
    this.#sendTimer = undefined;
    this.#sendStatus(true);
    this.#wake?.();
    await this.#service?.stop().catch(() => undefined);
    await this.#loop;
  }

  async #run(firstStart: { resolve: () => void; reject: (error: unknown) => void }): Promise<void> {
    let attempt = 0;
    let everStarted = false;
    while (!this.#stopped) {
      const service = new LogicalReplicationService(
        { ...this.#options.connection, application_name: 'hookbridge:replication' },
        { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
      );
      this.#service = service;
      const ended = new Promise<unknown>((resolve) => {
        service.on('error', (error: Error) => resolve(error));
      });
      service.on('start', () => {
        attempt = 0;
        this.#streaming = true;
        this.#lastSent = -1n;
        this.#options.logger.info({ slot: this.#options.slotName, from: formatLsn(this.#confirmed) }, 'replication streaming');
        if (!everStarted) {
          everStarted = true;
          firstStart.resolve();
        }
      });
      service.on('heartbeat', (_lsn: string, _time: number, shouldRespond: boolean) => {
        if (shouldRespond) this.#sendStatus(true);
      });
      let poisoned = false;
      service.on('data', (lsn: string, payload: Buffer) => {
        // Never resolves: the library's queue stops here, and nothing more is read before we close.
        if (poisoned || this.#paused) return new Promise<void>(() => {});
        try {
          const pending = this.#options.onData(payload, parseLsn(lsn));
          return pending?.catch((error: unknown) => {
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
      this.#options.logger.debug({ err: outcome }, 'replication: subscription ended; closing');
      await service.stop().catch(() => undefined);
      this.#options.logger.debug('replication: closed');
      service.removeAllListeners();
      if (this.#stopped) break;

      if (!everStarted) {
        firstStart.reject(outcome);
        this.#stopped = true;
        clearInterval(this.#statusTimer);
        break;
      }
      await this.#options.onDisconnect();
      attempt += 1;
      const delay = reconnectDelay(attempt, this.#options.reconnect);
      this.#options.logger.warn({ err: outcome, attempt, retryInMs: delay }, 'replication connection lost; reconnecting');
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, delay);
      });
    }
  }

  #sendStatus(force: boolean): void {
    const service = this.#service;
    // Nothing to report before the slot has a position (a fresh slot reports it in its first keepalive).
    if (!service || !this.#streaming || this.#confirmed === 0n) return;
    if (!force && this.#confirmed === this.#lastSent) return;
    this.#lastSent = this.#confirmed;
    // The library reports lsn + 1; see the header comment.
    const reported = this.#confirmed > 0n ? this.#confirmed - 1n : 0n;
    service.acknowledge(formatLsn(reported)).catch((error: unknown) => {
      this.#options.logger.warn({ err: error }, 'sending a replication status update failed');
    });
  }
}

export function reconnectDelay(attempt: number, options: StreamOptions['reconnect'] = {}): number {
  const base = options.baseDelayMs ?? 250;
  const cap = options.maxDelayMs ?? 30_000;
  const exponential = Math.min(cap, base * 2 ** Math.min(attempt - 1, 20));
  return Math.round(exponential / 2 + Math.random() * (exponential / 2));
}
