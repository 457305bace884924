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
import pg from 'pg';
import { HookbridgeError } from '../../hooks/errors.js';
import { hasIdentityKeySql, qualified, type Queryable, type UserTable } from '../catalog.js';
import { inTransaction } from '../database.js';
import { collectionOf } from './change-events.js';

export class PublicationError extends HookbridgeError {
  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.name = 'PublicationError';
  }
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

/**
 * Makes both publications and the accountability triggers cover exactly `tables`. The publications
 * themselves are set up in one short transaction that touches no user table; then each table that is
 * not as it should be is changed in a transaction of its own, so a table whose lock is busy delays only
 * itself (for at most `lockTimeoutMs`) and never holds another table's writers meanwhile. Where a
 * table goes is decided from the catalog inside its own transaction, not from `hasIdentityKey` as
 * listed, so a primary key dropped in between cannot break the user's writes. A table that stayed
 * locked is left as it was (the others are done) and reported as E_PUBLICATION_LOCK_TIMEOUT.
 */
export async function syncPublications(pool: pg.Pool, options: SyncPublicationsOptions): Promise<SyncPublicationsResult> {
  const { publication, schema } = options;
  const inserts = insertsPublicationName(publication);
  if (Buffer.byteLength(inserts) > 63) {
    throw new PublicationError(
      'E_PUBLICATION_NAME',
      `The publication name "${publication}" is too long: hookbridge also creates "${inserts}", and Postgres names ` +
        'are at most 63 bytes. Set HOOKBRIDGE_PUBLICATION to a name of at most 55 characters.',
      { details: { publication } },
    );
  }
  const lockTimeoutMs = Math.max(1, Math.floor(options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS));
  /**
   * One short transaction: the lock timeout, and bridges sharing the publication taking turns. Its
   * commit need not wait for the disk: WAL is written in order, so any write made after it is durable
   * only once it is, and one lost in a crash is made again by the next sync.
   */
  const step = <T>(work: (client: pg.PoolClient) => Promise<T>) =>
    inTransaction(pool, async (client) => {
      await client.query(
        `select set_config('lock_timeout', $1, true), set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(hashtextextended($2, 0))`,
        [`${lockTimeoutMs}ms`, `hookbridge.publication:${publication}`],
      );
      return work(client);
    });

  const triggerFunction = await step(async (client) => {
    const fn = await client.query<{ oid: number | null }>('select to_regprocedure($1)::oid as oid', [
      `${pg.escapeIdentifier(schema)}.accountability_trigger()`,
    ]);
    const oid = fn.rows[0]?.oid ?? null;
    if (oid === null) {
      throw new PublicationError(
        'E_NOT_MIGRATED',
        `${schema}.accountability_trigger() does not exist: hookbridge's migrations have not run in this database ` +
          '(or HOOKBRIDGE_SCHEMA differs from the schema they installed). Run them (the bridge does at start) and try again.',
        { details: { schema } },
      );
    }
    await ensurePublication(client, publication, FULL_PUBLISH);
    await ensurePublication(client, inserts, INSERTS_PUBLISH);
    return oid;
  });

  const names = { publication, inserts, schema, triggerFunction };
  const wantedOids = options.tables.map((t) => t.oid);
  const before = await readPlacements(pool, names, wantedOids, null);
  const after = new Map<number, Placement>();
  const busy: Relation[] = [];
  const failed: Array<{ table: Relation; error: unknown }> = [];
  for (const placement of before.values()) {
    if (placement.settled) {
      if (placement.wanted) after.set(placement.oid, placement);
      continue;
    }
    try {
      const now = await step(async (client) => {
        // Again, inside this table's transaction: the catalog may have changed since the plan. (A wanted
        // table is read alone, which keeps a sync of many tables linear; one to remove is read against
        // every wanted tree, in case it joined one since.)
        const fresh = (await readPlacements(client, names, placement.wanted ? [placement.oid] : wantedOids, placement.oid)).get(placement.oid);
        if (fresh) await place(client, names, fresh);
        return fresh;
      });
      if (now?.wanted) after.set(now.oid, { ...now, inFull: now.hasIdentityKey, inInserts: !now.hasIdentityKey });
    } catch (error) {
      if ((error as { code?: unknown }).code === '55P03') {
        busy.push(placement);
        // The publication itself locked (a transaction that changed it is open): every other table would
        // wait as long again, for the same reason. Stop here.
        const holder = await publicationLockHolder(pool, publication);
        if (holder !== undefined) {
          throw new PublicationError(
            'E_PUBLICATION_LOCK_TIMEOUT',
            `Could not update publication "${publication}": the publication itself stayed locked for more than ${lockTimeoutMs} ms by an open ` +
              `transaction that changed it (backend pid ${holder}). Nothing more was changed; the bridge tries again. ` +
              'A migration that creates tables holds it until it commits; otherwise look at that backend in pg_stat_activity.',
            { details: { publication, pid: holder } },
          );
        }
      } else {
        // This table only (privileges, dropped or renamed meanwhile): the others go on, and it is reported.
        failed.push({ table: placement, error });
      }
    }
  }

  if (busy.length) {
    const tables = busy.map((r) => collectionOf(r)).sort();
    throw new PublicationError(
      'E_PUBLICATION_LOCK_TIMEOUT',
      `Could not update publication "${publication}" for ${tables.join(', ')}: ${tables.length === 1 ? 'that table' : 'each'} stayed locked by another ` +
        `transaction for more than ${lockTimeoutMs} ms. ${tables.length === 1 ? 'It was' : 'They were'} left as before (the other tables are done); ` +
        'the bridge tries again. If this repeats, look for long-running transactions (pg_stat_activity).',
      { details: { publication, tables } },
    );
  }
  if (failed.length) {
    const first = failed[0] as { table: Relation; error: unknown };
    const tables = failed.map((f) => collectionOf(f.table)).sort();
    throw new PublicationError(
      'E_PUBLICATION_SYNC',
      `Could not update publication "${publication}" for ${tables.join(', ')} ` +
        `(${collectionOf(first.table)}: ${(first.error as Error).message}); the other tables are done, the bridge tries again.`,
      { cause: first.error, details: { publication, tables } },
    );
  }
  const byCollection = (rows: Iterable<Relation>) => [...rows].map((r) => collectionOf(r)).sort();
  const wasPublished = (p: Placement) => p.inFull || p.inInserts;
  return {
    full: byCollection([...after.values()].filter((p) => p.inFull)),
    insertOnly: byCollection([...after.values()].filter((p) => p.inInserts)),
    added: byCollection([...after.values()].filter((p) => !before.get(p.oid) || !wasPublished(before.get(p.oid) as Placement))),
    removed: byCollection([...before.values()].filter((p) => wasPublished(p) && !after.has(p.oid))),
  };
}

