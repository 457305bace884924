/**
 * `services.ItemsService`: the subset of Directus' ItemsService hooks use most, on kysely.
 *
 *   const articles = new ItemsService('articles', { schema: await getSchema() });
 *   await articles.createOne({ title: 'x' }, { emitEvents: false });
 *   await articles.readByQuery({ filter: { status: { _eq: 'draft' } }, fields: ['id'], sort: ['-id'], limit: 10 });
 *
 * Writes go to the table like any client's (filter triggers and action hooks fire) unless
 * `{ emitEvents: false }`: then they run in a transaction that sets `hookbridge.bypass`, which the
 * filter trigger and the action path honour for the bridge's own role only. Reads fire
 * `items.query` (filter: the query), `items.read` (filter: the rows) and `items.read` (action).
 */
import { sql, type ExpressionBuilder, type Kysely } from 'kysely';
import { ForbiddenError, InvalidQueryError } from '../../hooks/errors.js';
import type { HookRuntime } from '../../hooks/runtime.js';
import type { Accountability } from '../../hooks/types.js';
import type { SchemaOverview } from '../schema-overview.js';

export type PrimaryKey = string | number;
export type Item = Record<string, unknown>;
export interface Query {
  fields?: string[];
  filter?: Record<string, unknown>;
  sort?: string[];
  limit?: number;
  offset?: number;
  page?: number;
}
export interface MutationOptions {
  emitEvents?: boolean;
}

export interface ServicesContext {
  database: Kysely<any>;
  runtime: HookRuntime;
  getSchema: () => Promise<SchemaOverview>;
}

type Eb = ExpressionBuilder<any, any>;

export function createServices(context: ServicesContext) {
  class ItemsService {
    readonly collection: string;
    readonly accountability: Accountability | null;
    #schema: SchemaOverview | undefined;

    constructor(collection: string, options: { schema?: SchemaOverview; accountability?: Accountability | null; knex?: unknown } = {}) {
      this.collection = collection;
      this.#schema = options.schema;
      this.accountability = options.accountability ?? null;
    }

    async createOne(data: Item, options: MutationOptions = {}): Promise<PrimaryKey> {
      const [key] = await this.createMany([data], options);
      return key as PrimaryKey;
    }

    async createMany(data: Item[], options: MutationOptions = {}): Promise<PrimaryKey[]> {
      if (data.length === 0) return [];
      const { table, name, primary } = await this.#table();
      return this.#write(options, async (db) => {
        const rows = await table(db).insertInto(name).values(data).returning(primary).execute();
        return rows.map((row) => row[primary] as PrimaryKey);
      });
    }

    async readOne(key: PrimaryKey, query: Query = {}): Promise<Item> {
      const [row] = await this.readMany([key], query);
      if (!row) throw new ForbiddenError();
      return row;
    }

    async readMany(keys: PrimaryKey[], query: Query = {}): Promise<Item[]> {
      const { primary } = await this.#table();
      return this.readByQuery({
        ...query,
        // As Directus: without a limit, as many rows as keys (not the default 100).
        limit: query.limit ?? keys.length,
        filter: { _and: [{ [primary]: { _in: keys } }, ...(query.filter ? [query.filter] : [])] },
      });
    }

    async readByQuery(query: Query = {}, options: MutationOptions = {}): Promise<Item[]> {
      const emit = options.emitEvents !== false;
      const hookContext = { database: context.database, schema: this.#schema, accountability: this.accountability };
      const finalQuery = emit ? await context.runtime.runFilters('query', this.collection, query, {}, hookContext) : query;
      const { table, name, fields: known } = await this.#table();
      checkFields(finalQuery, known);
      let builder = table(context.database).selectFrom(name);
      const fields = finalQuery.fields && !finalQuery.fields.includes('*') ? finalQuery.fields : undefined;
      builder = fields ? builder.select(fields) : builder.selectAll();
      if (finalQuery.filter) builder = builder.where((eb: Eb) => toExpression(eb, finalQuery.filter as Record<string, unknown>));
      for (const field of finalQuery.sort ?? []) {
        builder = builder.orderBy(field.replace(/^-/, ''), field.startsWith('-') ? 'desc' : 'asc');
      }
      const limit = finalQuery.limit ?? 100;
      if (limit >= 0) builder = builder.limit(limit);
      const offset = finalQuery.offset ?? (finalQuery.page && limit > 0 ? (finalQuery.page - 1) * limit : undefined);
      if (offset) builder = builder.offset(offset);
      let rows = (await builder.execute()) as Item[];
      if (emit) {
        rows = await context.runtime.runFilters('read', this.collection, rows, { query: finalQuery }, hookContext);
        // dispatchActions logs handler failures itself; nothing here may become an unhandled rejection.
        context.runtime.dispatchActions('read', this.collection, { payload: rows, query: finalQuery }, hookContext).catch(() => undefined);
      }
      return rows;
    }

    async updateOne(key: PrimaryKey, data: Item, options: MutationOptions = {}): Promise<PrimaryKey> {
      await this.updateMany([key], data, options);
      return key;
    }

    async updateMany(keys: PrimaryKey[], data: Item, options: MutationOptions = {}): Promise<PrimaryKey[]> {
      if (keys.length === 0) return [];
      const { table, name, primary } = await this.#table();
      return this.#write(options, async (db) => {
        await table(db).updateTable(name).set(data).where(primary, 'in', keys).execute();
        return keys;
      });
    }

    async deleteOne(key: PrimaryKey, options: MutationOptions = {}): Promise<PrimaryKey> {
      await this.deleteMany([key], options);
      return key;
    }

    async deleteMany(keys: PrimaryKey[], options: MutationOptions = {}): Promise<PrimaryKey[]> {
      if (keys.length === 0) return [];
      const { table, name, primary } = await this.#table();
      return this.#write(options, async (db) => {
        await table(db).deleteFrom(name).where(primary, 'in', keys).execute();
        return keys;
      });
    }

    async #table() {
      this.#schema ??= await context.getSchema();
      const overview = this.#schema.collections[this.collection] ?? (await context.getSchema()).collections[this.collection];
      if (!overview) throw new InvalidQueryError({ reason: `there is no collection "${this.collection}"` });
      if (!overview.primary) throw new InvalidQueryError({ reason: `collection "${this.collection}" has no primary key` });
      // kysely reads a dot in a table name as schema.table (and " as " as an alias): such names cannot be
      // addressed through it, so refuse them rather than touch another table.
      if (/\.|\s+as\s+/i.test(overview.table)) {
        throw new InvalidQueryError({ reason: `table name ${JSON.stringify(overview.table)} cannot be used through ItemsService` });
      }
      const schemaName = overview.schema;
      return { table: (db: Kysely<any>) => db.withSchema(schemaName), name: overview.table, primary: overview.primary, fields: Object.keys(overview.fields) };
    }

    async #write<T>(options: MutationOptions, run: (db: Kysely<any>) => Promise<T>): Promise<T> {
      if (options.emitEvents !== false) return run(context.database);
      return context.database.transaction().execute(async (trx) => {
        await sql`select set_config('hookbridge.bypass', 'on', true)`.execute(trx);
        return run(trx);
      });
    }
  }
  return { ItemsService };
}

