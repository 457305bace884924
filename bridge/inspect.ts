/**
 * What `hookbridge status` and `hookbridge doctor` report: read-only looks at the database.
 */
import pg from 'pg';
import type { Config } from './config.js';
import { notLoadedAsRecorded, readGuards, type NotLoadedGuard } from './extension-guards.js';
import { bridgeMayUseDblink, dblinkExposure, FILTER_TRIGGER, LEGACY_FILTER_TRIGGERS } from './filters/filter-service.js';
import { LEADER_KEY, lockClassFor, MAX_INSTANCES } from './filters/tickets.js';
import { readEventTrigger, type EventTriggerState } from './new-tables.js';
import { parseLsn } from './replication/lsn.js';
import {
  describeLostChanges,
  FAILOVER_SETUP_FIX,
  readReplicationFacts,
  readSlotState,
  readSynchronizedStandbySlots,
  replicationProblems,
  slotIsLost,
  slotProblem,
  type SlotState,
} from './replication/setup.js';
import { REPLICATION_APPLICATION_NAME } from './replication/stream.js';
import { standbyNamesMatch } from './replication/visibility.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

/** Everything the bridge needs from the server, each with how to fix it. */
export async function doctor(pool: pg.Pool, config: Readonly<Config>): Promise<Check[]> {
  const checks: Check[] = [];
  const { rows: version } = await pool.query<{ num: number; text: string }>(
    `select current_setting('server_version_num')::int as num, current_setting('server_version') as text`,
  );
  const num = version[0]?.num ?? 0;
  checks.push({
    name: 'PostgreSQL version',
    ok: num >= 140000,
    detail: version[0]?.text ?? 'unknown',
    fix: num >= 140000 ? undefined : 'hookbridge needs PostgreSQL 14 or newer',
  });

  const facts = await readReplicationFacts(pool, config.slotName, config.slotFailover);
  const problems = replicationProblems(facts);
  const byCode = new Map(problems.map((p) => [p.code, p.message]));
  const replicationCheck = (name: string, code: string, detail: string) => checks.push({ name, ok: !byCode.has(code), detail, fix: byCode.get(code) });
  replicationCheck('wal_level', 'E_WAL_LEVEL', facts.walLevel);
  replicationCheck(
    'replication privilege',
    'E_REPLICATION_PRIVILEGE',
    `role ${facts.role}${facts.superuser ? ' (superuser)' : ''}${facts.replication ? ' (replication)' : ''}`,
  );
  replicationCheck(
    'replication slots',
    'E_SLOTS_EXHAUSTED',
    `${facts.usedReplicationSlots} of ${facts.maxReplicationSlots} used; slot "${config.slotName}" ${facts.slotExists ? 'exists' : 'will be created'}`,
  );
  replicationCheck('WAL senders', 'E_WAL_SENDERS', `${facts.activeWalSenders} of ${facts.maxWalSenders} in use`);
  const slot = await readSlotState(pool, config.slotName);
  checks.push(slotCheck(config.slotName, slot));
  if (config.slotFailover && num >= 170000) checks.push(await failoverCheck(pool, config.slotName, slot));
  checks.push(await synchronousStandbyCheck(pool));

  // The bridge installs its schema at its first start: it needs CREATE on the database, or a schema made for it.
  const { rows: install } = await pool.query<{ exists: boolean; may_create: boolean; db: string }>(
    `select exists (select 1 from pg_namespace where nspname = $1) as exists,
            case when exists (select 1 from pg_namespace where nspname = $1) then has_schema_privilege($1, 'CREATE')
                 else has_database_privilege(current_database(), 'CREATE') end as may_create,
            current_database() as db`,
    [config.schema],
  );
  const place = install[0];
  const role = pg.escapeIdentifier(facts.role);
  checks.push({
    name: `schema "${config.schema}"`,
    ok: place?.may_create === true,
    detail: place?.exists
      ? place.may_create
        ? 'installed'
        : `exists, and role ${facts.role} may not create in it`
      : place?.may_create
        ? 'created at the first start'
        : 'missing',
    fix:
      place?.may_create === true
        ? undefined
        : place?.exists
          ? `as a superuser: ALTER SCHEMA ${pg.escapeIdentifier(config.schema)} OWNER TO ${role};`
          : `as a superuser: CREATE SCHEMA ${pg.escapeIdentifier(config.schema)} AUTHORIZATION ${role}; (or GRANT CREATE ON DATABASE ${pg.escapeIdentifier(place?.db ?? '')} TO ${role};)`,
  });

  const { rows: dblink } = await pool.query<{ installed: string | null; available: boolean; schema: string | null }>(
    `select (select extversion from pg_extension where extname = 'dblink') as installed,
            exists (select 1 from pg_available_extensions where name = 'dblink') as available,
            (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'dblink') as schema`,
  );
  const d = dblink[0];
  const schema = pg.escapeIdentifier(config.schema);
  // CREATE EXTENSION ... SCHEMA wants the schema: before the first start it is not there yet.
  const makeSchema = place?.exists ? '' : `CREATE SCHEMA IF NOT EXISTS ${schema} AUTHORIZATION ${pg.escapeIdentifier(facts.role)}; `;
  const create = `as a superuser: ${makeSchema}CREATE EXTENSION dblink SCHEMA ${schema}; REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA ${schema} FROM PUBLIC; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${schema} TO ${pg.escapeIdentifier(facts.role)};`;
  let fix: string | undefined;
  if (!d?.installed) fix = d?.available ? (facts.superuser ? undefined : create) : "install PostgreSQL's contrib package (dblink) on the server";
  else if (d.schema !== config.schema) fix = `as a superuser: ALTER EXTENSION dblink SET SCHEMA ${schema}; then restart the bridge`;
  else if (!(await bridgeMayUseDblink(pool))) fix = `as a superuser: GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${schema} TO ${pg.escapeIdentifier(facts.role)};`;
  checks.push({
    name: 'dblink (filter hooks)',
    ok: fix === undefined,
    detail: d?.installed ? `installed in schema ${d.schema}` : d?.available ? 'available, not installed' : 'not available on this server',
    fix,
  });
  if (d?.installed && d.schema === config.schema) {
    // The bridge revokes what it owns itself; what it cannot (a superuser's extension) a superuser must.
    const exposed = await dblinkExposure(pool);
    checks.push({
      name: 'dblink reachable by the bridge only',
      ok: exposed === undefined,
      detail: exposed ? (exposed.message.split(';')[0] ?? '') : 'no other role may execute dblink',
      fix: exposed ? `as a superuser: ${exposed.statement}` : undefined,
    });
  }
  checks.push(await triggerOrderCheck(pool, config));
  // New tables: guarded in the transaction that creates them only with the event trigger (a superuser's to create).
  const newTables = await readEventTrigger(pool, config.schema);
  checks.push({
    name: 'new tables guarded from their first row',
    ok: newTables.state === 'installed' || newTables.atNextStart === true,
    detail: newTables.detail,
    fix: newTables.fix,
  });
  checks.push(clusterCheck(await readCluster(pool, config.schema)));
  return checks;
}

