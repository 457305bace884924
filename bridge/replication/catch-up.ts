/**
 * Rows a new table held before it joined the publication, delivered to action hooks anyway.
 *
 * Decoding judges publication membership as of each change, so the rows of a table committed before
 * it joined are never sent, even when decoded later. Where the event trigger of sql/000008.sql runs,
 * a matching table joins inside its CREATE TABLE and nothing is missed. Where it does not (no
 * superuser to create it), the sync finds a table it has never seen (`known_tables`) that action
 * hooks match and joins it in one transaction that
 *
 *   1. waits for the table's writers (LOCK ... IN SHARE MODE): every row written so far is committed,
 *      and was decoded while the table was unpublished; every later write waits for this commit, and
 *      is decoded after it, as a member;
 *   2. adds it to the publication (publish_table(), as the event trigger would);
 *   3. emits each of its rows as a signed `hookbridge.catchup` message (catch_up_rows()), decoded
 *      in this transaction and delivered like an insert, with `meta.catchUp: true`.
 *
 * So each committed row reaches action hooks once, as it stood at the join: updates and deletes
 * made before the join are seen only in their result (a row deleted before it is not seen at all),
 * and the writer of those rows is unknown (`accountability.verified: false`).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { inTransaction } from '../database.js';
import { parseRecordText } from '../typing/values.js';
import { namesTransaction, parseSignedMessage } from './accountability.js';
import type { ColumnInfo, RelationInfo, Row } from './pgoutput-types.js';
import type { UserTable } from '../catalog.js';
import { insertsPublicationName } from './publication.js';

/** A `<publication>` sync's advisory lock key (publication.ts): joins take turns with it. */
const publicationLockKey = (publication: string) => `hookbridge.publication:${publication}`;

interface CatchUpDocument {
  xid: string;
  relid: number;
  schema: string;
  table: string;
  identity: string;
  key: string[];
  columns: Array<[string, number]>;
  row: string;
}

const IDENTITIES = { d: 'default', n: 'nothing', f: 'full', i: 'index' } as const;

/** The message's document if the database signed it (with the key only the bridge's role reads). */
function documentOf(content: Buffer, secret: Buffer): CatchUpDocument | undefined {
  const doc = parseSignedMessage(content, secret);
  if (!doc) return undefined;
  const { relid, schema, table, identity, key, columns, row } = doc;
  if (typeof relid !== 'number' || typeof schema !== 'string' || typeof table !== 'string' || typeof identity !== 'string' || typeof row !== 'string')
    return undefined;
  if (!Array.isArray(key) || !key.every((k) => typeof k === 'string')) return undefined;
  if (!Array.isArray(columns) || !columns.every((c) => Array.isArray(c) && typeof c[0] === 'string' && typeof c[1] === 'number')) return undefined;
  return doc as unknown as CatchUpDocument;
}

/** The column types a catch-up message needs parsers for (to load user-defined ones before decoding it). */
export function catchUpTypes(content: Buffer, secret: Buffer): number[] {
  return documentOf(content, secret)?.columns.map(([, type]) => type) ?? [];
}

/**
 * The row in one catch-up message, typed as pgoutput's would be, with the relation as pgoutput would
 * describe it; undefined unless signed for transaction `xid`.
 */
export function readCatchUpMessage(
  content: Buffer,
  secret: Buffer,
  xid: number,
  parserFor: (typeOid: number) => (text: string) => unknown,
): { relation: RelationInfo; row: Row } | undefined {
  const doc = documentOf(content, secret);
  if (!doc || !namesTransaction(doc.xid, xid)) return undefined;
  const values = doc.columns.length ? parseRecordText(doc.row) : [];
  const row: Row = Object.create(null) as Row;
  const columns: ColumnInfo[] = doc.columns.map(([name, typeOid], i) => {
    const parse = parserFor(typeOid);
    const text = values[i];
    row[name] = text === null || text === undefined ? null : parse(text);
    return { name, typeOid, typeMod: -1, isKey: doc.key.includes(name), parse };
  });
  return {
    relation: {
      oid: doc.relid,
      schema: doc.schema,
      name: doc.table,
      replicaIdentity: IDENTITIES[doc.identity as keyof typeof IDENTITIES] ?? 'default',
      columns,
      keyColumns: doc.key,
    },
    row,
  };
}

