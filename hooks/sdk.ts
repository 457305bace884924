/**
 * What a hook author imports, whether from `hookbridge`, `@directus/extensions-sdk` or
 * `@directus/errors`: the extension loader points those names here when the extension's own folder
 * does not provide them.
 */
export { defineHook } from './define-hook.js';
export * from './errors.js';
export { Payload } from './payload.js';
/** kysely's raw SQL tag, for `context.database` (a kysely instance): sql`select ...`.execute(database). */
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