/** A synchronous_standby_names that names the bridge's replication connection makes every commit wait for the bridge. */
async function synchronousStandbyCheck(pool: pg.Pool): Promise<Check> {
  const { rows } = await pool.query<{ names: string }>(`select current_setting('synchronous_standby_names') as names`);
  const names = rows[0]?.names ?? '';
  const waitsForBridge = standbyNamesMatch(names);
  return {
    name: 'synchronous replication',
    ok: !waitsForBridge,
    detail:
      names.trim() === ''
        ? 'off (synchronous_standby_names is empty)'
        : `synchronous_standby_names = '${names}'${waitsForBridge ? `: names the bridge's replication connection (${REPLICATION_APPLICATION_NAME})` : ''}`,
    fix: waitsForBridge
      ? 'name the standbys in synchronous_standby_names instead (as a superuser: ALTER SYSTEM SET synchronous_standby_names = ...; SELECT pg_reload_conf();): ' +
        'as a synchronous standby the bridge makes every commit wait until its action hooks ran (they run before the write is visible), and every write wait while it is down'
      : undefined,
  };
}

/**
 * HOOKBRIDGE_SLOT_FAILOVER: the primary must hold logical decoding back until the standby has the WAL
 * (synchronized_standby_slots), naming physical slots that exist: a name without a slot makes logical
 * decoding wait for ever.
 */
