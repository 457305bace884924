/**
 * Installs and upgrades what hookbridge keeps in the user's database: the numbered files in `sql/`,
 * each applied once, in order, in its own transaction, and recorded in `<schema>.migrations` with a
 * checksum of its text. A file changed after it was applied is refused (E_MIGRATION_CHANGED): it would
 * never run again on an existing install, so the change would silently reach new installs only.
 *
 * Functions change more often than tables, and a numbered file must carry a function's whole text to
 * change one line of it. So `sql/definitions/<name>.sql` holds the current text of such a function,
 * with a revision on its first line (`-- revision: N`): after the numbered files, each definition whose
 * revision is newer than the one recorded in `<schema>.definitions` is applied. An older bridge never
 * puts an older revision back (bridges of two versions may run side by side during an upgrade), and a
 * definition edited without a new revision is refused like a changed migration.
 *
 * Several bridges may start at once against one database. Every step takes the same
 * transaction-scoped advisory lock first, so one of them applies a migration and the others, once
 * they get the lock, see it recorded and skip it. The lock is released by COMMIT/ROLLBACK, so a
 * bridge that dies mid-migration cannot leave it held.
 */
import { createHash } from 'node:crypto';
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

export interface Definition {
  /** The file name, e.g. `filter_call.sql`. */
  name: string;
  revision: number;
  text: string;
}

export interface MigrateOptions {
  schema: string;
  logger?: Logger;
  /** Where the files are (tests); default: the package's `sql/`. */
  directory?: string;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const MIGRATION_FILE = /^(\d{6})\.sql$/;
const DEFINITION_FILE = /^[a-z_][a-z0-9_]*\.sql$/;
const REVISION_LINE = /^-- revision: ([1-9]\d{0,8})\r?\n/;
const DEFINITIONS = 'definitions';
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
    throw new MigrationError('E_MIGRATIONS_MISSING', `No migrations (000001.sql, ...) in ${directory}. The package is incomplete: reinstall hookbridge.`, {
      details: { directory },
    });
  }
  return migrations;
}

/** `sql/definitions/*.sql`, each with the revision its first line gives. */
export async function listDefinitions(directory = join(migrationsDirectory(), DEFINITIONS)): Promise<Definition[]> {
  let names: string[];
  try {
    names = (await readdir(directory)).filter((name) => DEFINITION_FILE.test(name)).sort();
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw cause;
  }
  const definitions: Definition[] = [];
  for (const name of names) {
    const text = await readFile(join(directory, name), 'utf8');
    const revision = REVISION_LINE.exec(text)?.[1];
    if (!revision) {
      throw new MigrationError(
        'E_MIGRATIONS_MISSING',
        `${join(directory, name)} does not start with "-- revision: <number>": the package is damaged, reinstall hookbridge.`,
        {
          details: { definition: name },
        },
      );
    }
    definitions.push({ name, revision: Number(revision), text });
  }
  return definitions;
}

/** sha256 of a migration's text as released (line endings normalised: a checkout with CRLF is the same file). */
export function migrationChecksum(text: string): string {
  return createHash('sha256').update(text.replace(/\r\n/g, '\n')).digest('hex');
}

/** The file's SQL with the schema variable replaced by the quoted identifier. */
export function renderMigration(text: string, schema: string): string {
  return text.split(SCHEMA_VARIABLE).join(pg.escapeIdentifier(schema));
}

/**
 * The transaction-scoped advisory lock under which the schema's objects change: migrations, and the
 * grants on dblink and the trigger functions (bridges starting together would otherwise update the same
 * catalog rows at once: "tuple concurrently updated").
 */
