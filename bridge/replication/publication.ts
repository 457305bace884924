/**
 * Which tables the action path hears about, and everything hookbridge attaches to them.
 *
 * Two publications, because a table without a replica identity in a publication that publishes
 * UPDATE/DELETE makes the user's own UPDATE/DELETE fail, and hookbridge must never do that:
 *   <publication>          insert, update, delete, truncate   tables with an identity key
 *   <publication>_inserts  insert, truncate                   tables without one
 * Both publish partitions as their root table. Every published table (and each of its partitions,
 * which a writer may target directly) carries the statement trigger that tells action hooks who wrote.
 */
import { collectionOf } from './change-events.js';
import pg from 'pg';
import { HookbridgeError } from '../../hooks/errors.js';
import { inTransaction } from '../database.js';
import { dropSlot } from './setup.js';

export class PublicationError extends HookbridgeError {
  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.name = 'PublicationError';
  }
}

export interface UserTable {
  oid: number;
  schema: string;
  name: string;
  /** `name` in `public`, `schema.name` elsewhere. */
  collection: string;
  replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  /** UPDATE/DELETE can be published without failing the writer's statement. */
  hasIdentityKey: boolean;
  /** Primary key columns in key order (empty without one). */
  primaryKey: string[];
  /** The table's owner. */
  owner?: string;
  /**
   * The bridge may put its filter trigger on it: TRIGGER privilege, or owning it (directly or as a
   * member of the owner role; only then can it also replace a trigger someone changed).
   */
  mayTrigger?: boolean;
  /** The bridge may publish it: ALTER PUBLICATION ... ADD TABLE needs it to own the table (or be a member of the owner role). */
  mayPublish?: boolean;
  /** The bridge's role has no USAGE on the table's schema. */
  schemaUnusable?: boolean;
  /**
   * Every partition under a partitioned table (oids, ascending): each needs the accountability
   * trigger (statement triggers are not cloned), so a new one makes the next 2 s sync a full one.
   */
  partitions?: number[];
}

/**
 * Why the bridge may not put its trigger on a table (`trigger`) or publish it (`publish`), and the
 * statement that fixes it. Tables it may not manage are listed with this and never stop the others.
 */
export function unmanagedReason(table: UserTable, what: 'trigger' | 'publish'): string {
  const grantOwner = `GRANT ${pg.escapeIdentifier(table.owner ?? 'owner')} TO <the bridge's role>`;
  if (table.schemaUnusable) {
    return `its schema "${table.schema}" is not usable by the bridge's role; fix: GRANT USAGE ON SCHEMA ${pg.escapeIdentifier(table.schema)} TO <the bridge's role>` +
      ((what === 'trigger' ? table.mayTrigger : table.mayPublish) ? '' : `, and ${grantOwner}`);
  }
  return what === 'trigger'
    ? `owned by role "${table.owner ?? '?'}", and the bridge's role has no TRIGGER privilege on it; fix: ${grantOwner} (or GRANT TRIGGER ON it)`
    : `owned by role "${table.owner ?? '?'}", which the bridge's role neither is nor is a member of (publishing a table needs that); fix: ${grantOwner}`;
}

export interface SyncPublicationsResult {
  /** Collections in `<publication>` (all changes). */
  full: string[];
  /** Collections in `<publication>_inserts` (inserts and truncates only). */
  insertOnly: string[];
  /** Collections published now that were in neither publication before. */
  added: string[];
  /** Collections that were published and no longer are. */
  removed: string[];
}

export const ACCOUNTABILITY_TRIGGER = 'hookbridge_accountability';
const FULL_PUBLISH = 'insert, update, delete, truncate';
const INSERTS_PUBLISH = 'insert, truncate';
const DEFAULT_LOCK_TIMEOUT_MS = 5_000;

const IDENTITIES = { d: 'default', n: 'nothing', f: 'full', i: 'index' } as const;

/**
 * Whether UPDATE/DELETE on relation `alias` may be published. Mirrors Postgres' own rule: a default
 * identity needs a primary key that is not deferrable, USING INDEX needs that index to still exist.
 * Foreign partitions are never published, so they cannot fail.
 */
const identityOk = (alias: string): string => `
  case when ${alias}.relkind = 'f' then true else
    case ${alias}.relreplident
      when 'f' then true
      when 'd' then exists (select 1 from pg_index i where i.indrelid = ${alias}.oid and i.indisprimary and i.indimmediate)
      when 'i' then exists (select 1 from pg_index i where i.indrelid = ${alias}.oid and i.indisreplident)
      else false
    end
  end`;

/**
 * For a partitioned table every leaf decides, since the identity check runs on the partition written.
 * The event trigger for new tables decides the same in SQL (has_identity_key(), sql/000008.sql).
 */