interface Relation {
  oid: number;
  schema: string;
  name: string;
}

interface SyncNames {
  publication: string;
  inserts: string;
  schema: string;
  triggerFunction: number;
}

/** Where one relation is, and whether that is where it should be. */
interface Placement extends Relation {
  /** Listed, and still a table that can be published. */
  wanted: boolean;
  hasIdentityKey: boolean;
  /** Where it is now: either publication, neither, or (added by hand) both. */
  inFull: boolean;
  inInserts: boolean;
  /** Relations under it (itself included) that lack the trigger, when wanted; itself, when it carries the trigger unwanted. */
  triggerMissing: Relation[];
  triggerUnwanted: Relation[];
  /** Nothing to change. */
  settled: boolean;
}

/**
 * The wanted tables (still there), every relation in either publication, and every relation carrying
 * this schema's trigger: where each is and where it should be. `only`: that relation alone. Four
 * plain catalog reads, joined here (one query joining them all was several times slower).
 */
async function readPlacements(db: Queryable, names: SyncNames, wanted: number[], only: number | null): Promise<Map<number, Placement>> {
  // One after another: `db` may be a single client (a step's transaction).
  const tables = await db.query<Relation & { has_identity_key: boolean }>(
    `select c.oid, n.nspname as schema, c.relname as name, ${hasIdentityKeySql('c')} as has_identity_key
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.oid = any ($1::oid[]) and c.relkind in ('r', 'p') and not c.relispartition and c.relpersistence = 'p'`,
    [wanted],
  );
  const members = await db.query<Relation & { pubname: string }>(
    `select p.pubname, c.oid, n.nspname as schema, c.relname as name
       from pg_publication p
       join pg_publication_rel pr on pr.prpubid = p.oid
       join pg_class c on c.oid = pr.prrelid
       join pg_namespace n on n.oid = c.relnamespace
      where p.pubname in ($1, $2) and ($3::oid is null or c.oid = $3::oid)`,
    [names.publication, names.inserts, only],
  );
  // Each wanted table and every relation under it: all need the trigger (statement triggers are not cloned).
  const tree = await db.query<Relation & { root: number }>(
    `select distinct root.oid::oid::int8 as root, c.oid, n.nspname as schema, c.relname as name
       from unnest($1::oid[]) as root(oid)
       cross join lateral (select root.oid as relid union all select relid from pg_partition_tree(root.oid)) tree
       join pg_class c on c.oid = tree.relid
       join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p')`,
    [wanted],
  );
  // This schema's trigger (on the relations of the wanted trees, and on `only`, when given).
  const triggered = await db.query<Relation>(
    `select c.oid, n.nspname as schema, c.relname as name
       from pg_trigger t
       join pg_class c on c.oid = t.tgrelid
       join pg_namespace n on n.oid = c.relnamespace
      where t.tgname = $1 and not t.tgisinternal and t.tgfoid = $2::oid
        and ($3::oid is null or c.oid = $3::oid or c.oid = any ($4::oid[]))`,
    [ACCOUNTABILITY_TRIGGER, names.triggerFunction, only, tree.rows.map((r) => r.oid)],
  );
  const hasTrigger = new Set(triggered.rows.map((r) => r.oid));
  const inTree = new Set(tree.rows.map((r) => r.oid));
  const missingUnder = new Map<number, Relation[]>();
  for (const r of tree.rows) {
    if (hasTrigger.has(r.oid)) continue;
    const root = Number(r.root);
    missingUnder.set(root, [...(missingUnder.get(root) ?? []), { oid: r.oid, schema: r.schema, name: r.name }]);
  }
  const placements = new Map<number, Placement>();
  const placement = (r: Relation): Placement => {
    let p = placements.get(r.oid);
    if (!p) {
      p = {
        oid: r.oid,
        schema: r.schema,
        name: r.name,
        wanted: false,
        hasIdentityKey: false,
        inFull: false,
        inInserts: false,
        triggerMissing: [],
        triggerUnwanted: [],
        settled: true,
      };
      placements.set(r.oid, p);
    }
    return p;
  };
  for (const r of tables.rows) {
    if (only !== null && r.oid !== only) continue;
    Object.assign(placement(r), { wanted: true, hasIdentityKey: r.has_identity_key, triggerMissing: missingUnder.get(r.oid) ?? [] });
  }
  for (const r of members.rows) {
    const p = placement(r);
    if (r.pubname === names.publication) p.inFull = true;
    else p.inInserts = true;
  }
  // A relation carrying the trigger outside every wanted tree (a table no longer wanted, a partition
  // detached) loses it; a partition under a wanted table keeps it.
  for (const r of triggered.rows) {
    if (inTree.has(r.oid) || (only !== null && r.oid !== only)) continue;
    placement(r).triggerUnwanted = [r];
  }
  for (const p of placements.values()) {
    p.settled =
      p.inFull === (p.wanted && p.hasIdentityKey) &&
      p.inInserts === (p.wanted && !p.hasIdentityKey) &&
      p.triggerMissing.length === 0 &&
      p.triggerUnwanted.length === 0;
  }
  return placements;
}

