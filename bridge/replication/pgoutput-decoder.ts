/**
 * Decodes pgoutput (protocol version 1, with `messages 'true'`) messages: the payload of one
 * XLogData message, after its 25-byte header, or one `data` value of
 * `pg_logical_slot_peek_binary_changes`.
 *
 * The decoder is stateful: changes name their table by oid only, so Relation (and Type) messages
 * are remembered. Postgres sends them before the first change of a table on every connection, and
 * again after a schema change; a decoder must therefore see a connection's stream from its start,
 * and a fresh decoder belongs to every new connection.
 */
import { HookbridgeError } from '../../hooks/errors.js';
import { BinaryReader } from './binary-reader.js';
import { defaultParser, type ColumnInfo, type ParserFor, type PgoutputMessage, type RelationInfo, type Row, type UserType } from './pgoutput-types.js';

export type { ColumnInfo, ParserFor, ParserRequest, PgoutputMessage, RelationInfo, Row, TextArray } from './pgoutput-types.js';
export { parseTextArray } from './pgoutput-types.js';

export class PgoutputDecoderError extends HookbridgeError {
  declare readonly code: 'E_PGOUTPUT';

  constructor(message: string, details?: Record<string, unknown>, cause?: unknown) {
    super('E_PGOUTPUT', message, { details, cause });
    this.name = 'PgoutputDecoderError';
  }
}

export interface PgoutputDecoderOptions {
  /** Chooses the parser of a column's text values; `undefined` falls back to the default. */
  parserFor?: ParserFor;
}

// Message tags.
const BEGIN = 0x42; // B
const COMMIT = 0x43; // C
const ORIGIN = 0x4f; // O
const RELATION = 0x52; // R
const TYPE = 0x59; // Y
const INSERT = 0x49; // I
const UPDATE = 0x55; // U
const DELETE = 0x44; // D
const TRUNCATE = 0x54; // T
const MESSAGE = 0x4d; // M
// Tuple submessages and column kinds.
const KEY = 0x4b; // K
const OLD = 0x4f; // O
const NEW = 0x4e; // N
const NULL_VALUE = 0x6e; // n
const UNCHANGED_TOAST = 0x75; // u
const TEXT_VALUE = 0x74; // t
const BINARY_VALUE = 0x62; // b

const STREAMING_TAGS = new Set(['S', 'E', 'c', 'A', 'b', 'P', 'K', 'r', 'p']);

const REPLICA_IDENTITY: Record<number, RelationInfo['replicaIdentity']> = {
  0x64: 'default', // d
  0x6e: 'nothing', // n
  0x66: 'full', // f
  0x69: 'index', // i
};

const TRUNCATE_CASCADE = 1;
const TRUNCATE_RESTART_IDENTITY = 2;
const MESSAGE_TRANSACTIONAL = 1;

// Postgres timestamps count microseconds from 2000-01-01 00:00 UTC.
const PG_EPOCH_MS = 946_684_800_000;

function timestampToDate(micros: bigint): Date {
  let ms = micros / 1000n;
  if (micros < 0n && ms * 1000n !== micros) ms -= 1n; // floor, not truncation, before the epoch
  return new Date(Number(ms) + PG_EPOCH_MS);
}

function tagName(tag: number | undefined): string {
  return tag === undefined ? '(none)' : `'${String.fromCharCode(tag)}' (0x${tag.toString(16).padStart(2, '0')})`;
}

type TupleMode = 'all' | 'key';

export class PgoutputDecoder {
  readonly #reader = new BinaryReader();
  readonly #relations = new Map<number, RelationInfo>();
  readonly #types = new Map<number, UserType>();
  readonly #parserFor: ParserFor | undefined;

  constructor(options: PgoutputDecoderOptions = {}) {
    this.#parserFor = options.parserFor;
  }

  /** The last Relation message seen for `oid`. */
  relation(oid: number): RelationInfo | undefined {
    return this.#relations.get(oid);
  }

  decode(payload: Buffer): PgoutputMessage {
    const reader = this.#reader;
    reader.reset(payload);
    const tag = payload[0];
    try {
      reader.offset = 1;
      const message = this.#decodeBody(tag);
      if (reader.remaining !== 0) {
        throw new PgoutputDecoderError(
          `pgoutput ${tagName(tag)} message has ${reader.remaining} unexpected trailing byte(s) (decoded ${reader.offset} of ${payload.length}); is the stream protocol version 1?`,
          { tag: tagName(tag), length: payload.length },
        );
      }
      return message;
    } catch (error) {
      if (error instanceof PgoutputDecoderError) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new PgoutputDecoderError(
        `cannot decode pgoutput ${tagName(tag)} message of ${payload.length} bytes: ${reason}`,
        { tag: tagName(tag), length: payload.length },
        error,
      );
    } finally {
      // Do not pin the caller's (possibly large, shared) receive buffer until the next message.
      reader.reset(EMPTY);
    }
  }