const hasIdentityKeySql = (alias: string): string => `
  coalesce(
    (select bool_and(${identityOk('l')}) from pg_partition_tree(${alias}.oid) pt join pg_class l on l.oid = pt.relid where pt.isleaf),
    ${identityOk(alias)}
  )`;

type Queryable = Pick<pg.ClientBase, 'query'> | pg.Pool;

function qualified(schema: string, name: string): string {
  return `${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(name)}`;
}

/**
 * Tables a hook could be about: ordinary and partitioned tables (those the bridge may not alter marked
 * as such, so that they can be reported instead of silently skipped), without
 * system and temporary schemas, the `exclude`d schemas, partitions (published via their root) and
 * unlogged tables (they write no WAL, so nothing could be decoded, and Postgres refuses to publish them).
 */
export async function listUserTables(pool: Queryable, options: { exclude: string[] }): Promise<UserTable[]> {
  const { rows } = await pool.query<{
    oid: number;
    schema: string;
    name: string;
    relreplident: string;
    has_identity_key: boolean;
    primary_key: string[] | null;
    owner: string;
    schema_usable: boolean;
    may_trigger: boolean;
    may_publish: boolean;
    partitions: number[] | null;
  }>(
    `select c.oid, n.nspname as schema, c.relname as name, c.relreplident, ${hasIdentityKeySql('c')} as has_identity_key,
            pg_get_userbyid(c.relowner)::text as owner,
            has_schema_privilege(n.oid, 'USAGE') as schema_usable,
            has_schema_privilege(n.oid, 'USAGE') and (pg_has_role(c.relowner, 'USAGE') or has_table_privilege(c.oid, 'TRIGGER')) as may_trigger,
            has_schema_privilege(n.oid, 'USAGE') and pg_has_role(c.relowner, 'USAGE') as may_publish,
            (select array_agg(a.attname::text order by array_position(i.indkey::int2[], a.attnum))
               from pg_index i
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey::int2[])
              where i.indrelid = c.oid and i.indisprimary) as primary_key,
            case when c.relkind = 'p' then
              (select array_agg(pt.relid::oid::int8 order by pt.relid::oid) from pg_partition_tree(c.oid) pt where pt.relid <> c.oid::regclass)
            end as partitions
       from pg_class c
       join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p')
        and not c.relispartition
        and c.relpersistence = 'p'
        and n.nspname !~ '^pg_'
        and n.nspname <> 'information_schema'
        and n.nspname <> all ($1::text[])
      order by n.nspname, c.relname`,
    [options.exclude],
  );
  return rows.map((row) => ({
    oid: row.oid,
    schema: row.schema,
    name: row.name,
    collection: collectionOf(row),
    replicaIdentity: IDENTITIES[row.relreplident as keyof typeof IDENTITIES] ?? 'default',
    hasIdentityKey: row.has_identity_key,
    primaryKey: row.primary_key ?? [],
    owner: row.owner,
    mayTrigger: row.may_trigger,
    mayPublish: row.may_publish,
    ...(row.schema_usable ? {} : { schemaUnusable: true }),
    ...(row.partitions ? { partitions: row.partitions.map(Number) } : {}),
  }));
}

export function insertsPublicationName(publication: string): string {
  return `${publication}_inserts`;
}

export interface SyncPublicationsOptions {
  publication: string;
  tables: UserTable[];
  /** hookbridge's schema, where the trigger function lives. */
  schema: string;
  /** Longest wait for a table lock; a busy table makes the sync fail (to be retried), never stall its writers. */
  lockTimeoutMs?: number;
}

interface Relation {
  oid: number;
  schema: string;
  name: string;
}

/**
 * Makes both publications and the accountability triggers cover exactly `tables`, in one
 * transaction. Where a table goes is decided from the catalog inside that transaction, not from
 * `hasIdentityKey` as listed, so a primary key dropped in between cannot break the user's writes.
 */
export async function syncPublications(pool: pg.Pool, options: SyncPublicationsOptions): Promise<SyncPublicationsResult> {
  const { publication } = options;
  const inserts = insertsPublicationName(publication);
  if (Buffer.byteLength(inserts) > 63) {
    throw new PublicationError(
      'E_PUBLICATION_NAME',
      `The publication name "${publication}" is too long: hookbridge also creates "${inserts}", and Postgres names ` +
        'are at most 63 bytes. Set HOOKBRIDGE_PUBLICATION to a name of at most 55 characters.',
      { details: { publication } },
    );
  }
  try {
    return await inTransaction(pool, (client) => syncInTransaction(client, options, inserts));
  } catch (error) {
    if ((error as { code?: unknown }).code === '55P03') {
      throw new PublicationError(
        'E_PUBLICATION_LOCK_TIMEOUT',
        `Could not update publication "${publication}": a table stayed locked by another transaction for more than ` +
          `${options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS} ms. Nothing was changed; the bridge tries again. ` +
          'If this repeats, look for long-running transactions (pg_stat_activity).',
        { cause: error, details: { publication } },
      );
    }
    throw error;
  }
}

