/**
 * A Directus query (`fields`, `filter`, `search`, `sort`, `limit`, `offset`, `page`, `aggregate`,
 * `group`/`groupBy`) checked against one table, turned into a kysely select, and its rows shaped as
 * Directus returns them (`[{ count: { id: '3' } }]`, grouped columns beside the aggregates).
 *
 * Checking happens before any SQL: an option hookbridge does not offer (`deep`, `alias`, `meta`, ...),
 * an unknown option, a bad value or an unknown column is an InvalidQueryError that names it.
 */
import { sql, type ExpressionBuilder, type Kysely, type SelectQueryBuilder } from 'kysely';
import { InvalidQueryError } from '../../hooks/errors.js';
import type { FieldOverview } from '../schema-overview.js';
import { column, fieldFor, filterExpression, isPlainObject, NUMERIC, type Filter } from './filter.js';

export type AggregateFunction = 'count' | 'countDistinct' | 'countAll' | 'sum' | 'sumDistinct' | 'avg' | 'avgDistinct' | 'min' | 'max';
export type Aggregate = Partial<Record<AggregateFunction, string[]>>;

/** Directus' Query, as far as one table goes. `group` is its name in Directus' services, `groupBy` in its REST API. */
export interface Query {
  fields?: string[] | null;
  filter?: Filter | null;
  search?: string | null;
  sort?: string[] | null;
  limit?: number | null;
  offset?: number | null;
  page?: number | null;
  aggregate?: Aggregate | null;
  group?: string[] | null;
  groupBy?: string[] | null;
  /** Relational only: accepted, and changes nothing on one table. */
  backlink?: boolean | null;
}

/** The table a query runs on. */
export interface QueryTable {
  primary: string | null;
  fields: Record<string, FieldOverview>;
}

/** A checked query. */
export interface QueryPlan {
  /** Columns to select, or every column. */
  fields: string[] | '*';
  filter: Filter | undefined;
  search: string | undefined;
  sort: Array<{ field: string; descending: boolean }>;
  /** -1: no limit. */
  limit: number;
  offset: number;
  aggregates: Array<{ fn: AggregateFunction; field: string }>;
  group: string[];
}

/** Directus' QUERY_LIMIT_DEFAULT: a query without `limit` reads at most this many rows, in Directus' services too. */
export const DEFAULT_LIMIT = 100;

const OPTIONS = ['fields', 'filter', 'search', 'sort', 'limit', 'offset', 'page', 'aggregate', 'group', 'groupBy', 'backlink'];

const UNSUPPORTED: Record<string, string> = {
  deep: "it queries related items, and hookbridge's ItemsService reads one table without relations",
  alias: 'field aliases are not supported; select the columns by their names',
  meta: "counts come from Directus' MetaService; ask for aggregate: { count: ['*'] } instead",
  export: 'exports are files written by Directus',
  version: "content versions are Directus' own",
  versionRaw: "content versions are Directus' own",
};

const AGGREGATES: Record<AggregateFunction, { numeric: boolean }> = {
  count: { numeric: false },
  countDistinct: { numeric: false },
  countAll: { numeric: false },
  sum: { numeric: true },
  sumDistinct: { numeric: true },
  avg: { numeric: true },
  avgDistinct: { numeric: true },
  min: { numeric: false },
  max: { numeric: false },
};

