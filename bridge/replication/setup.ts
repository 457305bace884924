/**
 * What logical replication needs from the server before the action path can start, and the slot.
 *
 * preflight() reads the settings and counts once and leaves the verdict to a pure function, so every
 * refusal is unit-tested and says exactly what to change on the server.
 */
import pg from 'pg';
import { HookbridgeError } from '../../hooks/errors.js';
import { withTimeout } from '../timeout.js';
import { formatLsn, parseLsn, walSegmentStart } from './lsn.js';

export class ReplicationSetupError extends HookbridgeError {
  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.name = 'ReplicationSetupError';
  }
}

type Queryable = Pick<pg.ClientBase, 'query'> | pg.Pool;

const MIN_SERVER_VERSION_NUM = 140000;
const FAILOVER_SLOT_VERSION_NUM = 170000;

/** What preflight reads from the server. */
export interface ReplicationFacts {
  /** server_version_num: 170004 for 17.4. */
  serverVersionNum: number;
  /** HOOKBRIDGE_SLOT_FAILOVER asks for a failover slot. */
  failoverRequested: boolean;
  walLevel: string;
  /** The role the bridge connects as. */
  role: string;
  superuser: boolean;
  replication: boolean;
  slotName: string;
  /** Our slot already exists (then it needs no free slot). */
  slotExists: boolean;
  maxReplicationSlots: number;
  usedReplicationSlots: number;
  maxWalSenders: number;
  /** Walsender processes running now. */
  activeWalSenders: number;
  /** Our slot is held by a running walsender (e.g. a previous bridge), which frees up when it goes. */
  slotActive: boolean;
}

/** Every reason the action path cannot start on this server, most fundamental first. */
export function replicationProblems(facts: ReplicationFacts): ReplicationSetupError[] {
  const problems: ReplicationSetupError[] = [];
  const details = { ...facts };
  const version = `${Math.floor(facts.serverVersionNum / 10000)}.${facts.serverVersionNum % 10000}`;
  if (facts.serverVersionNum < MIN_SERVER_VERSION_NUM) {
    // Nothing else is worth checking: the replication protocol and catalogs hookbridge reads are newer.
    return [new ReplicationSetupError('E_PG_VERSION', `This is PostgreSQL ${version}; hookbridge needs PostgreSQL 14 or newer.`, { details })];
  }
  if (facts.failoverRequested && facts.serverVersionNum < FAILOVER_SLOT_VERSION_NUM) {
    problems.push(
      new ReplicationSetupError(
        'E_SLOT_FAILOVER',
        `HOOKBRIDGE_SLOT_FAILOVER=true needs PostgreSQL 17 or newer (failover slots), and this is PostgreSQL ${version}. Unset it: ` +
          'before 17 a standby has no copy of the slot, so after a failover the bridge must start from a new slot (see the README, "Failover").',
        { details },
      ),
    );
  }
  if (facts.walLevel !== 'logical') {
    problems.push(
      new ReplicationSetupError(
        'E_WAL_LEVEL',
        `wal_level is "${facts.walLevel}", but action hooks need logical decoding. Run ` +
          `ALTER SYSTEM SET wal_level = logical; as a superuser and restart Postgres ` +
          '(on managed services, set the equivalent parameter, e.g. rds.logical_replication = 1 or cloudsql.logical_decoding = on).',
        { details },
      ),
    );
  }
  if (!facts.superuser && !facts.replication) {
    problems.push(
      new ReplicationSetupError(
        'E_REPLICATION_PRIVILEGE',
        `The role ${pg.escapeIdentifier(facts.role)} may not use replication. Run ALTER ROLE ` +
          `${pg.escapeIdentifier(facts.role)} REPLICATION; as a superuser, or connect hookbridge as a role that has it.`,
        { details },
      ),
    );
  }
  if (!facts.slotExists && facts.usedReplicationSlots >= facts.maxReplicationSlots) {
    problems.push(
      new ReplicationSetupError(
        'E_SLOTS_EXHAUSTED',
        `hookbridge needs a replication slot ("${facts.slotName}"), but all max_replication_slots = ` +
          `${facts.maxReplicationSlots} are in use. Drop an unused slot (SELECT slot_name, active FROM ` +
          'pg_replication_slots; then SELECT pg_drop_replication_slot(...)) or raise max_replication_slots and restart Postgres.',
        { details },
      ),
    );
  }
  // A walsender already holding our slot goes away before ours starts (or the stream retries).
  const freeSenders = facts.maxWalSenders - facts.activeWalSenders + (facts.slotActive ? 1 : 0);
  if (facts.maxWalSenders <= 0 || freeSenders <= 0) {
    problems.push(
      new ReplicationSetupError(
        'E_WAL_SENDERS',
        facts.maxWalSenders <= 0
          ? 'max_wal_senders is 0, so no replication connection can be opened. Set max_wal_senders to at least 1 ' +
              '(ALTER SYSTEM SET max_wal_senders = 10;) and restart Postgres.'
          : `All max_wal_senders = ${facts.maxWalSenders} are taken by running replication connections. Stop one ` +
              '(see pg_stat_replication) or raise max_wal_senders and restart Postgres.',
        { details },
      ),
    );
  }
  return problems;
}