async function syncInTransaction(client: pg.PoolClient, options: SyncPublicationsOptions, inserts: string): Promise<SyncPublicationsResult> {
  const { publication, schema } = options;
  const lockTimeout = Math.max(1, Math.floor(options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS));
  await client.query(`select set_config('lock_timeout', $1, true)`, [`${lockTimeout}ms`]);
  // Bridges sharing the publication take turns, so neither works from a stale view of the other's changes.
  await client.query('select pg_advisory_xact_lock(hashtextextended($1, 0))', [`hookbridge.publication:${publication}`]);

  const fn = await client.query<{ oid: number | null }>('select to_regprocedure($1)::oid as oid', [
    `${pg.escapeIdentifier(schema)}.accountability_trigger()`,
  ]);
  const triggerFunction = fn.rows[0]?.oid ?? null;
  if (triggerFunction === null) {
    throw new PublicationError(
      'E_NOT_MIGRATED',
      `${schema}.accountability_trigger() does not exist: hookbridge's migrations have not run in this database ` +
        '(or HOOKBRIDGE_SCHEMA differs from the schema they installed). Run them (the bridge does at start) and try again.',
      { details: { schema } },
    );
  }
  await ensurePublication(client, publication, FULL_PUBLISH);
  await ensurePublication(client, inserts, INSERTS_PUBLISH);

  // Tables dropped since they were listed have no pg_class row and fall out here.
  const wanted = await client.query<Relation & { has_identity_key: boolean }>(
    `select c.oid, n.nspname as schema, c.relname as name, ${hasIdentityKeySql('c')} as has_identity_key
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.oid = any ($1::oid[]) and c.relkind in ('r', 'p') and not c.relispartition and c.relpersistence = 'p'`,
    [options.tables.map((t) => t.oid)],
  );
  const members = await client.query<Relation & { pubname: string }>(
    `select p.pubname, c.oid, n.nspname as schema, c.relname as name
       from pg_publication p
       join pg_publication_rel pr on pr.prpubid = p.oid
       join pg_class c on c.oid = pr.prrelid
       join pg_namespace n on n.oid = c.relnamespace
      where p.pubname = any ($1::text[])`,
    [[publication, inserts]],
  );

  const wantFull = new Map<number, Relation>();
  const wantInserts = new Map<number, Relation>();
  for (const row of wanted.rows) (row.has_identity_key ? wantFull : wantInserts).set(row.oid, row);
  const inFull = new Map(members.rows.filter((r) => r.pubname === publication).map((r) => [r.oid, r]));
  const inInserts = new Map(members.rows.filter((r) => r.pubname === inserts).map((r) => [r.oid, r]));

  // Leaving first: a table losing its identity must be out of the full publication before anything else.
  await alterPublication(client, publication, 'drop', [...inFull.values()].filter((r) => !wantFull.has(r.oid)));
  await alterPublication(client, inserts, 'drop', [...inInserts.values()].filter((r) => !wantInserts.has(r.oid)));
  await alterPublication(client, publication, 'add', [...wantFull.values()].filter((r) => !inFull.has(r.oid)));
  await alterPublication(client, inserts, 'add', [...wantInserts.values()].filter((r) => !inInserts.has(r.oid)));

  await syncTriggers(client, schema, triggerFunction, wanted.rows.map((r) => r.oid));

  const byCollection = (rows: Iterable<Relation>) => [...rows].map((r) => collectionOf(r)).sort();
  const before = new Map([...inFull, ...inInserts]);
  const after = new Map([...wantFull, ...wantInserts]);
  return {
    full: byCollection(wantFull.values()),
    insertOnly: byCollection(wantInserts.values()),
    added: byCollection([...after.values()].filter((r) => !before.has(r.oid))),
    removed: byCollection([...before.values()].filter((r) => !after.has(r.oid))),
  };
}

