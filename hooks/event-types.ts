/**
 * Event names and handler arguments as types, so that a hook author's editor catches
 * `filter('articels.itemz.craete', ...)` and `meta.colection` before the bridge loads the hook.
 *
 * Names are parsed by the type-level grammar of event-name-types.ts, which mirrors parseEventName: a
 * literal name the runtime would refuse fails to compile, with the runtime's reason in the error. A
 * name of plain type `string` (built at run time) is accepted and gets the loose handler types.
 *
 * What a name's handlers receive comes from the user's tables, declared by `hookbridge types`
 * (bridge/type-declarations.ts) through declaration merging into {@link Collections},
 * {@link CollectionPrimaryKeys} and {@link Database}. Before anything is declared, any collection
 * name is accepted and rows are `Record<string, any>`.
 */
import type { Kysely } from 'kysely';
import type { Query } from '../bridge/services/items-service.js';
import type { InitEvent, ItemAction } from './event-name.js';
import type { IsLiteral, Matching, Parsed, ParsedItems, ParsedServer, ParseEventName, Refused, Trim } from './event-name-types.js';
import type { FilterHandler, HookContext } from './types.js';

// ---------------------------------------------------------------------------------------------------
// What `hookbridge types` declares

/**
 * Your tables' rows as hooks receive them (one lossless typing: int8 and numeric as strings, dates as
 * ISO strings, json parsed, bytea as Buffer), by collection name. Empty until `hookbridge types`
 * writes a declaration file that fills it in.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled in by declaration merging (`hookbridge types`)
export interface Collections {}

/**
 * Each collection's key columns, in key order: `[]` for a table whose events carry a `null` key (no
 * primary key). A collection missing here has keys of type `unknown`.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled in by declaration merging (`hookbridge types`)
export interface CollectionPrimaryKeys {}

/** Your tables as `context.kysely` reads them: the `pg` driver's typing (timestamps as `Date`, ...). */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled in by declaration merging (`hookbridge types`)
export interface Database {}

/** A parsed json/jsonb value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** An `interval` as the `pg` driver reads it (postgres-interval): only the parts that are not zero. */
export interface PgInterval {
  years?: number;
  months?: number;
  days?: number;
  hours?: number;
  minutes?: number;
  seconds?: number;
  milliseconds?: number;
  toPostgres(): string;
  toISO(): string;
  toISOString(): string;
}

/** `context.kysely`: typed from {@link Database} once your tables are declared. */
export type HookKysely = [keyof Database] extends [never] ? Kysely<any> : Kysely<Database>;

type DeclaredCollection = keyof Collections & string;
type HasDeclarations = [DeclaredCollection] extends [never] ? false : true;

/** A collection's row: declared, or loose before `hookbridge types` ran. */
export type CollectionRow<C extends string> = C extends DeclaredCollection ? Collections[C] : Record<string, any>;

/** The key a collection's events carry (`key`, `keys`): its primary key's value, an object for a composite one. */
export type CollectionKey<C extends string> = C extends keyof CollectionPrimaryKeys ? KeyFromColumns<CollectionRow<C>, CollectionPrimaryKeys[C]> : unknown;

type KeyFromColumns<Row, Columns> = Columns extends []
  ? null
  : Columns extends [infer Column extends keyof Row]
    ? NonNullable<Row[Column]>
    : Columns extends ReadonlyArray<keyof Row>
      ? { [Column in Columns[number]]: NonNullable<Row[Column]> }
      : unknown;

// ---------------------------------------------------------------------------------------------------
// Checking a name against the declared collections

/** The declared collections a collection pattern names (`null`: all of them). */
type MatchedCollections<Collection extends string | null> = HasDeclarations extends false
  ? Collection extends `${string}*${string}` | null
    ? string
    : Collection
  : Collection extends null
    ? DeclaredCollection
    : Collection extends `${string}*${string}`
      ? Matching<Collection & string, DeclaredCollection>
      : Collection & DeclaredCollection;

type CheckCollection<P extends Parsed> =
  P extends ParsedItems<'filter' | 'action', string, infer Collection>
    ? Collection extends string
      ? [MatchedCollections<Collection>] extends [never]
        ? Collection extends `${string}*${string}`
          ? Refused<`no declared collection matches "${Collection}" (declared by hookbridge types; run it again after schema changes)`>
          : Refused<`there is no collection "${Collection}" among the declared ones (declared by hookbridge types; run it again after schema changes)`>
        : P
      : P
    : P;

