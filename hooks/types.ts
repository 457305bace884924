/**
 * The types a hook author meets. Shapes follow Directus 10 (see README, "Hook API"); `any` appears
 * where Directus itself leaves the author free to narrow (payloads, meta).
 */
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { InitEvent } from './event-name.js';
import type { ActionEventName, ActionHandlerFor, FilterEventName, FilterHandlerFor, HookKysely, InitEventName } from './event-types.js';

/** Who made the write. Filled from the writer's session (filters) or its transaction (actions). */
export interface Accountability {
  /** The application user, when the writer set one (`SET hookbridge.user`, PostgREST claims). */
  user: string | null;
  /** The writer's database role. */
  role: string | null;
  /** True when the database role is a superuser. */
  admin: boolean;
  /** Directus' "app access"; always false: writes here do not come from the Directus app. */
  app: boolean;
  /** Client address of the writer's connection, when it used TCP. */
  ip: string | null;
  /** The writer's `application_name`. */
  userAgent: string | null;
  /**
   * Action hooks: true when the database signed this identity in the change's own transaction; false
   * when none reached the bridge (an unknown writer: every other field null, `admin` false). Absent in
   * filters, which hear the writer's session from the database itself.
   */
  verified?: boolean;
  [key: string]: unknown;
}

/** The third argument of a filter, the second of an action (Directus' EventContext). */
export interface HookContext {
  /**
   * A Knex instance, as in Directus (`database('articles').where(...)`, `database.raw`, `transaction`).
   * In a filter it runs outside the writer's transaction: it does not see the row being written.
   */
  database: Knex;
  /**
   * The same database as a kysely instance, for new code that wants typed queries: `Kysely<Database>`
   * once `hookbridge types` declared your tables, else `Kysely<any>`.
   */
  kysely: HookKysely;
  /** The schema snapshot the event was handled with (see `getSchema`). */
  schema: any;
  accountability: Accountability | null;
  [key: string]: unknown;
}

export type FilterHandler<Payload = any, Meta extends Record<string, any> = Record<string, any>> = (
  payload: Payload,
  meta: Meta,
  context: HookContext,
) => Payload | undefined | void | Promise<Payload | undefined | void>;

export type ActionHandler<Meta extends Record<string, any> = Record<string, any>> = (meta: Meta, context: HookContext) => unknown;

export type InitHandler<Meta extends Record<string, any> = Record<string, any>> = (meta: Meta) => unknown;

export type ScheduleHandler = () => unknown;

export type EmbedPosition = 'head' | 'body';

/** Whether `filter`'s type argument is an event name (inferred from the call) rather than a payload type given by hand. */
type IsNameType<T> = 0 extends 1 & T ? false : [T] extends [string] ? true : false;

/**
 * What a register function receives. A literal event name is checked at compile time as the runtime
 * checks it (event-types.ts), and its handler's payload and meta are typed from it; a name of type
 * `string` is accepted as is, with loosely typed handlers.
 */
export interface RegisterFunctions {
  // NoInfer: the name alone decides the handler's type. Inferring from the handler too would relate
  // its parameter to every declared collection's meta, seconds of work with hundreds of tables.
  // `filter<Payload>(name, handler)`, Directus' own typing, still works: a type argument that is not
  // a string is the payload's type, and the name is then taken as any string.
  filter<const Name = string>(
    event: IsNameType<Name> extends true ? FilterEventName<Name & string> : string,
    handler: NoInfer<IsNameType<Name> extends true ? FilterHandlerFor<Name & string> : FilterHandler<Name>>,
  ): void;
  action<Name extends string>(event: ActionEventName<Name>, handler: NoInfer<ActionHandlerFor<Name>>): void;
  init<Name extends string>(
    event: InitEventName<Name>,
    handler: NoInfer<InitHandler<{ event: Name extends InitEvent ? Name : string; [key: string]: any }>>,
  ): void;
  schedule(cron: string, handler: ScheduleHandler): void;
  /** Accepted for compatibility; hookbridge serves no admin app, so the code goes nowhere. */
  embed(position: EmbedPosition, code: string | (() => string)): void;
}

/** The events an extension can emit and listen to beyond table writes (Directus' `emitter`). */
export interface HookEmitter {
  emitFilter<T>(event: string | string[], payload: T, meta?: Record<string, any>, context?: Partial<HookContext> | null): Promise<T>;
  emitAction(event: string | string[], meta?: Record<string, any>, context?: Partial<HookContext> | null): void;
  emitInit(event: string, meta?: Record<string, any>): Promise<void>;
  onFilter(event: string, handler: FilterHandler): void;
  onAction(event: string, handler: ActionHandler): void;
  onInit(event: string, handler: InitHandler): void;
  offFilter(event: string, handler: FilterHandler): void;
  offAction(event: string, handler: ActionHandler): void;
  offInit(event: string, handler: InitHandler): void;
}

/** The second argument of a register function. */
export interface RegisterContext {
  services: Record<string, any>;
  /** A Knex instance on the bridge's connection settings (Directus' `database`). */
  database: Knex;
  /** The same database as a kysely instance, for new code that wants typed queries (see HookContext). */
  kysely: HookKysely;
  getSchema: () => Promise<any>;
  env: Readonly<Record<string, unknown>>;
  logger: Logger;
  exceptions: Readonly<Record<string, any>>;
  emitter: HookEmitter;
  [key: string]: unknown;
}

/** `defineHook`'s argument: the Directus 9 GA / 10 register function. */
export type HookConfig = (register: RegisterFunctions, context: RegisterContext) => unknown;
