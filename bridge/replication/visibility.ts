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
 * (`pg_current_snapshot()`) answers for every transaction that committed before it, so a backlog costs
 * one query, and a live stream one round trip per transaction at most.
 *
 * One case cannot be waited for: a synchronous_standby_names that matches the bridge's own replication
 * connection (`*`, or 'hookbridge:replication'). Then the commit waits for the bridge to confirm it,
 * which it does once the hooks ran. The stream lets such transactions through and says so once.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
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
  pool: pg.Pool;
  /** The backend pid of the walsender the stream reads from now, to ask whether it is a synchronous standby. */
  walsenderPid: () => number | undefined;
  /** Stops every wait (the stream is stopping). */
  signal: AbortSignal;
  logger: Logger;
  /** How long a transaction stays unseen before the wait is logged as a warning. */
  warnAfterMs?: number;
}

/** How long a finding that our walsender is a synchronous standby is trusted before it is asked again. */
const SYNCHRONOUS_RECHECK_MS = 10_000;
const LONGEST_PAUSE_MS = 100;

export class CommitVisibility {
  readonly #options: CommitVisibilityOptions;
  /** The latest snapshot taken: it sees every transaction it says it sees, for good. */
  #snapshot: Snapshot | undefined;
  /** Until when transactions pass unchecked: our walsender was found to be a synchronous standby. */
  #synchronousUntil = 0;
  #synchronousPid: number | undefined;
  #warnedSynchronous = false;

  constructor(options: CommitVisibilityOptions) {
    this.#options = options;
  }

  /**
   * Undefined when transaction `xid` may be handed to hooks now (an earlier snapshot sees it);
   * otherwise a promise that resolves true once it may, or false if the wait was stopped.
   */
  wait(xid: number): Promise<boolean> | undefined {
    if (this.#snapshot && snapshotSees(this.#snapshot, xid)) return undefined;
    if (this.#passesUnchecked()) return undefined;
    return this.#wait(xid);
  }

  #passesUnchecked(): boolean {
    return Date.now() < this.#synchronousUntil && this.#synchronousPid === this.#options.walsenderPid();
  }

  async #wait(xid: number): Promise<boolean> {
    const { pool, signal, logger } = this.#options;
    const warnAfterMs = this.#options.warnAfterMs ?? 5_000;
    const startedAt = Date.now();
    let warned = false;
    let pauseMs = 1;
    for (let attempt = 0; !signal.aborted; attempt++) {
      let failure: unknown;
      try {
        const { rows } = await pool.query<{ snapshot: string }>(`select pg_current_snapshot()::text as snapshot`);
        this.#snapshot = parseSnapshot(rows[0]!.snapshot);
        if (snapshotSees(this.#snapshot, xid)) {
          if (warned) logger.info({ xid, waitedMs: Date.now() - startedAt }, 'the transaction action hooks waited for is visible now');
          return true;
        }
        if (attempt === 0) logger.debug({ xid }, 'action hooks wait until other sessions see a transaction');
        // Unseen after a first look: is the commit waiting for us, as a synchronous standby?
        else if (await this.#weAreSynchronous()) return true;
      } catch (error) {
        failure = error;
      }
      if (!warned && Date.now() - startedAt >= warnAfterMs) {
        warned = true;
        logger.warn(
          { xid, waitedMs: Date.now() - startedAt, err: failure },
          failure === undefined
            ? 'action hooks wait: a transaction is in the WAL but not yet visible to other sessions (a synchronous standby that has not acknowledged it?)'
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

  async #weAreSynchronous(): Promise<boolean> {
    const pid = this.#options.walsenderPid();
    if (pid === undefined) return false;
    const { rows } = await this.#options.pool.query<{ sync_state: string }>(`select sync_state from pg_stat_replication where pid = $1`, [pid]);
    const state = rows[0]?.sync_state;
    if (state !== 'sync' && state !== 'quorum') return false;
    this.#synchronousPid = pid;
    this.#synchronousUntil = Date.now() + SYNCHRONOUS_RECHECK_MS;
    if (!this.#warnedSynchronous) {
      this.#warnedSynchronous = true;
      this.#options.logger.warn(
        { syncState: state, fix: "name the standbys in synchronous_standby_names instead of '*'" },
        `this bridge's replication connection is a synchronous standby (synchronous_standby_names matches '${REPLICATION_APPLICATION_NAME}'): ` +
          'every commit waits until the bridge ran its action hooks, and they run before other sessions see the write',
      );
    }
    return true;
  }
}
