/**
 * `services.ItemsService`: Directus' ItemsService on one table, on kysely, and Directus' other
 * services as names that refuse to be constructed (./other-services.ts).
 *
 *   const articles = new ItemsService('articles', { schema: await getSchema() });
 *   await articles.createOne({ title: 'x' }, { emitEvents: false });
 *   await articles.readByQuery({ filter: { status: 'draft' }, fields: ['id'], sort: ['-id'], limit: 10 });
 *   await articles.readByQuery({ aggregate: { count: ['*'] }, groupBy: ['status'] });
 *
 * Writes go to the table like any client's (filter triggers and action hooks fire) unless
 * `{ emitEvents: false }`: then they run in a transaction that sets `hookbridge.bypass`, which the
 * filter trigger and the action path honour for the bridge's own role only. A method that writes
 * several statements (updateBatch, upsertMany) runs them in one transaction. Reads fire
 * `items.query` (filter: the query), `items.read` (filter: the rows) and `items.read` (action).
 * Queries are checked and built in ./query.ts and ./filter.ts.
 */
import { sql, type Kysely } from 'kysely';
import { ForbiddenError, InvalidPayloadError, InvalidQueryError } from '../../hooks/errors.js';
import type { HookRuntime } from '../../hooks/runtime.js';
import type { Accountability } from '../../hooks/types.js';
import type { CollectionOverview, FieldOverview, SchemaOverview } from '../schema-overview.js';
import { translateDatabaseError } from './database-errors.js';
import { column } from './filter.js';
import { UNOFFERED_SERVICES } from './other-services.js';
import { planQuery, selectQuery, shapeRows, type Query } from './query.js';

export type { Aggregate, Query } from './query.js';
export type { Filter } from './filter.js';
export type PrimaryKey = string | number;
export type Item = Record<string, unknown>;
export interface MutationOptions {
  /** false: no filter or action hook sees the write (the bypass is tied to the bridge's own role). */
  emitEvents?: boolean;
  /** Accepted for Directus' sake; hookbridge has no cache, mutation limits or revisions to skip. */
  autoPurgeCache?: boolean;
  bypassLimits?: boolean;
}
export interface QueryOptions {
  /** false: the read fires no items.query / items.read hooks. */
  emitEvents?: boolean;
}

export interface ServicesContext {
  database: Kysely<any>;
  runtime: HookRuntime;
  getSchema: () => Promise<SchemaOverview>;
}

/** The table behind a collection, as the methods use it. */
interface Table {
  db: (db: Kysely<any>) => Kysely<any>;
  name: string;
  primary: string | null;
  fields: Record<string, FieldOverview>;
}

