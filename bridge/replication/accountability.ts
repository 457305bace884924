/**
 * The writer's identity for action hooks. WAL carries no session data, so
 * `<schema>.accountability_trigger()` (sql/000010.sql), a statement trigger on every published table
 * and each of its partitions, puts it into the transaction as a logical message before each
 * statement's rows:
 *
 *     <json>\n<hex sha256(key || "\0hookbridge.accountability\0" || json)>
 *
 * The json names the transaction (`xid`) and the published table the statement writes (`relid`, the
 * partition root for a partition). Anyone may call pg_logical_emit_message, so only a message signed
 * with the key that only the bridge's role can read, for this purpose, naming the transaction it is
 * in, is believed, and only for the changes of the table it names. A forged, truncated, unparseable
 * or foreign message counts as none: it never replaces or erases an identity. A change with no signed
 * identity for its table gets `unverifiedAccountability()`, never `null` (which Directus reads as the
 * system itself).
 *
 * The purpose label keeps the key's other signatures apart: the unfiltered-row notices and catch-up
 * rows (`sha256(key || json)`), the notify channel name and the direct transport's proofs (`sha256(key
 * || text)`) all sign text, which never starts with a NUL byte, so none of them is an identity.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import pg from 'pg';
import { HookbridgeError } from '../../hooks/errors.js';
import type { Accountability } from '../../hooks/types.js';

export class AccountabilityError extends HookbridgeError {
  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.name = 'AccountabilityError';
  }
}

/** What the database said about the writer, next to Directus' fields. */
export interface DatabaseIdentity {
  role: string | null;
  applicationName: string | null;
  clientAddress: string | null;
}

export interface WriterAccountability extends Accountability {
  /** PostgREST's `request.jwt.claims`, parsed; null when unset or not a JSON object. */
  claims: Record<string, unknown> | null;
  database: DatabaseIdentity;
  /** The change was written by the bridge itself with `{ emitEvents: false }`: action hooks skip it. */
  bypass?: boolean;
  /**
   * True: the database signed this identity for the change's own table in its own transaction. False:
   * no signed identity reached the bridge for the change (its table's trigger was disabled or missing
   * when it was written); every other field is then unknown (null) and `admin` is false.
   */
  verified: boolean;
}

type Queryable = Pick<pg.ClientBase, 'query'> | pg.Pool;

const KEY_BYTES = 32;
const SIGNATURE_HEX = 64;
const NEWLINE = 0x0a;
const utf8 = new TextDecoder('utf-8', { fatal: true });

export async function readAccountabilitySecret(pool: Queryable, schema: string): Promise<Buffer> {
  let key: unknown;
  try {
    const { rows } = await pool.query<{ key: Buffer }>(`select key from ${pg.escapeIdentifier(schema)}.secret where id`);
    key = rows[0]?.key;
  } catch (cause) {
    const sqlstate = (cause as { code?: unknown }).code;
    const fix =
      sqlstate === '42P01' || sqlstate === '3F000'
        ? 'hookbridge is not installed there: run its migrations (start the bridge, which migrates first)'
        : sqlstate === '42501'
          ? `the bridge must run as the role that installed hookbridge (the owner of "${schema}".secret)`
          : 'check the connection and the schema name (HOOKBRIDGE_SCHEMA)';
    throw new AccountabilityError(
      'E_ACCOUNTABILITY_SECRET',
      `Could not read the accountability key from "${schema}".secret: ${cause instanceof Error ? cause.message : String(cause)}; ${fix}.`,
      { cause, details: { schema, sqlstate } },
    );
  }
  if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) {
    throw new AccountabilityError(
      'E_ACCOUNTABILITY_SECRET',
      `"${schema}".secret holds no ${KEY_BYTES}-byte key. Run hookbridge's migrations again (they create it), ` +
        `or reinstall: hookbridge uninstall, then start.`,
      { details: { schema } },
    );
  }
  return key;
}