/** Throws the first problem (mentioning the others), so the log names every fix at once. */
export async function preflight(pool: Queryable, options: { slotName: string; slotFailover?: boolean }): Promise<void> {
  const facts = await readReplicationFacts(pool, options.slotName, options.slotFailover ?? false);
  const [first, ...rest] = replicationProblems(facts);
  if (!first) return;
  if (rest.length === 0) throw first;
  throw new ReplicationSetupError(first.code, `${first.message} Also: ${rest.map((p) => p.message).join(' Also: ')}`, {
    details: { ...first.details, otherProblems: rest.map((p) => p.code) },
  });
}

export async function readReplicationFacts(pool: Queryable, slotName: string, failoverRequested = false): Promise<ReplicationFacts> {
  const { rows } = await pool.query<{
    version_num: number;
    wal_level: string;
    role: string;
    superuser: boolean;
    replication: boolean;
    slot_exists: boolean;
    slot_active: boolean;
    max_slots: number;
    used_slots: number;
    max_senders: number;
    active_senders: number;
  }>(
    `select current_setting('server_version_num')::int as version_num, current_setting('wal_level') as wal_level,
            r.rolname as role, r.rolsuper as superuser, r.rolreplication as replication,
            exists (select 1 from pg_replication_slots where slot_name = $1) as slot_exists,
            exists (select 1 from pg_replication_slots where slot_name = $1 and active) as slot_active,
            current_setting('max_replication_slots')::int as max_slots,
            (select count(*) from pg_replication_slots)::int as used_slots,
            current_setting('max_wal_senders')::int as max_senders,
            -- Not pg_stat_activity: it hides other roles' backend_type from a role without pg_read_all_stats.
            (select count(*) from pg_stat_get_wal_senders())::int as active_senders
       from pg_roles r
      where r.rolname = current_user`,
    [slotName],
  );
  const row = rows[0];
  if (!row) throw new ReplicationSetupError('E_ROLE_UNKNOWN', 'The current role is not in pg_roles; reconnect and try again.');
  return {
    serverVersionNum: row.version_num,
    failoverRequested,
    walLevel: row.wal_level,
    role: row.role,
    superuser: row.superuser,
    replication: row.replication,
    slotName,
    slotExists: row.slot_exists,
    slotActive: row.slot_active,
    maxReplicationSlots: row.max_slots,
    usedReplicationSlots: row.used_slots,
    maxWalSenders: row.max_senders,
    activeWalSenders: row.active_senders,
  };
}

