import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

// vitest runs (cores - 1) files at once by default: one at a time on 2 cores, where the integration
// files leave the CPU idle about half the time (they wait on Postgres, child processes and timeouts).
// One file more than there are cores kept 2 cores busy (idle 4%) and took the suite from 559 s to 307 s;
// two files on 2 cores: 342 s.
const files = availableParallelism() + 1;

export default defineConfig({
  test: {
    // Integration tests spawn Postgres, replication streams and the CLI;
    // separate processes keep a crashing native child from taking others down.
    pool: 'forks',
    // Each test file's fork loads the bridge's dependencies anew. Those made of many modules are
    // pre-bundled once by Vite instead (kysely alone is ~280 ESM files, ~0.3 s of CPU to load one by
    // one): a test file that runs a bridge in-process collected in 2.0 s instead of 3.0 s.
    deps: { optimizer: { ssr: { enabled: true, include: ['kysely', 'rxjs', 'express', 'prom-client'] } } },
    maxWorkers: files,
    minWorkers: 1,
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
