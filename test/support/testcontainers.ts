/**
 * The container side of the test harness: which image HOOKBRIDGE_TEST_PG=testcontainers runs, and the
 * settings a Postgres for the bridge needs (global-setup.ts and the tests that start containers of their
 * own use both).
 */

/** The official image; elsewhere HOOKBRIDGE_TEST_PG_IMAGE, e.g. scripts/docker/prepare.sh's local one. */
export const OFFICIAL_PG_IMAGE = 'postgres:18';

/** What scripts/docker/prepare.sh builds from Debian's packages, with no registry. */
export const LOCAL_PG_IMAGE = 'hookbridge-test/postgres:15-local';

export function testPgImage(env: NodeJS.ProcessEnv = process.env): string {
  return env['HOOKBRIDGE_TEST_PG_IMAGE'] || OFFICIAL_PG_IMAGE;
}

/** initdb without its fsyncs (the official image's POSTGRES_INITDB_ARGS): a throwaway server starts seconds sooner. */
export const THROWAWAY_INITDB = { POSTGRES_INITDB_ARGS: '--no-sync' } as const;

/** `postgres -c name=value ...`, as the official image's command takes settings. */
export function postgresCommand(settings: Record<string, string | number>): string[] {
  return ['postgres', ...Object.entries(settings).flatMap(([name, value]) => ['-c', `${name}=${value}`])];
}

/** An error of testcontainers' start, with the likely fix when the image had to come from a registry. */
export function containerStartError(image: string, imageWasLocal: boolean, error: unknown): Error {
  const hint = imageWasLocal
    ? ''
    : ' The image is not in the engine, so it had to be pulled: where no registry can be reached, build the local one with ' +
      `scripts/docker/prepare.sh and set HOOKBRIDGE_TEST_PG_IMAGE=${LOCAL_PG_IMAGE}.`;
  return new Error(`testcontainers could not start ${image}: ${error instanceof Error ? error.message : String(error)}.${hint}`, { cause: error });
}