/** The backend holding the publication's own lock (an open transaction that altered it), if any. */
async function publicationLockHolder(pool: pg.Pool, publication: string): Promise<number | undefined> {
  const { rows } = await pool.query<{ pid: number }>(
    `select l.pid from pg_locks l join pg_publication p on l.classid = 'pg_publication'::regclass and l.objid = p.oid
      where l.locktype = 'object' and l.granted and l.pid <> pg_backend_pid() and p.pubname = $1 limit 1`,
    [publication],
  );
  return rows[0]?.pid;
}

/** Puts one relation where it should be: in the right publication (or none), the trigger where it belongs. */
async function place(client: pg.PoolClient, names: SyncNames, p: Placement): Promise<void> {
  const full = p.wanted && p.hasIdentityKey;
  const inserts = p.wanted && !p.hasIdentityKey;
  // Leaving first: a table losing its identity is out of the full publication before it joins the other.
  if (p.inFull && !full) await alterPublication(client, names.publication, 'drop', [p]);
  if (p.inInserts && !inserts) await alterPublication(client, names.inserts, 'drop', [p]);
  if (full && !p.inFull) await alterPublication(client, names.publication, 'add', [p]);
  if (inserts && !p.inInserts) await alterPublication(client, names.inserts, 'add', [p]);
  const trigger = pg.escapeIdentifier(ACCOUNTABILITY_TRIGGER);
  // A same-named trigger calling another function is another hookbridge schema's: not ours to drop (the
  // placements only list this schema's).
  for (const r of p.triggerUnwanted) await client.query(`drop trigger if exists ${trigger} on ${qualified(r.schema, r.name)}`);
  for (const r of p.triggerMissing) {
    await client.query(
      `create or replace trigger ${trigger}
         before insert or update or delete or truncate on ${qualified(r.schema, r.name)}
         for each statement execute function ${pg.escapeIdentifier(names.schema)}.accountability_trigger()`,
    );
  }
}

async function ensurePublication(client: pg.PoolClient, name: string, publish: string): Promise<void> {
  // From PostgreSQL 18 stored generated columns can be published: action payloads then hold them too.
  const { rows: version } = await client.query<{ num: number }>(`select current_setting('server_version_num')::int as num`);
  const generated = (version[0]?.num ?? 0) >= 180000;
  const { rows } = await client.query<{
    puballtables: boolean;
    pubinsert: boolean;
    pubupdate: boolean;
    pubdelete: boolean;
    pubtruncate: boolean;
    pubviaroot: boolean;
    gencols: string | null;
  }>(
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
    existing.pubinsert &&
    existing.pubtruncate &&
    existing.pubviaroot &&
    existing.pubupdate === wantsChanges &&
    existing.pubdelete === wantsChanges &&
    (!generated || existing.gencols === 's');
  if (!matches) await client.query(`alter publication ${pg.escapeIdentifier(name)} set (${settings})`);
}

async function alterPublication(client: pg.PoolClient, name: string, verb: 'add' | 'drop', relations: Relation[]): Promise<void> {
  if (relations.length === 0) return;
  const list = relations.map((r) => qualified(r.schema, r.name)).join(', ');
  await client.query(`alter publication ${pg.escapeIdentifier(name)} ${verb} table ${list}`);
}