  #decodeBody(tag: number | undefined): PgoutputMessage {
    const reader = this.#reader;
    switch (tag) {
      case INSERT: {
        const relation = this.#relationFor(reader.uint32(), 'insert');
        this.#expect(NEW, 'insert');
        return { tag: 'insert', relation, new: this.#tuple(relation, 'all', null, null) };
      }
      case UPDATE:
        return this.#update();
      case DELETE:
        return this.#delete();
      case BEGIN: {
        const finalLsn = reader.uint64();
        const commitTimeMicros = reader.int64();
        const xid = reader.uint32();
        return { tag: 'begin', finalLsn, commitTime: timestampToDate(commitTimeMicros), commitTimeMicros, xid };
      }
      case COMMIT: {
        const flags = reader.uint8();
        const commitLsn = reader.uint64();
        const endLsn = reader.uint64();
        const commitTimeMicros = reader.int64();
        return { tag: 'commit', flags, commitLsn, endLsn, commitTime: timestampToDate(commitTimeMicros), commitTimeMicros };
      }
      case RELATION:
        return { tag: 'relation', relation: this.#relation() };
      case TYPE: {
        const oid = reader.uint32();
        const schema = reader.cstring('the type schema');
        const name = reader.cstring('the type name');
        this.#types.set(oid, { schema, name });
        return { tag: 'type', oid, schema, name };
      }
      case TRUNCATE: {
        const count = reader.uint32();
        const options = reader.uint8();
        const relations: RelationInfo[] = [];
        for (let i = 0; i < count; i++) relations.push(this.#relationFor(reader.uint32(), 'truncate'));
        return {
          tag: 'truncate',
          relations,
          cascade: (options & TRUNCATE_CASCADE) !== 0,
          restartIdentity: (options & TRUNCATE_RESTART_IDENTITY) !== 0,
        };
      }
      case MESSAGE: {
        const flags = reader.uint8();
        const lsn = reader.uint64();
        const prefix = reader.cstring('the message prefix');
        const content = reader.bytes(reader.int32(), 'the message content');
        return { tag: 'message', transactional: (flags & MESSAGE_TRANSACTIONAL) !== 0, lsn, prefix, content };
      }
      case ORIGIN: {
        const originLsn = reader.uint64();
        return { tag: 'origin', originLsn, name: reader.cstring('the origin name') };
      }
      default:
        throw this.#unknownTag(tag);
    }
  }

  #unknownTag(tag: number | undefined): PgoutputDecoderError {
    if (tag === undefined) return new PgoutputDecoderError('empty pgoutput message', { tag: null });
    const letter = String.fromCharCode(tag);
    const hint = STREAMING_TAGS.has(letter) ? ': a streaming or two-phase message of protocol version 2 or later, which this decoder does not request' : '';
    return new PgoutputDecoderError(`unknown pgoutput message type ${tagName(tag)}${hint}`, { tag: letter });
  }

  #expect(byte: number, what: string): void {
    const actual = this.#reader.uint8();
    if (actual !== byte) {
      throw new PgoutputDecoderError(`pgoutput ${what}: expected ${tagName(byte)}, got ${tagName(actual)} at byte ${this.#reader.offset - 1}`);
    }
  }