const OPERATORS: Record<string, (eb: Eb, field: string, value: any) => any> = {
  _eq: (eb, f, v) => (v === null ? eb(f, 'is', null) : eb(f, '=', v)),
  _neq: (eb, f, v) => (v === null ? eb(f, 'is not', null) : eb(f, '<>', v)),
  _lt: (eb, f, v) => eb(f, '<', v),
  _lte: (eb, f, v) => eb(f, '<=', v),
  _gt: (eb, f, v) => eb(f, '>', v),
  _gte: (eb, f, v) => eb(f, '>=', v),
  _in: (eb, f, v) => (Array.isArray(v) && v.length ? eb(f, 'in', v) : eb.val(false)),
  _nin: (eb, f, v) => (Array.isArray(v) && v.length ? eb(f, 'not in', v) : eb.val(true)),
  _null: (eb, f, v) => eb(f, v === false ? 'is not' : 'is', null),
  _nnull: (eb, f, v) => eb(f, v === false ? 'is' : 'is not', null),
  _contains: (eb, f, v) => eb(f, 'like', `%${escapeLike(String(v))}%`),
  _ncontains: (eb, f, v) => eb(f, 'not like', `%${escapeLike(String(v))}%`),
  _icontains: (eb, f, v) => eb(f, 'ilike', `%${escapeLike(String(v))}%`),
  _starts_with: (eb, f, v) => eb(f, 'like', `${escapeLike(String(v))}%`),
  _ends_with: (eb, f, v) => eb(f, 'like', `%${escapeLike(String(v))}`),
  _between: (eb, f, v) => eb.between(eb.ref(f), v?.[0], v?.[1]),
  _nbetween: (eb, f, v) => eb.not(eb.between(eb.ref(f), v?.[0], v?.[1])),
};

/** Every column a query names must exist: unknown names are the caller's error, not a database one. */
function checkFields(query: Query, known: string[]): void {
  const columns = new Set(known);
  const check = (field: string, where: string) => {
    if (!columns.has(field)) throw new InvalidQueryError({ reason: `unknown field ${JSON.stringify(field)} in ${where}` });
  };
  for (const field of query.fields ?? []) if (field !== '*') check(field, 'fields');
  for (const field of query.sort ?? []) check(field.replace(/^-/, ''), 'sort');
  const walk = (filter: Record<string, unknown>) => {
    for (const [key, value] of Object.entries(filter)) {
      if (key === '_and' || key === '_or') {
        if (Array.isArray(value)) for (const inner of value) walk(inner as Record<string, unknown>);
      } else check(key, 'filter');
    }
  };
  if (query.filter) walk(query.filter);
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** Directus filter → kysely expression: `{ field: { _op: value } }`, `_and`, `_or`. */
export function toExpression(eb: Eb, filter: Record<string, unknown>): any {
  const parts: any[] = [];
  for (const [key, value] of Object.entries(filter)) {
    if (key === '_and' || key === '_or') {
      if (!Array.isArray(value)) throw new InvalidQueryError({ reason: `"${key}" needs an array of filters` });
      const inner = value.map((f) => toExpression(eb, f as Record<string, unknown>));
      parts.push(key === '_and' ? eb.and(inner) : eb.or(inner));
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new InvalidQueryError({ reason: `filter on "${key}" must be an object like { "_eq": 1 }` });
    }
    for (const [operator, operand] of Object.entries(value as Record<string, unknown>)) {
      const build = OPERATORS[operator];
      if (!build) throw new InvalidQueryError({ reason: `unknown filter operator "${operator}" on "${key}"` });
      parts.push(build(eb, key, operand));
    }
  }
  return eb.and(parts);
}
