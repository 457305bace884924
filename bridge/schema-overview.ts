/**
 * `getSchema()` for hook authors: the user's tables as Directus' SchemaOverview shapes them
 * (`collections[name].fields[field]`, `primary`, and `relations`), read from the catalog. Cached;
 * a cheap fingerprint of the catalog (table and column definitions, constraints) decides when to
 * read it again, checked at most every `maxAgeMs`.
 */
import type pg from 'pg';
import { collectionOf } from './replication/change-events.js';

export interface FieldOverview {
  field: string;
  /** The Postgres type as `format_type` prints it, e.g. `character varying(255)`, `numeric(10,2)`. */
  dbType: string;
  /** A Directus-style type: integer, bigInteger, float, decimal, string, text, boolean, json, uuid, timestamp, dateTime, date, time, binary, csv (arrays), unknown. */
  type: string;
  nullable: boolean;
  defaultValue: string | null;
  generated: boolean;
}

export interface CollectionOverview {
  collection: string;
  schema: string;
  table: string;
  /** The primary key column (the first one for composite keys), or null. */
  primary: string | null;
  primaryKey: string[];
  fields: Record<string, FieldOverview>;
}

export interface RelationOverview {
  collection: string;
  field: string;
  related_collection: string;
  related_field: string;
  constraint: string;
}

export interface SchemaOverview {
  collections: Record<string, CollectionOverview>;
  relations: RelationOverview[];
}

const TYPES: Record<string, string> = {
  int2: 'integer',
  int4: 'integer',
  int8: 'bigInteger',
  float4: 'float',
  float8: 'float',
  numeric: 'decimal',
  varchar: 'string',
  bpchar: 'string',
  text: 'text',
  citext: 'text',
  bool: 'boolean',
  json: 'json',
  jsonb: 'json',
  uuid: 'uuid',
  timestamptz: 'timestamp',
  timestamp: 'dateTime',
  date: 'date',
  time: 'time',
  timetz: 'time',
  bytea: 'binary',
};

export function directusType(typname: string, isArray: boolean): string {
  if (isArray) return 'csv';
  return TYPES[typname] ?? 'unknown';
}

export class SchemaReader {
  #cached: { fingerprint: string; overview: SchemaOverview } | undefined;
  #checkedAt = 0;
  #reading: Promise<SchemaOverview> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly exclude: string[],
    private readonly maxAgeMs = 1_000,
  ) {}

  getSchema = (): Promise<SchemaOverview> => {
    if (this.#cached && Date.now() - this.#checkedAt < this.maxAgeMs) return Promise.resolve(this.#cached.overview);
    this.#reading ??= this.#read().finally(() => (this.#reading = undefined));
    return this.#reading;
  };

  async #read(): Promise<SchemaOverview> {
    const { rows } = await this.pool.query<{ fingerprint: string }>(
      `select md5(coalesce(string_agg(x, ',' order by x), '')) as fingerprint from (
         select c.oid::text || ':' || c.relname || ':' || n.nspname || ':' || (
                  select coalesce(string_agg(a.attname || ' ' || a.atttypid || ' ' || a.attnotnull || ' ' || a.atthasdef || ' ' || a.atttypmod, ';' order by a.attnum), '')
                    from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)
                || ':' || (select coalesce(string_agg(k.conname, ';' order by k.conname), '') from pg_constraint k where k.conrelid = c.oid) as x
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where c.relkind in ('r', 'p') and not c.relispartition
            and n.nspname !~ '^pg_' and n.nspname <> 'information_schema' and n.nspname <> all ($1::text[])) t`,
      [this.exclude],
    );
    const fingerprint = rows[0]?.fingerprint ?? '';
    this.#checkedAt = Date.now();
    if (this.#cached?.fingerprint === fingerprint) return this.#cached.overview;
    const overview = await this.#load();
    this.#cached = { fingerprint, overview };
    return overview;
  }

  async #load(): Promise<SchemaOverview> {
    const { rows: columns } = await this.pool.query<{
      schema: string;
      table: string;
      field: string;
      db_type: string;
      typname: string;
      is_array: boolean;
      nullable: boolean;
      default_value: string | null;
      generated: boolean;
      pk_position: number | null;
    }>(
      `select n.nspname as schema, c.relname as table, a.attname as field,
              format_type(a.atttypid, a.atttypmod) as db_type,
              coalesce(et.typname, t.typname) as typname, t.typelem <> 0 and t.typlen = -1 as is_array,
              not a.attnotnull as nullable, pg_get_expr(d.adbin, d.adrelid) as default_value,
              a.attgenerated <> '' or a.attidentity <> '' as generated,
              array_position(i.indkey::int2[], a.attnum) as pk_position
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
         join pg_type t on t.oid = a.atttypid
         left join pg_type et on et.oid = t.typelem and t.typlen = -1
         left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
         left join pg_index i on i.indrelid = c.oid and i.indisprimary
        where c.relkind in ('r', 'p') and not c.relispartition
          and n.nspname !~ '^pg_' and n.nspname <> 'information_schema' and n.nspname <> all ($1::text[])
        order by n.nspname, c.relname, a.attnum`,
      [this.exclude],
    );
    const collections: Record<string, CollectionOverview> = {};
    const keyPositions = new Map<string, Array<[number, string]>>();
    for (const column of columns) {
      const collection = collectionOf({ schema: column.schema, name: column.table });
      const entry = (collections[collection] ??= { collection, schema: column.schema, table: column.table, primary: null, primaryKey: [], fields: {} });
      entry.fields[column.field] = {
        field: column.field,
        dbType: column.db_type,
        type: directusType(column.typname, column.is_array),
        nullable: column.nullable,
        defaultValue: column.default_value,
        generated: column.generated,
      };
      if (column.pk_position !== null) {
        const list = keyPositions.get(collection) ?? [];
        list.push([column.pk_position, column.field]);
        keyPositions.set(collection, list);
      }
    }
    for (const [collection, list] of keyPositions) {
      const entry = collections[collection] as CollectionOverview;
      entry.primaryKey = list.sort((a, b) => a[0] - b[0]).map(([, field]) => field);
      entry.primary = entry.primaryKey[0] ?? null;
    }

    const { rows: foreignKeys } = await this.pool.query<{
      schema: string;
      table: string;
      field: string;
      ref_schema: string;
      ref_table: string;
      ref_field: string;
      constraint: string;
    }>(
      `select n.nspname as schema, c.relname as table, a.attname as field,
              rn.nspname as ref_schema, rc.relname as ref_table, ra.attname as ref_field, k.conname as constraint
         from pg_constraint k
         join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
         join pg_class rc on rc.oid = k.confrelid join pg_namespace rn on rn.oid = rc.relnamespace
         cross join lateral unnest(k.conkey, k.confkey) as u(col, refcol)
         join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.col
         join pg_attribute ra on ra.attrelid = k.confrelid and ra.attnum = u.refcol
        where k.contype = 'f' and n.nspname <> all ($1::text[])
        order by 1, 2, 3`,
      [this.exclude],
    );
    const relations = foreignKeys.map((fk) => ({
      collection: collectionOf({ schema: fk.schema, name: fk.table }),
      field: fk.field,
      related_collection: collectionOf({ schema: fk.ref_schema, name: fk.ref_table }),
      related_field: fk.ref_field,
      constraint: fk.constraint,
    }));
    return { collections, relations };
  }
}
