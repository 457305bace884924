/**
 * The database hooks are handed: `database`, a Knex instance as in Directus (published extensions
 * use it as Knex: `database('articles').where(...)`, `database.raw`, `database.transaction`), and
 * `kysely`, the same database for new code that wants typed queries. Both connect with the user's
 * settings (search_path included), not the bridge's internal ones, and type values as the `pg` driver
 * does, as Directus' own `database` does.
 */
import { createRequire } from 'node:module';
import type { Knex } from 'knex';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { closePool, settlesWithin, trackClients } from './database.js';
import { driverTypes } from './typing/values.js';

export interface HookDatabase {
  /** Hooks' `database`. */
  knex: Knex;
  /** Hooks' `kysely`. */
  kysely: Kysely<any>;
  /** kysely's pool: the user's own search_path. */
  pool: pg.Pool;
  /** What `services.ItemsService` runs on: rows typed as hooks get them in their payloads (bridge/typing). */
  services: Kysely<any>;
  close(): Promise<void>;
}

const CLOSE_TIMEOUT_MS = 5_000;

export function openHookDatabase(
  connection: pg.ClientConfig,
  options: { applicationName: string; max: number; servicesApplicationName?: string; servicesMax: number; logger: Logger },
): HookDatabase {
  const { applicationName, max, logger } = options;
  const watched = (pool: pg.Pool) => trackClients(pool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed')));
  const pool = watched(new pg.Pool({ ...connection, max, application_name: applicationName }));
  const kysely = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  const servicesPool = watched(
    new pg.Pool({
      ...connection,
      max: options.servicesMax,
      application_name: options.servicesApplicationName ?? applicationName,
      types: driverTypes(pg.types),
    }),
  );
  const services = new Kysely<any>({ dialect: new PostgresDialect({ pool: servicesPool }) });
  // Knex keeps a pool of its own (it cannot borrow pg's); both open connections only when used.
  const knexConnections = new Set<pg.Client>();
  const knexLog = (level: 'warn' | 'error') => (message: unknown) =>
    // Knex puts whole stack traces into its messages: the first line says what happened.
    logger[level]({ component: 'knex' }, String(message).split('\n')[0]);
  let created: Knex | undefined;
  let closing = false;
  // Called once, by the stand-in, at the first use.
  const createKnex = (): Knex => {
    // A hook still running while the bridge stops would open a pool that nothing closes.
    if (closing) throw new Error("the hooks' database is closed: the bridge is stopping");
    return (created = loadKnex()({
      client: 'pg',
      connection: { ...connection, application_name: applicationName } as Knex.PgConnectionConfig,
      pool: {
        min: 0,
        max,
        afterCreate: (client: pg.Client, done: (error: Error | null, client: pg.Client) => void) => {
          knexConnections.add(client);
          client.once('end', () => knexConnections.delete(client));
          done(null, client);
        },
      },
      log: {
        warn: knexLog('warn'),
        error: knexLog('error'),
        deprecate: (method: string, alternative: string) => logger.warn({ component: 'knex' }, `${method} is deprecated; use ${alternative}`),
        debug: () => {},
      },
    }));
  };
  return {
    knex: lazily(createKnex),
    kysely,
    pool,
    services,
    async close() {
      // Knex waits for connections a hook never gave back (a transaction left open) for ever: after a
      // grace period they are ended, and the server rolls back what they left open.
      closing = true;
      const closeKnex = async () => {
        if (!created) return;
        const destroyed = created.destroy();
        if (await settlesWithin(destroyed, CLOSE_TIMEOUT_MS)) return;
        for (const client of knexConnections) client.end().catch(() => undefined);
        await settlesWithin(destroyed, 1_000);
      };
      await Promise.all([closeKnex(), closePool(pool, CLOSE_TIMEOUT_MS), closePool(servicesPool, CLOSE_TIMEOUT_MS)]);
    },
  };
}

/** Knex, loaded when a hook first uses `database` (~0.3 s of CPU in each thread that loads it). */
function loadKnex(): (config: Knex.Config) => Knex {
  return createRequire(import.meta.url)('knex') as (config: Knex.Config) => Knex;
}

/** Properties a Knex instance does not have, read by code that only looks at a value. */
const UNSET_ON_KNEX = new Set(['then', 'toJSON', 'isTransaction']);

/**
 * A stand-in for the Knex instance `create` makes (called once), made on first use: calling it, reading or writing
 * any property. Hooks get `database` in every context, and most never use it; loading Knex took ~0.3 s
 * of CPU on the main thread and on each filter worker at every start.
 */
function lazily(create: () => Knex): Knex {
  // An arrow function: callable, like Knex, with no own property the proxy could not report.
  const target = (() => undefined) as unknown as Knex;
  let real: Knex | undefined;
  const knex = () => (real ??= create());
  return new Proxy(target, {
    apply: (_target, _this, args: unknown[]) => (knex() as unknown as (...args: unknown[]) => unknown)(...args),
    get: (_target, key) => {
      // What a Knex instance has not, asked by code that only looks (await, JSON, ItemsService's
      // transaction check): no reason to load Knex, or to fail once the bridge is stopping.
      if (!real && typeof key === 'string' && UNSET_ON_KNEX.has(key)) return undefined;
      const value: unknown = Reflect.get(knex(), key, knex());
      return value;
    },
    set: (_target, key, value) => Reflect.set(knex(), key, value),
    has: (_target, key) => Reflect.has(knex(), key),
    deleteProperty: (_target, key) => Reflect.deleteProperty(knex(), key),
    ownKeys: () => Reflect.ownKeys(knex()),
    getOwnPropertyDescriptor: (target, key) => {
      const descriptor = Reflect.getOwnPropertyDescriptor(knex(), key);
      // A proxy may report a property as fixed only when its target has it fixed too (defineProperty).
      return descriptor && (Reflect.getOwnPropertyDescriptor(target, key)?.configurable === false ? descriptor : { ...descriptor, configurable: true });
    },
    defineProperty: (target, key, descriptor) => {
      if (!Reflect.defineProperty(knex(), key, descriptor)) return false;
      const defined = Reflect.getOwnPropertyDescriptor(knex(), key);
      if (defined?.configurable === false) Reflect.defineProperty(target, key, defined);
      return true;
    },
    getPrototypeOf: () => Reflect.getPrototypeOf(knex()),
    // It stands for every hook's database: no hook changes what it is for the others, or freezes it.
    setPrototypeOf: () => false,
    preventExtensions: () => false,
  });
}
