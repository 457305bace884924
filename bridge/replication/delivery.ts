/**
 * Delivering one committed change to its action handlers, at least once.
 *
 * Every matching handler runs; a handler that throws (or outlives `timeoutMs`) is retried alone with
 * jittered exponential backoff, and after `attempts` tries its event is parked in
 * `<schema>.failed_events` (a durable insert) so the stream can go on. Only then is the change done.
 * If even parking fails (the database is gone), parking is retried until it works or the bridge
 * stops; in the latter case the change stays unconfirmed and Postgres sends it again later.
 *
 * A change that an extension which is not loaded would have heard (it guarded the table, see
 * bridge/extension-guards.ts) is held for it the same way: a durable row in failed_events (reason
 * `extension_not_loaded`), delivered to its handlers at a start where it loads again.
 */
import { deserialize, serialize } from 'node:v8';
import pg from 'pg';
import type { Logger } from 'pino';
import { ActionAborted, backoff, runAction, sleep, type ActionPolicy } from '../../hooks/action-dispatch.js';
import { describeHookError } from '../../hooks/errors.js';
import type { EventRef } from '../../hooks/event-name.js';
import type { ActionEntry } from '../../hooks/register.js';
import type { HookRuntime } from '../../hooks/runtime.js';
import type { HookContext } from '../../hooks/types.js';
import { eventNameFor } from '../../hooks/event-name.js';
import type { BridgeMetrics } from '../metrics.js';

export interface DeliveryOptions {
  runtime: HookRuntime;
  pool: pg.Pool;
  schema: string;
  logger: Logger;
  /**
   * Each handler's tries (ACTION_ATTEMPTS before parking), their timeout and backoff; the signal ends
   * retries, and the retries of parking, when the bridge stops.
   */
  policy: ActionPolicy & { signal: AbortSignal };
  metrics?: Pick<BridgeMetrics, 'actionEvents' | 'actionDelaySeconds' | 'parkedEvents'>;
  /** Extensions that are not loaded whose action hooks would hear this event: the change is held for each. */
  heldFor?: (event: EventRef) => readonly { extension: string; reason: string }[];
}

/** failed_events.reason of a change held for an extension that is not loaded. */
export const HELD_REASON = 'extension_not_loaded';

export interface Delivery {
  event: EventRef;
  /** Stable id of the change (`<commit LSN>:<n>`). */
  id: string;
  meta: Record<string, unknown>;
  context: Partial<HookContext>;
  commitLsn: string;
  xid: number;
}

export async function deliver(delivery: Delivery, options: DeliveryOptions): Promise<void> {
  // Who hears it and for whom it is held, read together before any await: a reload swaps the loaded
  // extensions and what is held for the others in one synchronous step (HookRuntime.onSwap), so each
  // extension is either among the handlers or held for, never both, never neither.
  let entries = options.runtime.registry.actions(delivery.event);
  const held = options.heldFor?.(delivery.event);
  // Before a handler can touch the meta (actionMeta puts the transaction's commit time in it).
  const committedAt = delivery.meta['committedAt'];
  // Held first, while the meta is still as the change made it (a single handler completes it in place).
  if (held?.length) {
    for (const extension of held) await hold(extension, delivery, options);
    // An extension a reload brought back is held until its older changes are replayed: not run live too.
    const names = new Set(held.map((h) => h.extension));
    entries = entries.filter((entry) => !names.has(entry.extension));
  }
  // A live change reaching its handlers (replays of parked ones go through deliverTo, not here).
  if (entries.length && committedAt instanceof Date && options.metrics) {
    // Two clocks (the server's commit time, ours now): a skew below zero reads as no delay.
    options.metrics.actionDelaySeconds.observe(Math.max(0, Date.now() - committedAt.getTime()) / 1000);
  }
  await deliverTo(entries, delivery, options);
  options.metrics?.actionEvents.inc({ collection: delivery.event.collection ?? '', action: delivery.event.action });
}

/** Runs `entries` for one change, each retried and, past its attempts, parked. */
export async function deliverTo(entries: readonly ActionEntry[], delivery: Delivery, options: DeliveryOptions): Promise<void> {
  if (entries.length === 1) await deliverToHandler(entries[0] as ActionEntry, delivery, options, true);
  else if (entries.length > 1) await Promise.all(entries.map((entry) => deliverToHandler(entry, delivery, options, false)));
}

async function deliverToHandler(entry: ActionEntry, delivery: Delivery, options: DeliveryOptions, ownsMeta: boolean): Promise<void> {
  // The child logger is made only when there is something to log: this path runs once per change.
  let logger: Logger | undefined;
  const log = () =>
    (logger ??= options.logger.child({
      extension: entry.extension,
      event: eventNameFor(entry.pattern, delivery.event),
      collection: delivery.event.collection,
      id: delivery.id,
    }));
  const error = await runAction(entry, delivery.event, delivery.meta, fullContext(delivery.context), options.policy, log, ownsMeta);
  if (error === undefined) return;
  await park(entry, eventNameFor(entry.pattern, delivery.event), delivery, error, options, log());
}

