/**
 * `hookbridge types`: the user's tables as a TypeScript declaration file, so that hooks are typed
 * from them (hooks/event-types.ts). The file augments three interfaces of the package:
 *
 *   Collections             rows as hooks receive them: the one lossless typing (bridge/typing)
 *   CollectionPrimaryKeys   each table's key columns, which type `key` and `keys`
 *   Database                rows as `context.kysely` reads them: the `pg` driver's own typing
 *
 * Types are read from the catalog, resolved the way TypeCatalog resolves them for the runtime
 * (domains as their base, arrays of their element, composites of their fields), with two
 * refinements a value's text cannot carry but its type can: enums become unions of their labels, and
 * a column declared with several array dimensions nests that deep.
 */
import type pg from 'pg';
import { collectionOf } from './replication/change-events.js';
import { readTypeTree, type CatalogType } from './typing/type-catalog.js';
import { builtinShape, type ScalarKind, type TypeShape } from './typing/values.js';

/** A TypeScript type, before rendering: what tests check values against. */
export type TsType =
  | { kind: 'number' | 'string' | 'boolean' | 'json' | 'buffer' | 'date' | 'interval' }
  | { kind: 'literals'; values: string[] }
  /** Elements may be null. */
  | { kind: 'array'; element: TsType }
  | { kind: 'object'; fields: Array<{ name: string; type: TsType; nullable: boolean }> };

export interface DeclaredColumn {
  name: string;
  /** As hooks receive it (payloads, keys). */
  hook: TsType;
  /** As the `pg` driver (hooks' `database` and `kysely`) reads it. */
  driver: TsType;
  nullable: boolean;
  /** Has a default or is an identity `BY DEFAULT`: may be left out of an insert. */
  hasDefault: boolean;
  /** An identity `ALWAYS` or a generated column: not written by inserts and updates. */
  generatedAlways: boolean;
  /** A generated column: computed by Postgres, absent from filter payloads (and, before 18, from actions). */
  generated: boolean;
}

export interface DeclaredTable {
  collection: string;
  columns: DeclaredColumn[];
  /**
   * The columns of the key its events carry, in key order; `[]`: events carry a `null` key. `null`:
   * the key is not the same on both paths (a replica identity other than the primary key), so unknown.
   */
  key: string[] | null;
}

/** Nested deeper than this, composites stay text, as in TypeCatalog. */
const MAX_DEPTH = 32;

/**
 * Reads every table the bridge watches: all schemas but `pg_*`, `information_schema` and those in
 * `exclude` (hookbridge's own), as SchemaReader does. Partitions are left out: their rows reach hooks
 * under their partitioned table's name.
 */
export async function readDeclaredTables(pool: pg.Pool, exclude: readonly string[]): Promise<DeclaredTable[]> {
  const { rows: columns } = await pool.query<{
    relid: number;
    schema: string;
    table: string;
    replident: string;
    column: string;
    type: number;
    dims: number;
    notnull: boolean;
    hasdef: boolean;
    identity: string;
    generated: string;
    pk_position: number | null;
  }>(
    `select c.oid::int4 as relid, n.nspname::text as schema, c.relname::text as table, c.relreplident::text as replident,
            a.attname::text as column, a.atttypid::int4 as type, a.attndims::int4 as dims, a.attnotnull as notnull,
            a.atthasdef as hasdef, a.attidentity::text as identity, a.attgenerated::text as generated,
            array_position(i.indkey::int2[], a.attnum) as pk_position
       from pg_catalog.pg_class c
       join pg_catalog.pg_namespace n on n.oid = c.relnamespace
       join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
       left join pg_catalog.pg_index i on i.indrelid = c.oid and i.indisprimary
      where c.relkind in ('r', 'p') and not c.relispartition
        and n.nspname !~ '^pg_' and n.nspname <> 'information_schema' and n.nspname <> all ($1::text[])
      order by n.nspname, c.relname, a.attnum`,
    [exclude],
  );
  const types = await readTypeTree(
    pool,
    columns.map((c) => c.type),
  );
  const tables = new Map<number, DeclaredTable & { primaryKey: Array<[number, string]>; replident: string }>();
  for (const row of columns) {
    let table = tables.get(row.relid);
    if (!table) {
      table = { collection: collectionOf({ schema: row.schema, name: row.table }), columns: [], key: [], primaryKey: [], replident: row.replident };
      tables.set(row.relid, table);
    }
    const generated = row.generated !== '';
    table.columns.push({
      name: row.column,
      hook: withDimensions(hookType(types, row.type, 0), row.dims),
      driver: withDimensions(driverType(types, row.type), row.dims),
      nullable: !row.notnull,
      hasDefault: row.hasdef || row.identity === 'd',
      generatedAlways: generated || row.identity === 'a',
      generated,
    });
    if (row.pk_position !== null) table.primaryKey.push([row.pk_position, row.column]);
  }
  return [...tables.values()]
    .map(({ collection, columns, primaryKey, replident }) => ({ collection, columns, key: keyColumns(primaryKey, replident) }))
    .sort((a, b) => (a.collection < b.collection ? -1 : a.collection > b.collection ? 1 : 0));
}

