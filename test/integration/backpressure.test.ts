/**
 * A slow handler pauses reading (backpressure) for longer than wal_sender_timeout, and the
 * connection survives: status updates keep flowing while nothing is read.
 */
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { testPgBin } from '../support/database.js';
import { startCli } from '../support/cli.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

it('keeps the replication connection through a stall longer than wal_sender_timeout', async () => {
  const parent = fileURLToPath(new URL('../../.hookbridge/', import.meta.url));
  const dataDir = await mkdtemp(join(parent, 'backpressure-'));
  await chmod(dataDir, 0o755);
  // 3 s: with 2 s, a bridge starved of CPU by three test files at once on 2 cores once missed it (the status
  // updates go every 500 ms while reading is paused).
  const server = await startEmbeddedPostgres({ binDir: testPgBin(), dataDir: join(dataDir, 'pg'), persistent: false, settings: { wal_sender_timeout: '3s' } });
  const dir = await tempDir();
  const counter = join(dir.path, 'count');
  try {
    await withClient(server.url, (c) => c.query(`create table slow (id int primary key)`));
    await writeTree(dir.path, {
      'hooks/slow/index.js': `
        const { writeFileSync } = require('node:fs');
        let seen = 0;
        let stall;
        module.exports = ({ action }, { env }) => {
          action('slow.items.create', async () => {
            // Every handler call waits for one 9 s stall (3x wal_sender_timeout): the pipeline fills
            // to its high-water mark and the reader has to stop reading.
            stall ??= new Promise((r) => setTimeout(r, 9000));
            await stall;
            seen += 1;
            if (seen % 1000 === 0) writeFileSync(env.COUNT_FILE, String(seen));
          });
        };`,
    });
    const cli = startCli(['start', '-e', dir.path], { env: { DATABASE_URL: server.url, COUNT_FILE: counter } });
    try {
      await cli.waitForLog('ready');
      await withClient(server.url, (c) => c.query(`insert into slow select g from generate_series(1, 30000) g`));
      await waitFor(async () => Number(await readFile(counter, 'utf8').catch(() => '0')) >= 30000, {
        timeoutMs: 120_000,
        message: 'not every row was delivered',
      });
      expect(cli.logLines().filter((l) => l['msg'] === 'replication connection lost; reconnecting')).toEqual([]);
    } finally {
      expect(await cli.stop('SIGTERM')).toBe(0);
    }
  } finally {
    await server.stop();
    await dir.remove();
    await rm(dataDir, { recursive: true, force: true });
  }
}, 180_000);
