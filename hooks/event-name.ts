/**
 * Event names: one parser for every spelling the seeds use, and one matcher.
 *
 * Canonical (Directus 9+):   items.create            <collection>.items.create
 * Aliases accepted:          items.create.<collection>      (Directus 9 RC)
 *                            item.create.<collection>       (Directus 8, 9 RC)
 *                            item.<collection>.create       (Directus 9 RC example)
 *                            <name>.before / <name>:before  (filter)
 *                            <name>.after  / <name>:after   (action)
 *                            `*` anywhere: a whole segment, or a glob inside the collection/action
 *
 * A collection is a table name for tables in `public`, `schema.table` otherwise, so a collection may
 * contain dots; the parser anchors on the `items` scope and the action word instead of splitting
 * blindly.
 */
import { HookbridgeError } from './errors.js';

export type HookKind = 'filter' | 'action' | 'init';

/**
 * `truncate` is hookbridge's own (Directus has no such event): it fires only for handlers — filters and
 * actions alike — that name it, never through a `*`, because a truncate carries no keys and `items.*`
 * handlers expect them. (So an `items.*` filter counts as a delete filter, and a TRUNCATE of its tables
 * is refused until an `items.truncate` filter allows it: bridge/filters/filter-requests.ts.)
 */
export const ITEM_ACTIONS = ['create', 'update', 'delete', 'read', 'query', 'truncate'] as const;
export type ItemAction = (typeof ITEM_ACTIONS)[number];

/** Write actions: the ones the database itself can observe (triggers, WAL). */
export const WRITE_ACTIONS = ['create', 'update', 'delete'] as const satisfies readonly ItemAction[];
export type WriteAction = (typeof WRITE_ACTIONS)[number];

export const SERVER_ACTIONS = ['start', 'stop'] as const;

export const INIT_EVENTS = [
  'cli.before',
  'cli.after',
  'app.before',
  'app.after',
  'routes.before',
  'routes.after',
  'routes.custom.before',
  'routes.custom.after',
  'middlewares.before',
  'middlewares.after',
] as const;
export type InitEvent = (typeof INIT_EVENTS)[number];

/** Directus system scopes: they name Directus' own tables, which a plain database does not have. */
const DIRECTUS_SYSTEM_SCOPES = new Set([
  'activity',
  'auth',
  'collections',
  'dashboards',
  'extensions',
  'fields',
  'files',
  'flows',
  'folders',
  'notifications',
  'operations',
  'panels',
  'permissions',
  'policies',
  'presets',
  'relations',
  'request',
  'response',
  'revisions',
  'roles',
  'settings',
  'shares',
  'translations',
  'users',
  'versions',
  'webhooks',
  'websocket',
  'database',
  'email',
  'server',
  'cli',
  'app',
  'routes',
  'middlewares',
  'file',
  'field',
  'collection',
  'application',
]);

export type EventPattern =
  | {
      kind: 'filter' | 'action';
      scope: 'items';
      /** `*`, an exact action, or a glob over {@link ITEM_ACTIONS}. */
      action: string;
      /** `null`: any collection (the name had none, or `*`). Otherwise an exact name or a glob. */
      collection: string | null;
      /** The name had a collection segment, `*` (Directus runs it with the collection's handlers: registry.ts). */
      anyCollection?: true;
      source: string;
    }
  | { kind: 'action'; scope: 'server'; action: string; collection: null; source: string }
  | { kind: 'init'; scope: 'init'; action: InitEvent; collection: null; source: string }
  /** A name only the `emitter` uses (extensions talking to each other); matched by exact name. */
  | { kind: HookKind; scope: 'custom'; action: string; collection: null; source: string };

/** A concrete event at fire time. */
export interface EventRef {
  scope: 'items' | 'server' | 'custom';
  action: string;
  collection?: string;
}

export class EventNameError extends HookbridgeError {
  constructor(eventName: string, reason: string) {
    super('E_EVENT_NAME', `invalid event name ${JSON.stringify(eventName)}: ${reason}`, {
      details: { event: eventName },
    });
    this.name = 'EventNameError';
  }
}

/**
 * Parses a registration name. `kind` is the registration function's kind (`filter()`, `action()`,
 * `init()`); leave it out for the styles where the name alone decides (the 9 RC object, whose
 * `.before` keys are filters, and Directus 8 `:before`).
 */
