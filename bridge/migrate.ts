/**
 * Installs and upgrades what hookbridge keeps in the user's database: the numbered files in `sql/`,
 * each applied once, in order, in its own transaction, and recorded in `<schema>.migrations`.
 *
 * Several bridges may start at once against one database. Every step takes the same
 * transaction-scoped advisory lock first, so one of them applies a migration and the others, once
 * they get the lock, see it recorded and skip it. The lock is released by COMMIT/ROLLBACK, so a
 * bridge that dies mid-migration cannot leave it held.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { HookbridgeError } from '../hooks/errors.js';
import { packageInfo } from './package-info.js';

export class MigrationError extends HookbridgeError {
  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(code, message, options);
    this.name = 'MigrationError';
  }
}

export interface Migration {
  id: number;
  /** The file name, e.g. `000001.sql`. */
  name: string;
  path: string;
}

export interface MigrateOptions {
  schema: string;
  logger?: Logger;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const MIGRATION_FILE = /^(\d{6})\.sql$/;
/** How migrations name the schema: psql's quoted-identifier variable syntax. */
const SCHEMA_VARIABLE = ':"schema"';

/** `sql/` of the hookbridge package, from source (`bridge/`) or compiled (`dist/bridge/`) alike. */
export function migrationsDirectory(): string {
  return join(packageInfo().root, 'sql');
}

export async function listMigrations(directory = migrationsDirectory()): Promise<Migration[]> {
  let names: string[];
  try {
    names = await readdir(directory);
  } catch (cause) {
    throw new MigrationError(
      'E_MIGRATIONS_MISSING',
      `hookbridge's SQL migrations were not found in ${directory}. The package is incomplete: reinstall hookbridge ` +
        '(its published files must include sql/).',
      { cause, details: { directory } },
    );
  }
  const migrations: Migration[] = [];
  for (const name of names) {
    const match = MIGRATION_FILE.exec(name);
    if (match?.[1]) migrations.push({ id: Number(match[1]), name, path: join(directory, name) });
  }
  migrations.sort((a, b) => a.id - b.id);
  if (migrations.length === 0) {
    throw new MigrationError(
      'E_MIGRATIONS_MISSING',
      `No migrations (000001.sql, ...) in ${directory}. The package is incomplete: reinstall hookbridge.`,
      { details: { directory } },
    );
  }
  return migrations;
}

/** The file's SQL with the schema variable replaced by the quoted identifier. */
export function renderMigration(text: string, schema: string): string {
  return text.split(SCHEMA_VARIABLE).join(pg.escapeIdentifier(schema));
}

export async function migrate(pool: pg.Pool, options: MigrateOptions): Promise<{ applied: string[] }> {
  const { schema, logger } = options;
  if (!SCHEMA_NAME.test(schema)) {
    throw new MigrationError(
      'E_SCHEMA_NAME',
      `Invalid hookbridge schema name ${JSON.stringify(schema)}: use lower-case letters, digits and underscores, ` +
        'starting with a letter or underscore, at most 63 characters (set HOOKBRIDGE_SCHEMA).',
      { details: { schema } },
    );
  }
  const migrations = await listMigrations();
  const quotedSchema = pg.escapeIdentifier(schema);
  const lockKey = `hookbridge.migrate:${schema}`;

  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    const inLockedTransaction = async <T>(fn: () => Promise<T>): Promise<T> => {
      await client.query('begin');
      try {
        await client.query('select pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKey]);
        const result = await fn();
        await client.query('commit');
        return result;
      } catch (error) {
        await client.query('rollback').catch((rollbackError: unknown) => {
          broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
        });
        throw error;
      }
    };

    try {
      await inLockedTransaction(async () => {
        // Under the lock: two concurrent IF NOT EXISTS can otherwise both try to create and one fail.
        await client.query(`create schema if not exists ${quotedSchema}`);
        await client.query(
          `create table if not exists ${quotedSchema}.migrations (
             id int primary key,
             name text not null,
             applied_at timestamptz not null default now()
           )`,
        );
      });
    } catch (cause) {
      throw bootstrapError(schema, cause);
    }

    const appliedBefore = await readApplied(client, quotedSchema);
    const newest = Math.max(...appliedBefore);
    const known = migrations[migrations.length - 1]?.id ?? 0;
    if (newest > known) {
      logger?.warn(
        { schema, databaseVersion: newest, packageVersion: known },
        'the database was migrated by a newer hookbridge; this one may not understand everything installed there',
      );
    }

    const applied: string[] = [];
    for (const migration of migrations) {
      if (appliedBefore.has(migration.id)) continue;
      const sql = renderMigration(await readFile(migration.path, 'utf8'), schema);
      try {
        const ran = await inLockedTransaction(async () => {
          // Another bridge may have applied it while this one waited for the lock.
          const done = await client.query(`select 1 from ${quotedSchema}.migrations where id = $1`, [migration.id]);
          if (done.rowCount) return false;
          await client.query(sql);
          await client.query(`insert into ${quotedSchema}.migrations (id, name) values ($1, $2)`, [migration.id, migration.name]);
          return true;
        });
        if (ran) {
          applied.push(migration.name);
          logger?.info({ schema, migration: migration.name }, 'applied migration');
        }
      } catch (cause) {
        throw new MigrationError(
          'E_MIGRATION_FAILED',
          `Migration ${migration.name} into schema "${schema}" failed and was rolled back: ${messageOf(cause)}. ` +
            'Nothing of it was kept; fix the cause and start hookbridge again (migrations resume where they stopped).',
          { cause, details: { migration: migration.name, schema, sqlstate: sqlstateOf(cause) } },
        );
      }
    }
    return { applied };
  } finally {
    // A connection whose ROLLBACK failed is in an unknown state: destroy it instead of pooling it.
    client.release(broken);
  }
}

async function readApplied(client: pg.PoolClient, quotedSchema: string): Promise<Set<number>> {
  const { rows } = await client.query<{ id: number }>(`select id from ${quotedSchema}.migrations`);
  return new Set(rows.map((row) => row.id));
}

function bootstrapError(schema: string, cause: unknown): MigrationError {
  const sqlstate = sqlstateOf(cause);
  const fix =
    sqlstate === '42501'
      ? `the database role lacks the privilege to create it. Grant it (GRANT CREATE ON DATABASE <db> TO <role>), ` +
        `or have an administrator run CREATE SCHEMA "${schema}" AUTHORIZATION <role>`
      : 'check that the database accepts connections and writes (not a read-only standby)';
  return new MigrationError(
    'E_MIGRATION_BOOTSTRAP',
    `Could not create hookbridge's schema "${schema}" and its migrations table: ${messageOf(cause)}; ${fix}.`,
    { cause, details: { schema, sqlstate } },
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sqlstateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
