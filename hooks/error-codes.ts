/**
 * Every code a hookbridge error carries, and what it means: the one list. The README's table
 * ("Errors and exit codes") is checked against it, and so is every code the source names
 * (test/unit/error-codes.test.ts). A hook's own error keeps its own code (Directus's
 * `INVALID_PAYLOAD`, ...): those are the hook's, not listed here.
 */
export const ERROR_CODES = {
  E_CONFIG: 'a setting has a bad value, or `PORT` is in use (exit code 2)',
  E_EVENT_NAME: 'an event name cannot be parsed (unknown scope or action, contradictory suffix)',
  E_EXTENSION_REGISTER: "an extension's register function threw or registered something invalid",
  E_EXTENSION_LOAD: "an extension's module could not be loaded (syntax error, missing import)",
  E_EXTENSION_DISCOVERY: 'a folder under the extensions path is not a loadable extension',
  E_EXTENSION_NOT_LOADED: "a write or a change that an extension guards while it is not loaded (the writer's error; a held change's `failed_events` row)",
  E_EXTENSION_FORGOTTEN: 'a held change closed undelivered because its extension was forgotten (`hookbridge forget`)',
  E_FILTER_RESULT: 'a Directus 8 filter returned something other than its Payload',
  E_FILTER_TRANSPORT: 'the filter transport asked for (or neither, with `auto`) works from this database',
  E_DBLINK: "filter hooks need `dblink`, which is missing or out of the bridge's reach",
  E_DBLINK_EXPOSED: "a role other than the bridge's could call `dblink`; the message says what a superuser must run",
  E_BRIDGE_RUNNING: '64 bridges (the most one database can run) already serve this database; this one stopped without touching them',
  E_PG_VERSION: 'the server is older than PostgreSQL 14',
  E_SLOT_FAILOVER: '`HOOKBRIDGE_SLOT_FAILOVER` asks for a failover slot, which needs PostgreSQL 17 or newer, or the slot could not be made one',
  E_WAL_LEVEL: '`wal_level` is not `logical`',
  E_REPLICATION_PRIVILEGE: "the bridge's role lacks `REPLICATION`",
  E_ROLE_UNKNOWN: 'the connected role is not in `pg_roles` (dropped while connected)',
  E_SLOTS_EXHAUSTED: 'no free replication slot',
  E_WAL_SENDERS: 'no free WAL sender',
  E_SLOT_PLUGIN: 'a slot of that name uses another output plugin than `pgoutput`',
  E_SLOT_PHYSICAL: 'a physical slot of that name exists',
  E_SLOT_OTHER_DATABASE: 'a slot of that name belongs to another database',
  E_SLOT_LOST: 'the slot was invalidated, at start or while running; the message says which changes are gone',
  E_SLOT_DROPPED: 'the slot was dropped while the bridge streamed from it (the action stream stops)',
  E_SLOT_CREATE: 'the slot could not be created',
  E_SLOT_VANISHED: 'the slot was dropped right after it was created (another process dropping slots)',
  E_SLOT_BUSY: 'the slot stayed in use by another process when it was to be dropped (`uninstall`)',
  E_PUBLICATION_SYNC: 'a table could not be published or unpublished (its privileges, or it changed meanwhile): reported, the other tables done (retried)',
  E_PUBLICATION_LOCK_TIMEOUT:
    'a table (left as it was, the other tables done) or the publication itself stayed locked while the publication sync waited (retried)',
  E_PUBLICATION_ALL_TABLES: "the publication of hookbridge's name is `FOR ALL TABLES`; hookbridge manages its table list itself",
  E_PUBLICATION_NAME: 'the publication name is too long for the names hookbridge derives from it',
  E_PGOUTPUT: 'the replication stream sent something the decoder cannot read',
  E_ACCOUNTABILITY_SECRET: "the key that signs writers' identities could not be read (`hookbridge.secret`)",
  E_NOT_MIGRATED: "hookbridge's schema is missing from this database, or `HOOKBRIDGE_SCHEMA` names another one",
  E_SCHEMA_NAME: '`HOOKBRIDGE_SCHEMA` is not a name hookbridge can quote safely everywhere',
  E_MIGRATIONS_MISSING: "the package's `sql/` folder is missing or empty (an incomplete install)",
  E_MIGRATION_BOOTSTRAP: "hookbridge's schema or its migrations table could not be created (the message says what to grant)",
  E_MIGRATION_FAILED: "installing hookbridge's schema failed",
  E_MIGRATION_CHANGED:
    "one of hookbridge's SQL files differs from the one applied to this database (each is recorded with its sha256): restore the released file. " +
    'A database installed before checksums existed has its files recorded as they are at its first start with them: what an earlier build applied is not checked',
  E_DATA_DIR_IN_USE: 'another bridge runs the embedded Postgres of this data folder',
  E_SERVICE_NOT_OFFERED: 'a hook constructed a Directus service hookbridge does not offer (`MailService`, `FilesService`, ...)',
  E_TESTCONTAINERS:
    "`startTestBridge({ postgres: 'testcontainers' })` could not start its container (the package or Docker is missing, or the image cannot be had)",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The README's table of the codes ("Errors and exit codes"), as it must read. */
export function errorCodeTable(): string {
  const rows = Object.entries(ERROR_CODES).map(([code, meaning]) => `| \`${code}\` | ${meaning} |`);
  return ['| code | meaning |', '| --- | --- |', ...rows].join('\n');
}