async function failoverCheck(pool: pg.Pool, slotName: string, slot: SlotState | undefined): Promise<Check> {
  const standbySlots = await readSynchronizedStandbySlots(pool);
  const names = standbySlots
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  const { rows } = await pool.query<{ name: string; slot_type: string | null }>(
    `select n.name, s.slot_type from unnest($1::text[]) as n(name) left join pg_replication_slots s on s.slot_name = n.name`,
    [names],
  );
  const wrong = rows.filter((r) => r.slot_type !== 'physical').map((r) => r.name);
  const detail = standbySlots
    ? `synchronized_standby_slots = '${standbySlots}'${slot?.failover ? `; slot "${slotName}" is a failover slot` : ''}`
    : 'synchronized_standby_slots is empty';
  if (!standbySlots) return { name: 'failover slot', ok: false, detail, fix: FAILOVER_SETUP_FIX };
  if (wrong.length > 0) {
    return {
      name: 'failover slot',
      ok: false,
      detail: `${detail}, but ${wrong.join(', ')} ${wrong.length === 1 ? 'is' : 'are'} no physical slot on this server: logical decoding waits for ever`,
      fix: 'name the physical slot the standby streams from (pg_replication_slots, slot_type = physical) in synchronized_standby_slots',
    };
  }
  return { name: 'failover slot', ok: true, detail };
}

/** Our slot: usable (not another's, not invalidated), and how much WAL it holds back and may still hold. */
function slotCheck(name: string, state: SlotState | undefined): Check {
  const check = `replication slot "${name}"`;
  if (!state) return { name: check, ok: true, detail: 'does not exist yet: the bridge creates it at start' };
  const problem = slotProblem(state);
  if (problem) {
    const detail = slotIsLost(state)
      ? `lost (invalidated${state.invalidationReason ? `: ${state.invalidationReason}` : ''}): ${describeLostChanges(state)}`
      : (problem.message.split('. ')[0] ?? problem.code);
    return { name: check, ok: false, detail, fix: problem.message };
  }
  if (state.walStatus === 'unreserved') {
    return {
      name: check,
      ok: false,
      detail: `${describeSlotWal(state)}: past max_slot_wal_keep_size, WAL it still needs is removed at the next checkpoint, and the slot with it`,
      fix: 'start the bridge (or let it catch up) before the next checkpoint, or raise max_slot_wal_keep_size',
    };
  }
  const failover = state.failover ? '; a failover slot (standbys that synchronise slots keep it)' : '';
  return { name: check, ok: true, detail: `${state.active ? 'streaming' : 'idle (no bridge streams from it)'}; ${describeSlotWal(state)}${failover}` };
}

/** "retains 48 MB of WAL; 1.9 GB more before max_slot_wal_keep_size (2GB) invalidates it" */
export function describeSlotWal(state: Pick<SlotState, 'retainedWalBytes' | 'safeWalBytes' | 'maxSlotWalKeepSize'>): string {
  const retained = state.retainedWalBytes === null ? 'retains no WAL yet' : `retains ${formatBytes(state.retainedWalBytes)} of WAL`;
  if (state.maxSlotWalKeepSize === '-1' || state.safeWalBytes === null) {
    return `${retained}; no max_slot_wal_keep_size: WAL piles up without limit while no bridge confirms it`;
  }
  return state.safeWalBytes > 0
    ? `${retained}; ${formatBytes(state.safeWalBytes)} more before max_slot_wal_keep_size (${state.maxSlotWalKeepSize}) invalidates it`
    : `${retained}; past max_slot_wal_keep_size (${state.maxSlotWalKeepSize})`;
}

