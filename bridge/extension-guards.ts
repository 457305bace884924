/**
 * Which extension guarded which table, remembered in the database (`<schema>.extension_guards`, see
 * sql/000004.sql), so that a mistake never unguards a table silently. An extension that fails to load
 * — or a missing extensions folder — keeps the tables it guarded guarded:
 *
 *   - their filter trigger stays, and the bridge refuses the writes it covered with an error naming the
 *     extension (filter-requests.ts), in both failure modes;
 *   - they stay in the publication, and their committed changes are held in failed_events (reason
 *     `extension_not_loaded`) instead of being acknowledged past, until a start where the extension
 *     loads delivers them to its action hooks (failed-events.ts).
 *
 * The rows of every extension that loads are rewritten from what its hooks match among the current
 * tables. An extension gone from an extensions folder that exists was removed on purpose: it is
 * forgotten (logged). An extension that never loaded guards nothing: there is nothing to remember.
 */
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { matchesEvent } from '../hooks/event-name.js';
import type { ExtensionHooks } from '../hooks/register.js';
import type { HookRuntime, LoadReport } from '../hooks/runtime.js';
import { collectionOf } from './replication/change-events.js';
import type { UserTable } from './replication/publication.js';
import { SerialQueue } from './serial-queue.js';

export const GUARDED_FILTERS = ['create', 'update', 'delete'] as const;
export const GUARDED_ACTIONS = ['create', 'update', 'delete', 'truncate'] as const;

export interface GuardRow {
  extension: string;
  /** Its entry file, relative to the extensions folder. */
  path: string;
  schema: string;
  table: string;
  /** Write operations its filter hooks cover. */
  filters: string[];
  /** Changes its action hooks hear. */
  actions: string[];
  /** Why the extension was not loaded when the bridge last looked; null while it loads. */
  notLoaded: string | null;
}

/** An extension that guards tables and is not loaded, and why. */
export interface NotLoaded {
  extension: string;
  reason: string;
}

export interface NotLoadedGuard extends NotLoaded {
  tables: Array<{ collection: string; filters: string[]; actions: string[] }>;
}

/** What the loaded extensions' hooks match among `tables`. */
export function guardsOf(extensions: readonly ExtensionHooks[], tables: readonly UserTable[], root: string): GuardRow[] {
  const rows: GuardRow[] = [];
  for (const ext of extensions) {
    const path = isAbsolute(ext.path) ? relative(root, ext.path) : ext.path;
    const handlers = ext.handlers.filter((h) => h.kind !== 'init' && h.pattern.scope === 'items');
    if (handlers.length === 0) continue;
    for (const table of tables) {
      const matches = (kind: 'filter' | 'action', action: string) =>
        handlers.some((h) => h.kind === kind && matchesEvent(h.pattern, { scope: 'items', action, collection: table.collection }));
      const filters = GUARDED_FILTERS.filter((action) => matches('filter', action));
      const actions = GUARDED_ACTIONS.filter((action) => matches('action', action));
      if (filters.length || actions.length) rows.push({ extension: ext.name, path, schema: table.schema, table: table.name, filters, actions, notLoaded: null });
    }
  }
  return sortRows(rows);
}

/**
 * Why an extension with remembered guards is not loaded, or undefined when it is simply gone from an
 * extensions folder that exists (removed on purpose).
 */
export function notLoadedReason(extension: string, path: string, report: LoadReport): string | undefined {
  if (!report.exists) return `the extensions folder ${report.root} does not exist`;
  const entry = resolve(report.root, path);
  for (const failure of report.failed) {
    // A bundle fails as a whole (its name), its hooks were remembered as `<bundle>/<hook>`; a folder that
    // is no extension any more (no index file, a broken package.json) fails by its path.
    const covers =
      failure.name !== undefined
        ? extension === failure.name || extension.startsWith(`${failure.name}/`)
        : entry === failure.path || entry.startsWith(`${basename(failure.path) === 'package.json' ? dirname(failure.path) : failure.path}${sep}`);
    if (covers) return `${failure.code}: ${failure.reason}`;
  }
  return undefined;
}

/** Sorts the remembered rows of extensions that are not loaded: still guarding (and why), or removed. */
export function classifyGuards(stored: readonly GuardRow[], report: LoadReport, loaded: ReadonlySet<string>): { notLoaded: NotLoadedGuard[]; removed: string[] } {
  const byExtension = new Map<string, GuardRow[]>();
  for (const row of stored) {
    if (loaded.has(row.extension)) continue;
    const rows = byExtension.get(row.extension) ?? [];
    rows.push(row);
    byExtension.set(row.extension, rows);
  }
  const notLoaded: NotLoadedGuard[] = [];
  const removed: string[] = [];
  for (const [extension, rows] of byExtension) {
    const reason = notLoadedReason(extension, rows[0]?.path ?? '', report);
    if (reason === undefined) {
      removed.push(extension);
      continue;
    }
    notLoaded.push({
      extension,
      reason,
      tables: rows.map((r) => ({ collection: collectionOf({ schema: r.schema, name: r.table }), filters: r.filters, actions: r.actions })),
    });
  }
  return { notLoaded, removed };
}