/**
 * Filters key rows by the primary key (null without one); actions by the replica identity
 * (change-events.ts): the primary key by default, and with FULL when there is one (else the whole old
 * row); an index's columns with USING INDEX; none with NOTHING. Declared only where both agree.
 */
function keyColumns(primaryKey: Array<[number, string]>, replident: string): string[] | null {
  const columns = primaryKey.sort((a, b) => a[0] - b[0]).map(([, name]) => name);
  if (replident === 'd') return columns;
  if (replident === 'f' && columns.length > 0) return columns;
  return null;
}

type Types = Map<number, CatalogType>;

const SCALARS: Record<ScalarKind, TsType> = {
  number: { kind: 'number' },
  exact: { kind: 'string' },
  bool: { kind: 'boolean' },
  json: { kind: 'json' },
  bytea: { kind: 'buffer' },
  date: { kind: 'string' },
  timestamp: { kind: 'string' },
  timestamptz: { kind: 'string' },
  time: { kind: 'string' },
  timetz: { kind: 'string' },
  text: { kind: 'string' },
};

/** The lossless typing (bridge/typing/values.ts) of a TypeShape. */
export function shapeType(shape: TypeShape): TsType {
  if (shape.kind === 'array') return { kind: 'array', element: shapeType(shape.element) };
  if (shape.kind === 'composite') return { kind: 'object', fields: shape.fields.map(([name, field]) => ({ name, type: shapeType(field), nullable: true })) };
  return SCALARS[shape.kind];
}

/** What hooks receive for a value of this type (TypeCatalog.load's resolution, enums refined). */
function hookType(types: Types, oid: number, depth: number, resolving = new Set<number>()): TsType {
  const builtin = builtinShape(oid);
  if (builtin) return shapeType(builtin);
  const row = types.get(oid);
  if (!row || resolving.has(oid) || depth > MAX_DEPTH) return { kind: 'string' };
  resolving.add(oid);
  try {
    if (row.typtype === 'd') return hookType(types, row.typbasetype, depth + 1, resolving);
    if (row.is_array && row.typelem !== 0) return { kind: 'array', element: hookType(types, row.typelem, depth + 1, resolving) };
    if (row.typtype === 'c') {
      return { kind: 'object', fields: row.fields.map((f) => ({ name: f.name, type: hookType(types, f.type, depth + 1, resolving), nullable: true })) };
    }
    if (row.typtype === 'e' && row.enum_labels?.length) return { kind: 'literals', values: row.enum_labels };
    return { kind: 'string' };
  } finally {
    resolving.delete(oid);
  }
}

/** `int4[][]` as declared (attndims; Postgres does not enforce it, a declaration is the best there is). */
function withDimensions(type: TsType, dims: number): TsType {
  let nested = type;
  for (let i = 1; i < dims && nested.kind === 'array'; i++) nested = { kind: 'array', element: nested };
  return nested;
}

const STRING: TsType = { kind: 'string' };
const NUMBER: TsType = { kind: 'number' };
const DATE: TsType = { kind: 'date' };
const POINT: TsType = {
  kind: 'object',
  fields: [
    { name: 'x', type: NUMBER, nullable: false },
    { name: 'y', type: NUMBER, nullable: false },
  ],
};
const array = (element: TsType): TsType => ({ kind: 'array', element });

/**
 * The `pg` driver's default text parsers (pg-types), by type oid; every other type arrives as its
 * text. A contract test (test/unit/hook-types.test.ts) holds this list to the installed pg-types.
 */
export const DRIVER_TYPES: ReadonlyMap<number, TsType> = new Map<number, TsType>([
  [16, { kind: 'boolean' }],
  [17, { kind: 'buffer' }],
  [20, STRING], // int8: digits kept as a string
  [21, NUMBER],
  [23, NUMBER],
  [26, NUMBER],
  [114, { kind: 'json' }],
  [3802, { kind: 'json' }],
  [600, POINT],
  [
    718,
    {
      kind: 'object',
      fields: [
        { name: 'x', type: NUMBER, nullable: false },
        { name: 'y', type: NUMBER, nullable: false },
        { name: 'radius', type: NUMBER, nullable: false },
      ],
    },
  ],
  [700, NUMBER],
  [701, NUMBER],
  [1082, DATE],
  [1114, DATE],
  [1184, DATE],
  [1186, { kind: 'interval' }],
  [1000, array({ kind: 'boolean' })],
  [1001, array({ kind: 'buffer' })],
  [1005, array(NUMBER)],
  [1007, array(NUMBER)],
  [1028, array(NUMBER)],
  [1016, array(STRING)],
  [1017, array(POINT)],
  [1021, array(NUMBER)],
  [1022, array(NUMBER)],
  [1231, array(NUMBER)], // numeric[]: pg-types parses its elements as floats
  [1014, array(STRING)],
  [1015, array(STRING)],
  [1008, array(STRING)],
  [1009, array(STRING)],
  [1040, array(STRING)],
  [1041, array(STRING)],
  [651, array(STRING)],
  [3907, array(STRING)],
  [2951, array(STRING)],
  [791, array(STRING)],
  [1183, array(STRING)],
  [1270, array(STRING)],
  [1115, array(DATE)],
  [1182, array(DATE)],
  [1185, array(DATE)],
  [1187, array({ kind: 'interval' })],
  [199, array({ kind: 'json' })],
  [3807, array({ kind: 'json' })],
]);

