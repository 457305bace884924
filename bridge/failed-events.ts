/**
 * Parked action events: listing them and replaying them through the handler that failed.
 * A replay runs the handler once, with the meta it originally received (exactly: meta_exact, see
 * sql/000011.sql; rows parked before it replay the jsonb copy); success marks the row
 * replayed, failure records why and leaves it to replay again.
 *
 * Changes held for an extension that was not loaded (reason `extension_not_loaded`) go to every
 * matching handler of that extension: at a start where it loads, before the stream resumes (so they
 * reach it in commit order, ahead of newer changes), or through `hookbridge failed replay`.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { runAction, SINGLE_TRY, type ActionPolicy } from '../hooks/action-dispatch.js';
import { describeHookError } from '../hooks/errors.js';
import { eventNameFor, type EventRef } from '../hooks/event-name.js';
import type { ActionEntry } from '../hooks/register.js';
import type { HookRuntime } from '../hooks/runtime.js';
import type { Accountability, HookContext } from '../hooks/types.js';
import { unverifiedAccountability } from './replication/accountability.js';
import { deliverTo, deserializeMeta, HELD_REASON, type DeliveryOptions } from './replication/delivery.js';

export interface FailedEvent {
  id: string;
  eventId: string;
  extension: string;
  event: string;
  collection: string;
  action: string;
  /** `handler_failed`, or `extension_not_loaded` for a change held for an extension that was not loaded. */
  reason: string;
  commitLsn: string | null;
  attempts: number;
  error: { message?: string; code?: string; stack?: string };
  meta: Record<string, unknown>;
  /**
   * As the handler first received it. Rows parked before every change got one hold null: read as
   * the unknown writer (`verified: false`), never as null, which Directus takes for the system itself.
   */
  accountability: Accountability;
  failedAt: Date;
  replayedAt: Date | null;
  replayError: { message?: string; code?: string } | null;
}

export interface ReplayResult {
  id: string;
  ok: boolean;
  error?: string;
}

function table(schema: string): string {
  return `${pg.escapeIdentifier(schema)}.failed_events`;
}

export async function listFailedEvents(
  pool: pg.Pool,
  schema: string,
  /** `exact`: `meta` as its handlers got it (meta_exact: Buffers, NaN, -0, ...), for replays; else the readable jsonb copy. */
  options: { includeReplayed?: boolean; ids?: string[]; exact?: boolean } = {},
): Promise<FailedEvent[]> {
  const conditions: string[] = [];
  const params: unknown[] = [];
  if (!options.includeReplayed) conditions.push('replayed_at is null');
  if (options.ids?.length) {
    params.push(options.ids);
    conditions.push(`id = any($${params.length}::bigint[])`);
  }
  // ORDER BY a bare name takes the output column first: `f.id`, not the text `id::text` is named.
  const { rows } = await pool.query(
    `select f.id::text, event_id, extension, event, collection, action, reason, commit_lsn::text, attempts, error, meta,
            ${options.exact ? 'meta_exact' : 'null as meta_exact'}, accountability, failed_at, replayed_at, replay_error
       from ${table(schema)} f
      ${conditions.length ? `where ${conditions.join(' and ')}` : ''}
      order by f.id`,
    params,
  );
  return rows.map((r) => ({
    id: r.id,
    eventId: r.event_id,
    extension: r.extension,
    event: r.event,
    collection: r.collection,
    action: r.action,
    reason: r.reason,
    commitLsn: r.commit_lsn,
    attempts: r.attempts,
    error: r.error,
    meta: options.exact ? deserializeMeta(r.meta_exact, r.meta) : r.meta,
    accountability: r.accountability ?? unverifiedAccountability(),
    failedAt: r.failed_at,
    replayedAt: r.replayed_at,
    replayError: r.replay_error,
  }));
}

