/**
 * The types a hook author meets. Shapes follow Directus 10 (see README, "Hook API"); `any` appears
 * where Directus itself leaves the author free to narrow (payloads, meta).
 */
import type { Logger } from 'pino';

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
  /** A kysely instance on the bridge's pool (outside the writer's transaction). */
  database: any;
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

export type ActionHandler<Meta extends Record<string, any> = Record<string, any>> = (
  meta: Meta,
  context: HookContext,
) => unknown;

export type InitHandler<Meta extends Record<string, any> = Record<string, any>> = (meta: Meta) => unknown;

export type ScheduleHandler = () => unknown;

export type EmbedPosition = 'head' | 'body';

export interface RegisterFunctions {
  filter<Payload = any>(event: string, handler: FilterHandler<Payload>): void;
  action(event: string, handler: ActionHandler): void;
  init(event: string, handler: InitHandler): void;
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
  database: any;
  getSchema: () => Promise<any>;
  env: Readonly<Record<string, unknown>>;
  logger: Logger;
  exceptions: Readonly<Record<string, any>>;
  emitter: HookEmitter;
  [key: string]: unknown;
}

/** `defineHook`'s argument: the Directus 9 GA / 10 register function. */
export type HookConfig = (register: RegisterFunctions, context: RegisterContext) => unknown;