export function parseEventName(name: string, kind?: HookKind): EventPattern {
  if (typeof name !== 'string' || name.trim() === '') throw new EventNameError(String(name), 'it is empty');
  const source = name;
  let rest = name.trim();

  if (kind === 'init') {
    if ((INIT_EVENTS as readonly string[]).includes(rest)) {
      return { kind: 'init', scope: 'init', action: rest as InitEvent, collection: null, source };
    }
    throw new EventNameError(name, `unknown init event; known init events: ${INIT_EVENTS.join(', ')}`);
  }

  if ((INIT_EVENTS as readonly string[]).includes(rest)) {
    throw new EventNameError(name, 'it is an init event; register it with init()');
  }

  let suffixKind: 'filter' | 'action' | undefined;
  const suffix = /(?:[.:])(before|after)$/.exec(rest);
  if (suffix && suffix.index > 0) {
    suffixKind = suffix[1] === 'before' ? 'filter' : 'action';
    rest = rest.slice(0, suffix.index);
  }
  if (kind && suffixKind && kind !== suffixKind) {
    const word = suffixKind === 'filter' ? 'before' : 'after';
    throw new EventNameError(
      name,
      `the "${word}" suffix makes it ${suffixKind === 'filter' ? 'a filter' : 'an action'}, but it was registered with ${kind}(); ` +
        `drop the suffix or register it with ${suffixKind}()`,
    );
  }
  const resolvedKind: 'filter' | 'action' = (kind as 'filter' | 'action' | undefined) ?? suffixKind ?? 'action';

  const segments = rest.split('.');
  if (segments.some((s) => s.trim() === '')) throw new EventNameError(name, 'it has an empty segment');

  const first = segments[0] as string;
  if (first === 'server' && segments.length === 2) {
    const action = segments[1] as string;
    if (!(SERVER_ACTIONS as readonly string[]).includes(action) && action !== '*') {
      throw new EventNameError(name, `unknown server event; known: ${SERVER_ACTIONS.map((a) => `server.${a}`).join(', ')}`);
    }
    if (resolvedKind !== 'action') throw new EventNameError(name, 'server events are actions, not filters');
    return { kind: 'action', scope: 'server', action, collection: null, source };
  }

  // items.<action>[.<collection>]  |  item.<collection>.<action>  |  *.<action>
  if (first === 'items' || first === 'item' || (first === '*' && segments[1] !== 'items' && segments[1] !== 'item')) {
    if (segments.length === 1) {
      if (first === '*') return itemPattern(resolvedKind, '*', null, source);
      throw new EventNameError(name, `it names no action; use e.g. ${first}.create`);
    }
    const second = segments[1] as string;
    if (isActionPattern(second)) {
      const collection = segments.length > 2 ? segments.slice(2).join('.') : null;
      return itemPattern(resolvedKind, checkAction(name, second), collection, source);
    }
    const last = segments[segments.length - 1] as string;
    if (segments.length > 2 && isActionPattern(last)) {
      return itemPattern(resolvedKind, checkAction(name, last), segments.slice(1, -1).join('.'), source);
    }
    throw new EventNameError(name, `unknown action "${second}"; item actions are ${ITEM_ACTIONS.join(', ')}`);
  }

  // <collection>.items.<action>
  if (segments.length >= 3) {
    const scopeWord = segments[segments.length - 2];
    if (scopeWord === 'items' || scopeWord === 'item') {
      const action = segments[segments.length - 1] as string;
      return itemPattern(resolvedKind, checkAction(name, action), segments.slice(0, -2).join('.'), source);
    }
  }

  if (DIRECTUS_SYSTEM_SCOPES.has(first)) {
    throw new EventNameError(
      name,
      `"${first}" is a Directus system scope, and hookbridge fires item events for your own tables only; ` +
        `for a table named ${first} write "${first}.items.${segments[1] ?? 'create'}"`,
    );
  }
  throw new EventNameError(name, `unknown scope "${first}"; write items.<action> or <collection>.items.<action> (actions: ${ITEM_ACTIONS.join(', ')})`);
}

function itemPattern(kind: 'filter' | 'action', action: string, collection: string | null, source: string): EventPattern {
  if (collection === '*') return { kind, scope: 'items', action, collection: null, anyCollection: true, source };
  return { kind, scope: 'items', action, collection, source };
}

