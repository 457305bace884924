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
import type { Socket } from 'node:net';
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
 * A synchronous_standby_names setting (`a, b`, `FIRST 2 (a, b)`, `ANY 2 (*)`, `2 (a, b)`): how many
 * standbys a commit waits for, and their names (quotes removed). Empty: none.
 */
export function parseStandbyNames(setting: string): { count: number; names: string[] } {
  const trimmed = setting.trim();
  if (trimmed === '') return { count: 0, names: [] };
  const counted = /^(?:(?:first|any)\s+)?(\d+)\s*\(([\s\S]*)\)$/i.exec(trimmed);
  const list = counted ? counted[2]! : trimmed;
  const names = [...list.matchAll(/\s*("(?:[^"]|"")*"|[^,]+?)\s*(?:,|$)/g)].map(([, name]) =>
    name!.startsWith('"') ? name!.slice(1, -1).replaceAll('""', '"') : name!,
  );
  return { count: counted ? Number(counted[1]) : 1, names };
}

/**
 * Whether a synchronous_standby_names setting names a walsender called `applicationName`: `*`, or the
 * name itself (Postgres compares names without case, quoted or not).
 */
export function standbyNamesMatch(setting: string, applicationName = REPLICATION_APPLICATION_NAME): boolean {
  return parseStandbyNames(setting).names.some((name) => name === '*' || name.toLowerCase() === applicationName.toLowerCase());
}

/**
 * With the bridge named in synchronous_standby_names: whether a commit may be waiting for it, given
 * the walsenders pg_stat_replication shows as synchronous (`sync`, or `quorum` under ANY). Not when
 * the bridge's is not one of those chosen and enough others are there to release the commit. A
 * standby of another role shows no sync_state without pg_read_all_stats: then the bridge may be needed.
 */
export function commitMayWaitForBridge(
  standbyNames: string,
  synchronous: ReadonlyArray<{ pid: number; state: string }>,
  bridgePid: number | undefined,
): boolean {
  if (synchronous.some((w) => w.pid === bridgePid && w.state === 'sync')) return true;
  return synchronous.filter((w) => w.pid !== bridgePid).length < parseStandbyNames(standbyNames).count;
}

export interface CommitVisibilityOptions {
  /**
   * Where to ask, on a connection of its own: under a synchronous_standby_names that names the bridge,
   * the bridge's own writes wait for it, and a pool they fill could not even ask.
   */
  connection: pg.ClientConfig;
  /** The backend pid of the walsender the stream reads from now. */
  walsenderPid: () => number | undefined;
  logger: Logger;
  /** How long a transaction stays unseen before the wait is logged as a warning (and again every minute). */
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
const WARN_AGAIN_MS = 60_000;

interface Answer {
  snapshot: Snapshot;
  standbyNames: string;
  /** The walsenders in sync or quorum state (asked only under synchronous replication). */
  synchronous: Array<{ pid: number; state: string }>;
}

export class CommitVisibility {
  readonly #options: CommitVisibilityOptions;
  /** The latest snapshot taken: it sees every transaction it says it sees, for good. */
  #snapshot: Snapshot | undefined;
  #snapshotAt = 0;
  #client: Promise<pg.Client> | undefined;
  /** The question on its way: waits that overlap share it (one query on the connection at a time). */
  #asking: Promise<Answer> | undefined;
  #closed = false;
  #warnedNamed = false;
  /** Why a wait has lasted longer than `warnAfterMs` (for /health); undefined once it ended. */
  #problem: string | undefined;

  constructor(options: CommitVisibilityOptions) {
    this.#options = options;
  }

  /** Why action hooks wait here, once a wait has lasted longer than `warnAfterMs`. */
  get problem(): string | undefined {
    return this.#problem;
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
    await this.#drop(undefined, 1_000);
  }