export function createServices(context: ServicesContext) {
  class ItemsService<T extends Item = Item> {
    readonly collection: string;
    readonly accountability: Accountability | null;
    #schema: SchemaOverview | undefined;

    /**
     * As Directus: `{ schema, accountability, knex }`. The service runs on its own connections: `knex:
     * database` is accepted, a Knex *transaction* is refused (its writes would not be part of it, and
     * could wait on its locks for ever).
     */
    constructor(collection: string, options: { schema?: SchemaOverview; accountability?: Accountability | null; knex?: unknown } = {}) {
      if (typeof collection !== 'string' || collection === '') {
        throw new InvalidQueryError({ reason: `ItemsService needs a collection name, got ${JSON.stringify(collection)}` });
      }
      if ((options?.knex as { isTransaction?: unknown } | undefined)?.isTransaction === true) {
        throw new InvalidQueryError({
          reason:
            `new ItemsService('${collection}', { knex: trx }): hookbridge's ItemsService cannot join a Knex transaction; ` +
            'write with trx itself (trx(table).insert(...)), or use the service outside the transaction',
        });
      }
      this.collection = collection;
      this.#schema = options?.schema;
      this.accountability = options?.accountability ?? null;
    }

    /** The schema the service was given, or the one it read when first used. */
    get schema(): SchemaOverview | undefined {
      return this.#schema;
    }

    async createOne(data: Partial<T>, options: MutationOptions = {}): Promise<PrimaryKey> {
      const [key] = await this.createMany([data], options);
      return key as PrimaryKey;
    }

    async createMany(data: Partial<T>[], options: MutationOptions = {}): Promise<PrimaryKey[]> {
      const list = arrayOf(data, 'createMany', 'items');
      const table = await this.#table(true);
      const rows = list.map((item, i) => this.#payload(table, item, `createMany[${i}]`));
      if (rows.length === 0) return [];
      return this.#write(options, table, (db) => insertRows(db, table, rows));
    }

    async readByQuery(query: Query = {}, options: QueryOptions = {}): Promise<T[]> {
      const emit = options?.emitEvents !== false;
      const schema = await this.#getSchema();
      // Handlers get the runtime's `database` (Knex) and `kysely`, as for any other event.
      const hookContext = { schema, accountability: this.accountability };
      const finalQuery = emit ? await context.runtime.runFilters('query', this.collection, query ?? {}, {}, hookContext) : query;
      const table = await this.#table(false);
      const plan = planQuery(finalQuery, table);
      let rows: Item[];
      try {
        rows = shapeRows(await selectQuery(table.db(context.database), table.name, plan, table).execute(), plan);
      } catch (error) {
        throw queryError(error, this.collection);
      }
      if (emit) {
        rows = await context.runtime.runFilters('read', this.collection, rows, { query: finalQuery }, hookContext);
        // dispatchActions logs handler failures itself; nothing here may become an unhandled rejection.
        context.runtime.dispatchActions('read', this.collection, { payload: rows, query: finalQuery }, hookContext).catch(() => undefined);
      }
      return rows as T[];
    }

    /** One item by key; ForbiddenError when there is none (as Directus, which cannot tell missing from hidden). */
    async readOne(key: PrimaryKey, query: Query = {}, options: QueryOptions = {}): Promise<T> {
      const table = await this.#table(true);
      checkKey(table, key);
      const q = query ?? {};
      const [row] = await this.readByQuery({ ...q, filter: withKeys(table, { _eq: key }, q.filter) }, options);
      if (!row) throw new ForbiddenError();
      return row;
    }

    /** The items of these keys (as many as keys, unless the query limits them), in the query's order. */
    async readMany(keys: PrimaryKey[], query: Query = {}, options: QueryOptions = {}): Promise<T[]> {
      const table = await this.#table(true);
      const list = keysOf(table, keys, 'readMany');
      const q = query ?? {};
      // As Directus: without a limit, as many rows as keys (not the default 100).
      const limit = list.length > 0 && !q.limit ? list.length : q.limit;
      return this.readByQuery({ ...q, filter: withKeys(table, { _in: list }, q.filter), limit }, options);
    }

    /**
     * The collection's first row. An empty table answers every requested field as null: Directus
     * answers column defaults, which in Postgres are SQL expressions (a sequence's next value, now())
     * that only an insert may evaluate.
     */
    async readSingleton(query: Query = {}, options: QueryOptions = {}): Promise<Partial<T>> {
      const q = query ?? {};
      const [row] = await this.readByQuery({ ...q, limit: 1 }, options);
      if (row) return row;
      const table = await this.#table(false);
      const names = Array.isArray(q.fields) && q.fields.length > 0 && !q.fields.includes('*') ? q.fields : Object.keys(table.fields);
      return Object.fromEntries(names.map((name) => [name, null])) as Partial<T>;
    }

    /** The keys of the rows a query selects (its limit applies: 100 unless it says, as in Directus). */
    async getKeysByQuery(query: Query, options: QueryOptions = {}): Promise<PrimaryKey[]> {
      const table = await this.#table(true);
      const q = query ?? {};
      for (const option of ['aggregate', 'group', 'groupBy'] as const) {
        if (q[option] !== undefined && q[option] !== null) {
          throw new InvalidQueryError({ reason: `"${option}" cannot select rows by key (getKeysByQuery, updateByQuery, deleteByQuery)` });
        }
      }
      const rows = await this.readByQuery({ ...q, fields: [table.primary] }, options);
      return rows.map((row) => row[table.primary] as PrimaryKey).filter((key) => key !== null && key !== undefined);
    }

    async updateOne(key: PrimaryKey, data: Partial<T>, options: MutationOptions = {}): Promise<PrimaryKey> {
      await this.updateMany([key], data, options);
      return key;
    }

    /** Sets the same fields on every key's row. The primary key in `data` is left out, as Directus does. */
    async updateMany(keys: PrimaryKey[], data: Partial<T>, options: MutationOptions = {}): Promise<PrimaryKey[]> {
      const table = await this.#table(true);
      const list = keysOf(table, keys, 'updateMany');
      const payload = withoutKey(table, this.#payload(table, data, 'updateMany'));
      if (list.length === 0) return [];
      await this.#write(options, table, (db) => updateRows(db, table, list, payload));
      return list;
    }

    /** Items that each carry their primary key, each updated with its own fields, in one transaction. */
    async updateBatch(data: Partial<T>[], options: MutationOptions = {}): Promise<PrimaryKey[]> {
      const list = arrayOf(data, 'updateBatch', 'items');
      const table = await this.#table(true);
      const updates = list.map((item, i) => {
        const payload = this.#payload(table, item, `updateBatch[${i}]`);
        const key = payload[table.primary] as PrimaryKey | null | undefined;
        if (key === undefined || key === null || key === '') {
          throw new InvalidPayloadError({ reason: `updateBatch[${i}] misses its primary key "${table.primary}"` });
        }
        checkKey(table, key);
        return { key, payload: withoutKey(table, payload) };
      });
      if (updates.length === 0) return [];
      await this.#write(options, table, async (db) => {
        for (const { key, payload } of updates) await updateRows(db, table, [key], payload);
      });
      return updates.map(({ key }) => key);
    }

    async updateByQuery(query: Query, data: Partial<T>, options: MutationOptions = {}): Promise<PrimaryKey[]> {
      const keys = await this.getKeysByQuery(query, { emitEvents: options?.emitEvents });
      return keys.length ? this.updateMany(keys, data, options) : [];
    }

    async upsertOne(payload: Partial<T>, options: MutationOptions = {}): Promise<PrimaryKey> {
      const [key] = await this.upsertMany([payload], options);
      return key as PrimaryKey;
    }

    /** Each item updated when its key is given and found, else created; in one transaction. Returns the keys. */
    async upsertMany(payloads: Partial<T>[], options: MutationOptions = {}): Promise<PrimaryKey[]> {
      const list = arrayOf(payloads, 'upsertMany', 'items');
      const table = await this.#table(true);
      const items = list.map((item, i) => {
        const payload = this.#payload(table, item, `upsertMany[${i}]`);
        const key = payload[table.primary] as PrimaryKey | null | undefined;
        const given = key !== undefined && key !== null && key !== '';
        if (given) checkKey(table, key);
        return { key: given ? key : undefined, payload };
      });
      if (items.length === 0) return [];
      return this.#write(options, table, async (db) => {
        const keys: PrimaryKey[] = [];
        for (const { key, payload } of items) {
          if (key === undefined) {
            keys.push(...(await insertRows(db, table, [payload])));
            continue;
          }
          if (!(await rowExists(db, table, key))) {
            // Another writer may create the same key meanwhile: then this one updates it, as if it had been there.
            await sql`savepoint hookbridge_upsert`.execute(db);
            try {
              keys.push(...(await insertRows(db, table, [payload])));
              await sql`release savepoint hookbridge_upsert`.execute(db);
              continue;
            } catch (error) {
              if ((error as { code?: unknown } | null)?.code !== '23505') throw error;
              await sql`rollback to savepoint hookbridge_upsert`.execute(db);
              if (!(await rowExists(db, table, key))) throw error;
            }
          }
          await updateRows(db, table, [key], withoutKey(table, payload));
          keys.push(key);
        }
        return keys;
      });
    }

    /** Updates the collection's first row (by primary key), or creates it when the table is empty. */
    async upsertSingleton(data: Partial<T>, options: MutationOptions = {}): Promise<PrimaryKey> {
      const table = await this.#table(true);
      const payload = this.#payload(table, data, 'upsertSingleton');
      return this.#write(options, table, async (db) => {
        const first = await table
          .db(db)
          .selectFrom(table.name)
          .select(column(table.primary).as('key'))
          .orderBy(column(table.primary))
          .limit(1)
          .executeTakeFirst();
        if (!first) return (await insertRows(db, table, [payload]))[0] as PrimaryKey;
        const key = first['key'] as PrimaryKey;
        await updateRows(db, table, [key], withoutKey(table, payload));
        return key;
      });
    }

    async deleteOne(key: PrimaryKey, options: MutationOptions = {}): Promise<PrimaryKey> {
      await this.deleteMany([key], options);
      return key;
    }

    async deleteMany(keys: PrimaryKey[], options: MutationOptions = {}): Promise<PrimaryKey[]> {
      const table = await this.#table(true);
      const list = keysOf(table, keys, 'deleteMany');
      if (list.length === 0) return [];
      await this.#write(options, table, (db) => table.db(db).deleteFrom(table.name).where(column(table.primary), 'in', list).execute());
      return list;
    }

    async deleteByQuery(query: Query, options: MutationOptions = {}): Promise<PrimaryKey[]> {
      const keys = await this.getKeysByQuery(query, { emitEvents: options?.emitEvents });
      return keys.length ? this.deleteMany(keys, options) : [];
    }

    async #getSchema(): Promise<SchemaOverview> {
      this.#schema ??= await context.getSchema();
      return this.#schema;
    }

    async #table(keyed: true): Promise<KeyedTable>;
    async #table(keyed: false): Promise<Table>;
    async #table(keyed: boolean): Promise<Table> {
      // The catalog as it is now (cached, re-read when it changes), not the schema the service was made
      // with: an extension that keeps one service for its lifetime still sees columns added since.
      const overview: CollectionOverview | undefined = (await context.getSchema()).collections[this.collection];
      if (!overview) throw new InvalidQueryError({ reason: `there is no collection "${this.collection}"` });
      if (keyed && !overview.primary) throw new InvalidQueryError({ reason: `collection "${this.collection}" has no primary key` });
      if (keyed && overview.primaryKey.length > 1) {
        throw new InvalidQueryError({
          reason: `collection "${this.collection}" has a composite primary key (${overview.primaryKey.join(', ')}): ItemsService's methods by key need a single-column key; read it with readByQuery`,
        });
      }
      // kysely reads a dot in a table name as schema.table (and " as " as an alias): such names cannot be
      // addressed through it, so refuse them rather than touch another table.
      if (/\.|\s+as\s+/i.test(overview.table)) {
        throw new InvalidQueryError({ reason: `table name ${JSON.stringify(overview.table)} cannot be used through ItemsService` });
      }
      const schemaName = overview.schema;
      return { db: (db: Kysely<any>) => db.withSchema(schemaName), name: overview.table, primary: overview.primary, fields: overview.fields };
    }

    /** The columns to write: known fields only (an unknown one is the caller's error), json values as JSON text. */
    #payload(table: Table, data: unknown, where: string): Item {
      if (data === null || typeof data !== 'object' || Array.isArray(data)) {
        throw new InvalidPayloadError({ reason: `${where} needs an object of field values, got ${Array.isArray(data) ? 'an array' : String(data)}` });
      }
      const payload: Item = {};
      const unknown: string[] = [];
      for (const [name, value] of Object.entries(data)) {
        // As knex does: an undefined value is no value.
        if (value === undefined) continue;
        const field = Object.hasOwn(table.fields, name) ? table.fields[name] : undefined;
        if (!field) unknown.push(name);
        else payload[name] = field.type === 'json' ? jsonValue(value) : value;
      }
      if (unknown.length > 0) {
        throw new InvalidPayloadError({
          reason: `${where}: collection "${this.collection}" has no field ${unknown.map((name) => JSON.stringify(name)).join(', ')}`,
        });
      }
      return payload;
    }

    async #write<R>(options: MutationOptions | undefined, table: Table, run: (db: Kysely<any>) => Promise<R>): Promise<R> {
      try {
        return await context.database.transaction().execute(async (trx) => {
          if (options?.emitEvents === false) await sql`select set_config('hookbridge.bypass', 'on', true)`.execute(trx);
          // The service's accountability reaches the hooks its writes fire, as in Directus: as the
          // writer's declared application user (role, admin and address are the bridge's session's).
          const user = this.accountability?.user;
          if (typeof user === 'string' && user !== '') await sql`select set_config('hookbridge.user', ${user}, true)`.execute(trx);
          return run(trx);
        });
      } catch (error) {
        throw translateDatabaseError(error, this.collection, table.primary);
      }
    }
  }
  return { ...UNOFFERED_SERVICES, ItemsService };
}