function isActionPattern(segment: string): boolean {
  if (segment.includes('*')) return ITEM_ACTIONS.some((a) => globToRegExp(segment).test(a));
  return (ITEM_ACTIONS as readonly string[]).includes(segment);
}

function checkAction(name: string, action: string): string {
  if (!isActionPattern(action)) {
    throw new EventNameError(name, `unknown action "${action}"; item actions are ${ITEM_ACTIONS.join(', ')}`);
  }
  return action;
}

const globCache = new Map<string, RegExp>();

/** `*` matches any run of characters (dots included: `shop.*` covers every table of schema shop). */
export function globToRegExp(glob: string): RegExp {
  let re = globCache.get(glob);
  if (!re) {
    const body = glob
      .split('*')
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*');
    re = new RegExp(`^${body}$`, 'su');
    globCache.set(glob, re);
  }
  return re;
}

function segmentMatches(pattern: string, value: string): boolean {
  if (pattern === '*') return true;
  if (!pattern.includes('*')) return pattern === value;
  return globToRegExp(pattern).test(value);
}

export function matchesEvent(pattern: EventPattern, event: EventRef): boolean {
  if (pattern.scope !== event.scope) return false;
  if (pattern.scope === 'custom') return pattern.action === event.action;
  if (event.action === 'truncate' && pattern.action !== 'truncate') return false;
  if (!segmentMatches(pattern.action, event.action)) return false;
  if (pattern.collection === null) return true;
  return event.collection !== undefined && segmentMatches(pattern.collection, event.collection);
}

/** What a write to some table can fire: the write actions and hookbridge's own `truncate`. */
export const TABLE_ACTIONS = [...WRITE_ACTIONS, 'truncate'] as const satisfies readonly ItemAction[];

/** The actions of a table's writes (create, update, delete, truncate) that an `items` pattern covers, on any of its tables. */
export function tableActionsOf(pattern: EventPattern): Array<(typeof TABLE_ACTIONS)[number]> {
  const anyTable = { ...pattern, collection: null } as EventPattern;
  return TABLE_ACTIONS.filter((action) => matchesEvent(anyTable, { scope: 'items', action }));
}

/**
 * The `event` a handler sees in its meta, as Directus emits it: the collection-scoped name when the
 * handler was registered for a collection, the generic one otherwise.
 */
export function eventNameFor(pattern: EventPattern, event: EventRef): string {
  if (event.scope === 'server') return `server.${event.action}`;
  if (event.scope === 'custom') return event.action;
  return pattern.collection !== null && event.collection !== undefined ? `${event.collection}.items.${event.action}` : `items.${event.action}`;
}

/** The canonical spelling of a pattern, for status output and logs. */
export function formatPattern(pattern: EventPattern): string {
  if (pattern.scope === 'init' || pattern.scope === 'custom') return pattern.action;
  if (pattern.scope === 'server') return `server.${pattern.action}`;
  return pattern.collection === null ? `items.${pattern.action}` : `${pattern.collection}.items.${pattern.action}`;
}

/**
 * Reads a concrete (emitted) event name: `items.create`, `<collection>.items.create`, `server.start`;
 * any other name is a custom event that only the emitter's own listeners hear.
 */
export function toEventRef(name: string): EventRef {
  const generic = /^items\.([a-z]+)$/.exec(name);
  if (generic && isItemAction(generic[1])) return { scope: 'items', action: generic[1] };
  const scoped = /^(.+)\.items\.([a-z]+)$/s.exec(name);
  if (scoped && isItemAction(scoped[2])) return { scope: 'items', action: scoped[2], collection: scoped[1] as string };
  const server = /^server\.(start|stop)$/.exec(name);
  if (server) return { scope: 'server', action: server[1] as string };
  return { scope: 'custom', action: name };
}

function isItemAction(value: string | undefined): value is ItemAction {
  return (ITEM_ACTIONS as readonly (string | undefined)[]).includes(value);
}

/** The pattern for a name registered through the emitter: an event name if it parses, else custom. */
export function parseEmitterEventName(name: string, kind: HookKind): EventPattern {
  try {
    return parseEventName(name, kind);
  } catch {
    return { kind, scope: 'custom', action: name, collection: null, source: name };
  }
}