  async #wait(xid: number, signal: AbortSignal): Promise<boolean> {
    const { logger } = this.#options;
    const warnAfterMs = this.#options.warnAfterMs ?? 5_000;
    const startedAt = Date.now();
    let warnedAt: number | undefined;
    let pauseMs = 1;
    try {
      for (let attempt = 0; !signal.aborted && !this.#closed; attempt++) {
        let failure: unknown;
        try {
          const { snapshot, standbyNames, synchronous } = await this.#ask();
          if (signal.aborted) break;
          if (snapshotSees(snapshot, xid)) {
            if (warnedAt !== undefined) logger.info({ xid, waitedMs: Date.now() - startedAt }, 'the transaction action hooks waited for is visible now');
            return true;
          }
          // The commit may be waiting for this very bridge: waiting for it would never end.
          if (standbyNamesMatch(standbyNames) && commitMayWaitForBridge(standbyNames, synchronous, this.#options.walsenderPid())) {
            return this.#passNamed(standbyNames);
          }
          if (attempt === 0) logger.debug({ xid }, 'action hooks wait until other sessions see a transaction');
        } catch (error) {
          failure = error;
        }
        const waitedMs = Date.now() - startedAt;
        if (waitedMs >= warnAfterMs && (warnedAt === undefined || Date.now() - warnedAt >= WARN_AGAIN_MS)) {
          warnedAt = Date.now();
          const reason =
            failure === undefined
              ? 'a committed transaction is not visible to other sessions yet (its commit waits for a synchronous standby?): action events wait'
              : `cannot ask the database whether a transaction is visible (${(failure as Error).message}): action events wait`;
          this.#problem = reason;
          logger.warn({ xid, waitedMs, err: failure }, reason);
        }
        try {
          await delay(pauseMs, undefined, { signal });
        } catch {
          break;
        }
        pauseMs = Math.min(pauseMs * 2, LONGEST_PAUSE_MS);
      }
      return false;
    } finally {
      this.#problem = undefined;
    }
  }

  /** The server's current snapshot (kept for later transactions) and its synchronous_standby_names. */
  #ask(): Promise<Answer> {
    this.#asking ??= this.#askNow().finally(() => (this.#asking = undefined));
    return this.#asking;
  }

  async #askNow(): Promise<Answer> {
    const pending = (this.#client ??= this.#connect());
    try {
      const client = await pending;
      // CASE evaluates the walsenders only under synchronous replication (reading them is not free).
      const { rows } = await client.query<{ snapshot: string; names: string; synchronous: Answer['synchronous'] | null }>(
        `select pg_current_snapshot()::text as snapshot, current_setting('synchronous_standby_names') as names,
                case when current_setting('synchronous_standby_names') <> '' then
                  (select json_agg(json_build_object('pid', pid, 'state', sync_state)) from pg_stat_replication where sync_state in ('sync', 'quorum'))
                end as synchronous`,
      );
      const row = rows[0]!;
      const snapshot = parseSnapshot(row.snapshot);
      this.#snapshot = snapshot;
      this.#snapshotAt = Date.now();
      return { snapshot, standbyNames: row.names, synchronous: row.synchronous ?? [] };
    } catch (error) {
      await this.#drop(pending);
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
    await client.connect();
    if (this.#closed) {
      cut(client);
      throw new Error('closed');
    }
    return client;
  }

  /**
   * Forgets a connection (`which`, only if it is still the current one; by default the current one)
   * and ends it: politely for up to `waitMs`, then its socket is cut (a peer that does not answer).
   */
  async #drop(which = this.#client, waitMs = 0): Promise<void> {
    if (which === undefined) return;
    if (this.#client === which) this.#client = undefined;
    const client = await which.catch(() => undefined);
    if (!client) return;
    const ended = client.end().catch(() => undefined);
    if (waitMs > 0) await Promise.race([ended, delay(waitMs, undefined, { ref: false })]);
    cut(client);
  }

  #passNamed(standbyNames: string): true {
    if (!this.#warnedNamed) {
      this.#warnedNamed = true;
      this.#options.logger.warn(
        { synchronousStandbyNames: standbyNames, fix: 'name the standbys in synchronous_standby_names, not the bridge' },
        `synchronous_standby_names names this bridge's replication connection (${REPLICATION_APPLICATION_NAME}) and commits wait for it: ` +
          'action hooks run before other sessions see the write, and a hook that writes (or a failed event parked) waits for the bridge itself',
      );
    }
    return true;
  }
}

/** Destroys a client's socket (after `end()`, a no-op once it closed). */
function cut(client: pg.Client): void {
  (client as unknown as { connection?: { stream?: Socket } }).connection?.stream?.destroy();
}
