/**
 * The writer's identity for action hooks. WAL carries no session data, so
 * `<schema>.accountability_trigger()` (sql/000005.sql), a statement trigger on every published table,
 * puts it into the transaction as a logical message before each statement's rows:
 *
 *     <json>\n<hex sha256(key || json)>
 *
 * Anyone may call pg_logical_emit_message, so only a message signed with the key that only the
 * bridge's role can read, and naming the transaction it is in, is believed. A forged, truncated,
 * unparseable or foreign message counts as none: it never replaces or erases an identity. A change
 * with no signed identity before it gets `unverifiedAccountability()`, never `null` (which Directus
 * reads as the system itself).
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
   * True: the database signed this identity in the change's own transaction. False: no signed identity
   * reached the bridge for the change (its table's trigger was disabled or missing when it was
   * written); every other field is then unknown (null) and `admin` is false.
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

/**
 * The identity in one `hookbridge.accountability` message, or undefined when the message is not
 * signed with `secret`, is cut short, does not hold what accountability_trigger() writes, or (given
 * `xid`, the transaction's id as pgoutput's Begin carries it) was emitted in another transaction.
 * Documents from before migration 000005 name no transaction and are taken as they are: only the
 * bridge's role can read the key, and no writer can read messages back from the WAL to replay them.
 */
export function parseAccountabilityMessage(content: Buffer, secret: Buffer, xid?: number): WriterAccountability | undefined {
  const parsed = parseSignedMessage(content, secret);
  if (!parsed) return undefined;
  if ('xid' in parsed && !namesTransaction(parsed['xid'], xid)) return undefined;
  const role = stringOrNull(parsed['role']);
  const applicationName = stringOrNull(parsed['application_name']);
  const clientAddress = stringOrNull(parsed['client_addr']);
  const claims = parseClaims(parsed['claims']);
  return {
    user: stringOrNull(parsed['user']) ?? subjectOf(claims),
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

/** pg_current_xact_id() is the 64-bit xid8 (epoch and xid); pgoutput's Begin carries its low 32 bits. */
function namesTransaction(value: unknown, xid: number | undefined): boolean {
  if (typeof value !== 'string' || !TRANSACTION_ID.test(value)) return false;
  return xid === undefined || (BigInt(value) & XID_MASK) === BigInt(xid);
}

/**
 * The JSON object in a `<json>\n<hex sha256(key || json)>` message the database signed with `secret`
 * (accountability, unfiltered passes), or undefined when it is not signed so, cut short, or not an object.
 */
export function parseSignedMessage(content: Buffer, secret: Buffer): Record<string, unknown> | undefined {
  const split = content.lastIndexOf(NEWLINE);
  if (split < 0 || content.length - split - 1 !== SIGNATURE_HEX) return undefined;
  const doc = content.subarray(0, split);
  const signatureHex = content.subarray(split + 1).toString('latin1');
  if (!/^[0-9a-f]{64}$/.test(signatureHex)) return undefined;
  const expected = createHash('sha256').update(secret).update(doc).digest();
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

function parseClaims(value: unknown): Record<string, unknown> | null {
  if (typeof value !== 'string' || value === '') return null;
  try {
    const claims: unknown = JSON.parse(value);
    return isRecord(claims) ? claims : null;
  } catch {
    return null;
  }
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
