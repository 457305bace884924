/**
 * What the values module cannot know by itself: the shape of user-defined types (composites and their
 * fields, domains over anything, arrays of either) and the columns of a table, read from the catalog
 * once and cached. The bridge's own sessions run with `pg_catalog` first, so nothing here runs a
 * user's operator or function.
 */
import type pg from 'pg';
import { builtinShape, TEXT, type TypeShape } from './values.js';

/** A type's catalog row, with what the typings need of what it is made of. */
export interface CatalogType {
  oid: number;
  typtype: string;
  /** Printed by array_out (int2vector and oidvector have an element type but print `1 2`: text). */
  is_array: boolean;
  /** The element's delimiter, for an array type. */
  delimiter: string | null;
  typelem: number;
  typbasetype: number;
  typrelid: number;
  /** An enum's labels, in order. */
  enum_labels: string[] | null;
  /** A composite's fields, in order. */
  fields: Array<{ name: string; type: number }>;
}

/**
 * The catalog rows of these types and of every type they are made of (a domain's base, an array's
 * element, a composite's fields), except those `skip` says are known already. For the runtime's
 * typing (TypeCatalog) and the declarations `hookbridge types` writes alike.
 */
export async function readTypeTree(pool: pg.Pool, oids: Iterable<number>, skip: (oid: number) => boolean = () => false): Promise<Map<number, CatalogType>> {
  const found = new Map<number, CatalogType>();
  let wanted = [...new Set(oids)].filter((oid) => !skip(oid));
  while (wanted.length) {
    const { rows } = await pool.query<Omit<CatalogType, 'fields'>>(
      `select t.oid::int4 as oid, t.typtype::text as typtype, t.typoutput = 'pg_catalog.array_out'::pg_catalog.regproc as is_array,
              (select e.typdelim::text from pg_catalog.pg_type e where e.oid = t.typelem) as delimiter,
              t.typelem::int4 as typelem, t.typbasetype::int4 as typbasetype, t.typrelid::int4 as typrelid,
              case when t.typtype = 'e' then
                array(select e.enumlabel::text from pg_catalog.pg_enum e where e.enumtypid = t.oid order by e.enumsortorder)
              end as enum_labels
         from pg_catalog.pg_type t where t.oid = any($1::oid[])`,
      [wanted],
    );
    const next = new Set<number>();
    const composites = new Map<number, CatalogType>();
    for (const row of rows) {
      const type = { ...row, fields: [] };
      found.set(row.oid, type);
      if (row.typtype === 'd') next.add(row.typbasetype);
      else if (row.is_array && row.typelem !== 0) next.add(row.typelem);
      else if (row.typtype === 'c') composites.set(row.typrelid, type);
    }
    if (composites.size) {
      const { rows: attributes } = await pool.query<{ relid: number; name: string; type: number }>(
        `select a.attrelid::int4 as relid, a.attname::text as name, a.atttypid::int4 as type
           from pg_catalog.pg_attribute a
          where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped
          order by a.attrelid, a.attnum`,
        [[...composites.keys()]],
      );
      for (const a of attributes) {
        composites.get(a.relid)?.fields.push({ name: a.name, type: a.type });
        next.add(a.type);
      }
    }
    wanted = [...next].filter((oid) => !skip(oid) && !found.has(oid));
  }
  return found;
}

/** Composites nested deeper than this stay text: no type reachable from a table can make the bridge recurse without end. */
const MAX_DEPTH = 32;

export interface TableColumn {
  name: string;
  shape: TypeShape;
  /** A stored generated column: NULL in a BEFORE trigger's NEW, computed after it. */
  generated: boolean;
}

export class TypeCatalog {
  readonly #pool: pg.Pool;
  readonly #shapes = new Map<number, TypeShape>();
  readonly #tables = new Map<number, Promise<Map<string, TableColumn>>>();

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /** The shape of a type, if known without asking (builtin, or loaded already). */
  known(oid: number): TypeShape | undefined {
    return builtinShape(oid) ?? this.#shapes.get(oid);
  }

