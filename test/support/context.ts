/** Where the one Postgres of this test run comes from (see global-setup.ts). */
export type TestPgSource = 'embedded' | 'testcontainers' | 'external';

export interface TestPgInfo {
  /** Superuser (or CREATEDB + REPLICATION) URL of the maintenance database. Contains the password: never log it. */
  adminUrl: string;
  source: TestPgSource;
  /** The server's major version (14…18). */
  serverMajor: number;
  /** The embedded binaries chosen by HOOKBRIDGE_TEST_PG_VERSION; undefined: the installed ones. */
  pgBin?: string;
  /** Every test database of this run starts with this, so teardown can find leftovers of this run only. */
  databasePrefix: string;
  /** Keep the databases of failed test files (HOOKBRIDGE_TEST_KEEP=1). */
  keepFailed: boolean;
}

declare module 'vitest' {
  export interface ProvidedContext {
    hookbridgeTestPg: TestPgInfo;
  }
}
