/**
 * The filter chain: handlers run one after another in registration order; a returned value replaces
 * the payload for the next handler, `undefined` keeps it; the first throw stops the chain and the
 * write, and its error travels to the writer with its message and code intact.
 */
import { describeHookError, HookbridgeError } from './errors.js';
import { eventNameFor, type EventRef } from './event-name.js';
import type { FilterEntry } from './register.js';
import type { HookContext } from './types.js';

/** A filter refused the write. `code`/`status` are the hook's own (Directus codes survive). */
export class FilterRejection extends HookbridgeError {
  readonly status: number;
  readonly extensions: Record<string, unknown> | undefined;
  readonly extension: string;
  readonly event: string;

  constructor(entry: FilterEntry, event: string, error: unknown) {
    const described = describeHookError(error);
    super(described.code, described.message, { cause: error, details: { extension: entry.extension, event } });
    this.name = 'FilterRejection';
    this.status = described.status;
    this.extensions = described.extensions;
    this.extension = entry.extension;
    this.event = event;
  }
}

export async function runFilterChain<T>(
  entries: readonly FilterEntry[],
  event: EventRef,
  payload: T,
  meta: Record<string, unknown>,
  context: HookContext,
): Promise<T> {
  let current = payload;
  for (const entry of entries) {
    const name = eventNameFor(entry.pattern, event);
    let result: unknown;
    try {
      result = await entry.handler(current, { ...meta, event: name }, context);
    } catch (error) {
      throw new FilterRejection(entry, name, error);
    }
    if (result !== undefined) current = result as T;
  }
  return current;
}
