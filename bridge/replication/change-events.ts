/**
 * From decoded pgoutput messages to the events action hooks receive.
 *
 * The assembler follows the transaction framing (Begin … Commit) and numbers the changes of each
 * transaction (each table of a TRUNCATE counts as one), which gives every event a stable id:
 * `<commit LSN>:<n>`. Postgres re-sends a transaction identically after a restart, so a handler can
 * de-duplicate on that id.
 */
import type { Accountability } from '../../hooks/types.js';
import { unverifiedAccountability } from './accountability.js';
import { formatLsn } from './lsn.js';
import type { PgoutputMessage, RelationInfo, Row } from './pgoutput-decoder.js';

export const ACCOUNTABILITY_PREFIX = 'hookbridge.accountability';
export const HEARTBEAT_PREFIX = 'hookbridge.heartbeat';
/** Emitted (transactionally) by catch_up_rows() for each row a new table held when it joined the publication (catch-up.ts). */
export const CATCH_UP_PREFIX = 'hookbridge.catchup';
/** Emitted (non-transactionally) by a filter trigger that let a row through unfiltered in open mode. */
export const UNFILTERED_PREFIX = 'hookbridge.unfiltered';

export interface TransactionInfo {
  xid: number;
  commitLsn: bigint;
  /** `commitLsn` as Postgres prints it (computed once: every event id starts with it). */
  lsn: string;
  commitTime: Date;
}

export interface ChangeEvent {
  /** Stable across redeliveries: `<commit LSN>:<position in the transaction>`. */
  id: string;
  action: 'create' | 'update' | 'delete';
  collection: string;
  table: { schema: string; name: string };
  /** The primary key (replica identity) value; an object for composite keys; null without one. */
  key: unknown;
  /** The key before an update that changed it. */
  previousKey?: unknown;
  /** create/update: the new row (unchanged TOASTed columns absent); delete: the old row if known. */
  row: Row;
  /** The old row, when the table has REPLICA IDENTITY FULL. */
  previous: Row | null;
  /** Columns whose TOASTed values did not change and were not sent. */
  unchangedToast: string[];
  /** Per-key ordering: events sharing one of these strings are handled one after another. */
  orderKeys: string[];
  transaction: TransactionInfo;
  /** Never null from the assembler: an unverified identity when no signed one for its table came before the change. */
  accountability: Accountability | null;
  /** A row the table held when it joined the publication (catch-up.ts), not an insert seen in the WAL. */
  catchUp?: true;
}

export interface TruncateEvent {
  /**
   * The truncated tables in the order pgoutput listed them, each with an id of its own: one TRUNCATE
   * of several tables is one message, but each table's event is one change to de-duplicate on.
   */
  tables: Array<{ collection: string; id: string }>;
  cascade: boolean;
  restartIdentity: boolean;
  transaction: TransactionInfo;
  accountability: Accountability | null;
}

export type StreamEvent =
  | { kind: 'begin'; transaction: TransactionInfo }
  | { kind: 'change'; change: ChangeEvent }
  | { kind: 'truncate'; truncate: TruncateEvent }
  | { kind: 'commit'; transaction: TransactionInfo; endLsn: bigint }
  /** A position with nothing before it left to handle (a heartbeat): safe to confirm once reached. */
  | { kind: 'marker'; lsn: bigint };

export function collectionOf(relation: Pick<RelationInfo, 'schema' | 'name'>): string {
  return relation.schema === 'public' ? relation.name : `${relation.schema}.${relation.name}`;
}

export function keyOf(keyColumns: readonly string[], row: Row | null): unknown {
  if (!row || keyColumns.length === 0) return null;
  if (keyColumns.length === 1) {
    const value = row[keyColumns[0] as string];
    return value === undefined ? null : value;
  }
  const key: Record<string, unknown> = {};
  for (const column of keyColumns) key[column] = row[column];
  return key;
}

function orderKey(collection: string, key: unknown): string {
  // Strings and numbers (nearly every primary key) skip JSON; the type letter keeps 1 and '1' apart.
  if (typeof key === 'string') return `${collection}\u0000s${key}`;
  if (typeof key === 'number') return `${collection}\u0000n${key}`;
  return `${collection}\u0000j${stableJson(key)}`;
}

function stableJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : Buffer.isBuffer(v) ? v.toString('hex') : v)) ?? 'null';
}

/**
 * What a signed `hookbridge.accountability` message says (accountability.ts, parseIdentityMessage):
 * the writer, and the published table whose changes it covers (undefined: every table, for documents
 * signed before migration 000010).
 */
