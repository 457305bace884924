/**
 * Action dispatch: every matching handler runs (concurrently, as Directus runs them), and one
 * handler's failure neither stops the others nor the stream. Failures are returned, not swallowed, so
 * that the caller can retry exactly the handlers that failed before it acknowledges the change.
 */
import type { Logger } from 'pino';
import { eventNameFor, type EventRef } from './event-name.js';
import type { ActionEntry } from './register.js';
import type { HookContext } from './types.js';

export interface ActionFailure {
  entry: ActionEntry;
  /** The event name the handler saw in its meta. */
  event: string;
  error: unknown;
}

/**
 * Calls one handler with `{ ...meta, event }`. `ownsMeta`: the caller made `meta` for this call alone,
 * so it is completed in place instead of copied (the replication path does this once per change).
 */
export async function invokeAction(
  entry: ActionEntry,
  event: EventRef,
  meta: Record<string, unknown>,
  context: HookContext,
  ownsMeta = false,
): Promise<void> {
  const name = eventNameFor(entry.pattern, event);
  if (ownsMeta) {
    meta['event'] = name;
    await entry.handler(meta, context);
  } else {
    await entry.handler({ ...meta, event: name }, context);
  }
}

export async function dispatchActions(
  entries: readonly ActionEntry[],
  event: EventRef,
  meta: Record<string, unknown>,
  context: HookContext,
  logger?: Logger,
): Promise<ActionFailure[]> {
  const settled = await Promise.allSettled(entries.map((entry) => invokeAction(entry, event, meta, context)));
  const failures: ActionFailure[] = [];
  settled.forEach((outcome, index) => {
    if (outcome.status === 'fulfilled') return;
    const entry = entries[index] as ActionEntry;
    const name = eventNameFor(entry.pattern, event);
    failures.push({ entry, event: name, error: outcome.reason });
    logger?.error({ extension: entry.extension, event: name, collection: event.collection, err: outcome.reason }, 'action handler failed');
  });
  return failures;
}