function formatBytes(bytes: number): string {
  const units = ['bytes', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * The bridges running now. None running is no fault of the server (doctor also runs before the first
 * start); a session that is no bridge holding the leader lock is: no bridge can lead while it does.
 */
function clusterCheck(cluster: Cluster): Check {
  const { instances, leaderLockHeldBy } = cluster;
  const leader = instances.find((i) => i.role === 'leader');
  const running =
    instances.length === 0
      ? 'none running'
      : `${instances.length} running, ${instances.filter((i) => i.serving).length} serving filter calls, ${leader ? `leader: slot ${leader.slot}` : 'no leader'}`;
  if (leaderLockHeldBy === null) return { name: 'bridges on this database', ok: true, detail: running };
  return {
    name: 'bridges on this database',
    ok: false,
    detail: `${running}; backend pid ${leaderLockHeldBy} holds the leader lock and is no bridge: no bridge streams actions or runs schedules while it does`,
    fix: `as a superuser: select pg_terminate_backend(${leaderLockHeldBy}); (see pg_stat_activity for whose session it is)`,
  };
}

/**
 * Postgres fires BEFORE ROW triggers in name order: one that sorts after hookbridge's can change a row
 * after the filters approved it. And a trigger of hookbridge's name must be enabled and call its function.
 */
async function triggerOrderCheck(pool: pg.Pool, config: Readonly<Config>): Promise<Check> {
  const { rows } = await pool.query<{ tbl: string; problem: string }>(
    `select t.tgrelid::regclass::text as tbl,
            case when o.tgname is not null then 'its trigger ' || quote_ident(o.tgname) || ' runs after hookbridge''s filter'
                 when t.tgenabled = 'D' then 'hookbridge''s filter trigger is disabled'
                 else 'its trigger ' || quote_ident(t.tgname) || ' does not call ' || $3 end as problem
       from pg_catalog.pg_trigger t
       left join pg_catalog.pg_trigger o
         on o.tgrelid = t.tgrelid and o.tgname::text collate "C" > t.tgname::text collate "C" and not o.tgisinternal
        and o.tgenabled <> 'D' and o.tgtype::int4 & 3 = 3 and o.tgtype::int4 & 28 <> 0
      where t.tgname = $1 and t.tgparentid = 0
        and (o.tgname is not null or t.tgenabled = 'D' or t.tgfoid is distinct from pg_catalog.to_regprocedure($2)::oid)
      order by 1, 2`,
    [FILTER_TRIGGER, `${pg.escapeIdentifier(config.schema)}.filter_trigger()`, `${config.schema}.filter_trigger()`],
  );
  return {
    name: 'filter triggers fire last',
    ok: rows.length === 0,
    detail: rows.length ? rows.map((r) => `${r.tbl}: ${r.problem}`).join('; ') : `no BEFORE row trigger sorts after ${FILTER_TRIGGER}`,
    fix: rows.length
      ? `rename the user triggers so that they sort before "${FILTER_TRIGGER}" (byte order: a name starting with a letter or digit does), e.g. ALTER TRIGGER ... ON ... RENAME TO ...; ` +
        'a disabled or replaced hookbridge trigger is made again by the running bridge'
      : undefined,
  };
}

export interface Status {
  installed: boolean;
  slot: SlotStatus;
  publications: Record<string, string[]>;
  filterTriggers: Array<{ table: string; operations: string[] }>;
  failedEvents: number;
  /** The bridges running on this database (their alive lock is held), by slot. */
  instances: InstanceStatus[];
  /** Rows of bridges that are gone (nobody holds their alive lock); each stays until its slot is reused. */
  staleInstances: StaleInstance[];
  /** The backend pid of a session that holds the leader lock but is no bridge: no bridge can lead meanwhile. */
  leaderLockHeldBy: number | null;
  /** Whether new tables are guarded in their own transaction (the event trigger), or only from the bridge's next check. */
  newTables: EventTriggerState;
}

/** Our slot in this database (a slot of that name in another database is not ours: `exists` is false, doctor says why). */
export interface SlotStatus {
  name: string;
  exists: boolean;
  active: boolean;
  confirmedFlushLsn: string | null;
  /** The server's WAL position minus confirmed_flush_lsn. */
  lagBytes: number | null;
  restartLsn: string | null;
  /** reserved | extended | unreserved (WAL it needs goes at the next checkpoint) | lost (invalidated). */
  walStatus: string | null;
  /** PostgreSQL 17+: why it was invalidated. */
  invalidationReason: string | null;
  /** WAL it keeps on the server (the current position minus restart_lsn). */
  retainedWalBytes: number | null;
  /** WAL that can still be written before it is invalidated (safe_wal_size); null without max_slot_wal_keep_size. */
  safeWalBytes: number | null;
  /** '-1' (no limit) or a size. */
  maxSlotWalKeepSize: string | null;
  /** Invalidated: which changes are gone (from what it confirmed to where the WAL the server kept begins), in words. */
  lost: string | null;
}

/** The slot's line in `hookbridge status`. */
export function formatSlotStatus(slot: SlotStatus): string {
  const head = `slot ${slot.name}: `;
  if (!slot.exists) return `${head}missing`;
  if (slot.lost !== null) {
    return `${head}✗ lost (invalidated${slot.invalidationReason ? `: ${slot.invalidationReason}` : ''}): ${slot.lost}\n    fix: SELECT pg_drop_replication_slot('${slot.name}'); then start the bridge (action hooks resume with the changes made from then on)`;
  }
  const wal = describeSlotWal({
    retainedWalBytes: slot.retainedWalBytes,
    safeWalBytes: slot.safeWalBytes,
    maxSlotWalKeepSize: slot.maxSlotWalKeepSize ?? '-1',
  });
  const risk = slot.walStatus === 'unreserved' ? ' ✗ WAL it needs is removed at the next checkpoint unless the bridge catches up' : '';
  return `${head}${slot.active ? 'streaming' : 'idle'}, confirmed ${slot.confirmedFlushLsn}, lag ${slot.lagBytes} bytes, ${wal}${risk}`;
}

/** One running bridge, as its locks (role, serving) and its filter_endpoint row (the rest) describe it. */
export interface InstanceStatus {
  slot: number;
  role: 'leader' | 'standby';
  /** Writers may choose it for filter calls (false while it starts or drains). */
  serving: boolean;
  /** Its slot's row is still a previous run's (or missing): it has not published itself yet. */
  starting: boolean;
  transport: string | null;
  failureMode: string | null;
  /** `hostname:pid` of the bridge process. */
  process: string | null;
  /** `host:port` of its HTTP API (health, metrics). */
  http: string | null;
  since: Date | null;
  /** The backend pid of its instance session (pg_stat_activity; it holds the instance's locks). */
  backendPid: number;
}

export interface StaleInstance {
  slot: number;
  transport: string;
  process: string | null;
  http: string | null;
  since: Date;
  /** When it last published itself. */
  updatedAt: Date;
}

type Cluster = Pick<Status, 'instances' | 'staleInstances' | 'leaderLockHeldBy'>;

/**
 * The cluster as Postgres sees it (sql/000013.sql): alive = the session holding "alive"(slot), leader =
 * that session holds "leader" too, serving = "serving"(slot) is held. Writers take these locks shared
 * for a moment to test them: only exclusive holds count. Advisory locks are per database.
 */
export async function readCluster(pool: pg.Pool, schema: string): Promise<Cluster> {
  return readInstances(pool, schema).catch((error: { code?: string }) => {
    // No schema yet, or one from before sql/000013.sql (no slots): nothing to list until a bridge migrates it.
    if (error.code === '42703' || error.code === '42P01' || error.code === '3F000') return NO_CLUSTER;
    throw error;
  });
}

const NO_CLUSTER: Cluster = Object.freeze({ instances: [], staleInstances: [], leaderLockHeldBy: null });

async function readInstances(pool: pg.Pool, schema: string): Promise<Cluster> {
  const { rows } = await pool.query<{
    slot: number | null;
    pid: number | null;
    leader: boolean;
    serving: boolean;
    row: boolean;
    backend_pid: number | null;
    transport: string | null;
    failure_mode: string | null;
    process: string | null;
    http: string | null;
    started_at: Date | null;
    updated_at: Date | null;
  }>(
    `with held as (
       select l.classid::int8 as classid, l.objid::int8 as objid, l.pid
         from pg_catalog.pg_locks l
        where l.locktype = 'advisory' and l.objsubid = 2 and l.granted and l.mode = 'ExclusiveLock'
          and l.database = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
     ),
     alive as (select objid::int as slot, pid from held where classid = $1 + 2 and objid < $3),
     leader as (select pid from held where classid = $1 + 2 and objid = $2)
     select coalesce(a.slot, e.slot) as slot, a.pid,
            coalesce(a.pid in (select pid from leader), false) as leader,
            exists (select 1 from held where classid = $1 + 3 and objid = coalesce(a.slot, e.slot)) as serving,
            e.slot is not null as row, e.backend_pid, e.transport, e.failure_mode, e.process, e.http, e.started_at, e.updated_at
       from alive a full join ${pg.escapeIdentifier(schema)}.filter_endpoint e on e.slot = a.slot
     union all
     -- A session that holds the leader lock and no slot is no bridge: while it holds it, none leads.
     select null, l.pid, true, false, false, null, null, null, null, null, null, null
       from leader l where l.pid not in (select pid from alive)
      order by 1`,
    [lockClassFor(schema), LEADER_KEY, MAX_INSTANCES],
  );
  const cluster: Cluster = { instances: [], staleInstances: [], leaderLockHeldBy: null };
  for (const r of rows) {
    if (r.slot === null) {
      cluster.leaderLockHeldBy = r.pid;
    } else if (r.pid === null) {
      cluster.staleInstances.push({
        slot: r.slot,
        transport: r.transport ?? '',
        process: r.process,
        http: r.http,
        since: r.started_at as Date,
        updatedAt: r.updated_at as Date,
      });
    } else {
      // Between taking its slot and publishing itself, an instance's row (if any) is a previous run's.
      const own = r.row && r.backend_pid === r.pid;
      cluster.instances.push({
        slot: r.slot,
        role: r.leader ? 'leader' : 'standby',
        serving: r.serving,
        starting: !own,
        transport: own ? r.transport : null,
        failureMode: own ? r.failure_mode : null,
        process: own ? r.process : null,
        http: own ? r.http : null,
        since: own ? r.started_at : null,
        backendPid: r.pid,
      });
    }
  }
  return cluster;
}

export async function status(pool: pg.Pool, config: Readonly<Config>): Promise<Status> {
  const schema = config.schema;
  const { rows: installed } = await pool.query<{ ok: boolean }>(`select exists (select 1 from pg_namespace where nspname = $1) as ok`, [schema]);
  const slotState = await readSlotState(pool, config.slotName);
  const { rows: publicationTables } = await pool.query<{ pubname: string; tbl: string }>(
    `select pubname, format('%I.%I', schemaname, tablename) as tbl from pg_publication_tables
      where pubname = any ($1::text[]) order by 1, 2`,
    [[config.publicationName, `${config.publicationName}_inserts`]],
  );
  const publications: Record<string, string[]> = {};
  for (const row of publicationTables) (publications[row.pubname] ??= []).push(row.tbl);
  const { rows: triggers } = await pool.query<{ tbl: string; ops: string[] }>(
    `select case when n.nspname = 'public' then c.relname::text else n.nspname || '.' || c.relname end as tbl,
            array_remove(array[case when t.tgtype::int4 & 4 <> 0 then 'INSERT' end, case when t.tgtype::int4 & 16 <> 0 then 'UPDATE' end,
                               case when t.tgtype::int4 & 8 <> 0 then 'DELETE' end], null) as ops
       from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      where t.tgname = any ($1::text[]) order by 1`,
    [[FILTER_TRIGGER, ...LEGACY_FILTER_TRIGGERS]],
  );
  let failedEvents = 0;
  let cluster: Cluster = NO_CLUSTER;
  if (installed[0]?.ok) {
    const { rows } = await pool
      .query<{ n: number }>(`select count(*)::int as n from ${pg.escapeIdentifier(schema)}.failed_events where replayed_at is null`)
      .catch(() => ({ rows: [{ n: 0 }] }));
    failedEvents = rows[0]?.n ?? 0;
    cluster = await readCluster(pool, schema);
  }
  return {
    installed: Boolean(installed[0]?.ok),
    slot: slotStatus(config.slotName, slotState),
    publications,
    filterTriggers: triggers.map((t) => ({ table: t.tbl, operations: t.ops })),
    failedEvents,
    ...cluster,
    newTables: await readEventTrigger(pool, schema),
  };
}

function slotStatus(name: string, state: SlotState | undefined): SlotStatus {
  const slot = state && state.database === state.currentDatabase ? state : undefined;
  const lag = slot?.currentLsn && slot.confirmedFlushLsn ? Number(parseLsn(slot.currentLsn) - parseLsn(slot.confirmedFlushLsn)) : null;
  return {
    name,
    exists: slot !== undefined,
    active: slot?.active ?? false,
    confirmedFlushLsn: slot?.confirmedFlushLsn ?? null,
    lagBytes: lag,
    restartLsn: slot?.restartLsn ?? null,
    walStatus: slot?.walStatus ?? null,
    invalidationReason: slot?.invalidationReason ?? null,
    retainedWalBytes: slot?.retainedWalBytes ?? null,
    safeWalBytes: slot?.safeWalBytes ?? null,
    maxSlotWalKeepSize: slot?.maxSlotWalKeepSize ?? null,
    lost: slot && slotIsLost(slot) ? describeLostChanges(slot) : null,
  };
}

export interface GuardStatus {
  /** Tables the extensions guard, and by which. */
  guarded: Array<{ table: string; extensions: string[] }>;
  /** Extensions that guarded tables and were not loaded when the bridge last looked: their tables stay guarded. */
  notLoaded: NotLoadedGuard[];
  /** Changes held for extensions that were not loaded, waiting for a start where they load. */
  heldEvents: number;
}

/**
 * What the database remembers of which extension guards which table (sql/000004.sql), as the bridge
 * last saw it (the bridge's extensions folder, which need not be the one this command was given).
 * Empty before a bridge ran.
 */
export async function guardStatus(pool: pg.Pool, config: Readonly<Config>): Promise<GuardStatus> {
  const rows = await readGuards(pool, config.schema).catch(() => []);
  const notLoaded = notLoadedAsRecorded(rows);
  const byTable = new Map<string, string[]>();
  for (const row of rows) {
    const name = row.schema === 'public' ? row.table : `${row.schema}.${row.table}`;
    byTable.set(name, [...(byTable.get(name) ?? []), row.extension]);
  }
  const { rows: held } = await pool
    .query<{ n: number }>(
      `select count(*)::int as n from ${pg.escapeIdentifier(config.schema)}.failed_events where reason = 'extension_not_loaded' and replayed_at is null`,
    )
    .catch(() => ({ rows: [{ n: 0 }] }));
  return {
    guarded: [...byTable].map(([table, extensions]) => ({ table, extensions })).sort((a, b) => (a.table < b.table ? -1 : 1)),
    notLoaded,
    heldEvents: held[0]?.n ?? 0,
  };
}

/** doctor's check of the same: every extension that guards tables loads. */
export function guardCheck(guards: GuardStatus): Check {
  if (guards.notLoaded.length === 0) {
    return { name: 'extensions guarding tables', ok: true, detail: `${guards.guarded.length} table(s) guarded, every guarding extension loads` };
  }
  return {
    name: 'extensions guarding tables',
    ok: false,
    detail: guards.notLoaded
      .map(
        (g) =>
          `extension "${g.extension}" does not load (${g.reason}); it guarded ${g.tables.map((t) => t.collection).join(', ')}, whose writes it covered are refused and changes held (${guards.heldEvents} held)`,
      )
      .join('; '),
    fix: 'fix the extension or put it back (npx hookbridge extensions says why it fails) and restart the bridge: the held changes are delivered then. If it was removed on purpose: npx hookbridge forget <extension>.',
  };
}