/** Checks a query against the table; throws InvalidQueryError for anything that cannot run as asked. */
export function planQuery(query: unknown, table: QueryTable): QueryPlan {
  if (query === undefined || query === null) query = {};
  if (!isPlainObject(query)) throw new InvalidQueryError({ reason: `a query must be an object, got ${typeof query}` });
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue;
    const why = UNSUPPORTED[key];
    if (why !== undefined) {
      // An empty deep or alias asks for nothing.
      if ((key === 'deep' || key === 'alias') && isPlainObject(value) && Object.keys(value).length === 0) continue;
      throw new InvalidQueryError({ reason: `query option "${key}" is not supported by hookbridge's ItemsService: ${why}` });
    }
    if (!OPTIONS.includes(key)) {
      throw new InvalidQueryError({ reason: `unknown query option "${key}" (hookbridge's ItemsService knows ${OPTIONS.join(', ')})` });
    }
  }
  const q = query as Query;
  const { fields } = table;
  const group = stringList(q.group ?? q.groupBy, q.group != null ? 'group' : 'groupBy');
  if (q.group != null && q.groupBy != null) throw new InvalidQueryError({ reason: 'give group or groupBy, not both (they are the same option)' });
  for (const name of group) fieldFor(name, fields, 'groupBy');
  const aggregates = planAggregates(q.aggregate, fields);
  const grouped = aggregates.length > 0 || group.length > 0;

  let selected: string[] | '*' = '*';
  const requested = stringList(q.fields, 'fields');
  // As Directus: with aggregates or groups, the selection is the groups and the aggregates.
  if (!grouped && requested.length > 0 && !requested.includes('*')) {
    for (const name of requested) fieldFor(name, fields, 'fields');
    selected = [...new Set(requested)];
  }

  if (q.filter !== undefined && q.filter !== null && !isPlainObject(q.filter)) {
    throw new InvalidQueryError({ reason: 'filter must be an object like { "status": { "_eq": "draft" } }' });
  }
  if (q.search !== undefined && q.search !== null && typeof q.search !== 'string' && typeof q.search !== 'number') {
    throw new InvalidQueryError({ reason: `search must be a string, got ${typeof q.search}` });
  }

  let sort = stringList(q.sort, 'sort').map((entry) => {
    const descending = entry.startsWith('-');
    const field = descending ? entry.slice(1) : entry;
    fieldFor(field, fields, 'sort');
    return { field, descending };
  });
  if (grouped) {
    // As Directus: without groups an aggregate is one row, and its sort is dropped.
    if (group.length === 0) sort = [];
    const outside = sort.find((s) => !group.includes(s.field));
    if (outside) throw new InvalidQueryError({ reason: `sort "${outside.field}" is not a grouped field: with groupBy, sort can name the grouped fields only` });
    if (sort.length === 0) sort = group.map((field) => ({ field, descending: false }));
  } else if (sort.length === 0 && table.primary) {
    // As Directus: rows come in primary key order unless the query sorts them.
    sort = [{ field: table.primary, descending: false }];
  }

  const limit = integer(q.limit, 'limit', -1) ?? DEFAULT_LIMIT;
  const page = integer(q.page, 'page', 1);
  let offset = integer(q.offset, 'offset', 0) ?? 0;
  // As Directus: page wins over offset when there is a limit to page by.
  if (page !== undefined && limit > 0) offset = (page - 1) * limit;

  return {
    fields: selected,
    filter: q.filter ?? undefined,
    search: q.search === undefined || q.search === null ? undefined : String(q.search),
    sort,
    limit,
    offset,
    aggregates,
    group,
  };
}

/** The select for a plan on `name` (its schema already chosen with `withSchema`). */
export function selectQuery(db: Kysely<any>, name: string, plan: QueryPlan, table: QueryTable): SelectQueryBuilder<any, any, any> {
  let builder: SelectQueryBuilder<any, any, any> = db.selectFrom(name);
  if (plan.aggregates.length > 0 || plan.group.length > 0) {
    // Positional aliases: the result is reshaped below, and no column name can collide with them.
    builder = builder.select((eb) => [
      ...plan.group.map((field, i) => column(field).as(`g${i}`)),
      ...plan.aggregates.map(({ fn, field }, i) => aggregateExpression(eb, fn, field).as(`a${i}`)),
    ]);
    if (plan.group.length > 0) builder = builder.groupBy(plan.group.map((field) => column(field)));
  } else if (plan.fields === '*') {
    builder = builder.selectAll();
  } else {
    builder = builder.select(plan.fields.map((field) => column(field).as(field)));
  }
  const filter = plan.filter;
  if (filter && Object.keys(filter).length > 0) builder = builder.where((eb) => filterExpression(eb, filter, table.fields));
  const search = plan.search;
  if (search !== undefined && search !== '') builder = builder.where((eb) => searchExpression(eb, search, table.fields));
  for (const { field, descending } of plan.sort) builder = builder.orderBy(column(field), descending ? 'desc' : 'asc');
  if (plan.limit >= 0) builder = builder.limit(plan.limit);
  if (plan.offset > 0) builder = builder.offset(plan.offset);
  return builder;
}

/** Rows as Directus returns them: grouped columns by name; `count->id` as `{ count: { id } }`, `count: ['*']` as `count`. */
export function shapeRows(rows: Array<Record<string, unknown>>, plan: QueryPlan): Array<Record<string, unknown>> {
  if (plan.aggregates.length === 0 && plan.group.length === 0) return rows;
  return rows.map((row) => {
    const shaped: Record<string, unknown> = {};
    plan.group.forEach((field, i) => (shaped[field] = row[`g${i}`]));
    plan.aggregates.forEach(({ fn, field }, i) => {
      const value = row[`a${i}`];
      if (fn === 'countAll' || (fn === 'count' && field === '*')) {
        shaped[fn] = value;
        return;
      }
      const inner = (shaped[fn] ??= {}) as Record<string, unknown>;
      inner[field] = value;
    });
    return shaped;
  });
}

