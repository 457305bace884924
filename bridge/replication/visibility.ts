/**
 * Action hooks run once other sessions can see their transaction.
 *
 * A walsender decodes a transaction as soon as its commit record is flushed, but the committing
 * session makes it visible to others only later: after the synchronous standbys acknowledged it
 * (synchronous_standby_names), or a moment later when the machine is busy. A hook that reads its row
 * back through `database` in that window finds nothing, and under synchronous replication it runs for
 * a write the writer has not been told about — one a failover to the standby could still lose.
 *
 * So the stream holds each transaction at its Begin until a snapshot sees its xid. One snapshot
 * (`pg_current_snapshot()`) answers for every transaction that committed before it: a backlog costs
 * one query, a live stream about one per transaction (a round trip on a connection of its own), more
 * while a commit waits for a standby. Transactions are handed on in commit order, so one that waits
 * holds the later ones too, as the standby holds its writer.
 *
 * One case cannot be waited for: a synchronous_standby_names that names the bridge's own replication
 * connection (`*`, or '"hookbridge:replication"'). Then the commit waits for the bridge to confirm it,
 * which it does once the hooks ran. Such transactions pass unseen, with one warning (doctor fails on it).
 */
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { Logger } from 'pino';
import { REPLICATION_APPLICATION_NAME } from './stream.js';

/** What a snapshot says is still running, as `pg_current_snapshot()` prints it (`xmin:xmax:xip,…`). */
export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  running: ReadonlySet<bigint>;
}

export function parseSnapshot(text: string): Snapshot {
  const match = /^(\d+):(\d+):([\d,]*)$/.exec(text.trim());
  if (!match) throw new Error(`not a snapshot: ${JSON.stringify(text)}`);
  const running = new Set(match[3] ? match[3].split(',').map(BigInt) : []);
  return { xmin: BigInt(match[1]!), xmax: BigInt(match[2]!), running };
}

const EPOCH = 1n << 32n;
const HALF_EPOCH = 1n << 31n;

/**
 * pgoutput's Begin carries the low 32 bits of a transaction id; the snapshot's are 64-bit (epoch and
 * xid). A transaction the stream receives is within 2^31 of the snapshot's xmax (wraparound
 * protection keeps every live xid there), so the full id is the nearest one with those low bits.
 */
export function fullTransactionId(xid: number, near: bigint): bigint {
  const full = near - (near % EPOCH) + BigInt(xid);
  if (full - near > HALF_EPOCH) return full - EPOCH;
  if (near - full > HALF_EPOCH) return full + EPOCH;
  return full;
}

/** Whether a snapshot sees a transaction known to have committed (pgoutput sends no other). */
export function snapshotSees(snapshot: Snapshot, xid: number): boolean {
  const full = fullTransactionId(xid, snapshot.xmax);
  if (full < snapshot.xmin) return true;
  if (full >= snapshot.xmax) return false;
  return !snapshot.running.has(full);
}

/**
 * Whether a synchronous_standby_names setting (`a, b`, `FIRST 1 (a, b)`, `ANY 2 (*)`) names a
 * walsender called `applicationName`: `*`, or the name itself (Postgres compares names without case,
 * quoted or not).
 */
export function standbyNamesMatch(setting: string, applicationName = REPLICATION_APPLICATION_NAME): boolean {
  const list = setting.trim().replace(/^(?:(?:first|any)\s+)?\d+\s*\(([\s\S]*)\)$/i, '$1');
  const names = [...list.matchAll(/\s*("(?:[^"]|"")*"|[^,]+?)\s*(?:,|$)/g)].map(([, name]) =>
    name!.startsWith('"') ? name!.slice(1, -1).replaceAll('""', '"') : name!,
  );
  return names.some((name) => name === '*' || name.toLowerCase() === applicationName.toLowerCase());
}

export interface CommitVisibilityOptions {
  /**
   * Where to ask, on a connection of its own: under a synchronous_standby_names that names the bridge,
   * the bridge's own writes wait for it, and a pool they fill could not even ask.
   */
  connection: pg.ClientConfig;
  logger: Logger;
  /** How long a transaction stays unseen before the wait is logged as a warning. */
  warnAfterMs?: number;
}

/**
 * How long the latest snapshot answers for transactions without asking again. Only the low 32 bits of
 * an xid arrive: against a snapshot 2^31 transactions old, a new xid would be widened into the past
 * (and taken as seen). No server assigns that many in a minute.
 */
const SNAPSHOT_TRUSTED_MS = 60_000;
const LONGEST_PAUSE_MS = 100;
const ASK_TIMEOUT_MS = 5_000;

export class CommitVisibility {
  readonly #options: CommitVisibilityOptions;
  /** The latest snapshot taken: it sees every transaction it says it sees, for good. */
  #snapshot: Snapshot | undefined;
  #snapshotAt = 0;
  #client: Promise<pg.Client> | undefined;
  #closed = false;
  #warnedNamed = false;