/** Our slot as pg_replication_slots shows it, with the server's WAL position: what a start, status, doctor and a running stream look at. */
export interface SlotState {
  name: string;
  /** The database it belongs to (null for a physical slot), and the one we are connected to. */
  database: string | null;
  currentDatabase: string;
  slotType: string;
  plugin: string | null;
  active: boolean;
  activePid: number | null;
  restartLsn: string | null;
  confirmedFlushLsn: string | null;
  /** reserved | extended | unreserved (WAL it needs goes at the next checkpoint) | lost (invalidated). */
  walStatus: string | null;
  /** Why Postgres invalidated it, on PostgreSQL 17+ (wal_removed, idle_timeout, rows_removed, wal_level_insufficient). */
  invalidationReason: string | null;
  /** A failover slot (PostgreSQL 17+: kept on standbys that synchronise slots); null before 17. */
  failover: boolean | null;
  /** On a standby: a copy synchronised from the primary (PostgreSQL 17+); null before 17. */
  synced: boolean | null;
  /** The server's WAL position now. */
  currentLsn: string | null;
  /** WAL the slot keeps on the server: the current position minus its restart_lsn. */
  retainedWalBytes: number | null;
  /** WAL that can still be written before the slot is invalidated (safe_wal_size); null when max_slot_wal_keep_size is -1. */
  safeWalBytes: number | null;
  /** As Postgres shows it: '-1' (no limit) or a size such as '10GB'. */
  maxSlotWalKeepSize: string;
  /** Where the WAL the server still has begins (its oldest segment); read for a lost slot, where the role may list pg_wal. */
  oldestWalLsn: string | null;
}

export async function readSlotState(pool: Queryable, slotName: string): Promise<SlotState | undefined> {
  const { rows } = await pool.query<{
    database: string | null;
    current_database: string;
    slot_type: string;
    plugin: string | null;
    active: boolean;
    active_pid: number | null;
    restart_lsn: string | null;
    confirmed_flush_lsn: string | null;
    wal_status: string | null;
    invalidation_reason: string | null;
    failover: string | null;
    synced: string | null;
    current_lsn: string | null;
    retained: string | null;
    safe: string | null;
    keep_size: string;
  }>(
    `with now as (select case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end as lsn)
     select s.database, current_database() as current_database, s.slot_type, s.plugin, s.active, s.active_pid,
            s.restart_lsn::text as restart_lsn, s.confirmed_flush_lsn::text as confirmed_flush_lsn, s.wal_status,
            -- A column of PostgreSQL 17+: read through jsonb so that older servers answer null.
            to_jsonb(s) ->> 'invalidation_reason' as invalidation_reason,
            to_jsonb(s) ->> 'failover' as failover, to_jsonb(s) ->> 'synced' as synced,
            now.lsn::text as current_lsn, pg_wal_lsn_diff(now.lsn, s.restart_lsn)::text as retained,
            s.safe_wal_size::text as safe, current_setting('max_slot_wal_keep_size') as keep_size
       from pg_replication_slots s, now
      where s.slot_name = $1`,
    [slotName],
  );
  const row = rows[0];
  if (!row) return undefined;
  const state: SlotState = {
    name: slotName,
    database: row.database,
    currentDatabase: row.current_database,
    slotType: row.slot_type,
    plugin: row.plugin,
    active: row.active,
    activePid: row.active_pid,
    restartLsn: row.restart_lsn,
    confirmedFlushLsn: row.confirmed_flush_lsn,
    walStatus: row.wal_status,
    invalidationReason: row.invalidation_reason,
    failover: row.failover === null ? null : row.failover === 'true',
    synced: row.synced === null ? null : row.synced === 'true',
    currentLsn: row.current_lsn,
    retainedWalBytes: row.retained === null ? null : Number(row.retained),
    safeWalBytes: row.safe === null ? null : Number(row.safe),
    maxSlotWalKeepSize: row.keep_size,
    oldestWalLsn: null,
  };
  if (slotIsLost(state)) state.oldestWalLsn = await readOldestWal(pool);
  return state;
}