  #relationFor(oid: number, what: string): RelationInfo {
    const relation = this.#relations.get(oid);
    if (!relation) {
      throw new PgoutputDecoderError(
        `pgoutput sent a ${what} for relation oid ${oid}, but no Relation message for oid ${oid} came before it (the decoder must see the stream of a connection from its start)`,
        { oid },
      );
    }
    return relation;
  }

  #relation(): RelationInfo {
    const reader = this.#reader;
    const oid = reader.uint32();
    const schema = reader.cstring('the relation schema');
    const name = reader.cstring('the relation name');
    const identityByte = reader.uint8();
    const replicaIdentity = REPLICA_IDENTITY[identityByte];
    if (!replicaIdentity) {
      throw new PgoutputDecoderError(`relation ${schema}.${name} (oid ${oid}) has unknown replica identity ${tagName(identityByte)}`, { oid });
    }
    const count = reader.uint16();
    const columns: ColumnInfo[] = [];
    const keyColumns: string[] = [];
    for (let i = 0; i < count; i++) {
      const flags = reader.uint8();
      const columnName = reader.cstring('a column name');
      const typeOid = reader.uint32();
      const typeMod = reader.int32();
      const isKey = (flags & 1) !== 0;
      const userType = this.#types.get(typeOid);
      const parse =
        this.#parserFor?.({ typeOid, typeName: userType?.name, typeMod, name: columnName, schema, table: name }) ?? defaultParser(typeOid, userType);
      const column: ColumnInfo = userType
        ? { name: columnName, typeOid, typeMod, isKey, typeName: userType.name, parse }
        : { name: columnName, typeOid, typeMod, isKey, parse };
      columns.push(column);
      if (isKey) keyColumns.push(columnName);
    }
    const relation: RelationInfo = { oid, schema, name, replicaIdentity, columns, keyColumns };
    this.#relations.set(oid, relation);
    return relation;
  }

  #update(): PgoutputMessage {
    const reader = this.#reader;
    const relation = this.#relationFor(reader.uint32(), 'update');
    let kind = reader.uint8();
    let key: Row | null = null;
    let old: Row | null = null;
    if (kind === KEY) {
      key = this.#tuple(relation, 'key', null, null);
      kind = reader.uint8();
    } else if (kind === OLD) {
      old = this.#tuple(relation, 'all', null, null);
      key = keyFrom(relation, old);
      kind = reader.uint8();
    }
    if (kind !== NEW) {
      throw new PgoutputDecoderError(`pgoutput update of ${relation.schema}.${relation.name}: expected 'K', 'O' or 'N', got ${tagName(kind)}`, {
        oid: relation.oid,
      });
    }
    const unchangedToast: string[] = [];
    const row = this.#tuple(relation, 'all', unchangedToast, old);
    return { tag: 'update', relation, key, old, new: row, unchangedToast };
  }

  #delete(): PgoutputMessage {
    const reader = this.#reader;
    const relation = this.#relationFor(reader.uint32(), 'delete');
    const kind = reader.uint8();
    if (kind === KEY) return { tag: 'delete', relation, key: this.#tuple(relation, 'key', null, null), old: null };
    if (kind === OLD) {
      const old = this.#tuple(relation, 'all', null, null);
      return { tag: 'delete', relation, key: keyFrom(relation, old), old };
    }
    throw new PgoutputDecoderError(`pgoutput delete of ${relation.schema}.${relation.name}: expected 'K' or 'O', got ${tagName(kind)}`, {
      oid: relation.oid,
    });
  }

  /**
   * One TupleData. `key` mode keeps only key columns (pgoutput sends the rest of a 'K' tuple as
   * NULL placeholders). Unchanged TOASTed values are left out of the row: taken from `old` when it
   * has them, else listed in `unchangedToast`.
   */
  #tuple(relation: RelationInfo, mode: TupleMode, unchangedToast: string[] | null, old: Row | null): Row {
    const reader = this.#reader;
    const buffer = reader.buffer;
    const columns = relation.columns;
    const count = reader.uint16();
    if (count !== columns.length) {
      throw new PgoutputDecoderError(
        `pgoutput sent ${count} column(s) for ${relation.schema}.${relation.name} (oid ${relation.oid}), its Relation message announced ${columns.length}`,
        { oid: relation.oid },
      );
    }
    const keyOnly = mode === 'key';
    const row = Object.create(null) as Row;
    let offset = reader.offset;
    let i = 0;
    try {
      for (; i < count; i++) {
        const column = columns[i] as ColumnInfo;
        const kind = buffer[offset++];
        if (kind === TEXT_VALUE) {
          const length = buffer.readInt32BE(offset);
          const start = offset + 4;
          offset = start + length;
          if (length < 0 || offset > buffer.length) throw new RangeError(`a value of ${length} bytes at byte ${start} passes the end (${buffer.length})`);
          if (keyOnly && !column.isKey) continue;
          row[column.name] = column.parse(buffer.toString('utf8', start, offset));
        } else if (kind === NULL_VALUE) {
          if (keyOnly && !column.isKey) continue;
          row[column.name] = null;
        } else if (kind === UNCHANGED_TOAST) {
          // Shared with the old row, not copied: the usual TOASTed value is an immutable string.
          if (old !== null && column.name in old) row[column.name] = old[column.name];
          else if (unchangedToast !== null) unchangedToast.push(column.name);
        } else if (kind === BINARY_VALUE) {
          reader.offset = offset;
          const value = reader.bytes(reader.int32(), 'a binary value');
          offset = reader.offset;
          if (keyOnly && !column.isKey) continue;
          row[column.name] = value;
        } else {
          throw new RangeError(kind === undefined ? 'the tuple ends early' : `unknown column kind ${tagName(kind)} at byte ${offset - 1}`);
        }
      }
    } catch (error) {
      const column = columns[i];
      const reason = error instanceof Error ? error.message : String(error);
      throw new PgoutputDecoderError(
        `cannot decode column ${JSON.stringify(column?.name)} (type oid ${column?.typeOid}) of ${relation.schema}.${relation.name}: ${reason}`,
        { oid: relation.oid, column: column?.name },
        error,
      );
    }
    reader.offset = offset;
    return row;
  }
}

const EMPTY = Buffer.alloc(0);

function keyFrom(relation: RelationInfo, row: Row): Row | null {
  if (relation.keyColumns.length === 0) return null;
  const key = Object.create(null) as Row;
  for (const name of relation.keyColumns) if (name in row) key[name] = row[name];
  return key;
}