/**
 * What the driver reads: Postgres describes a domain's column by its base type, and the driver parses
 * by that oid (an enum arrives as its label).
 */
function driverType(types: Types, oid: number): TsType {
  let base = oid;
  for (let row = types.get(base); row?.typtype === 'd'; row = types.get(base)) base = row.typbasetype;
  const labels = types.get(base)?.enum_labels;
  if (labels?.length) return { kind: 'literals', values: labels };
  return DRIVER_TYPES.get(base) ?? STRING;
}

// ---------------------------------------------------------------------------------------------------
// Rendering

/** A property name as TypeScript reads it: bare when it is an identifier, else a quoted string. */
export function propertyName(name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : JSON.stringify(name);
}

export function renderType(type: TsType, nullable = false): string {
  const text = renderBare(type);
  return nullable ? `${text} | null` : text;
}

function renderBare(type: TsType): string {
  switch (type.kind) {
    case 'number':
    case 'string':
    case 'boolean':
      return type.kind;
    case 'json':
      return 'JsonValue';
    case 'buffer':
      return 'Buffer';
    case 'date':
      return 'Date';
    case 'interval':
      return 'PgInterval';
    case 'literals':
      return type.values.map((value) => JSON.stringify(value)).join(' | ');
    case 'array':
      // Elements may be null; the inner arrays of a multidimensional array may not.
      return type.element.kind === 'array' ? `${renderBare(type.element)}[]` : `(${renderType(type.element, true)})[]`;
    case 'object':
      return `{ ${type.fields.map((f) => `${propertyName(f.name)}: ${renderType(f.type, f.nullable)};`).join(' ')} }`;
  }
}

export interface RenderOptions {
  /** Said in the header: what the file was generated from (never a connection string). */
  source?: string;
}

/** The declaration file. Deterministic: the same tables give the same text. */
export function renderDeclarations(tables: readonly DeclaredTable[], options: RenderOptions = {}): string {
  const lines = [
    '// Generated by `hookbridge types`: your tables, as hook handlers receive them. Do not edit;',
    '// run `npx hookbridge types` again after a schema change.',
    ...(options.source ? [`// Source: ${options.source.replace(/[\r\n\u2028\u2029]+/g, ' ')}`] : []),
    "import type { ColumnType, JsonValue, PgInterval } from 'hookbridge';",
    '',
    "declare module 'hookbridge' {",
    '  interface Collections {',
  ];
  for (const table of tables) {
    lines.push(`    ${propertyName(table.collection)}: {`);
    for (const column of table.columns) {
      // Generated columns are computed after BEFORE triggers and not published before PostgreSQL 18.
      lines.push(`      ${propertyName(column.name)}${column.generated ? '?' : ''}: ${renderType(column.hook, column.nullable)};`);
    }
    lines.push('    };');
  }
  lines.push('  }', '', '  interface CollectionPrimaryKeys {');
  for (const table of tables) {
    if (table.key) lines.push(`    ${propertyName(table.collection)}: [${table.key.map((c) => JSON.stringify(c)).join(', ')}];`);
  }
  lines.push('  }', '', '  interface Database {');
  for (const table of tables) {
    lines.push(`    ${propertyName(table.collection)}: {`);
    for (const column of table.columns) lines.push(`      ${propertyName(column.name)}: ${renderDriverColumn(column)};`);
    lines.push('    };');
  }
  lines.push('  }', '}', '');
  return lines.join('\n');
}

/** kysely's ColumnType<select, insert, update>: what a query returns, and what it may write. */
function renderDriverColumn(column: DeclaredColumn): string {
  const select = renderType(column.driver, column.nullable);
  if (column.generatedAlways) return `ColumnType<${select}, never, never>`;
  // The driver writes a Date as its timestamp, and Postgres reads the text of any value.
  const write = column.driver.kind === 'date' ? `Date | string${column.nullable ? ' | null' : ''}` : select;
  if (!column.hasDefault && write === select) return select;
  return `ColumnType<${select}, ${write}${column.hasDefault ? ' | undefined' : ''}, ${write}>`;
}

/** The declaration file for the tables of the database `pool` connects to. */
export async function generateDeclarations(pool: pg.Pool, exclude: readonly string[]): Promise<{ text: string; collections: string[] }> {
  const tables = await readDeclaredTables(pool, exclude);
  const { rows } = await pool.query<{ name: string }>('select pg_catalog.current_database()::text as name');
  const text = renderDeclarations(tables, { source: `database ${JSON.stringify(rows[0]?.name ?? '')}` });
  return { text, collections: tables.map((t) => t.collection) };
}
