/**
 * The testcontainers part of the suite (issue 17): a representative subset of the integration tests
 * against Postgres in a container, `npm run test:testcontainers` (scripts/docker/test.sh prepares
 * Docker and the local image first). Run directly, it needs a Docker engine with that image.
 */
import { defineConfig } from 'vitest/config';

// Defaults for this run only; the environment may name another image (or the official postgres:18,
// where a registry can be reached).
process.env['HOOKBRIDGE_TEST_PG'] ??= 'testcontainers';
process.env['HOOKBRIDGE_TEST_PG_IMAGE'] ??= 'hookbridge-test/postgres:15-local';
// The reaper (ryuk) is an image of its own, pulled from a registry; the run stops its container itself.
process.env['TESTCONTAINERS_RYUK_DISABLED'] ??= 'true';

/**
 * Files that run against the run's server and say something about a containerised one. Left out:
 * filters-direct.test.ts (a database in a container cannot call the bridge on the host's loopback;
 * testcontainers.test.ts runs the direct transport through the network's gateway instead) and
 * testing-helper.test.ts (its embedded server; testcontainers.test.ts runs the helper with a container).
 */
const files = [
  'test/integration/testcontainers.test.ts',
  'test/integration/readme-hook-author.test.ts',
  'test/integration/harness.test.ts',
  'test/integration/actions.test.ts',
  'test/integration/filters-notify.test.ts',
  'test/integration/crash-recovery.test.ts',
];

export default defineConfig({
  test: {
    pool: 'forks',
    teardownTimeout: 60_000,
    include: files,
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