/** The start of the oldest WAL segment in pg_wal; null where the role may not list it (pg_monitor or a superuser may). */
async function readOldestWal(pool: Queryable): Promise<string | null> {
  try {
    const { rows } = await pool.query<{ name: string | null; segment: string }>(
      `select (select min(name) from pg_ls_waldir() where name ~ '^[0-9A-F]{24}$') as name,
              (select setting from pg_settings where name = 'wal_segment_size') as segment`,
    );
    const name = rows[0]?.name;
    const start = name ? walSegmentStart(name, Number(rows[0]?.segment)) : undefined;
    return start === undefined ? null : formatLsn(start);
  } catch {
    return null;
  }
}

export function slotIsLost(state: Pick<SlotState, 'walStatus' | 'invalidationReason'>): boolean {
  return state.walStatus === 'lost' || (state.invalidationReason !== null && state.invalidationReason !== 'none');
}

const INVALIDATED_BECAUSE: Record<string, string> = {
  wal_removed: 'it fell further behind than max_slot_wal_keep_size allows',
  idle_timeout: 'it stayed unused longer than idle_replication_slot_timeout',
  rows_removed: 'catalog rows it needed were removed',
  wal_level_insufficient: 'wal_level was lowered below logical',
};

/** Which changes an invalidated slot cannot deliver, in words (and as far as the server still tells). */
export function describeLostChanges(state: SlotState): string {
  const from = state.confirmedFlushLsn ?? state.restartLsn;
  // Right after an invalidation the old segments may still be on their way out: name a start only past `from`.
  const removedBefore = state.oldestWalLsn && (!from || parseLsn(state.oldestWalLsn) > parseLsn(from)) ? state.oldestWalLsn : undefined;
  const gone = removedBefore ? `WAL before ${removedBefore} is removed` : 'the WAL they were in is being removed';
  const now = state.currentLsn ? ` (the server is at ${state.currentLsn})` : '';
  return from
    ? `changes committed after ${from} were never delivered to action hooks and cannot be: ${gone}${now}`
    : `changes committed since the bridge last confirmed a position cannot be delivered to action hooks: ${gone}${now}`;
}

/** The E_SLOT_LOST error a start and a running stream both give. */
export function slotLostError(state: SlotState): ReplicationSetupError {
  const reason = state.invalidationReason ? (INVALIDATED_BECAUSE[state.invalidationReason] ?? state.invalidationReason) : undefined;
  const why = reason ?? 'max_slot_wal_keep_size exceeded, or an idle timeout';
  return new ReplicationSetupError(
    'E_SLOT_LOST',
    `The replication slot "${state.name}" was invalidated (${why}): Postgres removed WAL it still needed, so ` +
      `${describeLostChanges(state)}. Drop it (SELECT pg_drop_replication_slot('${state.name}');) and start again: action hooks ` +
      'resume with the changes made from then on; reconcile what changed in between from your tables.',
    {
      details: {
        slotName: state.name,
        invalidationReason: state.invalidationReason,
        confirmedFlushLsn: state.confirmedFlushLsn,
        restartLsn: state.restartLsn,
        oldestWalLsn: state.oldestWalLsn,
        currentLsn: state.currentLsn,
        maxSlotWalKeepSize: state.maxSlotWalKeepSize,
      },
    },
  );
}

