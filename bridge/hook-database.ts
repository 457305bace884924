/**
 * The database hooks are handed: `database`, a Knex instance as in Directus (published extensions
 * use it as Knex: `database('articles').where(...)`, `database.raw`, `database.transaction`), and
 * `kysely`, the same database for new code that wants typed queries. Both connect with the user's
 * settings (search_path included), not the bridge's internal ones, and type values as the `pg` driver
 * does, as Directus' own `database` does.
 */
import knex, { type Knex } from 'knex';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { closePool } from './database.js';
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
  const watched = (pool: pg.Pool) => pool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed'));
  const pool = watched(new pg.Pool({ ...connection, max, application_name: applicationName }));
  const kysely = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  const servicesPool = watched(
    new pg.Pool({ ...connection, max: options.servicesMax, application_name: options.servicesApplicationName ?? applicationName, types: driverTypes(pg.types) }),
  );
  const services = new Kysely<any>({ dialect: new PostgresDialect({ pool: servicesPool }) });
  // Knex keeps a pool of its own (it cannot borrow pg's); both open connections only when used.
  const database = knex({
    client: 'pg',
    connection: { ...connection, application_name: applicationName } as Knex.PgConnectionConfig,
    pool: { min: 0, max },
    log: {
      warn: (message: string) => logger.warn({ component: 'knex' }, message),
      error: (message: string) => logger.error({ component: 'knex' }, message),
      deprecate: (method: string, alternative: string) => logger.warn({ component: 'knex' }, `${method} is deprecated; use ${alternative}`),
      debug: () => {},
    },
  });
  return {
    knex: database,
    kysely,
    pool,
    services,
    async close() {
      let timer: NodeJS.Timeout | undefined;
      // A query a hook left running must not hold the bridge's stop.
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
        timer.unref();
      });
      try {
        await Promise.race([database.destroy(), timeout]);
      } finally {
        clearTimeout(timer);
      }
      await Promise.all([closePool(pool), closePool(servicesPool)]);
    },
  };
}
