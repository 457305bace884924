/**
 * Parked action events: listing them and replaying them through the handler that failed.
 * A replay runs the handler once, with the meta it originally received; success marks the row
 * replayed, failure records why and leaves it to replay again.
 */
import pg from 'pg';
import { invokeAction } from '../hooks/action-dispatch.js';
import { describeHookError } from '../hooks/errors.js';
import { eventNameFor, type EventRef } from '../hooks/event-name.js';
import type { HookRuntime } from '../hooks/runtime.js';
import type { Accountability } from '../hooks/types.js';

export interface FailedEvent {
  id: string;
  eventId: string;
  extension: string;
  event: string;
  collection: string;
  action: string;
  commitLsn: string | null;
  attempts: number;
  error: { message?: string; code?: string; stack?: string };
  meta: Record<string, unknown>;
  accountability: Accountability | null;
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
  options: { includeReplayed?: boolean; ids?: string[] } = {},
): Promise<FailedEvent[]> {
  const conditions: string[] = [];
  const params: unknown[] = [];
  if (!options.includeReplayed) conditions.push('replayed_at is null');
  if (options.ids?.length) {
    params.push(options.ids);
    conditions.push(`id = any($${params.length}::bigint[])`);
  }
  const { rows } = await pool.query(
    `select id::text, event_id, extension, event, collection, action, commit_lsn::text, attempts, error, meta,
            accountability, failed_at, replayed_at, replay_error
       from ${table(schema)}
      ${conditions.length ? `where ${conditions.join(' and ')}` : ''}
      order by id`,
    params,
  );
  return rows.map((r) => ({
    id: r.id,
    eventId: r.event_id,
    extension: r.extension,
    event: r.event,
    collection: r.collection,
    action: r.action,
    commitLsn: r.commit_lsn,
    attempts: r.attempts,
    error: r.error,
    meta: r.meta,
    accountability: r.accountability,
    failedAt: r.failed_at,
    replayedAt: r.replayed_at,
    replayError: r.replay_error,
  }));
}

export async function replayFailedEvents(
  pool: pg.Pool,
  schema: string,
  runtime: HookRuntime,
  options: { ids?: string[]; database?: unknown } = {},
): Promise<ReplayResult[]> {
  const events = await listFailedEvents(pool, schema, { ids: options.ids });
  const results: ReplayResult[] = [];
  for (const failed of events) {
    const ref: EventRef = { scope: 'items', action: failed.action, collection: failed.collection };
    const entry = runtime.registry
      .actions(ref)
      .find((e) => e.extension === failed.extension && eventNameFor(e.pattern, ref) === failed.event);
    let error: unknown;
    if (!entry) {
      error = new Error(`no handler of extension "${failed.extension}" listens to ${failed.event} any more`);
    } else {
      try {
        await invokeAction(entry, ref, failed.meta, { database: options.database, schema: undefined, accountability: failed.accountability });
      } catch (caught) {
        error = caught;
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
