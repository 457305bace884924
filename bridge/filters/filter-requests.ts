/**
 * One filter call, from the trigger's request to its verdict. Pure mapping plus the filter chain:
 * what the hook sees follows Directus (create: the new row without its NULLs; update: the changed fields and `keys`;
 * delete: `[key]`; truncate, hookbridge's own: `null`), and what goes back is only what the hooks changed,
 * so values the hook merely read (and JSON may have rounded, like a big int8) are never written back.
 */
import type { Knex } from 'knex';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { describeHookError } from '../../hooks/errors.js';
import { FilterRejection } from '../../hooks/filter-chain.js';
import { HookRegistry } from '../../hooks/registry.js';
import type { HookRuntime } from '../../hooks/runtime.js';
import type { Accountability } from '../../hooks/types.js';
import { declaredUser, parseClaims, withMappedUser } from '../replication/accountability.js';
import { collectionOf, keyOf } from '../replication/change-events.js';
import { withTimeout } from '../timeout.js';
import { JsonNumber, type LosslessValue, parseLosslessJson, PlainJson } from '../typing/lossless-json.js';
import type { TableColumn, TypeCatalog } from '../typing/type-catalog.js';
import { fromJson, toPostgresJson, untypedFromJson } from '../typing/values.js';
import type { WireError } from './wire-server.js';

export interface FilterRequest {
  /** PROBE: the bridge's own health check, which runs no hooks. TRUNCATE: from the statement trigger (sql/000007.sql). */
  op: 'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE' | 'PROBE';
  schema: string;
  table: string;
  /** The table the trigger fired on (a partition, for a partitioned table's rows). */
  relid?: number;
  /** TRUNCATE only: the partition the trigger fired on, when it fired on one. */
  partition?: { schema: string; table: string };
  new: Record<string, unknown> | null;
  old: Record<string, unknown> | null;
  /** Columns whose stored value differs between old and new, compared as Postgres printed them. */
  changed?: ReadonlySet<string>;
  /** Stored generated columns: not computed yet when a BEFORE trigger runs, so never part of a payload. */
  generated?: ReadonlySet<string>;
  who: {
    role: string;
    admin: boolean;
    application_name: string | null;
    client_addr: string | null;
    user: string | null;
    claims: string | null;
  };
}

/** An extension that guarded a table and is not loaded (see bridge/extension-guards.ts). */
export interface NotLoadedFilter {
  extension: string;
  reason: string;
}

export interface FilterCallOptions {
  runtime: HookRuntime;
  /** Types each column of the row (bridge/typing); without one, values keep their JSON typing. */
  catalog?: TypeCatalog;
  timeoutMs: number;
  failureMode: 'closed' | 'open';
  primaryKeyOf: (collection: string) => readonly string[] | undefined;
  /** HOOKBRIDGE_USER_MAP (config.ts). */
  userMap?: Readonly<Record<string, string>>;
  /** The filter's `context.database` and `context.kysely` (outside the writer's transaction). */
  database?: Knex;
  kysely?: Kysely<any>;
  schema?: unknown;
  onTimeout?: (collection: string, op: string) => void;
  /** The not-loaded extension whose filters covered this write, if any: the write is refused, naming it. */
  notLoadedFilter?: (collection: string, action: string) => NotLoadedFilter | undefined;
}

/** What the direct transport sends: `HBF2 <ticket> <call id> <request json>`. */
const CALL = /^HBF2 (\d{1,9}) ([0-9a-f-]{36}) /;
/** And first, on a new connection: `HBF2 HELLO <nonce>`, which the bridge answers by proving it holds the key. */
const HELLO = /^HBF2 HELLO ([0-9a-f]{32})$/;

export function parseHello(query: string): string | undefined {
  return HELLO.exec(query)?.[1];
}

export interface FilterCall {
  ticket: number;
  id: string;
  body: string;
}

/**
 * The trigger's verdict (see sql/definitions/filter_call.sql): K keep, M<json> modify, W<text> passed
 * unfiltered with a warning, E<json> refuse with that error.
 */
export type Verdict = string;

