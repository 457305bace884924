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
 * tables. A guard is never forgotten implicitly: an extension gone from the folder — or a folder that
 * holds no extension at all (emptied, the wrong folder mounted) — is not loaded like a broken one, and
 * its tables stay guarded until it comes back or `hookbridge forget <extension>` forgets it on purpose
 * (forgetGuards). An extension that never loaded guards nothing: there is nothing to remember.
 *
 * Which changes are held follows the loaded set atomically: the runtime hands each new set to
 * ExtensionGuards synchronously before the registry swaps it in (HookRuntime.onSwap), so a change is
 * never looked up between the two (delivered by the new set and held by the old view, or neither).
 */
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { matchesEvent, TABLE_ACTIONS, type EventPattern } from '../hooks/event-name.js';
import type { ExtensionHooks } from '../hooks/register.js';
import type { HookRuntime, LoadReport } from '../hooks/runtime.js';
import { inLockedTransaction } from './database.js';
import { collectionOf } from './replication/change-events.js';
import { HELD_REASON } from './replication/delivery.js';
import type { UserTable } from './catalog.js';
import { SerialQueue } from './serial-queue.js';

/** `truncate` only for filters that name it (see hooks/event-name.ts): a not-loaded one keeps TRUNCATE refused. */
export const GUARDED_FILTERS = TABLE_ACTIONS;
export const GUARDED_ACTIONS = TABLE_ACTIONS;

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
      if (filters.length || actions.length)
        rows.push({ extension: ext.name, path, schema: table.schema, table: table.name, filters, actions, notLoaded: null });
    }
  }
  return sortRows(rows);
}

/** Why an extension with remembered guards is not loaded. */
export function notLoadedReason(extension: string, path: string, report: LoadReport): string {
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
  // Gone could be a mistake as much as a removal (a wrong mount, a partial deploy): it keeps guarding.
  const forget = `if it was removed on purpose: npx hookbridge forget ${shellWord(extension)}`;
  if (report.loaded.length === 0 && report.failed.length === 0) {
    return `the extensions folder ${report.root} holds no extension at all (emptied, or the wrong folder mounted?); ${forget}`;
  }
  return `gone from the extensions folder ${report.root}; ${forget}`;
}

/** The remembered guards of extensions that are not loaded, by extension, with why: they keep guarding. */
export function classifyGuards(stored: readonly GuardRow[], report: LoadReport, loaded: ReadonlySet<string>): NotLoadedGuard[] {
  const byExtension = new Map<string, GuardRow[]>();
  for (const row of stored) {
    if (loaded.has(row.extension)) continue;
    const rows = byExtension.get(row.extension) ?? [];
    rows.push(row);
    byExtension.set(row.extension, rows);
  }
  const notLoaded: NotLoadedGuard[] = [];
  for (const [extension, rows] of byExtension) {
    notLoaded.push({
      extension,
      reason: notLoadedReason(extension, rows[0]?.path ?? '', report),
      tables: rows.map((r) => ({ collection: collectionOf({ schema: r.schema, name: r.table }), filters: r.filters, actions: r.actions })),
    });
  }
  return notLoaded;
}

function table(schema: string): string {
  return `${pg.escapeIdentifier(schema)}.extension_guards`;
}

