/**
 * The writer's identity for action hooks. WAL carries no session data, so
 * `<schema>.emit_accountability()` (sql/000001.sql), run by a statement trigger on every published
 * table, puts it into the transaction as a logical message:
 *
 *     <json>\n<hex sha256(key || json)>
 *
 * Anyone may call pg_logical_emit_message, so only a message signed with the key that only the
 * bridge's role can read is believed. A forged, truncated or unparseable message counts as none.
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
 * signed with `secret`, is cut short, or does not hold what emit_accountability() writes.
 */
export function parseAccountabilityMessage(content: Buffer, secret: Buffer): WriterAccountability | undefined {
  const parsed = parseSignedMessage(content, secret);
  if (!parsed) return undefined;
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
  };
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