export const KEEP: Verdict = 'K';

/** HB + the HTTP-like status of the error: HB400 invalid payload, HB403 forbidden, HB503, ... */
export function sqlstateFor(status: number): string {
  return `HB${Number.isInteger(status) && status >= 100 && status <= 599 ? status : 500}`;
}

/** A direct-transport call, or undefined for anything else (libpq's set-up statements). */
export function parseCall(query: string): FilterCall | undefined {
  const match = CALL.exec(query);
  if (!match) return undefined;
  return { ticket: Number(match[1]), id: match[2] as string, body: query.slice(match[0].length) };
}

/** The request as the trigger sent it, numbers still as Postgres printed them. */
export function parseRequest(body: string): Record<string, LosslessValue> {
  const request = parseLosslessJson(body);
  if (request === null || typeof request !== 'object' || Array.isArray(request) || request instanceof JsonNumber || request instanceof PlainJson) {
    throw new SyntaxError('a filter request is a JSON object');
  }
  return request;
}

type LosslessRow = Record<string, LosslessValue>;

function asRow(value: LosslessValue | undefined): LosslessRow | null {
  return value !== null &&
    value !== undefined &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    !(value instanceof JsonNumber) &&
    !(value instanceof PlainJson)
    ? value
    : null;
}

/**
 * Types the request's rows column by column (bridge/typing/values.ts: the typing action hooks get too)
 * and finds the changed columns exactly, on the text Postgres printed, not on rounded numbers.
 */
export async function typeRequest(raw: Record<string, LosslessValue>, catalog: TypeCatalog | undefined): Promise<FilterRequest> {
  // json_build_object prints an oid as a string.
  const relidText = raw['relid'] instanceof JsonNumber ? raw['relid'].text : raw['relid'];
  const relid = typeof relidText === 'string' && /^\d{1,10}$/.test(relidText) ? Number(relidText) : undefined;
  const rawNew = asRow(raw['new']);
  const rawOld = asRow(raw['old']);
  let columns: Map<string, TableColumn> | undefined;
  if (catalog && relid !== undefined && (rawNew || rawOld)) {
    columns = await catalog.columns(relid);
    // A column added since the table was read: read it again, once.
    const names = [...Object.keys(rawNew ?? {}), ...Object.keys(rawOld ?? {})];
    if (names.some((name) => !columns?.has(name))) {
      catalog.forget(relid);
      columns = await catalog.columns(relid);
    }
  }
  const typed = (row: LosslessRow | null): Record<string, unknown> | null => {
    if (!row) return null;
    const out = Object.create(null) as Record<string, unknown>;
    for (const [name, value] of Object.entries(row)) {
      const column = columns?.get(name);
      out[name] = column ? fromJson(column.shape, value) : untypedFromJson(value);
    }
    return out;
  };
  const generated = new Set([...(columns?.values() ?? [])].filter((c) => c.generated).map((c) => c.name));
  const changed = new Set<string>();
  if (rawNew && rawOld) {
    for (const [name, value] of Object.entries(rawNew)) {
      if (!generated.has(name) && !sameValue(value, rawOld[name] ?? null)) changed.add(name);
    }
  }
  const text = (key: string) => (typeof raw[key] === 'string' ? (raw[key] as string) : '');
  const who = asRow(raw['who']) ?? {};
  const whoText = (key: string) => (typeof who[key] === 'string' ? (who[key] as string) : null);
  const partition = asRow(raw['partition']);
  return {
    op: text('op') as FilterRequest['op'],
    schema: text('schema'),
    table: text('table'),
    ...(relid === undefined ? {} : { relid }),
    ...(partition && typeof partition['schema'] === 'string' && typeof partition['table'] === 'string'
      ? { partition: { schema: partition['schema'], table: partition['table'] } }
      : {}),
    new: typed(rawNew),
    old: typed(rawOld),
    changed,
    generated,
    who: {
      role: whoText('role') ?? '',
      admin: who['admin'] === true,
      application_name: whoText('application_name'),
      client_addr: whoText('client_addr'),
      user: whoText('user'),
      claims: whoText('claims'),
    },
  };
}