export interface StatementIdentity {
  relid: number | undefined;
  accountability: Accountability;
}

export class TransactionAssembler {
  #transaction: TransactionInfo | undefined;
  #seq = 0;
  /** By published table (oid): the signed identity of the last statement on it in this transaction. */
  #identities = new Map<number, Accountability>();
  /** The last signed identity in this transaction that names no table (signed before migration 000010). */
  #legacy: Accountability | undefined;
  /** The last message believed, and what it said: every statement emits one, most repeat it. */
  #signedContent: Buffer | undefined;
  #signed: StatementIdentity | undefined;
  /** Made once per transaction, like a signed identity: changes of one transaction share it. */
  #unverified: Accountability | undefined;

  /**
   * @param readAccountability the identity in a `hookbridge.accountability` message, and the table it
   *   covers, if the database signed it in the transaction `xid` (pgoutput's Begin xid), else undefined.
   * @param primaryKeyOf the table's primary key columns from the catalog. Needed because under
   *   REPLICA IDENTITY FULL pgoutput flags every column as a key column.
   */
  constructor(
    private readonly readAccountability: (content: Buffer, xid: number) => StatementIdentity | undefined,
    private readonly primaryKeyOf: (relation: RelationInfo) => readonly string[] | undefined = () => undefined,
    private readonly onUnfiltered: (content: Buffer) => void = () => undefined,
    /** The row in a `hookbridge.catchup` message if the database signed it in transaction `xid` (catch-up.ts). */
    private readonly readCatchUp: (content: Buffer, xid: number) => { relation: RelationInfo; row: Row } | undefined = () => undefined,
  ) {}

