/**
 * New tables guarded from their first row (sql/000008.sql).
 *
 * Which tables hooks are about is decided here (event names are globs over collection names), but a
 * table created and written in one transaction must be guarded inside it, where only the database
 * runs. So the bridge writes its rules into the database — `managed_patterns` (a LIKE pattern per
 * collection glob, and the filter operations and actions hooks matching it want, including those of
 * extensions that are not loaded) and `managed_settings` (its triggers' names, their functions, its
 * publications) — and an event trigger on `ddl_command_end` applies them to each table a CREATE
 * TABLE, CREATE TABLE AS, SELECT INTO or ALTER TABLE (rename, set schema, attach partition, a new
 * key) touches: the filter trigger and the publication, in the DDL's own transaction.
 *
 * Only a superuser may create an event trigger (PostgreSQL 14 to 18; some platforms give an
 * equivalent role the right). The bridge creates it at start when its role may; otherwise `doctor`
 * and `status` print the statement a superuser runs once, and until then new tables are guarded at
 * the bridge's next sync, with their earlier rows caught up for action hooks
 * (bridge/replication/catch-up.ts).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { tableActionsOf } from '../hooks/event-name.js';
import type { HookRegistry } from '../hooks/registry.js';
import { inTransaction } from './database.js';
import type { NotLoadedGuard } from './extension-guards.js';
import { FILTER_TRIGGER, FILTER_TRUNCATE_TRIGGER } from './filters/filter-service.js';
import { ACCOUNTABILITY_TRIGGER, insertsPublicationName } from './replication/publication.js';
import { SerialQueue } from './serial-queue.js';

/** What makes a table one that hooks may be about: created, or renamed, moved, re-keyed, given partitions. */
export const NEW_TABLE_TAGS = ['CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE'] as const;

/** Event triggers are per database, not per schema: the name carries the schema. */
export function eventTriggerName(schema: string): string {
  return `${schema}_new_tables`.slice(0, 63);
}

/** The statement that creates the event trigger (what a superuser runs when the bridge may not). */
export function eventTriggerStatement(schema: string): string {
  return (
    `CREATE EVENT TRIGGER ${pg.escapeIdentifier(eventTriggerName(schema))} ON ddl_command_end ` +
    `WHEN TAG IN (${NEW_TABLE_TAGS.map((tag) => pg.escapeLiteral(tag)).join(', ')}) ` +
    `EXECUTE FUNCTION ${pg.escapeIdentifier(schema)}.guard_new_tables();`
  );
}

export interface EventTriggerState {
  /** `installed`: enabled and hookbridge's; `disabled`, `missing`, or `foreign` (that name calls something else). */
  state: 'installed' | 'disabled' | 'missing' | 'foreign';
  detail: string;
  /** What a superuser runs to fix it. */
  fix?: string;
  /** Missing, but the connected role is a superuser: the bridge creates it at its next start. */
  atNextStart?: boolean;
}

const WITHOUT =
  "a new table gets its filter trigger and joins the publication only at the bridge's next check (every 2 s): rows written to it before " +
  'that are not filtered, and reach action hooks as catch-up creates (each row as it stood then; updates and deletes before it are not replayed)';