/** Why hookbridge cannot stream from this slot, if it cannot (a slot of this name that is not ours to use, or lost). */
export function slotProblem(state: SlotState): ReplicationSetupError | undefined {
  const slotName = state.name;
  const reuse = `Set HOOKBRIDGE_SLOT to a name of its own for hookbridge, or drop that slot (SELECT pg_drop_replication_slot('${slotName}');) if nothing uses it.`;
  if (state.slotType !== 'logical') {
    return new ReplicationSetupError(
      'E_SLOT_PHYSICAL',
      `A physical replication slot named "${slotName}" already exists (a standby or backup tool uses it). ${reuse}`,
      { details: { slotName } },
    );
  }
  if (state.database !== state.currentDatabase) {
    return new ReplicationSetupError(
      'E_SLOT_OTHER_DATABASE',
      `The replication slot "${slotName}" belongs to database "${state.database ?? '?'}", not "${state.currentDatabase}"; ` +
        `slot names are shared by the whole server, so each database needs its own. ${reuse}`,
      { details: { slotName, database: state.database } },
    );
  }
  if (state.plugin !== 'pgoutput') {
    return new ReplicationSetupError(
      'E_SLOT_PLUGIN',
      `The replication slot "${slotName}" uses the output plugin "${state.plugin ?? '?'}", but hookbridge reads pgoutput. ${reuse}`,
      { details: { slotName, plugin: state.plugin } },
    );
  }
  if (slotIsLost(state)) return slotLostError(state);
  return undefined;
}

/** What the primary needs for a failover slot to be worth having (the README's "Failover"). */
export const FAILOVER_SETUP_FIX =
  "on the primary: ALTER SYSTEM SET synchronized_standby_slots = '<the standby's physical slot>'; SELECT pg_reload_conf(); otherwise the " +
  'bridge may receive (and confirm) changes a promoted standby never had; see the README, "Failover"';

/** synchronized_standby_slots ('' when unset or before PostgreSQL 17). */
export async function readSynchronizedStandbySlots(pool: Queryable): Promise<string> {
  const { rows } = await pool.query<{ slots: string | null }>(`select current_setting('synchronized_standby_slots', true) as slots`);
  return rows[0]?.slots ?? '';
}

/** What a failover slot needs beyond the pool: a replication connection to turn an existing slot into one. */
export interface SlotFailover {
  /** The bridge's connection; ALTER_REPLICATION_SLOT is a replication command. */
  connection: pg.ClientConfig;
  /**
   * Make an existing slot a failover slot (the leader, before it streams). A standby bridge only creates
   * the slot as one: altering needs the slot idle, and the leader is streaming from it.
   */
  alter: boolean;
}

/**
 * Our permanent pgoutput slot, created when missing. `created` tells the caller that changes made
 * before now will never be delivered (there was nothing to resume from). With `failover` (PostgreSQL
 * 17+), the slot is created as a failover slot, and an existing one is made one.
 */
export async function ensureSlot(pool: Queryable, slotName: string, failover?: SlotFailover): Promise<{ created: boolean; confirmedFlushLsn: string | null }> {
  let created = false;
  let slot = await readSlotState(pool, slotName);
  if (!slot) {
    try {
      // Waits for transactions running now to finish: the slot's snapshot must see them complete.
      // Arguments: name, plugin, temporary, two-phase, failover (the last two since 14 and 17).
      await pool.query(`select pg_create_logical_replication_slot($1, 'pgoutput', false${failover ? ', false, true' : ''})`, [slotName]);
      created = true;
    } catch (error) {
      // 42710 duplicate_object: another bridge created it in the meantime; use theirs.
      if ((error as { code?: unknown }).code !== '42710') {
        throw new ReplicationSetupError(
          'E_SLOT_CREATE',
          `Could not create the replication slot "${slotName}": ${(error as Error).message}. ` +
            'Check that wal_level = logical and that the role has REPLICATION (see the preflight checks).',
          { cause: error, details: { slotName } },
        );
      }
    }
    slot = await readSlotState(pool, slotName);
    if (!slot) {
      throw new ReplicationSetupError(
        'E_SLOT_VANISHED',
        `The replication slot "${slotName}" was dropped right after it was created; is another process dropping slots? Start again.`,
        { details: { slotName } },
      );
    }
  }
  const problem = slotProblem(slot);
  if (problem) throw problem;
  if (failover?.alter && slot.failover === false && !slot.synced) {
    await makeFailoverSlot(failover.connection, slotName);
    slot = (await readSlotState(pool, slotName)) ?? slot;
  }
  return { created, confirmedFlushLsn: slot.confirmedFlushLsn };
}

