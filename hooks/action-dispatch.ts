/**
 * Action dispatch, one path for every action event: a committed change from the stream, an event an
 * extension emits, `server.start`/`server.stop`, a service's `items.read`, a replay of a parked event.
 * Every matching handler runs (concurrently, as Directus runs them), and one handler's failure stops
 * neither the others nor the stream. Each handler runs under a policy (ActionPolicy): every try
 * bounded by ACTION_TIMEOUT_MS and observed (metrics), a failed try retried alone with jittered backoff
 * up to its attempts. A committed change gets ACTION_ATTEMPTS and is then parked
 * (bridge/replication/delivery.ts): it has an id a handler can tell a retry by, and a durable row. An
 * event that is no committed change gets one try (it has neither, and Directus runs it once); its
 * failure is logged and counted. (A try that times out is not stopped: JavaScript cannot stop it.)
 */
import type { Logger } from 'pino';
import { withTimeout } from '../bridge/timeout.js';
import { eventNameFor, type EventRef } from './event-name.js';
import type { ActionEntry } from './register.js';
import type { HookContext } from './types.js';

export interface ActionFailure {
  entry: ActionEntry;
  /** The event name the handler saw in its meta. */
  event: string;
  error: unknown;
}

export type TryOutcome = 'ok' | 'error' | 'timeout';

export interface ActionPolicy {
  /** Tries per handler, the first included. */
  attempts: number;
  /** Longest one try may run before it counts as failed; 0: no limit. */
  timeoutMs: number;
  /** Backoff between tries: full jitter over base * 2^(try - 1), at most max (default 100 ms and 10 s). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Aborted: no further try starts, and a backoff ends at once (ActionAborted). */
  signal?: AbortSignal;
  /** Told about every try. */
  observe?: (entry: ActionEntry, event: EventRef, seconds: number, outcome: TryOutcome) => void;
}

/** One try, no limit: a runtime that no bridge configured (tests, embedding). */
export const SINGLE_TRY: ActionPolicy = { attempts: 1, timeoutMs: 0 };

export class ActionAborted extends Error {
  constructor() {
    super('action aborted: the bridge is stopping');
    this.name = 'ActionAborted';
  }
}

/**
 * Calls one handler with `{ ...meta, event }`. `ownsMeta`: the caller made `meta` for this call alone,
 * so it is completed in place instead of copied (the replication path does this once per change).
 */
export async function invokeAction(entry: ActionEntry, event: EventRef, meta: Record<string, unknown>, context: HookContext, ownsMeta = false): Promise<void> {
  const name = eventNameFor(entry.pattern, event);
  if (ownsMeta) {
    meta['event'] = name;
    await entry.handler(meta, context);
  } else {
    await entry.handler({ ...meta, event: name }, context);
  }
}

/**
 * Runs one handler under `policy`. Resolves with undefined once a try succeeded, or with the last
 * try's error once every try failed; throws ActionAborted when the policy's signal ends the retries.
 * `log` makes the handler's logger (only called when there is something to log: this runs per change).
 */
export async function runAction(
  entry: ActionEntry,
  event: EventRef,
  meta: Record<string, unknown>,
  context: HookContext,
  policy: ActionPolicy,
  log: () => Logger | undefined,
  ownsMeta = false,
): Promise<unknown> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= policy.attempts; attempt++) {
    if (policy.signal?.aborted) throw new ActionAborted();
    const started = performance.now();
    let timedOut: Error | undefined;
    try {
      // A try that outlives the timeout counts as failed. (Shutdown does not cut a running try short:
      // the bridge gives running handlers a grace period; the abort is checked before each try and in backoff.)
      const running = invokeAction(entry, event, meta, context, ownsMeta);
      await (policy.timeoutMs > 0
        ? withTimeout(running, policy.timeoutMs, () => (timedOut = new Error(`action handler did not finish within ${policy.timeoutMs} ms`)))
        : running);
      policy.observe?.(entry, event, (performance.now() - started) / 1000, 'ok');
      if (attempt > 1) log()?.info({ attempt }, 'action handler succeeded after retrying');
      return undefined;
    } catch (error) {
      policy.observe?.(entry, event, (performance.now() - started) / 1000, error === timedOut ? 'timeout' : 'error');
      lastError = error;
      if (attempt < policy.attempts) {
        log()?.warn({ err: error, attempt, of: policy.attempts }, 'action handler failed; retrying');
        await sleep(backoff(attempt, policy), policy.signal);
      }
    }
  }
  return lastError;
}

/**
 * Every handler of an event that is no committed change, under `policy`; the failures (each logged
 * with its extension) are returned, never thrown.
 */
export async function dispatchActions(
  entries: readonly ActionEntry[],
  event: EventRef,
  meta: Record<string, unknown>,
  context: HookContext,
  logger?: Logger,
  policy: ActionPolicy = SINGLE_TRY,
): Promise<ActionFailure[]> {
  const failures: ActionFailure[] = [];
  await Promise.all(
    entries.map(async (entry) => {
      const name = eventNameFor(entry.pattern, event);
      const log = () => logger?.child({ extension: entry.extension, event: name, collection: event.collection });
      let error: unknown;
      try {
        error = await runAction(entry, event, meta, context, policy, log);
      } catch (aborted) {
        error = aborted;
      }
      if (error === undefined) return;
      failures.push({ entry, event: name, error });
      log()?.error({ err: error, ...(policy.attempts > 1 ? { attempts: policy.attempts } : {}) }, 'action handler failed');
    }),
  );
  return failures;
}

export function backoff(attempt: number, policy: Pick<ActionPolicy, 'baseDelayMs' | 'maxDelayMs'>): number {
  const base = policy.baseDelayMs ?? 100;
  const cap = policy.maxDelayMs ?? 10_000;
  const exponential = Math.min(cap, base * 2 ** (attempt - 1));
  // Full jitter: retries of many failing events do not stampede together.
  return Math.round(exponential / 2 + Math.random() * (exponential / 2));
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new ActionAborted());
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new ActionAborted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