function planAggregates(aggregate: unknown, fields: Record<string, FieldOverview>): QueryPlan['aggregates'] {
  if (aggregate === undefined || aggregate === null) return [];
  if (!isPlainObject(aggregate)) throw new InvalidQueryError({ reason: 'aggregate must be an object like { "count": ["*"], "sum": ["price"] }' });
  const planned: QueryPlan['aggregates'] = [];
  for (const [fn, list] of Object.entries(aggregate)) {
    if (list === undefined || list === null) continue;
    const spec = Object.hasOwn(AGGREGATES, fn) ? AGGREGATES[fn as AggregateFunction] : undefined;
    if (!spec) throw new InvalidQueryError({ reason: `unknown aggregate function "${fn}" (known: ${Object.keys(AGGREGATES).join(', ')})` });
    if (fn === 'countAll') {
      planned.push({ fn, field: '*' });
      continue;
    }
    for (const field of stringList(list, `aggregate.${fn}`)) {
      if (field === '*') {
        if (fn !== 'count') throw new InvalidQueryError({ reason: `aggregate.${fn} needs field names; "*" is for count only` });
      } else {
        const overview = fieldFor(field, fields, `aggregate.${fn}`);
        if (spec.numeric && !NUMERIC.has(overview.type)) {
          throw new InvalidQueryError({ reason: `aggregate.${fn} needs a numeric column; "${field}" is ${overview.dbType}` });
        }
      }
      planned.push({ fn: fn as AggregateFunction, field });
    }
  }
  if (planned.some((a) => a.fn === 'count' && a.field === '*') && planned.some((a) => a.fn === 'count' && a.field !== '*')) {
    // Directus would answer count: N and then overwrite it with count: { field: N }.
    throw new InvalidQueryError({ reason: 'aggregate.count cannot hold "*" and field names together: use countAll for the row count beside counts of fields' });
  }
  return planned;
}

function aggregateExpression(eb: ExpressionBuilder<any, any>, fn: AggregateFunction, field: string) {
  if (fn === 'countAll' || field === '*') return eb.fn.countAll();
  const ref = column(field);
  switch (fn) {
    case 'count':
      return eb.fn.count(ref);
    case 'countDistinct':
      return eb.fn.count(ref).distinct();
    case 'sum':
      return eb.fn.sum(ref);
    case 'sumDistinct':
      return eb.fn.sum(ref).distinct();
    case 'avg':
      return eb.fn.avg(ref);
    case 'avgDistinct':
      return eb.fn.avg(ref).distinct();
    case 'min':
      return eb.fn.min(ref);
    case 'max':
      return eb.fn.max(ref);
  }
}

const INTEGER_RANGE: Record<string, [bigint, bigint]> = {
  smallint: [-32768n, 32767n],
  integer: [-2147483648n, 2147483647n],
  bigint: [-9223372036854775808n, 9223372036854775807n],
};
const NUMBER = /^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Directus' search: text columns contain the term (case-insensitive); numeric columns equal it when it
 * is a number they can hold; uuid columns equal it when it is a uuid. No such column: no rows.
 */
export function searchExpression(eb: ExpressionBuilder<any, any>, term: string, fields: Record<string, FieldOverview>) {
  const parts = [];
  for (const field of Object.values(fields)) {
    if (field.type === 'string' || field.type === 'text') {
      parts.push(eb(sql`lower(${column(field.field)})`, 'like', `%${term.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`));
    } else if (NUMERIC.has(field.type) && NUMBER.test(term) && fitsNumeric(term, field.dbType)) {
      parts.push(eb(column(field.field), '=', term));
    } else if (field.type === 'uuid' && UUID.test(term)) {
      parts.push(eb(column(field.field), '=', term));
    }
  }
  return parts.length ? eb.or(parts) : eb.lit(false);
}

function fitsNumeric(term: string, dbType: string): boolean {
  const range = INTEGER_RANGE[dbType];
  if (!range) return Number.isFinite(Number(term));
  if (!/^-?\d+$/.test(term)) return false;
  const value = BigInt(term);
  return value >= range[0] && value <= range[1];
}

function stringList(value: unknown, where: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string')) {
    throw new InvalidQueryError({ reason: `${where} must be an array of field names, like ["id", "title"]` });
  }
  return value as string[];
}

function integer(value: unknown, where: string, min: number): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidQueryError({ reason: `${where} must be an integer of at least ${min}, got ${JSON.stringify(value)}` });
  }
  return value;
}
