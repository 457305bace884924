/**
 * The user's tables as hookbridge sees them: one listing (listUserTables) that the filter path, the
 * action path and the guards share, and what it takes to manage each (ownership, privileges, identity).
 */
import pg from 'pg';
import { collectionOf } from './replication/change-events.js';

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
    return (
      `its schema "${table.schema}" is not usable by the bridge's role; fix: GRANT USAGE ON SCHEMA ${pg.escapeIdentifier(table.schema)} TO <the bridge's role>` +
      ((what === 'trigger' ? table.mayTrigger : table.mayPublish) ? '' : `, and ${grantOwner}`)
    );
  }
  return what === 'trigger'
    ? `owned by role "${table.owner ?? '?'}", and the bridge's role has no TRIGGER privilege on it; fix: ${grantOwner} (or GRANT TRIGGER ON it)`
    : `owned by role "${table.owner ?? '?'}", which the bridge's role neither is nor is a member of (publishing a table needs that); fix: ${grantOwner}`;
}

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
export const hasIdentityKeySql = (alias: string): string => `
  coalesce(
    (select bool_and(${identityOk('l')}) from pg_partition_tree(${alias}.oid) pt join pg_class l on l.oid = pt.relid where pt.isleaf),
    ${identityOk(alias)}
  )`;

export type Queryable = Pick<pg.ClientBase, 'query'> | pg.Pool;

export function qualified(schema: string, name: string): string {
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