/** Equal as Postgres printed them: numbers by their digits, objects key by key. */
function sameValue(a: LosslessValue, b: LosslessValue): boolean {
  if (a instanceof JsonNumber || b instanceof JsonNumber) return a instanceof JsonNumber && b instanceof JsonNumber && a.text === b.text;
  if (a instanceof PlainJson || b instanceof PlainJson) return a instanceof PlainJson && b instanceof PlainJson && a.raw === b.raw;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((item, i) => sameValue(item, b[i] as LosslessValue));
  }
  const keys = Object.keys(a);
  return (
    keys.length === Object.keys(b).length && keys.every((key, i) => Object.keys(b)[i] === key && sameValue(a[key] as LosslessValue, b[key] as LosslessValue))
  );
}

export function rejectionVerdict(error: WireError): Verdict {
  return `E${JSON.stringify(error)}`;
}

export function accountabilityOf(who: FilterRequest['who']): Accountability {
  const claims = parseClaims(who.claims);
  return {
    user: declaredUser(who.user, claims),
    role: who.role,
    admin: who.admin,
    app: false,
    ip: who.client_addr,
    userAgent: who.application_name,
    claims,
    database: { role: who.role, applicationName: who.application_name, clientAddress: who.client_addr },
  };
}

/** Columns whose values differ, compared as they would be written back. */
export function changedFields(next: Record<string, unknown>, previous: Record<string, unknown>): Record<string, unknown> {
  const changed = Object.create(null) as Record<string, unknown>;
  for (const [column, value] of Object.entries(next)) {
    // The same value handed back (a deep json document, say) is not serialised to be compared.
    if (value !== previous[column] && toPostgresJson(value) !== toPostgresJson(previous[column])) changed[column] = value;
  }
  return changed;
}

function rejection(sqlstate: string, message: string, detail?: string, hint?: string): Verdict {
  return rejectionVerdict({ sqlstate, message, detail, hint });
}

/** The hook action a trigger's operation runs (PROBE runs none; it is answered before this is asked). */
export function filterActionOf(op: FilterRequest['op']): 'create' | 'update' | 'delete' | 'truncate' {
  return op === 'INSERT' ? 'create' : op === 'UPDATE' ? 'update' : op === 'TRUNCATE' ? 'truncate' : 'delete';
}

/**
 * A TRUNCATE of a table whose delete filters would not see it, and no `items.truncate` filter to
 * decide: refused, saying how to allow it. Delete filters are not run for it: they expect keys, and a
 * TRUNCATE has none to give.
 */
export function truncateRefusal(collection: string): Verdict {
  return rejection(
    'HB403',
    `hookbridge: TRUNCATE of ${collection} refused: it has delete filters, which a TRUNCATE would bypass; ` +
      `register an items.truncate filter (e.g. "${collection}.items.truncate") to allow it`,
    'code: TRUNCATE_REFUSED',
    'a truncate filter runs once per truncated table and throws to refuse; or use DELETE, which runs the delete filters row by row',
  );
}