export async function readGuards(pool: Pick<pg.Pool, 'query'>, schema: string): Promise<GuardRow[]> {
  const { rows } = await pool.query<{
    extension: string;
    path: string;
    table_schema: string;
    table_name: string;
    filters: string[];
    actions: string[];
    not_loaded: string | null;
  }>(`select extension, path, table_schema, table_name, filters, actions, not_loaded from ${table(schema)}`);
  return sortRows(
    rows.map((r) => ({
      extension: r.extension,
      path: r.path,
      schema: r.table_schema,
      table: r.table_name,
      filters: r.filters,
      actions: r.actions,
      notLoaded: r.not_loaded,
    })),
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

/** Bridges starting together write the same guard rows: one at a time (see inLockedTransaction). */
function guardsLockKey(schema: string): string {
  return `hookbridge.guards:${schema}`;
}

/**
 * Replaces the rows of `extensions` with `rows`, and records why the `notLoaded` ones are not loaded,
 * in one transaction, one bridge at a time.
 */
async function writeGuards(pool: pg.Pool, schema: string, extensions: string[], rows: GuardRow[], notLoaded: NotLoaded[]): Promise<void> {
  // Unlocked, a bridge's insert would meet the keys of another's (a duplicate key): its delete ran before they were committed.
  await inLockedTransaction(pool, guardsLockKey(schema), async (client) => {
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
  });
}

/**
 * Forgets, on purpose, what `extension` (and a bundle's hooks, `<extension>/<hook>`) guarded: its
 * tables are no longer guarded by it, and the changes held for it are closed undelivered (kept in
 * failed_events, replayed_at set, with the reason in replay_error). A running bridge follows within
 * its next catalog check (2 s). A bridge that loads an extension of that name remembers it again.
 */
export async function forgetGuards(pool: pg.Pool, schema: string, extension: string): Promise<{ tables: string[]; held: number }> {
  // A bundle's hooks are named `<bundle>/<hook>`: forgetting the bundle forgets them. A bare npm
  // scope (`@acme`) is no package, so it names no bundle: it must not forget `@acme/a`, `@acme/b`, ...
  const bundle = extension.startsWith('@') && !extension.includes('/') ? null : `${extension}/`;
  const { forgotten, held } = await inLockedTransaction(pool, guardsLockKey(schema), async (client) => ({
    forgotten: await client.query<{ table_schema: string; table_name: string }>(
      `delete from ${table(schema)} where extension = $1 or ($2::text is not null and starts_with(extension, $2)) returning table_schema, table_name`,
      [extension, bundle],
    ),
    held: await client.query(
      `update ${pg.escapeIdentifier(schema)}.failed_events
          set replayed_at = now(), replay_error = jsonb_build_object('message', 'not delivered: the extension was forgotten (hookbridge forget)', 'code', 'E_EXTENSION_FORGOTTEN')
        where (extension = $1 or ($3::text is not null and starts_with(extension, $3))) and reason = $2 and replayed_at is null`,
      [extension, HELD_REASON, bundle],
    ),
  }));
  const tables = [...new Set(forgotten.rows.map((r) => collectionOf({ schema: r.table_schema, name: r.table_name })))].sort();
  return { tables, held: held.rowCount ?? 0 };
}

/** A name as one shell word, for commands printed for the user to paste (folder names may hold spaces). */
function shellWord(name: string): string {
  return /^[\w@/.+-]+$/.test(name) ? name : `'${name.replaceAll("'", `'\\''`)}'`;
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
  /** Extensions that left the loaded set in this process, by name, with their action patterns: held by what they heard. */
  #goneActions: Array<{ why: NotLoaded; patterns: EventPattern[] }> = [];
  #reported = '[]';
  /** Extensions a change was held for in this process: their held changes wait for the next start. */
  readonly #heldHere = new Set<string>();
  /**
   * Not loaded earlier in this process, changes held for them here, and loaded again by a reload:
   * their new changes are held too until the next start replays the older ones first (per-row order).
   */
  readonly #heldUntilRestart = new Map<string, NotLoadedGuard>();
  readonly #applyListeners = new Set<() => void>();
  #computed: { extensions: readonly ExtensionHooks[]; gone: string; tables: string; rows: GuardRow[] } | undefined;
  /** What the database remembers, as last read or written: what a reload reclassifies at once. */
  #stored: GuardRow[] = [];
  /** The hooks of extensions loaded earlier in this process and not now, while their guards are remembered. */
  readonly #gone = new Map<string, ExtensionHooks>();

  constructor(options: ExtensionGuardsOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'guards' });
    // The bridge makes one ExtensionGuards per runtime; it lives as long as that runtime.
    options.runtime.onSwap((report, extensions) => this.#swap(report, extensions));
  }

  /** Extensions that guard tables and are not loaded. */
  get notLoaded(): readonly NotLoadedGuard[] {
    return this.#notLoaded;
  }

  /** The not-loaded extension whose filter hooks covered this write, if any: the write is refused. */
  failedFilter(collection: string, action: string): NotLoaded | undefined {
    return this.#filters.get(`${collection}\0${action}`);
  }

  /** Called synchronously each time what is refused or held changes (the filter workers follow it). */
  onApply(listener: () => void): () => void {
    this.#applyListeners.add(listener);
    return () => this.#applyListeners.delete(listener);
  }

  /**
   * Every not-loaded extension whose action hooks heard this change: it is held for each (and its
   * handlers, if a reload brought it back meanwhile, do not get it live: see #heldUntilRestart).
   */
  heldFor(collection: string | undefined, action: string): readonly NotLoaded[] {
    const held = this.#heldForNow(collection, action);
    for (const why of held) this.#heldHere.add(why.extension);
    return held;
  }

  #heldForNow(collection: string | undefined, action: string): readonly NotLoaded[] {
    if (collection === undefined) return NONE;
    const remembered = this.#actions.size === 0 ? NONE : (this.#actions.get(`${collection}\0${action}`) ?? NONE);
    if (this.#goneActions.length === 0) return remembered;
    // An extension that left in this process is held by its own patterns: also on a table created
    // since its guards were last written (exactly what its handlers would have heard).
    let held: NotLoaded[] | undefined;
    const event = { scope: 'items' as const, action, collection };
    for (const gone of this.#goneActions) {
      if (remembered.some((r) => r.extension === gone.why.extension) || !gone.patterns.some((p) => matchesEvent(p, event))) continue;
      (held ??= [...remembered]).push(gone.why);
    }
    return held ?? remembered;
  }

  /** Write operations (create, update, delete, truncate) of `collection` that not-loaded extensions guard. */
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
   * Records what the loaded extensions (and those that left in this process) guard among `tables`,
   * and works out which remembered guards belong to extensions that are not loaded. Serialised; the
   * bridge calls it after the extensions loaded and whenever the catalog sync runs.
   */
  update(tables: readonly UserTable[]): Promise<void> {
    return this.#updates.run(
      () => this.#update(tables),
      (error) => this.#logger.error({ err: error }, 'updating the extension guards failed'),
    );
  }

  async #update(tables: readonly UserTable[]): Promise<void> {
    const { pool, schema, runtime } = this.#options;
    const stored = await readGuards(pool, schema);
    // The loaded set as it is now, after the read (a reload may have swapped it meanwhile).
    const report = runtime.report;
    if (!report) return;
    const extensions = runtime.registry.extensions;
    const loaded = new Set(extensions.map((e) => e.name));
    // One forgotten on purpose (hookbridge forget) has no rows left: its last hooks no longer hold anything.
    for (const name of this.#gone.keys()) if (loaded.has(name) || !stored.some((r) => r.extension === name)) this.#gone.delete(name);
    const gone = [...this.#gone.values()];
    const tablesKey = tables.map((t) => `${t.oid}:${t.collection}`).join(',');
    const goneKey = gone.map((e) => e.name).join('\0');
    // Matching every handler against every table is the costly part: only when either changed.
    if (this.#computed?.extensions !== extensions || this.#computed.gone !== goneKey || this.#computed.tables !== tablesKey) {
      this.#computed = { extensions, gone: goneKey, tables: tablesKey, rows: guardsOf([...extensions, ...gone], tables, report.root) };
    }
    // Rewritten: the loaded extensions' rows, and those of extensions that left in this process (from
    // their last hooks). Kept as they are: those of extensions not loaded since the bridge started.
    const rewritten = new Set([...loaded, ...this.#gone.keys()]);
    const remembered = sortRows([...stored.filter((r) => !rewritten.has(r.extension)), ...this.#computed.rows].map((r) => ({ ...r })));
    const notLoaded = classifyGuards(remembered, report, loaded);
    const reasons = new Map(notLoaded.map((g) => [g.extension, g.reason]));
    for (const row of remembered) row.notLoaded = reasons.get(row.extension) ?? null;
    if (JSON.stringify(stored) !== JSON.stringify(remembered)) {
      await writeGuards(
        pool,
        schema,
        [...rewritten],
        remembered.filter((r) => rewritten.has(r.extension)),
        notLoaded,
      );
    }
    this.#stored = remembered;
    // Classified again against the loaded set of now: a reload may have swapped it during the write.
    const current = runtime.report;
    if (current) this.#apply(classifyGuards(this.#stored, current, new Set(runtime.registry.extensions.map((e) => e.name))), current);
  }

  /** A reload is about to swap `extensions` in: what is held changes in the same synchronous step. */
  #swap(report: LoadReport, extensions: readonly ExtensionHooks[]): void {
    const next = new Set(extensions.map((e) => e.name));
    // The registry still holds the set being replaced.
    for (const ext of this.#options.runtime.registry.extensions) {
      if (!next.has(ext.name) && this.#stored.some((r) => r.extension === ext.name)) this.#gone.set(ext.name, ext);
    }
    for (const name of next) this.#gone.delete(name);
    this.#apply(classifyGuards(this.#stored, report, next), report);
  }

  #apply(notLoaded: NotLoadedGuard[], report: LoadReport): void {
    const filters = new Map<string, NotLoaded>();
    const actions = new Map<string, NotLoaded[]>();
    const operations = new Map<string, string[]>();
    // One loaded again after changes were held for it here keeps having its changes held (not run live)
    // until the next start has replayed the older ones: otherwise a row's v3 would reach it before v1.
    for (const guard of this.#notLoaded) {
      if (this.#heldHere.has(guard.extension) && !notLoaded.some((g) => g.extension === guard.extension)) this.#heldUntilRestart.set(guard.extension, guard);
    }
    for (const name of [...this.#heldUntilRestart.keys()]) if (!this.#stored.some((r) => r.extension === name)) this.#heldUntilRestart.delete(name);
    for (const guard of this.#heldUntilRestart.values()) {
      if (notLoaded.some((g) => g.extension === guard.extension)) continue;
      const why = {
        extension: guard.extension,
        reason:
          'loaded again by a reload; changes held for it earlier are delivered at the next start, and until then its new ones are held too, to keep each row in order',
      };
      for (const t of guard.tables) {
        for (const action of t.actions) {
          const list = actions.get(`${t.collection}\0${action}`) ?? [];
          list.push(why);
          actions.set(`${t.collection}\0${action}`, list);
        }
      }
    }
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
    const goneActions: Array<{ why: NotLoaded; patterns: EventPattern[] }> = [];
    for (const guard of notLoaded) {
      const hooks = this.#gone.get(guard.extension);
      const patterns = hooks?.handlers.filter((h) => h.kind === 'action' && h.pattern.scope === 'items').map((h) => h.pattern) ?? [];
      if (patterns.length) goneActions.push({ why: { extension: guard.extension, reason: guard.reason }, patterns });
    }
    const reported = JSON.stringify(notLoaded);
    const before = new Set(this.#notLoaded.map((g) => g.extension));
    this.#notLoaded = notLoaded;
    this.#filters = filters;
    this.#actions = actions;
    this.#goneActions = goneActions;
    this.#filterOperations = operations;
    for (const listener of this.#applyListeners) {
      try {
        listener();
      } catch (error) {
        this.#logger.error({ err: error }, 'a listener of the extension guards failed');
      }
    }
    if (reported === this.#reported) return;
    this.#reported = reported;
    for (const guard of notLoaded) {
      this.#logger.error(
        {
          extension: guard.extension,
          reason: guard.reason,
          tables: guard.tables.map((t) => t.collection),
          fix: `fix it or put it back in ${report.root} (held changes are delivered at the next start where it loads); if it was removed on purpose: npx hookbridge forget ${shellWord(guard.extension)}`,
        },
        'extension not loaded: the tables it guarded stay guarded (writes its filters covered are refused, changes its actions hear are held until it loads)',
      );
    }
    const remembered = new Set(this.#stored.map((r) => r.extension));
    if (notLoaded.length > 0 && notLoaded.length === remembered.size) {
      this.#logger.error(
        { path: report.root, exists: report.exists, found: report.loaded.map((l) => l.name), notLoaded: notLoaded.map((g) => g.extension) },
        'none of the extensions that guard tables was found in the extensions folder: is EXTENSIONS_PATH (or the folder mounted there) the right one? Their tables stay guarded and their changes held; to forget one on purpose: npx hookbridge forget <extension>',
      );
    }
    for (const extension of before) {
      if (!notLoaded.some((g) => g.extension === extension)) {
        this.#logger.info({ extension }, 'extension loaded again; changes held for it are delivered at the next start (or: hookbridge failed replay)');
      }
    }
  }
}