type KeyedTable = Table & { primary: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** As Directus' validateKeys: a key that cannot be one of this table's is ForbiddenError. */
function checkKey(table: KeyedTable, key: unknown): asserts key is PrimaryKey {
  const type = table.fields[table.primary]?.type;
  const valid = (typeof key === 'string' && key !== '') || (typeof key === 'number' && Number.isFinite(key)) || typeof key === 'bigint';
  if (!valid) throw new ForbiddenError();
  if ((type === 'integer' || type === 'bigInteger') && !/^-?\d+$/.test(String(key))) throw new ForbiddenError();
  if (type === 'uuid' && !UUID.test(String(key))) throw new ForbiddenError();
}

function keysOf(table: KeyedTable, keys: unknown, where: string): PrimaryKey[] {
  if (!Array.isArray(keys)) throw new InvalidPayloadError({ reason: `${where} needs an array of primary keys` });
  for (const key of keys) checkKey(table, key);
  return [...keys] as PrimaryKey[];
}

function arrayOf(value: unknown, where: string, what: string): unknown[] {
  if (!Array.isArray(value)) throw new InvalidPayloadError({ reason: `${where} needs an array of ${what}` });
  return value;
}

function withKeys(table: KeyedTable, condition: Record<string, unknown>, filter: unknown): Record<string, unknown> {
  const byKey = { [table.primary]: condition };
  return filter === undefined || filter === null ? byKey : { _and: [byKey, filter] };
}

function withoutKey(table: KeyedTable, payload: Item): Item {
  const { [table.primary]: _key, ...rest } = payload;
  return rest;
}

/** Objects and arrays as JSON text: the driver would send an array as a Postgres array. */
function jsonValue(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || value instanceof Date || Buffer.isBuffer(value)) return value;
  return JSON.stringify(value);
}