function table(schema: string): string {
  return `${pg.escapeIdentifier(schema)}.extension_guards`;
}

export async function readGuards(pool: Pick<pg.Pool, 'query'>, schema: string): Promise<GuardRow[]> {
  const { rows } = await pool.query<{ extension: string; path: string; table_schema: string; table_name: string; filters: string[]; actions: string[]; not_loaded: string | null }>(
    `select extension, path, table_schema, table_name, filters, actions, not_loaded from ${table(schema)}`,
  );
  return sortRows(
    rows.map((r) => ({ extension: r.extension, path: r.path, schema: r.table_schema, table: r.table_name, filters: r.filters, actions: r.actions, notLoaded: r.not_loaded })),
  );
}

/** The remembered guards as the bridge last saw them, by extension: what `status` and `doctor` report. */
export function notLoadedAsRecorded(rows: readonly GuardRow[]): NotLoadedGuard[] {
  const byExtension = new Map<string, NotLoadedGuard>();
  for (const row of rows) {
    if (row.notLoaded === null) continue;
    const guard = byExtension.get(row.extension) ?? { extension: row.extension, reason: row.notLoaded, tables: [] };
    guard.tables.push({ collection: collectionOf({ schema: row.schema, name: row.table }), filters: row.filters, actions: row.actions });
    byExtension.set(row.extension, guard);
  }
  return [...byExtension.values()];
}

/**
 * Replaces the rows of `extensions` with `rows`, and records why the `notLoaded` ones are not loaded,
 * in one transaction.
 */
async function writeGuards(pool: pg.Pool, schema: string, extensions: string[], rows: GuardRow[], notLoaded: NotLoaded[]): Promise<void> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('begin');
    try {
      await client.query(`delete from ${table(schema)} where extension = any ($1::text[])`, [extensions]);
      await client.query(
        `insert into ${table(schema)} (extension, path, table_schema, table_name, filters, actions)
         select r.extension, r.path, r.schema, r."table", r.filters, r.actions
           from jsonb_to_recordset($1::jsonb) as r(extension text, path text, schema text, "table" text, filters text[], actions text[])`,
        [JSON.stringify(rows)],
      );
      await client.query(
        `update ${table(schema)} g set not_loaded = r.reason, updated_at = now()
           from jsonb_to_recordset($1::jsonb) as r(extension text, reason text)
          where g.extension = r.extension and g.not_loaded is distinct from r.reason`,
        [JSON.stringify(notLoaded.map((n) => ({ extension: n.extension, reason: n.reason })))],
      );
      await client.query('commit');
    } catch (error) {
      await client.query('rollback').catch((rollbackError: unknown) => (broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError))));
      throw error;
    }
  } finally {
    client.release(broken);
  }
}