  constructor(options: CommitVisibilityOptions) {
    this.#options = options;
  }

  /**
   * Undefined when transaction `xid` may be handed to hooks now (a recent snapshot sees it);
   * otherwise a promise that resolves true once it may, or false if `signal` stopped the wait.
   */
  wait(xid: number, signal: AbortSignal): Promise<boolean> | undefined {
    if (this.#snapshot && Date.now() - this.#snapshotAt < SNAPSHOT_TRUSTED_MS && snapshotSees(this.#snapshot, xid)) return undefined;
    return this.#wait(xid, signal);
  }

  /** Ends the connection; waits in progress end with the signals they were given. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#drop(1_000);
  }

  async #wait(xid: number, signal: AbortSignal): Promise<boolean> {
    const { logger } = this.#options;
    const warnAfterMs = this.#options.warnAfterMs ?? 5_000;
    const startedAt = Date.now();
    let warned = false;
    let pauseMs = 1;
    for (let attempt = 0; !signal.aborted && !this.#closed; attempt++) {
      let failure: unknown;
      try {
        const { snapshot, standbyNames } = await this.#ask();
        if (snapshotSees(snapshot, xid)) {
          if (warned) logger.info({ xid, waitedMs: Date.now() - startedAt }, 'the transaction action hooks waited for is visible now');
          return true;
        }
        // The commit may be waiting for this very bridge: waiting for it would never end.
        if (standbyNamesMatch(standbyNames)) return this.#passNamed(standbyNames);
        if (attempt === 0) logger.debug({ xid }, 'action hooks wait until other sessions see a transaction');
      } catch (error) {
        failure = error;
      }
      if (!warned && Date.now() - startedAt >= warnAfterMs) {
        warned = true;
        logger.warn(
          { xid, waitedMs: Date.now() - startedAt, err: failure },
          failure === undefined
            ? 'action hooks wait: a transaction is in the WAL but not yet visible to other sessions (its commit waits for a synchronous standby?); later transactions wait behind it'
            : 'action hooks wait: cannot ask the database whether a transaction is visible yet',
        );
      }
      try {
        await delay(pauseMs, undefined, { signal });
      } catch {
        break;
      }
      pauseMs = Math.min(pauseMs * 2, LONGEST_PAUSE_MS);
    }
    return false;
  }

  /** The server's current snapshot (kept for later transactions) and its synchronous_standby_names. */
  async #ask(): Promise<{ snapshot: Snapshot; standbyNames: string }> {
    const client = await (this.#client ??= this.#connect());
    try {
      const { rows } = await client.query<{ snapshot: string; names: string }>(
        `select pg_current_snapshot()::text as snapshot, current_setting('synchronous_standby_names') as names`,
      );
      const takenAt = Date.now();
      const snapshot = parseSnapshot(rows[0]!.snapshot);
      this.#snapshot = snapshot;
      this.#snapshotAt = takenAt;
      return { snapshot, standbyNames: rows[0]!.names };
    } catch (error) {
      await this.#drop();
      throw error;
    }
  }

  async #connect(): Promise<pg.Client> {
    // Bounded both ways: a connection gone silent (a network partition) must not hold the stream.
    const client = new pg.Client({
      ...this.#options.connection,
      application_name: 'hookbridge:visibility',
      connectionTimeoutMillis: ASK_TIMEOUT_MS,
      query_timeout: ASK_TIMEOUT_MS,
    });
    // A connection lost between questions fails the next one, which connects again.
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (error) {
      this.#client = undefined;
      throw error;
    }
    if (this.#closed) {
      await client.end().catch(() => undefined);
      throw new Error('closed');
    }
    return client;
  }

  /** Forgets the connection and ends it, waiting at most `waitMs` for a peer that may not answer. */
  async #drop(waitMs = 0): Promise<void> {
    const pending = this.#client;
    this.#client = undefined;
    const client = await pending?.catch(() => undefined);
    if (!client) return;
    const ended = client.end().catch(() => undefined);
    if (waitMs > 0) await Promise.race([ended, delay(waitMs, undefined, { ref: false })]);
  }

  #passNamed(standbyNames: string): true {
    if (!this.#warnedNamed) {
      this.#warnedNamed = true;
      this.#options.logger.warn(
        { synchronousStandbyNames: standbyNames, fix: "name the standbys in synchronous_standby_names instead of '*'" },
        `synchronous_standby_names names this bridge's replication connection (${REPLICATION_APPLICATION_NAME}): every commit waits until the bridge ran its ` +
          'action hooks, so they run before other sessions see the write, and a hook that writes (or a failed event parked) waits for the bridge itself',
      );
    }
    return true;
  }
}