export async function replayFailedEvents(
  pool: pg.Pool,
  schema: string,
  runtime: HookRuntime,
  options: {
    ids?: string[];
    /** What a live change's handlers get besides `database` and `kysely` (the schema overview). */
    context?: Partial<HookContext>;
    /** Tries and timeout (default: one try, no limit). */
    policy?: ActionPolicy;
    logger?: Logger;
  } = {},
): Promise<ReplayResult[]> {
  const events = await listFailedEvents(pool, schema, { ids: options.ids, exact: true });
  const results: ReplayResult[] = [];
  for (const failed of events) {
    const ref: EventRef = { scope: 'items', action: failed.action, collection: failed.collection };
    // A held change goes to every handler of its extension that hears it; a failure, to the one that failed.
    const entries = runtime.registry
      .actions(ref)
      .filter((e) => e.extension === failed.extension && (failed.reason === HELD_REASON || eventNameFor(e.pattern, ref) === failed.event));
    let error: unknown;
    if (entries.length === 0) {
      error = new Error(
        `no handler of extension "${failed.extension}" listens to ${failed.event} ${failed.reason === HELD_REASON ? '(is it loaded?)' : 'any more'}`,
      );
    } else {
      for (const entry of entries) {
        // The context a live change gets: this runtime's `database` and `kysely`, the schema overview, the parked accountability.
        const context = runtime.context({ ...options.context, accountability: failed.accountability });
        const log = () => options.logger?.child({ extension: entry.extension, event: failed.event, id: failed.eventId });
        const failure = await runAction(entry, ref, failed.meta, context, options.policy ?? SINGLE_TRY, log).catch((aborted: unknown) => aborted);
        error ??= failure;
      }
    }
    if (error === undefined) {
      await pool.query(`update ${table(schema)} set replayed_at = now(), replay_error = null where id = $1`, [failed.id]);
      results.push({ id: failed.id, ok: true });
    } else {
      const described = describeHookError(error);
      await pool.query(`update ${table(schema)} set replay_error = $2::jsonb where id = $1`, [
        failed.id,
        JSON.stringify({ message: described.message, code: described.code }),
      ]);
      results.push({ id: failed.id, ok: false, error: described.message });
    }
  }
  return results;
}

/**
 * Delivers the changes held for extensions that are loaded now, oldest first, each to that extension's
 * matching handlers (retried and, past their attempts, parked as their own failure), and marks them
 * replayed. The bridge runs this at start, before the stream resumes. Returns how many it delivered.
 */
export async function replayHeldEvents(options: {
  pool: pg.Pool;
  schema: string;
  runtime: HookRuntime;
  logger: Logger;
  delivery: DeliveryOptions;
  context: Partial<HookContext>;
}): Promise<number> {
  const { pool, schema, runtime, logger } = options;
  const loaded = runtime.registry.extensions.map((e) => e.name);
  let delivered = 0;
  for (;;) {
    const { rows } = await pool.query<{
      id: string;
      event_id: string;
      extension: string;
      event: string;
      collection: string;
      action: string;
      commit_lsn: string;
      xid: string | null;
      meta: Record<string, unknown>;
      meta_exact: Buffer | null;
      accountability: Accountability | null;
    }>(
      // In commit order: by the pg_lsn column (`f.`), not the text output column of the same name
      // ('0/1100ADF8' sorts before '0/E589828' as text).
      `select f.id::text, event_id, extension, event, collection, action, f.commit_lsn::text, xid::text, meta, meta_exact, accountability
         from ${table(schema)} f
        where reason = $1 and replayed_at is null and extension = any ($2::text[])
        order by f.commit_lsn, f.id
        limit 500`,
      [HELD_REASON, loaded],
    );
    if (rows.length === 0) break;
    if (delivered === 0) logger.info({ extensions: [...new Set(rows.map((r) => r.extension))] }, 'delivering changes held while extensions were not loaded');
    for (const row of rows) {
      const ref: EventRef = { scope: 'items', action: row.action, collection: row.collection };
      const entries: ActionEntry[] = runtime.registry.actions(ref).filter((e) => e.extension === row.extension);
      if (entries.length) {
        await deliverTo(
          entries,
          {
            event: ref,
            id: row.event_id,
            // As the change made it (meta_exact), not the jsonb copy that lost bytea, NaN, -0, key order, ...
            meta: deserializeMeta(row.meta_exact, row.meta),
            context: { ...options.context, accountability: row.accountability ?? unverifiedAccountability() },
            commitLsn: row.commit_lsn,
            xid: Number(row.xid ?? 0),
          },
          options.delivery,
        );
      }
      // Only while still held: a handler that failed on it has made the row its own failure (see delivery.ts).
      await pool.query(`update ${table(schema)} set replayed_at = now(), replay_error = $3::jsonb where id = $1 and reason = $2`, [
        row.id,
        HELD_REASON,
        entries.length ? null : JSON.stringify({ message: `extension "${row.extension}" no longer listens to ${row.event}; nothing to deliver` }),
      ]);
      delivered += entries.length ? 1 : 0;
    }
  }
  if (delivered) logger.info({ delivered }, 'delivered the changes held while extensions were not loaded');
  return delivered;
}