export async function answerFilterCall(request: FilterRequest, options: FilterCallOptions): Promise<Verdict> {
  if (request.op === 'PROBE') return KEEP;
  const collection = collectionOf({ schema: request.schema, name: request.table });
  const primaryKey = options.primaryKeyOf(collection) ?? [];
  const context = {
    database: options.database,
    kysely: options.kysely,
    schema: options.schema,
    accountability: withMappedUser(accountabilityOf(request.who), options.userMap),
  };
  const action = filterActionOf(request.op);

  let payload: unknown;
  const meta: Record<string, unknown> = {};
  if (action === 'truncate') {
    // A TRUNCATE trigger knows the table, not CASCADE or RESTART IDENTITY, and has no rows to give.
    payload = null;
    if (request.partition) meta['partition'] = collectionOf({ schema: request.partition.schema, name: request.partition.table });
  } else if (action === 'create') {
    // A BEFORE trigger cannot tell a column the writer left out from one it set to NULL; Directus
    // create payloads hold only what was given, so NULLs are left out (hooks can still set them).
    payload = Object.fromEntries(Object.entries(request.new ?? {}).filter(([, value]) => value !== null));
  } else if (action === 'update') {
    const next = request.new ?? {};
    payload = request.changed ? Object.fromEntries([...request.changed].map((column) => [column, next[column]])) : changedFields(next, request.old ?? {});
    meta['keys'] = [keyOf(primaryKey, request.old)];
  } else {
    payload = [keyOf(primaryKey, request.old)];
  }

  // Hooks may mutate the payload in place (`delete payload.x`): remember what was given.
  const given = action === 'delete' || action === 'truncate' ? [] : Object.keys(payload as Record<string, unknown>);
  let result: unknown;
  try {
    result = await withTimeout(options.runtime.runFilters(action, collection, payload, meta, context), options.timeoutMs, () => new FilterTimeout());
  } catch (error) {
    if (error instanceof FilterTimeout) {
      options.onTimeout?.(collection, request.op);
      const text = `hookbridge: the filter hooks for ${collection} did not answer within ${options.timeoutMs} ms`;
      if (options.failureMode === 'open') return `W${text}; ${action === 'truncate' ? 'the TRUNCATE was done' : 'the row was written'} unfiltered`;
      return rejection('HB504', text, 'code: FILTER_TIMEOUT', 'make the hook faster, or raise FILTER_TIMEOUT_MS');
    }
    if (error instanceof FilterRejection) {
      if ((error.cause as { code?: unknown } | undefined)?.code === '55P03') {
        return rejection(
          'HB409',
          `hookbridge: a filter on ${collection} waited too long for a lock, most likely one the write itself holds (extension "${error.extension}")`,
          'code: FILTER_SELF_LOCK',
          "filters run outside the writer's transaction: change the row through the payload the filter returns, or do the write in an action hook",
        );
      }
      return rejection(sqlstateFor(error.status), error.message, `code: ${error.code}`, `extension "${error.extension}", event ${error.event}`);
    }
    const described = describeHookError(error);
    return rejection(sqlstateFor(described.status), described.message, `code: ${described.code}`);
  }

  if (action === 'delete' || action === 'truncate') return KEEP;
  if (result === null || typeof result !== 'object' || Array.isArray(result)) {
    return rejection(
      'HB500',
      `hookbridge: a filter on ${collection} returned ${Array.isArray(result) ? 'an array' : String(result)} instead of the row`,
      'code: E_FILTER_RESULT',
    );
  }
  const returned = result as Record<string, unknown>;
  const columns = request.new ?? {};
  const unknown = Object.keys(returned).filter((key) => !(key in columns) || request.generated?.has(key));
  if (unknown.length) {
    return rejection(
      'HB400',
      `hookbridge: a filter on ${collection} returned ${unknown.some((k) => request.generated?.has(k)) ? 'generated (computed by Postgres) or ' : ''}` +
        `unknown column${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}`,
      'code: E_FILTER_RESULT',
    );
  }
  // What to write: the columns the hooks changed, compared with what the writer would have written.
  const set = changedFields(returned, columns);
  const keep: string[] = [];
  for (const column of given) {
    if (column in returned) continue;
    // Directus semantics: the returned payload is what gets written. A field the hooks removed is not
    // written: on create it becomes NULL (a NOT NULL column then fails the insert), on update it keeps
    // its old value, copied in SQL so that nothing is rounded on the way through JSON.
    if (action === 'create') set[column] = null;
    else keep.push(column);
  }
  if (Object.keys(set).length === 0 && keep.length === 0) return KEEP;
  return `M${toPostgresJson({ set, keep })}`;
}

class FilterTimeout extends Error {}

/** What answering one request body came to (and, for metrics, what it was about). */
export interface FilterOutcome {
  verdict: Verdict;
  collection?: string;
  op?: string;
  /** The hooks themselves ran past the timeout. */
  timedOut?: boolean;
}

/** What answerBody answers against `withoutHooks`. */
const NO_HOOKS = new HookRegistry();

