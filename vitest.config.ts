import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Integration tests spawn Postgres, replication streams and the CLI;
    // separate processes keep a crashing native child from taking others down.
    pool: 'forks',
    teardownTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // No globalSetup: `npm run test:unit` must not wait for a database.
          testTimeout: 10_000,
          hookTimeout: 10_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: ['test/unit/**', 'test/fixtures/**', '**/node_modules/**'],
          globalSetup: ['test/support/global-setup.ts'],
          // Generous because machines are slow (2 cores in CI); tests must
          // still bound every wait themselves (see waitFor) instead of hanging.
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
