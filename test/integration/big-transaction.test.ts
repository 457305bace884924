/**
 * A one-million-row transaction reaches its handler row by row with bounded memory: the pipeline
 * holds at most its high-water mark of changes, and reading pauses (backpressure) while the handler
 * catches up. The bound asserted is generous (an unbounded pipeline would hold every row: well
 * over a gigabyte); bench/ reports the actual peak.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { dropTestSlot } from '../support/bridge.js';
import { startCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const ROWS = 1_000_000;
const SLOT = 'hb_big_txn_test';
afterAll(() => dropTestSlot(db.url, SLOT));

it('delivers a 1M-row transaction with bounded memory', async () => {
  await withClient(db.url, (c) => c.query(`create table big (id int primary key, note text)`));
  const dir = await tempDir();
  const counter = join(dir.path, 'count');
  await writeTree(dir.path, {
    'hooks/counter/index.js': `
      const { writeFileSync } = require('node:fs');
      let seen = 0;
      module.exports = ({ action }, { env }) => {
        action('big.items.create', async () => {
          seen += 1;
          // A slow-ish handler now and then, so that backpressure has to engage.
          if (seen % 50000 === 0) { writeFileSync(env.COUNT_FILE, String(seen)); await new Promise((r) => setTimeout(r, 50)); }
        });
      };`,
  });
  const cli = startCli(['start', '-e', dir.path], { env: { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: SLOT, COUNT_FILE: counter } });
  try {
    await cli.waitForLog('ready');
    await withClient(db.url, (c) => c.query(`insert into big select g, 'row ' || g from generate_series(1, ${ROWS}) g`));
    await waitFor(async () => Number(await readFile(counter, 'utf8').catch(() => '0')) >= ROWS, {
      timeoutMs: 240_000,
      intervalMs: 500,
      message: () => 'not every row of the big transaction was delivered',
    });
    const status = await readFile(`/proc/${cli.child.pid}/status`, 'utf8');
    const peakMb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
    process.stdout.write(`[big-transaction] rows=${ROWS} peak RSS=${peakMb.toFixed(0)} MB\n`);
    expect(peakMb).toBeLessThan(600);
  } finally {
    expect(await cli.stop('SIGTERM')).toBe(0);
    await dir.remove();
  }
}, 300_000);