/**
 * From a request body to its verdict, wherever the hooks run (a worker thread, or the main thread with
 * FILTER_WORKERS=0). Never throws. A write that an extension guarded which is not loaded now is
 * refused, naming it — even when other extensions' filters would run: passing the row through those
 * alone would skip the broken one's checks. A runtime with no filter for the write (an extension that
 * failed to load there, a reload under way) refuses it too rather than keep the row unfiltered: a
 * trigger exists only where a filter matched or a not-loaded extension guarded.
 */
export async function answerBody(
  body: string,
  options: Omit<FilterCallOptions, 'onTimeout'> & {
    logger: Logger;
    /** No hook runs here (their workers have not started): every write is refused, saying why. */
    withoutHooks?: boolean;
  },
): Promise<FilterOutcome> {
  let request: FilterRequest;
  try {
    request = await typeRequest(parseRequest(body), options.catalog);
  } catch (error) {
    options.logger.error({ err: error }, 'unreadable filter request');
    return { verdict: rejectionVerdict({ sqlstate: 'HB500', message: 'hookbridge: the bridge could not read the filter request' }) };
  }
  const collection = collectionOf({ schema: request.schema, name: request.table });
  const action = filterActionOf(request.op);
  const registry = options.withoutHooks ? NO_HOOKS : options.runtime.registry;
  // A TRUNCATE no truncate filter decides is refused where delete filters guard the table (loaded or not).
  const undecidedTruncate = action === 'truncate' && !registry.has('filter', 'truncate', collection);
  const notLoaded =
    request.op === 'PROBE'
      ? undefined
      : (options.notLoadedFilter?.(collection, action) ?? (undecidedTruncate ? options.notLoadedFilter?.(collection, 'delete') : undefined));
  if (notLoaded) {
    return {
      verdict: rejectionVerdict({
        sqlstate: 'HB503',
        message: `hookbridge: extension "${notLoaded.extension}" guards ${collection} (${action}) but is not loaded: ${notLoaded.reason}`,
        detail: 'code: EXTENSION_NOT_LOADED',
        hint: `writes its filters covered are refused until it loads: fix extension "${notLoaded.extension}" (npx hookbridge extensions shows why it fails) and restart the bridge`,
      }),
      collection,
      op: request.op,
    };
  }
  if (undecidedTruncate && registry.has('filter', 'delete', collection)) {
    return { verdict: truncateRefusal(collection), collection, op: request.op };
  }
  if (request.op !== 'PROBE' && !registry.has('filter', action, collection)) {
    if (options.withoutHooks && options.runtime.registry.has('filter', action, collection)) {
      return {
        verdict: rejectionVerdict({
          sqlstate: 'HB503',
          message: `hookbridge: the filter workers that run the hooks for ${collection} (${action}) are not running`,
          detail: 'code: SERVICE_UNAVAILABLE',
          hint: 'see the bridge log for why the filter workers did not start',
        }),
        collection,
        op: request.op,
      };
    }
    const failed = (options.runtime.report?.failed ?? []).map((f) => `"${f.name ?? f.path}"`);
    return {
      verdict: rejectionVerdict({
        sqlstate: 'HB503',
        message:
          `hookbridge: no filter hook for ${collection} (${action}) is loaded where the bridge runs filters` +
          (failed.length ? `; not loaded there: extension${failed.length > 1 ? 's' : ''} ${failed.join(', ')}` : ''),
        detail: 'code: SERVICE_UNAVAILABLE',
        hint: 'see the bridge log for an extension that failed to load',
      }),
      collection,
      op: request.op,
    };
  }
  let timedOut = false;
  try {
    const verdict = await answerFilterCall(request, {
      ...options,
      onTimeout: (name, op) => {
        timedOut = true;
        options.logger.warn({ collection: name, op, timeoutMs: options.timeoutMs }, 'filter hooks timed out');
      },
    });
    return { verdict, collection, op: request.op, timedOut };
  } catch (error) {
    options.logger.error({ err: error }, 'filter request failed inside the bridge');
    return { verdict: rejectionVerdict({ sqlstate: 'HB500', message: 'hookbridge: internal error while filtering' }), collection, op: request.op };
  }
}