async function ensurePublication(client: pg.PoolClient, name: string, publish: string): Promise<void> {
  // From PostgreSQL 18 stored generated columns can be published: action payloads then hold them too.
  const { rows: version } = await client.query<{ num: number }>(`select current_setting('server_version_num')::int as num`);
  const generated = (version[0]?.num ?? 0) >= 180000;
  const { rows } = await client.query<{ puballtables: boolean; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean; pubviaroot: boolean; gencols: string | null }>(
    `select puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot, ${generated ? 'pubgencols::text' : 'null::text'} as gencols
       from pg_publication where pubname = $1`,
    [name],
  );
  const settings = `publish = ${pg.escapeLiteral(publish)}, publish_via_partition_root = true${generated ? ', publish_generated_columns = stored' : ''}`;
  const existing = rows[0];
  if (!existing) {
    await client.query(`create publication ${pg.escapeIdentifier(name)} with (${settings})`);
    return;
  }
  if (existing.puballtables) {
    throw new PublicationError(
      'E_PUBLICATION_ALL_TABLES',
      `The publication "${name}" is FOR ALL TABLES, but hookbridge manages its table list itself. Drop it ` +
        `(DROP PUBLICATION "${name}";) if nothing else uses it, or set HOOKBRIDGE_PUBLICATION to another name.`,
      { details: { publication: name } },
    );
  }
  const wantsChanges = publish.includes('update');
  const matches =
    existing.pubinsert && existing.pubtruncate && existing.pubviaroot &&
    existing.pubupdate === wantsChanges && existing.pubdelete === wantsChanges && (!generated || existing.gencols === 's');
  if (!matches) await client.query(`alter publication ${pg.escapeIdentifier(name)} set (${settings})`);
}

async function alterPublication(client: pg.PoolClient, name: string, verb: 'add' | 'drop', relations: Relation[]): Promise<void> {
  if (relations.length === 0) return;
  const list = relations.map((r) => qualified(r.schema, r.name)).join(', ');
  await client.query(`alter publication ${pg.escapeIdentifier(name)} ${verb} table ${list}`);
}

/** The trigger on each wanted table and every partition under it; off every other table. */
async function syncTriggers(client: pg.PoolClient, schema: string, triggerFunction: number, roots: number[]): Promise<void> {
  const targets = await client.query<Relation>(
    `select distinct c.oid, n.nspname as schema, c.relname as name
       from unnest($1::oid[]) as root(oid)
       cross join lateral (select root.oid as relid union all select relid from pg_partition_tree(root.oid)) tree
       join pg_class c on c.oid = tree.relid
       join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p')`,
    [roots],
  );
  const existing = await client.query<Relation & { ours: boolean }>(
    `select c.oid, n.nspname as schema, c.relname as name, t.tgfoid = $2::oid as ours
       from pg_trigger t
       join pg_class c on c.oid = t.tgrelid
       join pg_namespace n on n.oid = c.relnamespace
      where t.tgname = $1 and not t.tgisinternal`,
    [ACCOUNTABILITY_TRIGGER, triggerFunction],
  );
  const wanted = new Set(targets.rows.map((r) => r.oid));
  const ours = new Set(existing.rows.filter((r) => r.ours).map((r) => r.oid));
  const trigger = pg.escapeIdentifier(ACCOUNTABILITY_TRIGGER);
  for (const r of existing.rows) {
    // A same-named trigger calling another function is another hookbridge schema's; not ours to drop.
    if (r.ours && !wanted.has(r.oid)) await client.query(`drop trigger if exists ${trigger} on ${qualified(r.schema, r.name)}`);
  }
  for (const r of targets.rows) {
    if (ours.has(r.oid)) continue;
    await client.query(
      `create or replace trigger ${trigger}
         before insert or update or delete or truncate on ${qualified(r.schema, r.name)}
         for each statement execute function ${pg.escapeIdentifier(schema)}.accountability_trigger()`,
    );
  }
}

/**
 * Removes everything hookbridge installed in this database: its triggers on user tables, both
 * publications, the slot and its schema. User tables and their rows stay as they are.
 */
export async function uninstall(pool: pg.Pool, options: { schema: string; slotName: string; publication: string }): Promise<void> {
  const { schema, publication } = options;
  await inTransaction(pool, async (client) => {
    // Clones on partitions (tgparentid <> 0) go with their parent's trigger and cannot be dropped alone.
    const { rows } = await client.query<{ schema: string; table: string; trigger: string }>(
      `select n.nspname as schema, c.relname as table, t.tgname as trigger
         from pg_trigger t
         join pg_class c on c.oid = t.tgrelid
         join pg_namespace n on n.oid = c.relnamespace
         join pg_proc p on p.oid = t.tgfoid
         join pg_namespace pn on pn.oid = p.pronamespace
        where not t.tgisinternal and t.tgparentid = 0 and n.nspname <> $1
          and (pn.nspname = $1 or t.tgname = $2)`,
      [schema, ACCOUNTABILITY_TRIGGER],
    );
    for (const r of rows) {
      await client.query(`drop trigger if exists ${pg.escapeIdentifier(r.trigger)} on ${qualified(r.schema, r.table)}`);
    }
    await client.query(`drop publication if exists ${pg.escapeIdentifier(publication)}, ${pg.escapeIdentifier(insertsPublicationName(publication))}`);
    await client.query(`drop schema if exists ${pg.escapeIdentifier(schema)} cascade`);
  });
  // Last, and outside the transaction: ending a walsender is not transactional anyway.
  await dropSlot(pool, options.slotName);
}
