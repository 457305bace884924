/**
 * What a hook author imports, whether from `hookbridge`, `@directus/extensions-sdk` or
 * `@directus/errors`: the extension loader points those names here when the extension's own folder
 * does not provide them.
 */
export { defineHook } from './define-hook.js';
export * from './errors.js';
export { Payload } from './payload.js';
/** kysely's raw SQL tag, for `context.kysely`: sql`select ...`.execute(kysely). (`database` is Knex: database.raw('select ...').) */
export { sql } from 'kysely';
export type {
  Accountability,
  ActionHandler,
  EmbedPosition,
  FilterHandler,
  HookConfig,
  HookContext,
  HookEmitter,
  InitHandler,
  RegisterContext,
  RegisterFunctions,
  ScheduleHandler,
} from './types.js';
/** Typed hooks: what `hookbridge types` declares, and the payload and meta types of each event name. */
export type {
  ActionCreateMeta,
  ActionDeleteMeta,
  ActionEventName,
  ActionHandlerFor,
  ActionMeta,
  ActionReadMeta,
  ActionTruncateMeta,
  ActionUpdateMeta,
  CollectionKey,
  CollectionPrimaryKeys,
  CollectionRow,
  Collections,
  Database,
  DeliveryMeta,
  FilterCreateMeta,
  FilterDeleteMeta,
  FilterEventName,
  FilterHandlerFor,
  FilterMeta,
  FilterPayload,
  FilterReadMeta,
  FilterTruncateMeta,
  FilterUpdateMeta,
  HookKysely,
  JsonValue,
  PgInterval,
  ServerMeta,
} from './event-types.js';
/** For the `Database` interface `hookbridge types` writes (kysely's column types: select, insert, update). */
export type { ColumnType } from 'kysely';
