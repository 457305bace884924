/**
 * Turns whatever an extension module exports into one normalised list of handlers, whatever the
 * generation of Directus it was written for:
 *
 *   1. `defineHook(({ filter, action, init, schedule, embed }, context) => ...)` (9 GA, 10+)
 *   2. `registerHook(context)` returning `{ '<event>': handler }`; `.before` keys are filters (9 RC)
 *   3. `{ actions: {...}, filters: {...} }` with a `Payload` helper for filters (8)
 *
 * Handlers of styles 2 and 3 are wrapped here so that the rest of the runtime only knows style 1.
 * Registration is all-or-nothing: the collected hooks are handed over only when the whole register
 * function succeeded, so a broken extension never runs half of its validation.
 */
import { HookbridgeError } from './errors.js';
import { parseEventName, type EventPattern, type HookKind } from './event-name.js';
import { Payload } from './payload.js';
import { validateCronExpression } from './schedule.js';
import type { ActionHandler, FilterHandler, HookContext, InitHandler, RegisterContext, RegisterFunctions, ScheduleHandler } from './types.js';

export type HookStyle = 'define-hook' | 'directus-9-rc' | 'directus-8';

export interface FilterEntry {
  kind: 'filter';
  extension: string;
  pattern: EventPattern;
  style: HookStyle;
  handler: FilterHandler;
}
export interface ActionEntry {
  kind: 'action';
  extension: string;
  pattern: EventPattern;
  style: HookStyle;
  handler: ActionHandler;
}
export interface InitEntry {
  kind: 'init';
  extension: string;
  pattern: EventPattern;
  style: HookStyle;
  handler: InitHandler;
}
export type HandlerEntry = FilterEntry | ActionEntry | InitEntry;

export interface ScheduleEntry {
  extension: string;
  expression: string;
  handler: ScheduleHandler;
}

export interface ExtensionHooks {
  name: string;
  /** The file the hooks were loaded from. */
  path: string;
  handlers: HandlerEntry[];
  schedules: ScheduleEntry[];
  embeds: number;
}

export class RegistrationError extends HookbridgeError {
  constructor(extension: string, message: string, cause?: unknown) {
    super('E_EXTENSION_REGISTER', `extension "${extension}": ${message}`, { cause, details: { extension } });
    this.name = 'RegistrationError';
  }
}

/**
 * Calls the module's register function (or reads its hook object) and returns what it registered.
 * `exported` is the module's default export or `module.exports`.
 */
export async function collectHooks(exported: unknown, extension: { name: string; path: string }, context: RegisterContext): Promise<ExtensionHooks> {
  const hooks: ExtensionHooks = { name: extension.name, path: extension.path, handlers: [], schedules: [], embeds: 0 };
  const fail = (message: string, cause?: unknown): never => {
    throw new RegistrationError(extension.name, message, cause);
  };
  const add = (kind: HookKind, name: unknown, handler: unknown, style: HookStyle, suffixDecides = false) => {
    if (typeof name !== 'string') fail(`${kind}() needs an event name string as its first argument, got ${describe(name)}`);
    if (typeof handler !== 'function') fail(`${kind}(${JSON.stringify(name)}) needs a handler function, got ${describe(handler)}`);
    let pattern: EventPattern;
    try {
      pattern = parseEventName(name as string, suffixDecides ? undefined : kind);
    } catch (error) {
      return fail((error as Error).message, error);
    }
    hooks.handlers.push({ kind: pattern.kind, extension: extension.name, pattern, style, handler } as HandlerEntry);
  };

  const register: RegisterFunctions = {
    filter: (event, handler) => add('filter', event, handler, 'define-hook'),
    action: (event, handler) => add('action', event, handler, 'define-hook'),
    init: (event, handler) => add('init', event, handler, 'define-hook'),
    schedule: (expression, handler) => {
      if (typeof handler !== 'function') fail(`schedule(${JSON.stringify(expression)}) needs a handler function`);
      const problem = validateCronExpression(expression);
      if (problem) fail(`schedule(${JSON.stringify(expression)}): ${problem}`);
      hooks.schedules.push({ extension: extension.name, expression, handler });
    },
    embed: (position, code) => {
      if (position !== 'head' && position !== 'body') fail(`embed() position must be "head" or "body", got ${describe(position)}`);
      if (typeof code !== 'string' && typeof code !== 'function') fail('embed() needs a string or a function');
      hooks.embeds += 1;
    },
  };

  if (typeof exported === 'function') {
    // One first argument serves both 9 GA+ (`{ filter, action }`) and 9 RC (`{ services, exceptions }`).
    const first = { ...context, ...register };
    let returned: unknown;
    try {
      returned = await exported(first, context);
    } catch (error) {
      if (error instanceof RegistrationError) throw error;
      fail(`its register function threw: ${(error as Error)?.message ?? String(error)}`, error);
    }
    if (returned !== undefined && returned !== null) {
      if (!isPlainObject(returned))
        fail(`its register function returned ${describe(returned)}; expected nothing, or an object of event handlers (Directus 9 RC)`);
      for (const [event, handler] of Object.entries(returned as Record<string, unknown>)) {
        if (typeof handler !== 'function') fail(`the handler returned for ${JSON.stringify(event)} is ${describe(handler)}, not a function`);
        addRcHandler(hooks, extension.name, event, handler as (...args: any[]) => unknown, fail);
      }
    }
    return hooks;
  }

  if (isPlainObject(exported) && ('actions' in exported || 'filters' in exported)) {
    const { actions = {}, filters = {} } = exported as { actions?: unknown; filters?: unknown };
    if (!isPlainObject(actions)) fail('"actions" must be an object of event handlers');
    if (!isPlainObject(filters)) fail('"filters" must be an object of event handlers');
    for (const [event, handler] of Object.entries(actions as Record<string, unknown>)) {
      if (typeof handler !== 'function') fail(`actions[${JSON.stringify(event)}] is ${describe(handler)}, not a function`);
      addV8Action(hooks, extension.name, event, handler as (...args: any[]) => unknown, fail);
    }
    for (const [event, handler] of Object.entries(filters as Record<string, unknown>)) {
      if (typeof handler !== 'function') fail(`filters[${JSON.stringify(event)}] is ${describe(handler)}, not a function`);
      addV8Filter(hooks, extension.name, event, handler as (...args: any[]) => unknown, fail);
    }
    return hooks;
  }

  return fail(
    `it exports ${describe(exported)}; expected a register function (export default defineHook(...) or ` +
      'module.exports = function registerHook(...)) or an object { actions, filters } (Directus 8)',
  );
}