type Checked<Name extends string, Kind extends 'filter' | 'action'> = CheckCollection<ParseEventName<Name, Kind>>;

/** The name itself when it is valid, else the reason, which the compiler shows in its error. */
type Valid<Name extends string, Kind extends 'filter' | 'action'> =
  IsLiteral<Name> extends false ? Name : Checked<Name, Kind> extends Refused<infer Reason> ? `✗ invalid event name "${Name}": ${Reason}` : Name;

export type FilterEventName<Name extends string> = Name extends unknown ? Valid<Name, 'filter'> : never;
export type ActionEventName<Name extends string> = Name extends unknown ? Valid<Name, 'action'> : never;
export type InitEventName<Name extends string> = Name extends unknown
  ? IsLiteral<Name> extends false
    ? Name
    : Trim<Name> extends InitEvent
      ? Name
      : `✗ invalid event name "${Name}": unknown init event; init() takes an InitEvent (app.before, routes.custom.before, ...)`
  : never;

// ---------------------------------------------------------------------------------------------------
// What handlers receive

/** The actions each kind of handler can hear: writes from the database, reads from the services. */
type FiredActions = { filter: 'create' | 'update' | 'delete' | 'truncate' | 'read' | 'query'; action: 'create' | 'update' | 'delete' | 'truncate' | 'read' };

/** `truncate` is heard only by handlers that name it, never through a `*` (matchesEvent). */
type MatchedActions<Pattern extends string, Kind extends 'filter' | 'action'> = Pattern extends 'truncate'
  ? 'truncate'
  : Matching<Pattern, Exclude<FiredActions[Kind], 'truncate'>>;

/** One concrete event a registration hears, with the `event` its meta carries (eventNameFor). */
interface Heard<Action extends ItemAction, Collection extends string, Event extends string> {
  action: Action;
  collection: Collection;
  event: Event;
}

type HeardEvents<P> =
  P extends ParsedItems<infer Kind, infer Action, infer Collection>
    ? MatchedActions<Action, Kind> extends infer A extends ItemAction
      ? A extends unknown
        ? MatchedCollections<Collection> extends infer C extends string
          ? C extends unknown
            ? Heard<A, C, Collection extends null ? `items.${A}` : `${C}.items.${A}`>
            : never
          : never
        : never
      : never
    : never;

type Events<Name extends string, Kind extends 'filter' | 'action'> = Name extends unknown ? HeardEvents<Checked<Name, Kind>> : never;

/** Delivery fields of every action that comes from the WAL: a stable id to de-duplicate on, and its transaction. */
export interface DeliveryMeta {
  /** `<commit LSN>:<position in the transaction>`: the same on every redelivery. */
  id: string;
  /** The commit LSN, as Postgres prints it. */
  lsn: string;
  xid: number;
  committedAt: Date;
}

/** A filter's meta for a create (also for `items.query`, which carries nothing more). */
export interface FilterCreateMeta<C extends string = string, E extends string = string> {
  event: E;
  collection: C;
}
export interface FilterUpdateMeta<C extends string = string, E extends string = string> {
  event: E;
  collection: C;
  keys: CollectionKey<C>[];
}
export interface FilterDeleteMeta<C extends string = string, E extends string = string> {
  event: E;
  collection: C;
}
export interface FilterTruncateMeta<C extends string = string, E extends string = string> {
  event: E;
  collection: C;
  /** The partition the TRUNCATE named, when it named one (as a collection name). */
  partition?: string;
}
/** `items.read` filters (hookbridge's own services only): the query the rows were read with. */
export interface FilterReadMeta<C extends string = string, E extends string = string> {
  event: E;
  collection: C;
  query: Query;
}

