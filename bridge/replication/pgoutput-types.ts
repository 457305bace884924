/**
 * The shapes pgoutput messages decode to, and how a column's text value becomes a JS value.
 *
 * Values are typed the way the `pg` driver types query results (its global type parsers), so a row
 * from replication and the same row from `SELECT *` look alike to a hook. Types the driver cannot
 * know (user-defined: enums, composites, oid ≥ 16384) stay text, except arrays of them, which at
 * least become arrays of text. Domains over builtin types parse like their base type, as in the driver.
 */
import pg from 'pg';

/** A decoded row: a null-prototype object, so column names like `__proto__` are plain keys. */
export type Row = Record<string, unknown>;

export interface ColumnInfo {
  name: string;
  typeOid: number;
  /** The type modifier (e.g. varchar length + 4); -1 when there is none. */
  typeMod: number;
  /** Part of the replica identity. Under REPLICA IDENTITY FULL pgoutput flags every column. */
  isKey: boolean;
  /**
   * Known for user-defined types only, unqualified, from pgoutput's Type message, which names a
   * domain by its base type (`int4` for a domain over int4).
   */
  typeName?: string;
  parse: (text: string) => unknown;
}

export interface RelationInfo {
  oid: number;
  schema: string;
  name: string;
  replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  columns: ColumnInfo[];
  keyColumns: string[];
}

/**
 * `finalLsn` (Begin) and `commitLsn` (Commit) are where the commit record starts, `endLsn` where it
 * ends. A message's `lsn` is where *its* record ends, which is also what pg_logical_emit_message
 * returns, so a transactional message written last in its transaction has the commit's LSN.
 */
export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: bigint; commitTime: Date; commitTimeMicros: bigint; xid: number }
  | { tag: 'commit'; flags: number; commitLsn: bigint; endLsn: bigint; commitTime: Date; commitTimeMicros: bigint }
  | { tag: 'origin'; originLsn: bigint; name: string }
  | { tag: 'relation'; relation: RelationInfo }
  | { tag: 'type'; oid: number; schema: string; name: string }
  | { tag: 'insert'; relation: RelationInfo; new: Row }
  | { tag: 'update'; relation: RelationInfo; key: Row | null; old: Row | null; new: Row; unchangedToast: string[] }
  | { tag: 'delete'; relation: RelationInfo; key: Row | null; old: Row | null }
  | { tag: 'truncate'; relations: RelationInfo[]; cascade: boolean; restartIdentity: boolean }
  | { tag: 'message'; transactional: boolean; lsn: bigint; prefix: string; content: Buffer };

/** What a `parserFor` override is asked about; `typeOid` and `typeName` are what usually matter. */
export interface ParserRequest {
  typeOid: number;
  typeName?: string;
  typeMod: number;
  /** The column, and the table it belongs to, for overrides that are per column rather than per type. */
  name: string;
  schema: string;
  table: string;
}

export type ParserFor = (column: ParserRequest) => ((text: string) => unknown) | undefined;

export interface UserType {
  schema: string;
  name: string;
}

// The first oid handed to objects created after initdb; below it, the driver's parsers apply.
const FIRST_NORMAL_OBJECT_ID = 16384;

const asText = (text: string): string => text;

const BUILTIN_OIDS = pg.types.builtins as Readonly<Record<string, number | undefined>>;

function driverParser(typeOid: number): (text: string) => unknown {
  return pg.types.getTypeParser(typeOid, 'text') as (text: string) => unknown;
}

/**
 * For a domain, pgoutput's Type message carries the domain's oid but its *base* type's name, with
 * an empty schema for pg_catalog. The driver sees a domain column as its base type (Postgres sends
 * the base type in a RowDescription), so a domain over a builtin gets the builtin's parser.
 */
function catalogParser(name: string): ((text: string) => unknown) | undefined {
  if (name.startsWith('_')) {
    const element = BUILTIN_OIDS[name.slice(1).toUpperCase()];
    if (element === undefined) return undefined;
    const parse = driverParser(element);
    return (text) => mapArray(parseTextArray(text), parse);
  }
  const oid = BUILTIN_OIDS[name.toUpperCase()];
  return oid === undefined ? undefined : driverParser(oid);
}

function mapArray(array: TextArray, parse: (text: string) => unknown): unknown[] {
  return array.map((item) => (item === null ? null : typeof item === 'string' ? parse(item) : mapArray(item, parse)));
}

export function defaultParser(typeOid: number, userType: UserType | undefined): (text: string) => unknown {
  if (userType) {
    const builtin = userType.schema === '' ? catalogParser(userType.name) : undefined;
    if (builtin) return builtin;
    // Array types are named after their element type with a leading underscore.
    return userType.name.startsWith('_') ? parseTextArray : asText;
  }
  if (typeOid >= FIRST_NORMAL_OBJECT_ID) return asText;
  return driverParser(typeOid);
}

export type TextArray = Array<string | null | TextArray>;

const OPEN = 0x7b; // {
const CLOSE = 0x7d; // }
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const SPACE = 0x20;

function isSpace(code: number): boolean {
  return code === SPACE || (code >= 0x09 && code <= 0x0d);
}

/**
 * An array literal as `array_out` prints it (`{a,"b c",NULL,{d}}`, optionally preceded by bounds
 * like `[0:1]=`), into nested arrays of strings with SQL NULL as `null`. Elements stay text: their
 * type is user-defined. Written here rather than borrowed from pg-types' dependency, which this
 * package does not declare.
 */
export function parseTextArray(text: string): TextArray {
  let i = 0;
  const n = text.length;
  if (text.charCodeAt(0) !== OPEN) {
    i = text.indexOf('{');
    if (i < 0) throw new SyntaxError(`not an array literal: ${JSON.stringify(text.slice(0, 60))}`);
  }
  const stack: TextArray[] = [];
  let root: TextArray | undefined;
  let current: TextArray | undefined;
  while (i < n) {
    const code = text.charCodeAt(i);
    if (code === OPEN) {
      const nested: TextArray = [];
      if (current) {
        current.push(nested);
        stack.push(current);
      } else {
        root = nested;
      }
      current = nested;
      i++;
    } else if (code === CLOSE) {
      current = stack.pop();
      i++;
      if (!current) break;
    } else if (code === COMMA || isSpace(code)) {
      i++;
    } else if (!current) {
      break;
    } else if (code === QUOTE) {
      let value = '';
      let start = ++i;
      while (i < n) {
        const c = text.charCodeAt(i);
        if (c === QUOTE) break;
        if (c === BACKSLASH) {
          value += text.slice(start, i);
          start = ++i;
        }
        i++;
      }
      current.push(value + text.slice(start, i));
      i++;
    } else {
      let value = '';
      let start = i;
      while (i < n) {
        const c = text.charCodeAt(i);
        if (c === COMMA || c === CLOSE) break;
        if (c === BACKSLASH) {
          value += text.slice(start, i);
          start = ++i;
        }
        i++;
      }
      value += text.slice(start, i);
      let end = value.length;
      while (end > 0 && isSpace(value.charCodeAt(end - 1))) end--;
      if (end !== value.length) value = value.slice(0, end);
      // Only an unquoted NULL is SQL NULL; "NULL" in quotes is the string.
      current.push(value.length === 4 && value.toUpperCase() === 'NULL' ? null : value);
    }
  }
  if (!root || current) throw new SyntaxError(`unbalanced array literal: ${JSON.stringify(text.slice(0, 60))}`);
  return root;
}