  /** A parser for text values of the type that looks the shape up when called, so `load` may come later. */
  textParser(oid: number, parse: (shape: TypeShape, text: string) => unknown): (text: string) => unknown {
    const builtin = builtinShape(oid);
    // A value the typing cannot read arrives as its text: one odd value must never stop the stream.
    const safely = (shape: TypeShape, text: string) => {
      try {
        return parse(shape, text);
      } catch {
        return text;
      }
    };
    if (builtin) return (text) => safely(builtin, text);
    return (text) => safely(this.#shapes.get(oid) ?? TEXT, text);
  }

  /**
   * Reads the shapes of these types (and of every type they are made of) that are not known yet, or
   * with `refresh`, of every one that is not builtin (a composite may have gained a field). Shapes are
   * replaced only once all are read, so parsers made earlier keep working meanwhile.
   */
  async load(oids: Iterable<number>, refresh = false): Promise<void> {
    const fresh = new Map<number, TypeShape>();
    const wanted = [...new Set(oids)].filter((oid) => builtinShape(oid) === undefined && (refresh || !this.#shapes.has(oid)));
    const known = (oid: number) => builtinShape(oid) ?? fresh.get(oid) ?? (refresh ? undefined : this.#shapes.get(oid));
    const rows = await readTypeTree(this.#pool, wanted, (oid) => known(oid) !== undefined);
    const resolving = new Set<number>();
    const resolve = (oid: number, depth: number): TypeShape => {
      const done = known(oid);
      if (done) return done;
      const row = rows.get(oid);
      // A composite that contains itself through an array cannot be finished: its inner copy stays text.
      if (!row || resolving.has(oid) || depth > MAX_DEPTH) return TEXT;
      resolving.add(oid);
      let shape: TypeShape;
      if (row.typtype === 'd') shape = resolve(row.typbasetype, depth + 1);
      else if (row.is_array && row.typelem !== 0) {
        const element = resolve(row.typelem, depth + 1);
        shape = row.delimiter && row.delimiter !== ',' ? { kind: 'array', element, delimiter: row.delimiter } : { kind: 'array', element };
      } else if (row.typtype === 'c') shape = { kind: 'composite', fields: row.fields.map((f) => [f.name, resolve(f.type, depth + 1)] as const) };
      else shape = TEXT;
      resolving.delete(oid);
      fresh.set(oid, shape);
      return shape;
    };
    for (const oid of rows.keys()) resolve(oid, 0);
    for (const [oid, shape] of fresh) this.#shapes.set(oid, shape);
  }

  /** The columns of a table (by oid), typed. Cached until `forget`. */
  columns(relid: number): Promise<Map<string, TableColumn>> {
    let columns = this.#tables.get(relid);
    if (!columns) {
      columns = this.#readColumns(relid);
      this.#tables.set(relid, columns);
      columns.catch(() => this.#tables.delete(relid));
    }
    return columns;
  }

  async #readColumns(relid: number): Promise<Map<string, TableColumn>> {
    const { rows } = await this.#pool.query<{ name: string; type: number; generated: boolean }>(
      `select a.attname::text as name, a.atttypid::int4 as type, a.attgenerated <> '' as generated
         from pg_catalog.pg_attribute a
        where a.attrelid = $1::oid and a.attnum > 0 and not a.attisdropped
        order by a.attnum`,
      [relid],
    );
    await this.load(rows.map((r) => r.type));
    return new Map(rows.map((r) => [r.name, { name: r.name, shape: this.known(r.type) ?? TEXT, generated: r.generated }]));
  }

  /** Forgets what it read about tables and types: columns and types may have changed. */
  forget(relid?: number): void {
    if (relid === undefined) {
      this.#tables.clear();
      this.#shapes.clear();
    } else {
      this.#tables.delete(relid);
    }
  }
}