/** Whether the event trigger is in place, and if not, what it costs and the statement that fixes it. */
export async function readEventTrigger(pool: Pick<pg.Pool, 'query'>, schema: string): Promise<EventTriggerState> {
  const name = eventTriggerName(schema);
  const fn = `${pg.escapeIdentifier(schema)}.guard_new_tables()`;
  const { rows } = await pool.query<{
    installed: boolean;
    superuser: boolean;
    exists: boolean;
    enabled: boolean | null;
    ours: boolean | null;
    tags: string[] | null;
    event: string | null;
  }>(
    `select pg_catalog.to_regprocedure($2) is not null as installed, pg_catalog.current_setting('is_superuser')::boolean as superuser,
            e.oid is not null as exists, e.evtenabled <> 'D' as enabled,
            e.evtfoid = pg_catalog.to_regprocedure($2)::oid as ours, e.evttags::text[] as tags, e.evtevent::text as event
       from (select 1) one left join pg_catalog.pg_event_trigger e on e.evtname = $1`,
    [name, fn],
  );
  const row = rows[0];
  const create = eventTriggerStatement(schema);
  if (!row?.exists && row?.superuser) {
    return { state: 'missing', atNextStart: true, detail: `no event trigger ${name} yet: the bridge creates it at its next start (its role is a superuser)` };
  }
  if (!row?.installed) {
    return {
      state: 'missing',
      detail: `hookbridge is not installed in this database yet; without the event trigger ${WITHOUT}`,
      fix: `start the bridge once, then as a superuser: ${create}`,
    };
  }
  if (!row.exists) return { state: 'missing', detail: `no event trigger ${name}: ${WITHOUT}`, fix: `as a superuser, once: ${create}` };
  const tagsOk = NEW_TABLE_TAGS.every((tag) => row.tags?.includes(tag));
  if (!row.ours || row.event !== 'ddl_command_end' || !tagsOk) {
    return {
      state: 'foreign',
      detail: `the event trigger ${name} is not hookbridge's (it does not call ${schema}.guard_new_tables() on ${NEW_TABLE_TAGS.join(', ')}): ${WITHOUT}`,
      fix: `as a superuser: DROP EVENT TRIGGER ${pg.escapeIdentifier(name)}; ${create}`,
    };
  }
  if (!row.enabled) {
    return {
      state: 'disabled',
      detail: `the event trigger ${name} is disabled: ${WITHOUT}`,
      fix: `as a superuser: ALTER EVENT TRIGGER ${pg.escapeIdentifier(name)} ENABLE;`,
    };
  }
  return { state: 'installed', detail: `event trigger ${name} guards tables in the transaction that creates them (${NEW_TABLE_TAGS.join(', ')})` };
}

/**
 * Creates the event trigger if it is missing and the bridge's role may (a superuser, or a platform's
 * equivalent); never replaces one it did not make, never enables one someone disabled.
 */
export async function installEventTrigger(pool: Pick<pg.Pool, 'query'>, schema: string): Promise<EventTriggerState & { refused?: string }> {
  const state = await readEventTrigger(pool, schema);
  if (state.state !== 'missing') return state;
  try {
    await pool.query(eventTriggerStatement(schema));
  } catch (error) {
    // 42501: "must be superuser to create an event trigger"; 42710: another bridge just made it.
    const code = (error as { code?: unknown }).code;
    if (code === '42501') return { ...state, refused: (error as Error).message };
    if (code !== '42710') throw error;
  }
  return readEventTrigger(pool, schema);
}

/** One row of `managed_patterns`. */
export interface ManagedPattern {
  /** The collection glob as a LIKE pattern; null for every table. */
  collectionLike: string | null;
  filters: string[];
  actions: string[];
  source: string;
}