export function schemaLockKey(schema: string): string {
  return `hookbridge.migrate:${schema}`;
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
  const migrations = await listMigrations(options.directory);
  const definitions = await listDefinitions(options.directory === undefined ? undefined : join(options.directory, DEFINITIONS));
  const quotedSchema = pg.escapeIdentifier(schema);
  const lockKey = schemaLockKey(schema);

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
        // Installs from before checksums: recorded at their next start (below).
        await client.query(`alter table ${quotedSchema}.migrations add column if not exists checksum text`);
        await client.query(
          `create table if not exists ${quotedSchema}.definitions (
             name text primary key,
             revision int not null,
             checksum text not null,
             applied_at timestamptz not null default now()
           )`,
        );
      });
    } catch (cause) {
      throw bootstrapError(schema, cause);
    }

    const appliedBefore = await readApplied(client, quotedSchema);
    const newest = Math.max(...appliedBefore.keys());
    const known = migrations[migrations.length - 1]?.id ?? 0;
    if (newest > known) {
      logger?.warn(
        { schema, databaseVersion: newest, packageVersion: known },
        'the database was migrated by a newer hookbridge; this one may not understand everything installed there',
      );
    }

    const texts = new Map<number, string>();
    for (const migration of migrations) texts.set(migration.id, await readFile(migration.path, 'utf8'));
    await checkApplied(migrations, texts, appliedBefore, schema, (id, checksum) =>
      inLockedTransaction(() => client.query(`update ${quotedSchema}.migrations set checksum = $2 where id = $1 and checksum is null`, [id, checksum])),
    );

    const applied: string[] = [];
    for (const migration of migrations) {
      if (appliedBefore.has(migration.id)) continue;
      const text = texts.get(migration.id) ?? '';
      const sql = renderMigration(text, schema);
      try {
        const ran = await inLockedTransaction(async () => {
          // Another bridge may have applied it while this one waited for the lock.
          const done = await client.query(`select 1 from ${quotedSchema}.migrations where id = $1`, [migration.id]);
          if (done.rowCount) return false;
          await client.query(sql);
          await client.query(`insert into ${quotedSchema}.migrations (id, name, checksum) values ($1, $2, $3)`, [
            migration.id,
            migration.name,
            migrationChecksum(text),
          ]);
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
    for (const definition of definitions) {
      const name = `${DEFINITIONS}/${definition.name}`;
      const checksum = migrationChecksum(definition.text);
      try {
        const ran = await inLockedTransaction(async () => {
          const { rows } = await client.query<{ revision: number; checksum: string }>(
            `select revision, checksum from ${quotedSchema}.definitions where name = $1`,
            [definition.name],
          );
          const recorded = rows[0];
          if (recorded && recorded.revision > definition.revision) {
            logger?.warn(
              { schema, definition: name, databaseRevision: recorded.revision, packageRevision: definition.revision },
              'a newer hookbridge installed a newer revision of this function; it is kept',
            );
            return false;
          }
          if (recorded?.revision === definition.revision) {
            if (recorded.checksum === checksum) return false;
            throw new MigrationError(
              'E_MIGRATION_CHANGED',
              `sql/${name} was changed without raising its revision (${definition.revision}), which schema "${schema}" already holds ` +
                `(applied: sha256 ${recorded.checksum.slice(0, 12)}…, the file now: ${checksum.slice(0, 12)}…). ` +
                'Restore the file as it was released, or raise the revision on its first line.',
              { details: { definition: name, schema, revision: definition.revision, recorded: recorded.checksum, now: checksum } },
            );
          }
          await client.query(renderMigration(definition.text, schema));
          await client.query(
            `insert into ${quotedSchema}.definitions (name, revision, checksum) values ($1, $2, $3)
             on conflict (name) do update set revision = excluded.revision, checksum = excluded.checksum, applied_at = now()`,
            [definition.name, definition.revision, checksum],
          );
          return true;
        });
        if (ran) {
          applied.push(`${name}@${definition.revision}`);
          logger?.info({ schema, definition: name, revision: definition.revision }, 'applied definition');
        }
      } catch (cause) {
        if (cause instanceof MigrationError) throw cause;
        throw new MigrationError(
          'E_MIGRATION_FAILED',
          `Definition sql/${name} (revision ${definition.revision}) into schema "${schema}" failed and was rolled back: ${messageOf(cause)}. ` +
            'Nothing of it was kept; fix the cause and start hookbridge again.',
          { cause, details: { definition: name, schema, sqlstate: sqlstateOf(cause) } },
        );
      }
    }
    return { applied };
  } finally {
    // A connection whose ROLLBACK failed is in an unknown state: destroy it instead of pooling it.
    client.release(broken);
  }
}

/** Applied migration ids and the checksum each was recorded with (null: applied before checksums). */
async function readApplied(client: pg.PoolClient, quotedSchema: string): Promise<Map<number, string | null>> {
  const { rows } = await client.query<{ id: number; checksum: string | null }>(`select id, checksum from ${quotedSchema}.migrations`);
  return new Map(rows.map((row) => [row.id, row.checksum]));
}

/** Every applied file must be the one that was applied; one applied before checksums is recorded as it is now. */
async function checkApplied(
  migrations: readonly Migration[],
  texts: ReadonlyMap<number, string>,
  applied: ReadonlyMap<number, string | null>,
  schema: string,
  record: (id: number, checksum: string) => Promise<unknown>,
): Promise<void> {
  for (const migration of migrations) {
    if (!applied.has(migration.id)) continue;
    const recorded = applied.get(migration.id);
    const now = migrationChecksum(texts.get(migration.id) ?? '');
    if (recorded === null || recorded === undefined) {
      await record(migration.id, now);
    } else if (recorded !== now) {
      throw new MigrationError(
        'E_MIGRATION_CHANGED',
        `Migration ${migration.name} was changed after it was applied to schema "${schema}" (applied: sha256 ${recorded.slice(0, 12)}…, ` +
          `the file now: ${now.slice(0, 12)}…). An applied migration never runs again, so the change would reach new installs only. ` +
          'Restore the file as it was released and put the change in a new migration.',
        { details: { migration: migration.name, schema, recorded, now } },
      );
    }
  }
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
