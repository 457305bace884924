/**
 * The shapes pgoutput messages decode to, and how a column's text value becomes a JS value.
 *
 * Values are typed by bridge/typing/values.ts, the one typing filter hooks, action hooks and the
 * services share.
 */
import { builtinShape, builtinShapeByName, fromText, TEXT, type TypeShape } from '../typing/values.js';

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
 * returns, so a transactional message written last in its transaction has the commit's LSN (unless it
 * ends at a WAL page boundary: the commit record then starts after the next page's header).
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

/**
 * The typing of a column whose type the decoder knows without the catalog: builtins by oid, and the
 * domains over builtins that pgoutput's Type message names by their base type. Other user-defined
 * types (composites, arrays of them, enums) are typed by a `parserFor` that asks the catalog
 * (bridge/typing/type-catalog.ts); without one they stay text.
 */
export function defaultParser(typeOid: number, userType: UserType | undefined): (text: string) => unknown {
  const shape = userType
    ? userType.schema === ''
      ? builtinShapeByName(userType.name)
      : userType.name.startsWith('_')
        ? TEXT_ARRAY
        : undefined
    : builtinShape(typeOid);
  if (!shape) return asText;
  // A value the typing cannot read arrives as its text: one odd value must never stop the stream.
  return (text) => {
    try {
      return fromText(shape, text);
    } catch {
      return text;
    }
  };
}

const asText = (text: string): string => text;
const TEXT_ARRAY: TypeShape = { kind: 'array', element: TEXT };
export { parseTextArray, type TextArray } from '../typing/text-array.js';