export interface NewTableCatchUpOptions {
  pool: pg.Pool;
  schema: string;
  publication: string;
  logger: Logger;
  /**
   * Longest wait for the table's writers (and the publication); a busy table is retried at the next
   * sync. Short, as for the filter sync's DDL: while the LOCK waits, new writers of the table queue behind it.
   */
  lockTimeoutMs?: number;
}

/** Joins tables new to the bridge to the publication with their rows so far (see the top of this file). */
export class NewTableCatchUp {
  readonly #options: NewTableCatchUpOptions;
  #seen = '';
  #waiting: ReadonlySet<number> = new Set();

  constructor(options: NewTableCatchUpOptions) {
    this.#options = options;
  }

  /**
   * Joins the `wanted` tables the bridge has never seen and that are in neither publication, with
   * their rows; records every listed table as seen. Returns the wanted tables that could not join
   * yet (their writers held the table): the sync must leave them out, so they are caught up next time.
   */
  async join(tables: readonly UserTable[], wanted: readonly UserTable[]): Promise<ReadonlySet<number>> {
    const seen = `${tables.map((t) => t.oid).join(',')}|${wanted.map((t) => t.oid).join(',')}`;
    if (seen === this.#seen && this.#waiting.size === 0) return this.#waiting;
    const { pool, schema, publication, logger } = this.#options;
    const quoted = pg.escapeIdentifier(schema);
    const { rows: known } = await pool.query<{ relid: number }>(`select relid from ${quoted}.known_tables`);
    const { rows: members } = await pool.query<{ relid: number }>(
      `select r.prrelid as relid from pg_publication_rel r join pg_publication p on p.oid = r.prpubid where p.pubname = any ($1::text[])`,
      [[publication, insertsPublicationName(publication)]],
    );
    const old = new Set([...known, ...members].map((r) => r.relid));
    const waiting = new Set<number>();
    for (const table of wanted) {
      if (old.has(table.oid)) continue;
      try {
        const rows = await this.#joinOne(table);
        if (rows === undefined) waiting.add(table.oid);
        else logger.info({ collection: table.collection, rows }, 'a new table joined the publication; the rows it held were delivered as creates (catch-up)');
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === '55P03') {
          waiting.add(table.oid);
          logger.warn({ collection: table.collection }, 'a new table is busy; it joins the publication, with its rows so far, at the next sync');
        } else if (code !== '42P01') {
          // It joins anyway (the sync adds it), or it would never reach action hooks at all.
          logger.error({ err: error, collection: table.collection }, 'catching up the rows of a new table failed: it joins the publication without them');
        }
      }
    }
    await pool.query(`insert into ${quoted}.known_tables (relid) select unnest($1::oid[]) on conflict do nothing`, [
      tables.filter((t) => !waiting.has(t.oid)).map((t) => t.oid),
    ]);
    await pool.query(`delete from ${quoted}.known_tables k where not exists (select 1 from pg_class c where c.oid = k.relid)`);
    this.#seen = seen;
    this.#waiting = waiting;
    return waiting;
  }

  /** The rows caught up, or undefined when the publications do not exist yet (the sync creates them). */
  async #joinOne(table: UserTable): Promise<number | undefined> {
    const { pool, schema, publication } = this.#options;
    const quoted = pg.escapeIdentifier(schema);
    return inTransaction(pool, async (client) => {
      await client.query(`select set_config('lock_timeout', $1, true)`, [`${Math.max(1, Math.floor(this.#options.lockTimeoutMs ?? 200))}ms`]);
      await client.query('select pg_advisory_xact_lock(hashtextextended($1, 0))', [publicationLockKey(publication)]);
      await client.query(`lock table ${pg.escapeIdentifier(table.schema)}.${pg.escapeIdentifier(table.name)} in share mode`);
      const { rows: joined } = await client.query<{ publication: string | null }>(`select ${quoted}.publish_table($1) as publication`, [table.oid]);
      // No publications yet: publish_table changed nothing, so ending the transaction commits nothing.
      if (!joined[0]?.publication) return undefined;
      const { rows } = await client.query<{ rows: string }>(`select ${quoted}.catch_up_rows($1)::text as rows`, [table.oid]);
      await client.query(`insert into ${quoted}.known_tables (relid) values ($1) on conflict do nothing`, [table.oid]);
      return Number(rows[0]?.rows ?? 0);
    });
  }
}