function sortRows(rows: GuardRow[]): GuardRow[] {
  const key = (r: GuardRow) => `${r.extension}\0${r.schema}\0${r.table}`;
  return rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

const NONE: readonly NotLoaded[] = Object.freeze([]);

export interface ExtensionGuardsOptions {
  pool: pg.Pool;
  schema: string;
  runtime: HookRuntime;
  logger: Logger;
}

/** The bridge's view of the guards: kept in the database, answered from memory on the hot paths. */
export class ExtensionGuards {
  readonly #options: ExtensionGuardsOptions;
  readonly #logger: Logger;
  readonly #updates = new SerialQueue();
  #notLoaded: NotLoadedGuard[] = [];
  /** `<collection>\0<action>` → the (first) not-loaded extension whose filters covered it. */
  #filters = new Map<string, NotLoaded>();
  /** `<collection>\0<action>` → every not-loaded extension whose actions heard it. */
  #actions = new Map<string, NotLoaded[]>();
  #filterOperations = new Map<string, string[]>();
  #reported = '[]';
  #computed: { extensions: readonly ExtensionHooks[]; tables: string; rows: GuardRow[] } | undefined;

  constructor(options: ExtensionGuardsOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'guards' });
  }

  /** Extensions that guard tables and are not loaded. */
  get notLoaded(): readonly NotLoadedGuard[] {
    return this.#notLoaded;
  }

  /** The not-loaded extension whose filter hooks covered this write, if any: the write is refused. */
  failedFilter(collection: string, action: string): NotLoaded | undefined {
    return this.#filters.get(`${collection}\0${action}`);
  }

  /** Every not-loaded extension whose action hooks heard this change: it is held for each. */
  heldFor(collection: string | undefined, action: string): readonly NotLoaded[] {
    if (collection === undefined || this.#actions.size === 0) return NONE;
    return this.#actions.get(`${collection}\0${action}`) ?? NONE;
  }

  /** Write operations (create, update, delete) of `collection` that not-loaded extensions guard. */
  filterOperations(collection: string): readonly string[] {
    return this.#filterOperations.get(collection) ?? [];
  }

  /** Whether not-loaded extensions heard changes of `collection` (it stays published). */
  holdsActions(collection: string): boolean {
    for (const action of GUARDED_ACTIONS) if (this.#actions.has(`${collection}\0${action}`)) return true;
    return false;
  }

  /** The refusals, for the filter worker threads: `[collection, action, why]`. */
  failedFilters(): Array<[string, string, NotLoaded]> {
    return [...this.#filters].map(([key, why]) => {
      const [collection = '', action = ''] = key.split('\0');
      return [collection, action, why];
    });
  }

  /**
   * Records what the loaded extensions guard among `tables`, forgets removed extensions, and works out
   * which remembered guards belong to extensions that are not loaded. Serialised; the bridge calls it
   * after the extensions loaded and whenever the catalog sync runs.
   */
  update(tables: readonly UserTable[]): Promise<void> {
    return this.#updates.run(
      () => this.#update(tables),
      (error) => this.#logger.error({ err: error }, 'updating the extension guards failed'),
    );
  }

  async #update(tables: readonly UserTable[]): Promise<void> {
    const { pool, schema, runtime } = this.#options;
    const report = runtime.report;
    if (!report) return;
    const extensions = runtime.registry.extensions;
    const tablesKey = tables.map((t) => `${t.oid}:${t.collection}`).join(',');
    // Matching every handler against every table is the costly part: only when either changed.
    if (this.#computed?.extensions !== extensions || this.#computed.tables !== tablesKey) {
      this.#computed = { extensions, tables: tablesKey, rows: guardsOf(extensions, tables, report.root) };
    }
    const current = this.#computed.rows;
    const loaded = new Set(extensions.map((e) => e.name));
    const stored = await readGuards(pool, schema);
    const { notLoaded, removed } = classifyGuards(stored, report, loaded);
    const storedLoaded = stored.filter((r) => loaded.has(r.extension));
    const recorded = (extension: string) => stored.find((r) => r.extension === extension)?.notLoaded;
    if (
      removed.length > 0 ||
      JSON.stringify(storedLoaded) !== JSON.stringify(current) ||
      notLoaded.some((g) => recorded(g.extension) !== g.reason)
    ) {
      await writeGuards(pool, schema, [...loaded, ...removed], current, notLoaded);
    }
    for (const extension of removed) {
      const tablesOf = stored.filter((r) => r.extension === extension).map((r) => collectionOf({ schema: r.schema, name: r.table }));
      this.#logger.warn({ extension, tables: tablesOf }, 'extension removed from the extensions folder: the tables it guarded are no longer guarded by it');
    }
    this.#apply(notLoaded);
  }

  #apply(notLoaded: NotLoadedGuard[]): void {
    const filters = new Map<string, NotLoaded>();
    const actions = new Map<string, NotLoaded[]>();
    const operations = new Map<string, string[]>();
    for (const guard of notLoaded) {
      const why = { extension: guard.extension, reason: guard.reason };
      for (const t of guard.tables) {
        for (const action of t.filters) {
          if (!filters.has(`${t.collection}\0${action}`)) filters.set(`${t.collection}\0${action}`, why);
          const ops = operations.get(t.collection) ?? [];
          if (!ops.includes(action)) ops.push(action);
          operations.set(t.collection, ops);
        }
        for (const action of t.actions) {
          const list = actions.get(`${t.collection}\0${action}`) ?? [];
          list.push(why);
          actions.set(`${t.collection}\0${action}`, list);
        }
      }
    }
    const reported = JSON.stringify(notLoaded);
    const before = new Set(this.#notLoaded.map((g) => g.extension));
    this.#notLoaded = notLoaded;
    this.#filters = filters;
    this.#actions = actions;
    this.#filterOperations = operations;
    if (reported === this.#reported) return;
    this.#reported = reported;
    for (const guard of notLoaded) {
      this.#logger.error(
        { extension: guard.extension, reason: guard.reason, tables: guard.tables.map((t) => t.collection) },
        'extension not loaded: the tables it guarded stay guarded (writes its filters covered are refused, changes its actions hear are held until it loads)',
      );
    }
    for (const extension of before) {
      if (!notLoaded.some((g) => g.extension === extension)) {
        this.#logger.info({ extension }, 'extension loaded again; changes held for it are delivered at the next start (or: hookbridge failed replay)');
      }
    }
  }
}