/** What an identity message says: who wrote, and which published table's changes that covers. */
export interface SignedIdentity {
  /**
   * The published table (its oid; the partition root for a partition) whose changes the statement
   * writes. Undefined for a document from before migration 000010, which covered every table (see
   * `legacyBefore` in parseIdentityMessage).
   */
  relid: number | undefined;
  accountability: WriterAccountability;
}

/** Signed before the document by accountability_trigger() since migration 000010 (sql/000010.sql). */
export const IDENTITY_PURPOSE = Buffer.from('\0hookbridge.accountability\0', 'latin1');

/**
 * The identity in one `hookbridge.accountability` message, or undefined unless accountability_trigger()
 * signed it with `secret` in the transaction `xid` (pgoutput's Begin xid; without one, none is believed).
 *
 * `legacyBefore` (the xid8 stored by migration 000010, readLegacyIdentityCutoff()): documents signed
 * the 000005 way (no purpose label, no `relid`) are still believed for transactions whose xid8 is
 * below it — a bridge upgraded with changes of those transactions still in its slot reads their
 * writers, and skips its own `{ emitEvents: false }` writes among them, as the old bridge would have.
 * No transaction from after the upgrade can hold such a document, so no other document signed with
 * the bare key (an unfiltered-row notice, a catch-up row) ever passes as an identity. Documents from
 * before 000005, which name no transaction, are never believed.
 */
export function parseIdentityMessage(content: Buffer, secret: Buffer, xid: number | undefined, legacyBefore?: bigint): SignedIdentity | undefined {
  const current = parseSignedMessage(content, secret, IDENTITY_PURPOSE);
  if (current) {
    const relid = current['relid'];
    if (!namesTransaction(current['xid'], xid) || typeof relid !== 'number' || !Number.isSafeInteger(relid) || relid <= 0) return undefined;
    return { relid, accountability: accountabilityOf(current) };
  }
  if (legacyBefore === undefined) return undefined;
  const legacy = parseSignedMessage(content, secret);
  if (!legacy || 'relid' in legacy || !namesTransaction(legacy['xid'], xid) || BigInt(legacy['xid'] as string) >= legacyBefore) return undefined;
  return { relid: undefined, accountability: accountabilityOf(legacy) };
}

/** parseIdentityMessage's identity alone. */
export function parseAccountabilityMessage(content: Buffer, secret: Buffer, xid: number | undefined, legacyBefore?: bigint): WriterAccountability | undefined {
  return parseIdentityMessage(content, secret, xid, legacyBefore)?.accountability;
}

/**
 * The xid8 below which documents signed the 000005 way are believed (parseIdentityMessage), as
 * migration 000010 stored it; undefined where it stored none.
 */
export async function readLegacyIdentityCutoff(pool: Queryable, schema: string): Promise<bigint | undefined> {
  let rows: Array<{ before_xid: string | null }>;
  try {
    ({ rows } = await pool.query<{ before_xid: string | null }>(
      `select before_xid::text as before_xid from ${pg.escapeIdentifier(schema)}.accountability_legacy where id`,
    ));
  } catch (error) {
    // A schema without migration 000010: no such document is believed.
    if ((error as { code?: unknown }).code === '42P01') return undefined;
    throw error;
  }
  const value = rows[0]?.before_xid;
  return value && TRANSACTION_ID.test(value) ? BigInt(value) : undefined;
}

function accountabilityOf(parsed: Record<string, unknown>): WriterAccountability {
  const role = stringOrNull(parsed['role']);
  const applicationName = stringOrNull(parsed['application_name']);
  const clientAddress = stringOrNull(parsed['client_addr']);
  const claims = parseClaims(parsed['claims']);
  return {
    user: declaredUser(parsed['user'], claims),
    role,
    admin: parsed['admin'] === true,
    app: false,
    ip: clientAddress,
    userAgent: applicationName,
    claims,
    database: { role, applicationName, clientAddress },
    ...(parsed['bypass'] === true ? { bypass: true } : {}),
    verified: true,
  };
}

