/**
 * What the values module cannot know by itself: the shape of user-defined types (composites and their
 * fields, domains over anything, arrays of either) and the columns of a table, read from the catalog
 * once and cached. The bridge's own sessions run with `pg_catalog` first, so nothing here runs a
 * user's operator or function.
 */
import type pg from 'pg';
import { builtinShape, TEXT, type TypeShape } from './values.js';

interface TypeRow {
  oid: number;
  typtype: string;
  /** Printed by array_out (int2vector and oidvector have an element type but print `1 2`: text). */
  is_array: boolean;
  /** The element's delimiter, for an array type. */
  delimiter: string | null;
  typelem: number;
  typbasetype: number;
  typrelid: number;
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
    let wanted = [...new Set(oids)].filter((oid) => builtinShape(oid) === undefined && (refresh || !this.#shapes.has(oid)));
    const known = (oid: number) => builtinShape(oid) ?? fresh.get(oid) ?? (refresh ? undefined : this.#shapes.get(oid));
    const rows = new Map<number, TypeRow>();
    const fields = new Map<number, Array<{ name: string; type: number }>>();
    while (wanted.length) {
      const { rows: found } = await this.#pool.query<TypeRow>(
        `select t.oid::int4 as oid, t.typtype, t.typoutput = 'pg_catalog.array_out'::pg_catalog.regproc as is_array,
                (select e.typdelim::text from pg_catalog.pg_type e where e.oid = t.typelem) as delimiter,
                t.typelem::int4 as typelem, t.typbasetype::int4 as typbasetype, t.typrelid::int4 as typrelid
           from pg_catalog.pg_type t where t.oid = any($1::oid[])`,
        [wanted],
      );
      const next = new Set<number>();
      const relids: number[] = [];
      for (const row of found) {
        rows.set(row.oid, row);
        if (row.typtype === 'd') next.add(row.typbasetype);
        else if (row.is_array && row.typelem !== 0) next.add(row.typelem);
        else if (row.typtype === 'c') relids.push(row.typrelid);
      }
      if (relids.length) {
        const { rows: attributes } = await this.#pool.query<{ relid: number; name: string; type: number }>(
          `select a.attrelid::int4 as relid, a.attname::text as name, a.atttypid::int4 as type
             from pg_catalog.pg_attribute a
            where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped
            order by a.attrelid, a.attnum`,
          [relids],
        );
        for (const a of attributes) {
          const list = fields.get(a.relid) ?? [];
          list.push({ name: a.name, type: a.type });
          fields.set(a.relid, list);
          next.add(a.type);
        }
      }
      wanted = [...next].filter((oid) => known(oid) === undefined && !rows.has(oid));
    }
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
      } else if (row.typtype === 'c')
        shape = { kind: 'composite', fields: (fields.get(row.typrelid) ?? []).map((f) => [f.name, resolve(f.type, depth + 1)] as const) };
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