/** A LIKE pattern matching exactly `name`. */
export function exactLike(name: string): string {
  return name.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** `*` matches any run of characters (hooks/event-name.ts' globToRegExp); LIKE's own `%`, `_`, `\` are escaped. */
export function globToLike(glob: string): string {
  return exactLike(glob).replace(/\*/g, '%');
}

/** The rules the event trigger applies: from the loaded hooks, and what extensions that are not loaded guarded. */
export function managedPatterns(registry: Pick<HookRegistry, 'itemPatterns'>, notLoaded: readonly NotLoadedGuard[]): ManagedPattern[] {
  const rules = new Map<string, { collectionLike: string | null; filters: Set<string>; actions: Set<string>; sources: Set<string> }>();
  const add = (collectionLike: string | null, kind: 'filters' | 'actions', actions: readonly string[], source: string) => {
    if (actions.length === 0) return;
    const key = collectionLike ?? '\0';
    const rule = rules.get(key) ?? { collectionLike, filters: new Set(), actions: new Set(), sources: new Set() };
    for (const action of actions) rule[kind].add(action);
    rule.sources.add(source);
    rules.set(key, rule);
  };
  for (const kind of ['filter', 'action'] as const) {
    for (const pattern of registry.itemPatterns(kind)) {
      const actions = tableActionsOf(pattern);
      add(pattern.collection === null ? null : globToLike(pattern.collection), kind === 'filter' ? 'filters' : 'actions', actions, pattern.source);
    }
  }
  for (const guard of notLoaded) {
    for (const table of guard.tables) {
      const source = `extension ${guard.extension} (not loaded)`;
      add(exactLike(table.collection), 'filters', table.filters, source);
      add(exactLike(table.collection), 'actions', table.actions, source);
    }
  }
  return [...rules.values()]
    .map((r) => ({ collectionLike: r.collectionLike, filters: [...r.filters].sort(), actions: [...r.actions].sort(), source: [...r.sources].join(', ') }))
    .sort((a, b) => ((a.collectionLike ?? '') < (b.collectionLike ?? '') ? -1 : (a.collectionLike ?? '') > (b.collectionLike ?? '') ? 1 : 0));
}

export interface NewTablesOptions {
  pool: pg.Pool;
  schema: string;
  publication: string;
  logger: Logger;
}

/** The bridge's side: the settings and rules the event trigger reads, and the event trigger itself. */
export class NewTables {
  readonly #options: NewTablesOptions;
  readonly #logger: Logger;
  readonly #writes = new SerialQueue();
  #written: string | undefined;
  #state: EventTriggerState | undefined;

  constructor(options: NewTablesOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'new-tables' });
  }

  /** Whether new tables are guarded in their own transaction (the event trigger), as last seen. */
  get eventTrigger(): EventTriggerState | undefined {
    return this.#state;
  }

  /** Writes the names the event trigger uses, and creates the event trigger when the bridge's role may. */
  async start(): Promise<void> {
    const { pool, schema, publication } = this.#options;
    const quoted = pg.escapeIdentifier(schema);
    await pool.query(
      `insert into ${quoted}.managed_settings (filter_trigger, filter_function, accountability_trigger, accountability_function, publication, inserts_publication,
                                               truncate_trigger, truncate_function)
       values ($1, $2, $3, $4, $5, $6, $7, $8)
       on conflict (id) do update set filter_trigger = excluded.filter_trigger, filter_function = excluded.filter_function,
              truncate_trigger = excluded.truncate_trigger, truncate_function = excluded.truncate_function,
              accountability_trigger = excluded.accountability_trigger, accountability_function = excluded.accountability_function,
              publication = excluded.publication, inserts_publication = excluded.inserts_publication, updated_at = now()`,
      [
        FILTER_TRIGGER,
        `${quoted}.filter_trigger()`,
        ACCOUNTABILITY_TRIGGER,
        `${quoted}.accountability_trigger()`,
        publication,
        insertsPublicationName(publication),
        FILTER_TRUNCATE_TRIGGER,
        `${quoted}.filter_truncate_trigger()`,
      ],
    );
    // Every role's DDL calls these (after a superuser's REVOKE ... ON ALL FUNCTIONS IN SCHEMA, again).
    await pool.query(`grant execute on function ${quoted}.guard_table(oid, text), ${quoted}.guard_new_tables() to public`);
    const state = await installEventTrigger(pool, schema);
    this.#state = state;
    if (state.state === 'installed')
      this.#logger.info({ eventTrigger: eventTriggerName(schema) }, 'new tables are guarded in the transaction that creates them');
    else
      this.#logger.warn(
        { reason: state.refused ?? state.detail, fix: state.fix },
        "new tables are guarded only from the bridge's next check (no event trigger)",
      );
  }

  /** Rewrites the rules when the hooks (or the extensions that are not loaded) changed. Serialised. */
  update(registry: Pick<HookRegistry, 'itemPatterns'>, notLoaded: readonly NotLoadedGuard[]): Promise<void> {
    return this.#writes.run(
      () => this.#write(managedPatterns(registry, notLoaded)),
      (error) => this.#logger.error({ err: error }, 'writing the rules for new tables failed'),
    );
  }

  async #write(patterns: ManagedPattern[]): Promise<void> {
    const json = JSON.stringify(patterns);
    if (json === this.#written) return;
    const { pool, schema } = this.#options;
    const quoted = pg.escapeIdentifier(schema);
    await inTransaction(pool, async (client) => {
      await client.query(`delete from ${quoted}.managed_patterns`);
      await client.query(
        `insert into ${quoted}.managed_patterns (collection_like, filters, actions, source)
         select p."collectionLike", p.filters, p.actions, p.source
           from jsonb_to_recordset($1::jsonb) as p("collectionLike" text, filters text[], actions text[], source text)`,
        [json],
      );
    });
    this.#written = json;
  }
}