/** ALTER_REPLICATION_SLOT … (FAILOVER true): a replication command, so on a replication connection of its own. */
async function makeFailoverSlot(connection: pg.ClientConfig, slotName: string): Promise<void> {
  const client = new pg.Client({ ...connection, replication: 'database', application_name: 'hookbridge:slot' } as pg.ClientConfig);
  try {
    await client.connect();
    await client.query(`ALTER_REPLICATION_SLOT ${pg.escapeIdentifier(slotName)} ( FAILOVER true )`);
  } catch (error) {
    // 55006: another process (a leader stepping down) still streams from it; the caller waits and retries.
    if ((error as { code?: unknown }).code === '55006') throw error;
    throw new ReplicationSetupError(
      'E_SLOT_FAILOVER',
      `Could not make the replication slot "${slotName}" a failover slot: ${(error as Error).message}. It must not be in use ` +
        '(stop whatever streams from it), and the role needs REPLICATION.',
      { cause: error, details: { slotName } },
    );
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Whether a running stream may go on with its slot, asked after a replication connection ended: an
 * invalidated slot (E_SLOT_LOST) or one dropped under it (E_SLOT_DROPPED) cannot deliver what it
 * missed, and retrying would only hide that. Throws those; anything else (the server is restarting)
 * is for the reconnect to find out.
 */
export async function checkSlotStillUsable(pool: Queryable, slotName: string, confirmedLsn: string): Promise<void> {
  let state: SlotState | undefined;
  try {
    // Bounded: a server out of reach must not hold up the reconnect that will say so.
    state = await withTimeout(readSlotState(pool, slotName), SLOT_CHECK_TIMEOUT_MS, () => new Error('reading the slot timed out'));
  } catch {
    return;
  }
  if (state && slotIsLost(state)) throw slotLostError(state);
  if (!state) {
    throw new ReplicationSetupError(
      'E_SLOT_DROPPED',
      `The replication slot "${slotName}" was dropped while the bridge streamed from it (hookbridge uninstall, or pg_drop_replication_slot): ` +
        `changes committed after ${confirmedLsn} that it had not delivered yet cannot be. Start the bridge again to create a new slot: ` +
        'action hooks resume with the changes made from then on.',
      { details: { slotName, confirmedLsn } },
    );
  }
}

const DROP_WAIT_MS = 10_000;
const SLOT_CHECK_TIMEOUT_MS = 5_000;

/**
 * Drops our slot in this database, first ending a walsender that streams from it. A slot of that
 * name in another database is someone else's and is left alone.
 */
export async function dropSlot(pool: Queryable, slotName: string, options: { timeoutMs?: number } = {}): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? DROP_WAIT_MS);
  for (;;) {
    const { rows } = await pool.query<{ active_pid: number | null }>(
      `select active_pid from pg_replication_slots where slot_name = $1 and database = current_database()`,
      [slotName],
    );
    const slot = rows[0];
    if (!slot) return;
    if (slot.active_pid !== null) {
      await pool.query('select pg_terminate_backend($1)', [slot.active_pid]);
    } else {
      try {
        await pool.query('select pg_drop_replication_slot($1)', [slotName]);
        return;
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === '42704') return; // undefined_object: gone already
        if (code !== '55006') throw error; // object_in_use: a walsender took it again; go round
      }
    }
    if (Date.now() >= deadline) {
      throw new ReplicationSetupError(
        'E_SLOT_BUSY',
        `The replication slot "${slotName}" stayed in use by process ${slot.active_pid ?? '?'}. Stop the hookbridge ` +
          `(or other client) streaming from it, then drop it: SELECT pg_drop_replication_slot('${slotName}');`,
        { details: { slotName, activePid: slot.active_pid } },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