/** Every try in `hookbridge_action_handler_seconds`; a failed one in `hookbridge_action_failures_total` too. */
export function observeTries(metrics: Pick<BridgeMetrics, 'actionFailures' | 'actionHandlerSeconds'>): NonNullable<ActionPolicy['observe']> {
  return (entry, event, seconds, outcome) => {
    metrics.actionHandlerSeconds.observe(seconds, entry.extension, event.collection ?? '', event.action, outcome);
    if (outcome !== 'ok') metrics.actionFailures.inc({ extension: entry.extension });
  };
}

async function park(entry: ActionEntry, event: string, delivery: Delivery, error: unknown, options: DeliveryOptions, logger: Logger): Promise<void> {
  const described = describeHookError(error);
  const errorJson = { message: described.message, code: described.code, stack: error instanceof Error ? error.stack : undefined };
  await insertParked(entry.extension, event, delivery, errorJson, options.policy.attempts, 'handler_failed', options, logger);
  logger.error({ err: error }, 'action event parked in failed_events');
  options.metrics?.parkedEvents.inc({ extension: entry.extension });
}

/** Keeps a change for an extension that is not loaded: delivered to its handlers when it loads again. */
async function hold(held: { extension: string; reason: string }, delivery: Delivery, options: DeliveryOptions): Promise<void> {
  const event = `${delivery.event.collection ?? ''}.items.${delivery.event.action}`;
  const logger = options.logger.child({ extension: held.extension, event, id: delivery.id });
  const errorJson = { code: 'E_EXTENSION_NOT_LOADED', message: `extension "${held.extension}" is not loaded (${held.reason}); held until it loads` };
  await insertParked(held.extension, event, delivery, errorJson, 0, HELD_REASON, options, logger);
  logger.debug('change held for an extension that is not loaded');
}

/**
 * A durable row in failed_events, retried until it is written or the bridge stops. A row already
 * there for the same change, extension and event takes the newer reason: a held change whose replay
 * failed becomes that handler's failure, a change held again goes back to every handler.
 */
async function insertParked(
  extension: string,
  event: string,
  delivery: Delivery,
  errorJson: Record<string, unknown>,
  attempts: number,
  reason: string,
  options: DeliveryOptions,
  logger: Logger,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    if (options.policy.signal.aborted) throw new ActionAborted();
    try {
      await options.pool.query(
        `insert into ${pg.escapeIdentifier(options.schema)}.failed_events
           (event_id, extension, event, collection, action, commit_lsn, xid, meta, error, attempts, accountability, reason, meta_exact)
         values ($1, $2, $3, $4, $5, $6::pg_lsn, $7, $8::jsonb, $9::jsonb, $10, $11::jsonb, $12, $13::bytea)
         on conflict (event_id, extension, event) do update
           set attempts = failed_events.attempts + excluded.attempts, error = excluded.error, reason = excluded.reason,
               failed_at = now(), replayed_at = null, replay_error = null`,
        [
          delivery.id,
          extension,
          event,
          delivery.event.collection ?? '',
          delivery.event.action,
          delivery.commitLsn,
          delivery.xid,
          toJson(delivery.meta),
          toJson(errorJson),
          attempts,
          toJson(delivery.context.accountability ?? null),
          reason,
          serializeMeta(delivery.meta),
        ],
      );
      return;
    } catch (parkError) {
      logger.error({ err: parkError, attempt }, 'parking a failed event failed; retrying');
      await sleep(backoff(Math.min(attempt, 10), options.policy), options.policy.signal);
    }
  }
}

/** The action stream gives `database` and `kysely` (a stream built without them, in tests, gives handlers none). */
function fullContext(context: Partial<HookContext>): HookContext {
  return { schema: undefined, accountability: null, ...context } as HookContext;
}

/**
 * The meta exactly as handlers get it (meta_exact, sql/000011.sql): v8's structured serialization keeps
 * Buffers, NaN, ±Infinity, -0, bigint, Dates, U+0000 and key order, which jsonb cannot. Null for a
 * meta it cannot clone (a handler put a function in it): the replay then falls back to the jsonb copy.
 */
export function serializeMeta(meta: Record<string, unknown>): Buffer | null {
  try {
    return serialize(meta);
  } catch {
    return null;
  }
}

/** The meta a replay delivers: the exact copy when there is one (and it reads back), else the jsonb one. */
export function deserializeMeta(exact: Buffer | null | undefined, json: Record<string, unknown>): Record<string, unknown> {
  if (!exact) return json;
  try {
    const meta: unknown = deserialize(exact);
    return meta !== null && typeof meta === 'object' ? (meta as Record<string, unknown>) : json;
  } catch {
    return json;
  }
}

/**
 * JSON for jsonb (the readable copy; meta_exact is the exact one): bigint as string, Buffer as `\x…`
 * hex (what bytea prints), NUL characters (which jsonb refuses) replaced. Never throws: a meta that a
 * handler made circular is parked as a note, so that parking itself can always succeed.
 */
export function toJson(value: unknown): string {
  try {
    const text = JSON.stringify(value, function (this: unknown, key, v: unknown) {
      const raw = (this as Record<string, unknown>)[key];
      if (typeof raw === 'bigint') return raw.toString();
      if (Buffer.isBuffer(raw)) return `\\x${raw.toString('hex')}`;
      return v;
    });
    return (text ?? 'null').replaceAll('\\u0000', '\\ufffd');
  } catch (error) {
    return JSON.stringify({ unserialisable: (error as Error).message });
  }
}