  #keyColumns(relation: RelationInfo): readonly string[] {
    if (relation.replicaIdentity !== 'full') return relation.keyColumns;
    const primaryKey = this.primaryKeyOf(relation);
    return primaryKey && primaryKey.length > 0 ? primaryKey : relation.keyColumns;
  }

  /** Returns the event for one message, or undefined for bookkeeping messages. */
  next(message: PgoutputMessage, walLsn: bigint): StreamEvent | undefined {
    switch (message.tag) {
      case 'begin':
        this.#transaction = { xid: message.xid, commitLsn: message.finalLsn, lsn: formatLsn(message.finalLsn), commitTime: message.commitTime };
        this.#seq = 0;
        this.#identities.clear();
        this.#legacy = undefined;
        this.#signedContent = undefined;
        this.#signed = undefined;
        this.#unverified = undefined;
        return { kind: 'begin', transaction: this.#transaction };
      case 'commit': {
        const transaction = this.#require('commit');
        this.#transaction = undefined;
        return { kind: 'commit', transaction, endLsn: message.endLsn };
      }
      case 'message':
        if (message.transactional) {
          if (message.prefix === ACCOUNTABILITY_PREFIX) this.#identify(message.content);
          if (message.prefix === CATCH_UP_PREFIX) return this.#catchUp(message.content);
          return undefined;
        }
        if (message.prefix === UNFILTERED_PREFIX) this.onUnfiltered(message.content);
        return message.prefix === HEARTBEAT_PREFIX ? { kind: 'marker', lsn: walLsn } : undefined;
      case 'insert':
        return this.#change('create', message.relation, message.new, null, null, []);
      case 'update': {
        const change = this.#change('update', message.relation, message.new, message.old, message.key ?? message.old, message.unchangedToast);
        return change;
      }
      case 'delete': {
        const old = message.old ?? message.key ?? Object.create(null);
        return this.#change('delete', message.relation, old, message.old, old, []);
      }
      case 'truncate': {
        const transaction = this.#require('truncate');
        return {
          kind: 'truncate',
          truncate: {
            // A position per table, numbered like rows: unique within the transaction, and the same
            // on every redelivery (Postgres re-sends the message with the same relations in the same order).
            tables: message.relations.map((relation) => ({ collection: collectionOf(relation), id: `${transaction.lsn}:${this.#seq++}` })),
            cascade: message.cascade,
            restartIdentity: message.restartIdentity,
            transaction,
            accountability: this.#truncatedBy(message.relations),
          },
        };
      }
      default:
        return undefined;
    }
  }

  #change(
    action: ChangeEvent['action'],
    relation: RelationInfo,
    row: Row,
    previous: Row | null,
    oldKeySource: Row | null,
    unchangedToast: string[],
  ): StreamEvent {
    const transaction = this.#require(action);
    const collection = collectionOf(relation);
    const keyColumns = this.#keyColumns(relation);
    const key = keyOf(keyColumns, row);
    const change: ChangeEvent = {
      id: `${transaction.lsn}:${this.#seq++}`,
      action,
      collection,
      table: { schema: relation.schema, name: relation.name },
      key,
      row,
      previous,
      unchangedToast,
      orderKeys: [orderKey(collection, key)],
      transaction,
      accountability: this.#current(relation),
    };
    if (action === 'update' && oldKeySource) {
      const oldKey = keyOf(keyColumns, oldKeySource);
      if (oldKey !== null && stableJson(oldKey) !== stableJson(key)) {
        change.previousKey = oldKey;
        change.orderKeys.push(orderKey(collection, oldKey));
      }
    }
    return { kind: 'change', change };
  }

  /** A row a new table held when it joined the publication: delivered as an insert, marked. */
  #catchUp(content: Buffer): StreamEvent | undefined {
    const found = this.readCatchUp(content, this.#require('catch-up').xid);
    if (!found) return undefined;
    const event = this.#change('create', found.relation, found.row, null, null, []);
    if (event.kind === 'change') event.change.catchUp = true;
    return event;
  }

  /**
   * Every statement on a published table (or a partition of it) emits its writer's identity, bound to
   * that table, before its rows; most messages repeat the last one and cost a comparison. Anyone may
   * emit a message with this prefix, at any point of any transaction: one that is not signed for this
   * transaction changes nothing, so it can neither erase the writer's identity nor replace it.
   */
  #identify(content: Buffer): void {
    if (!this.#transaction) return;
    let signed = this.#signedContent?.equals(content) ? this.#signed : undefined;
    if (!signed) {
      signed = this.readAccountability(content, this.#transaction.xid);
      if (!signed) return;
      // A copy: the content may be a view into a larger buffer of the stream.
      this.#signedContent = Buffer.from(content);
      this.#signed = signed;
    }
    if (signed.relid === undefined) this.#legacy = signed.accountability;
    else this.#identities.set(signed.relid, signed.accountability);
  }

  /**
   * The identity of the last statement on the change's table, never another table's: a statement
   * whose trigger did not fire (disabled by the table's owner, `session_replication_role = replica`)
   * does not inherit the writer of an earlier statement on another table, nor, through it, its role.
   */
  #current(relation: Pick<RelationInfo, 'oid'>): Accountability {
    return this.#identities.get(relation.oid) ?? this.#legacy ?? (this.#unverified ??= unverifiedAccountability());
  }

  /** One TRUNCATE is one statement: its writer when every table it names agrees on one, else unknown. */
  #truncatedBy(relations: ReadonlyArray<Pick<RelationInfo, 'oid'>>): Accountability {
    const [first, ...rest] = relations.map((relation) => this.#current(relation));
    const unverified = (this.#unverified ??= unverifiedAccountability());
    if (!first) return unverified;
    const same = JSON.stringify(first);
    return rest.every((other) => other === first || JSON.stringify(other) === same) ? first : unverified;
  }

  #require(what: string): TransactionInfo {
    if (!this.#transaction) throw new Error(`pgoutput sent a ${what} outside a transaction`);
    return this.#transaction;
  }
}

/** The meta an action handler receives (Directus 10 shapes, plus hookbridge's delivery fields). */
export function actionMeta(change: ChangeEvent): Record<string, unknown> {
  // Built field by field: this runs once per change, and object spreads were a visible cost.
  const meta: Record<string, unknown> = {
    collection: change.collection,
    id: change.id,
    lsn: change.transaction.lsn,
    xid: change.transaction.xid,
    committedAt: change.transaction.commitTime,
  };
  if (change.action === 'create') {
    meta['payload'] = change.row;
    meta['key'] = change.key;
    if (change.catchUp) meta['catchUp'] = true;
    return meta;
  }
  meta['payload'] = change.action === 'delete' ? [change.key] : change.row;
  meta['keys'] = [change.key];
  if (change.previousKey !== undefined) meta['previousKeys'] = [change.previousKey];
  if (change.previous) meta['previous'] = change.previous;
  if (change.unchangedToast.length) meta['unchangedToast'] = change.unchangedToast;
  return meta;
}

export function truncateMeta(truncate: TruncateEvent, table: TruncateEvent['tables'][number]): Record<string, unknown> {
  return {
    collection: table.collection,
    payload: null,
    keys: null,
    id: table.id,
    lsn: truncate.transaction.lsn,
    xid: truncate.transaction.xid,
    committedAt: truncate.transaction.commitTime,
    cascade: truncate.cascade,
    restartIdentity: truncate.restartIdentity,
  };
}
