/**
 * What logical replication needs from the server before the action path can start, and the slot.
 *
 * preflight() reads the settings and counts once and leaves the verdict to a pure function, so every
 * refusal is unit-tested and says exactly what to change on the server.
 */
import pg from 'pg';
import { HookbridgeError } from '../../hooks/errors.js';

export class ReplicationSetupError extends HookbridgeError {
  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.name = 'ReplicationSetupError';
  }
}

type Queryable = Pick<pg.ClientBase, 'query'> | pg.Pool;

/** What preflight reads from the server. */
export interface ReplicationFacts {
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
export async function preflight(pool: Queryable, options: { slotName: string }): Promise<void> {
  const facts = await readReplicationFacts(pool, options.slotName);
  const [first, ...rest] = replicationProblems(facts);
  if (!first) return;
  if (rest.length === 0) throw first;
  throw new ReplicationSetupError(first.code, `${first.message} Also: ${rest.map((p) => p.message).join(' Also: ')}`, {
    details: { ...first.details, otherProblems: rest.map((p) => p.code) },
  });
}

export async function readReplicationFacts(pool: Queryable, slotName: string): Promise<ReplicationFacts> {
  const { rows } = await pool.query<{
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
    `select current_setting('wal_level') as wal_level,
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

interface SlotRow {
  plugin: string | null;
  slot_type: string;
  database: string | null;
  confirmed_flush_lsn: string | null;
  wal_status: string | null;
  current_database: string;
}

async function readSlot(pool: Queryable, slotName: string): Promise<SlotRow | undefined> {
  const { rows } = await pool.query<SlotRow>(
    `select plugin, slot_type, database, confirmed_flush_lsn::text as confirmed_flush_lsn, wal_status,
            current_database() as current_database
       from pg_replication_slots where slot_name = $1`,
    [slotName],
  );
  return rows[0];
}

/**
 * Our permanent pgoutput slot, created when missing. `created` tells the caller that changes made
 * before now will never be delivered (there was nothing to resume from).
 */
export async function ensureSlot(
  pool: Queryable,
  slotName: string,
): Promise<{ created: boolean; confirmedFlushLsn: string | null }> {
  let created = false;
  let slot = await readSlot(pool, slotName);
  if (!slot) {
    try {
      // Waits for transactions running now to finish: the slot's snapshot must see them complete.
      await pool.query(`select pg_create_logical_replication_slot($1, 'pgoutput', false)`, [slotName]);
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
    slot = await readSlot(pool, slotName);
    if (!slot) {
      throw new ReplicationSetupError(
        'E_SLOT_VANISHED',
        `The replication slot "${slotName}" was dropped right after it was created; is another process dropping slots? Start again.`,
        { details: { slotName } },
      );
    }
  }
  const reuse = `Set HOOKBRIDGE_SLOT to a name of its own for hookbridge, or drop that slot (SELECT pg_drop_replication_slot('${slotName}');) if nothing uses it.`;
  if (slot.slot_type !== 'logical') {
    throw new ReplicationSetupError(
      'E_SLOT_PHYSICAL',
      `A physical replication slot named "${slotName}" already exists (a standby or backup tool uses it). ${reuse}`,
      { details: { slotName } },
    );
  }
  if (slot.database !== slot.current_database) {
    throw new ReplicationSetupError(
      'E_SLOT_OTHER_DATABASE',
      `The replication slot "${slotName}" belongs to database "${slot.database ?? '?'}", not "${slot.current_database}"; ` +
        `slot names are shared by the whole server, so each database needs its own. ${reuse}`,
      { details: { slotName, database: slot.database } },
    );
  }
  if (slot.plugin !== 'pgoutput') {
    throw new ReplicationSetupError(
      'E_SLOT_PLUGIN',
      `The replication slot "${slotName}" uses the output plugin "${slot.plugin ?? '?'}", but hookbridge reads pgoutput. ${reuse}`,
      { details: { slotName, plugin: slot.plugin } },
    );
  }
  if (slot.wal_status === 'lost') {
    throw new ReplicationSetupError(
      'E_SLOT_LOST',
      `The replication slot "${slotName}" was invalidated: Postgres removed WAL it still needed ` +
        '(max_slot_wal_keep_size or an idle timeout), so changes since the bridge last ran cannot be delivered. ' +
        `Drop it (SELECT pg_drop_replication_slot('${slotName}');) and start again; action hooks resume from then on.`,
      { details: { slotName } },
    );
  }
  return { created, confirmedFlushLsn: slot.confirmed_flush_lsn };
}

const DROP_WAIT_MS = 10_000;

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