export interface ActionCreateMeta<C extends string = string, E extends string = string> extends DeliveryMeta {
  event: E;
  collection: C;
  key: CollectionKey<C>;
  /** The new row (before PostgreSQL 18, without its stored generated columns). */
  payload: CollectionRow<C>;
  /** A row the table held when it joined the publication, not an insert seen in the WAL. */
  catchUp?: true;
}
export interface ActionUpdateMeta<C extends string = string, E extends string = string> extends DeliveryMeta {
  event: E;
  collection: C;
  keys: CollectionKey<C>[];
  /** The new row as the WAL carries it; unchanged TOASTed columns are absent (see `unchangedToast`). */
  payload: Partial<CollectionRow<C>>;
  /** The old row, with REPLICA IDENTITY FULL. */
  previous?: CollectionRow<C>;
  /** The keys before the update, when it changed them. */
  previousKeys?: CollectionKey<C>[];
  /** Columns whose TOASTed values did not change and were not sent. */
  unchangedToast?: string[];
}
export interface ActionDeleteMeta<C extends string = string, E extends string = string> extends DeliveryMeta {
  event: E;
  collection: C;
  keys: CollectionKey<C>[];
  payload: CollectionKey<C>[];
  /** The old row, with REPLICA IDENTITY FULL. */
  previous?: CollectionRow<C>;
}
export interface ActionTruncateMeta<C extends string = string, E extends string = string> extends DeliveryMeta {
  event: E;
  collection: C;
  payload: null;
  keys: null;
  cascade: boolean;
  restartIdentity: boolean;
}
/** `items.read` actions (hookbridge's own services only). */
export interface ActionReadMeta<C extends string = string, E extends string = string> {
  event: E;
  collection: C;
  payload: Partial<CollectionRow<C>>[];
  query: Query;
}

type FilterPayloadOf<H> =
  H extends Heard<infer A, infer C, string>
    ? A extends 'create' | 'update'
      ? Partial<CollectionRow<C>>
      : A extends 'delete'
        ? CollectionKey<C>[]
        : A extends 'truncate'
          ? null
          : A extends 'read'
            ? Partial<CollectionRow<C>>[]
            : Query
    : never;

type FilterMetaOf<H> =
  H extends Heard<infer A, infer C, infer E>
    ? A extends 'update'
      ? FilterUpdateMeta<C, E>
      : A extends 'delete'
        ? FilterDeleteMeta<C, E>
        : A extends 'truncate'
          ? FilterTruncateMeta<C, E>
          : A extends 'read'
            ? FilterReadMeta<C, E>
            : FilterCreateMeta<C, E>
    : never;

type ActionMetaOf<H> =
  H extends Heard<infer A, infer C, infer E>
    ? A extends 'create'
      ? ActionCreateMeta<C, E>
      : A extends 'update'
        ? ActionUpdateMeta<C, E>
        : A extends 'delete'
          ? ActionDeleteMeta<C, E>
          : A extends 'truncate'
            ? ActionTruncateMeta<C, E>
            : ActionReadMeta<C, E>
    : never;

export interface ServerMeta<E extends string = string> {
  event: E;
  /** The HTTP server, when there is one. */
  server: unknown;
}

/** A filter's payload for an event name: `FilterPayload<'articles.items.create'>`. */
export type FilterPayload<Name extends string> = FilterPayloadOf<Events<Name, 'filter'>>;
/** A filter's meta for an event name. */
export type FilterMeta<Name extends string> = FilterMetaOf<Events<Name, 'filter'>>;
/** An action's meta for an event name: `ActionMeta<'articles.items.update'>`. */
export type ActionMeta<Name extends string> = [ParseEventName<Name, 'action'>] extends [ParsedServer<infer A>]
  ? ServerMeta<`server.${Matching<A, 'start' | 'stop'>}`>
  : ActionMetaOf<Events<Name, 'action'>>;

type Awaitable<T> = T | Promise<T>;

/**
 * The handler `filter(name, handler)` takes. A name that covers several events (`items.create`,
 * `blog_*.items.create`, `items.*`) gets the union of their payloads and of their metas. (One
 * argument list per event, which would let `meta.collection` narrow `payload`, types only handlers
 * that declare all three parameters: TypeScript checks a shorter one against the whole tuple.)
 */
export type FilterHandlerFor<Name extends string> =
  IsLiteral<Name> extends false
    ? FilterHandler
    : [Events<Name, 'filter'>] extends [never]
      ? FilterHandler
      : (
          payload: FilterPayloadOf<Events<Name, 'filter'>>,
          meta: FilterMetaOf<Events<Name, 'filter'>>,
          context: HookContext,
        ) => Awaitable<FilterPayloadOf<Events<Name, 'filter'>> | undefined | void>;

/** The handler `action(name, handler)` takes. */
export type ActionHandlerFor<Name extends string> =
  IsLiteral<Name> extends false
    ? (meta: Record<string, any>, context: HookContext) => unknown
    : [ActionMeta<Name>] extends [never]
      ? (meta: Record<string, any>, context: HookContext) => unknown
      : (meta: ActionMeta<Name>, context: HookContext) => unknown;