/**
 * The accountability with its application user filled from HOOKBRIDGE_USER_MAP, for a database role
 * that sets none itself (`hookbridge.user`, JWT claims). An unknown writer (no role) stays unknown.
 */
export function withMappedUser<T extends Accountability | null>(accountability: T, userMap: Readonly<Record<string, string>> | undefined): T {
  if (!accountability || accountability.user !== null || !accountability.role || !userMap) return accountability;
  const user = Object.hasOwn(userMap, accountability.role) ? userMap[accountability.role] : undefined;
  return user === undefined ? accountability : { ...accountability, user };
}

/**
 * The accountability of a change no signed identity reached: nothing is known about its writer, so
 * it gets no rights. Not `null`, which Directus (and hooks written for it) read as the system itself.
 */
export function unverifiedAccountability(): WriterAccountability {
  return {
    user: null,
    role: null,
    admin: false,
    app: false,
    ip: null,
    userAgent: null,
    claims: null,
    database: { role: null, applicationName: null, clientAddress: null },
    verified: false,
  };
}

const TRANSACTION_ID = /^[0-9]{1,20}$/;
const XID_MASK = 0xffffffffn;

/**
 * pg_current_xact_id() is the 64-bit xid8 (epoch and xid); pgoutput's Begin carries its low 32 bits.
 * Without a transaction to compare with, nothing names it.
 */
export function namesTransaction(value: unknown, xid: number | undefined): boolean {
  if (xid === undefined || typeof value !== 'string' || !TRANSACTION_ID.test(value)) return false;
  return (BigInt(value) & XID_MASK) === BigInt(xid);
}

/**
 * The JSON object in a `<json>\n<hex sha256(key || purpose || json)>` message the database signed with
 * `secret` (identities with IDENTITY_PURPOSE; unfiltered passes and catch-up rows with none), or
 * undefined when it is not signed so, cut short, or not an object.
 */
export function parseSignedMessage(content: Buffer, secret: Buffer, purpose?: Buffer): Record<string, unknown> | undefined {
  const split = content.lastIndexOf(NEWLINE);
  if (split < 0 || content.length - split - 1 !== SIGNATURE_HEX) return undefined;
  const doc = content.subarray(0, split);
  const signatureHex = content.subarray(split + 1).toString('latin1');
  if (!/^[0-9a-f]{64}$/.test(signatureHex)) return undefined;
  const hash = createHash('sha256').update(secret);
  if (purpose) hash.update(purpose);
  const expected = hash.update(doc).digest();
  if (!timingSafeEqual(expected, Buffer.from(signatureHex, 'hex'))) return undefined;
  // Signed by us, so the shape is ours; still checked, so a future format cannot crash the stream.
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8.decode(doc));
  } catch {
    return undefined;
  }
  return isRecord(parsed) ? parsed : undefined;
}

/** The writer's `request.jwt.claims` (PostgREST), when they are a JSON object. Filters and actions alike. */
export function parseClaims(value: unknown): Record<string, unknown> | null {
  if (typeof value !== 'string' || value === '') return null;
  try {
    const claims: unknown = JSON.parse(value);
    return isRecord(claims) ? claims : null;
  } catch {
    return null;
  }
}

/**
 * The application user a writer declared: `hookbridge.user`, else its claims' `sub` (a number as its
 * text); empty is none. Filters and actions read it alike, so one write has one user in both.
 */
export function declaredUser(user: unknown, claims: Record<string, unknown> | null): string | null {
  return stringOrNull(user) ?? subjectOf(claims);
}

function subjectOf(claims: Record<string, unknown> | null): string | null {
  const sub = claims?.['sub'];
  if (typeof sub === 'string' && sub !== '') return sub;
  return typeof sub === 'number' && Number.isFinite(sub) ? String(sub) : null;
}

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