async function insertRows(db: Kysely<any>, table: KeyedTable, rows: Item[]): Promise<PrimaryKey[]> {
  const key = column(table.primary).as('key');
  if (rows.every((row) => Object.keys(row).length === 0)) {
    // `insert ... values` needs a column; a row of defaults only is `default values`, one statement per row.
    const keys: PrimaryKey[] = [];
    for (const _row of rows) {
      const inserted = await table.db(db).insertInto(table.name).defaultValues().returning(key).executeTakeFirstOrThrow();
      keys.push(inserted['key'] as PrimaryKey);
    }
    return keys;
  }
  // kysely writes DEFAULT for a column some rows leave out; Postgres returns the rows in VALUES order.
  const inserted = await table.db(db).insertInto(table.name).values(rows).returning(key).execute();
  return inserted.map((row) => row['key'] as PrimaryKey);
}

async function updateRows(db: Kysely<any>, table: KeyedTable, keys: PrimaryKey[], payload: Item): Promise<void> {
  // As Directus: nothing to set, no statement.
  if (Object.keys(payload).length === 0) return;
  await table.db(db).updateTable(table.name).set(payload).where(column(table.primary), 'in', keys).execute();
}

async function rowExists(db: Kysely<any>, table: KeyedTable, key: PrimaryKey): Promise<boolean> {
  const row = await table
    .db(db)
    .selectFrom(table.name)
    .select(sql<number>`1`.as('found'))
    .where(column(table.primary), '=', key)
    .executeTakeFirst();
  return row !== undefined;
}

/** A value Postgres could not compare (`_eq: 'abc'` on an integer) is a bad query, not a server error. */
function queryError(error: unknown, collection: string): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof Error && typeof code === 'string' && (code.startsWith('22') || code === '42883')) {
    return new InvalidQueryError({ reason: `collection "${collection}": ${error.message}` }, { cause: error });
  }
  return error;
}