type Fail = (message: string, cause?: unknown) => never;

function parseOrFail(event: string, kind: HookKind | undefined, fail: Fail): EventPattern {
  try {
    return parseEventName(event, kind);
  } catch (error) {
    return fail((error as Error).message, error);
  }
}

/** Directus 9 RC: `.before` keys are blocking filters, all others actions, all with one context object. */
function addRcHandler(hooks: ExtensionHooks, extension: string, event: string, fn: (...args: any[]) => unknown, fail: Fail) {
  const pattern = parseOrFail(event, undefined, fail);
  if (pattern.kind === 'filter') {
    // 9 RC filters received the items as an array (`input[0].field = ...` in its docs).
    const handler: FilterHandler = async (payload, meta, context) => {
      const wrapped = meta['keys'] === undefined && !Array.isArray(payload) ? [payload] : payload;
      const result = await fn(wrapped, rcContext(meta, context, payload));
      if (result === undefined) return undefined;
      return wrapped !== payload && Array.isArray(result) && result.length === 1 ? result[0] : result;
    };
    hooks.handlers.push({ kind: 'filter', extension, pattern, style: 'directus-9-rc', handler });
  } else {
    const handler: ActionHandler = (meta, context) => fn(rcContext(meta, context, meta['payload']));
    hooks.handlers.push({ kind: 'action', extension, pattern, style: 'directus-9-rc', handler });
  }
}

function rcContext(meta: Record<string, any>, context: HookContext, payload: unknown) {
  const action = typeof meta['event'] === 'string' ? meta['event'].split('.').pop() : undefined;
  return { ...context, ...meta, action, item: meta['keys'] ?? meta['key'], payload };
}

/** Directus 8 actions: `fn(data, collection, meta)`; `:before` runs ahead of the write and cannot change it. */
function addV8Action(hooks: ExtensionHooks, extension: string, event: string, fn: (...args: any[]) => unknown, fail: Fail) {
  const pattern = parseOrFail(event, undefined, fail);
  if (pattern.kind === 'filter') {
    const handler: FilterHandler = async (payload, meta) => {
      await fn(payload, meta['collection'], meta);
      return undefined;
    };
    hooks.handlers.push({ kind: 'filter', extension, pattern, style: 'directus-8', handler });
    return;
  }
  const handler: ActionHandler = (meta) => fn(meta['payload'], meta['collection'], meta);
  hooks.handlers.push({ kind: 'action', extension, pattern, style: 'directus-8', handler });
}

/** Directus 8 filters: a `Payload` in, a `Payload` (or plain data) out. Only `:before` has a meaning here. */
function addV8Filter(hooks: ExtensionHooks, extension: string, event: string, fn: (...args: any[]) => unknown, fail: Fail) {
  const pattern = parseOrFail(event, undefined, fail);
  if (pattern.kind !== 'filter') {
    fail(
      `filters[${JSON.stringify(event)}] would run after the write to change Directus 8's API response, ` +
        `which hookbridge does not have; name it "${event.replace(/:after$/, '')}:before" to filter the write, ` +
        'or move it to "actions" to observe it',
    );
  }
  const handler: FilterHandler = async (payload, meta, context) => {
    const isDelete = Array.isArray(payload);
    const data = isDelete ? {} : (payload as Record<string, unknown>);
    const wrapped = new Payload(data, {
      collection_name: meta['collection'],
      event: meta['event'],
      keys: isDelete ? payload : meta['keys'],
      accountability: context.accountability,
    });
    const result = await fn(wrapped);
    if (isDelete) return undefined;
    if (result === undefined || result === null) return wrapped.getData();
    if (Payload.isPayload(result)) return (result as Payload).getData();
    if (isPlainObject(result)) return result;
    throw new HookbridgeError('E_FILTER_RESULT', `a Directus 8 filter must return its Payload, got ${describe(result)}`);
  };
  hooks.handlers.push({ kind: 'filter', extension, pattern, style: 'directus-8', handler });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  // Module namespace objects and objects from other realms (jiti, vm) have a null or foreign prototype.
  return proto === null || proto === Object.prototype || Object.getPrototypeOf(proto) === null;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object') return `an object${Object.keys(value).length ? ` with keys ${Object.keys(value).slice(0, 5).join(', ')}` : ''}`;
  return `${typeof value} ${JSON.stringify(value)}`;
}
