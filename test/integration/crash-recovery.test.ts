/**
 * "Nothing lost": a bridge SIGKILLed under continuous writes, then restarted, has delivered every
 * committed change; and a Postgres restart under a running bridge loses nothing either.
 * Duplicates are allowed (at least once) and reported.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { dropTestSlot } from '../support/bridge.js';
import { startCli, type RunningCli } from '../support/cli.js';
import { testPgBin, useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const recorder = `
  const { appendFileSync } = require('node:fs');
  module.exports = ({ action }, { env }) => {
    action('journal.items.create', (meta) => { appendFileSync(env.RECORD_FILE, meta.id + ' ' + meta.key + '\\n'); });
  };`;

async function recorded(file: string): Promise<string[]> {
  try {
    return (await readFile(file, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(' ')[1] as string);
  } catch {
    return [];
  }
}

/**
 * Inserts rows until stopped: single-row and 5-row transactions, with a short pause between them (a
 * writer at full speed wrote ~94,000 rows in a run of the whole suite, each delivered and recorded,
 * and took CPU from the bridge under test and from other files); returns every committed key.
 */
function startWriter(url: string) {
  const committed: string[] = [];
  let running = true;
  let failures = 0;
  const done = (async () => {
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => undefined);
    await client.connect();
    try {
      let i = 0;
      while (running) {
        i += 1;
        try {
          const count = i % 4 === 0 ? 5 : 1;
          const { rows } = await client.query<{ id: string }>(`insert into journal (note) select 'row ' || g from generate_series(1, $1) g returning id`, [
            count,
          ]);
          committed.push(...rows.map((r) => r.id));
          await new Promise((resolve) => setTimeout(resolve, 2));
        } catch {
          failures += 1;
          if (failures > 200) throw new Error('the writer keeps failing');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    } finally {
      await client.end().catch(() => undefined);
    }
  })();
  return {
    committed,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

async function startBridge(url: string, dir: string, file: string, slot: string): Promise<RunningCli> {
  const cli = startCli(['start', '-e', dir], {
    env: { DATABASE_URL: url, HOOKBRIDGE_SLOT: slot, RECORD_FILE: file, LOG_LEVEL: 'info' },
  });
  await cli.waitForLog('ready');
  return cli;
}

async function expectAllDelivered(file: string, committed: string[]): Promise<void> {
  // On timeout, fall through: the assertion below says how many were lost.
  await waitFor(
    async () => {
      const got = new Set(await recorded(file));
      return committed.every((key) => got.has(key));
    },
    { timeoutMs: 60_000, message: 'every committed row delivered' },
  ).catch(() => undefined);
  const keys = await recorded(file);
  const lost = committed.filter((key) => !keys.includes(key));
  const duplicates = keys.length - new Set(keys).size;
  process.stdout.write(`[crash-recovery] committed=${committed.length} delivered=${keys.length} lost=${lost.length} duplicates=${duplicates}\n`);
  expect(lost).toEqual([]);
}

describe('nothing lost', () => {
  it('after the bridge is SIGKILLed under continuous writes and restarted', async () => {
    await withClient(db.url, (c) => c.query(`create table journal (id bigserial primary key, note text)`));
    const dir = await tempDir();
    cleanups.push(() => dir.remove());
    await writeTree(dir.path, { 'hooks/recorder/index.js': recorder });
    const file = join(dir.path, 'delivered.log');
    const slot = `hb_crash_${randomBytes(3).toString('hex')}`;
    cleanups.push(() => dropTestSlot(db.url, slot));

    let cli = await startBridge(db.url, dir.path, file, slot);
    const writer = startWriter(db.url);
    try {
      await waitFor(async () => (await recorded(file)).length >= 200, { timeoutMs: 60_000, message: 'deliveries never started' });
      await cli.stop('SIGKILL');
      const atKill = writer.committed.length;
      await waitFor(() => writer.committed.length >= atKill + 100, { message: 'the writer stalled while the bridge was down' });
      cli = await startBridge(db.url, dir.path, file, slot);
      // Writes go on while the restarted bridge catches up; then they stop, and it must deliver them all.
      // (Waiting for it to catch up with a writer that never stops took minutes on 2 cores: the writer
      // and the bridge share them. That it keeps up under live load is the business of bench/.)
      const atRestart = writer.committed.length;
      await waitFor(() => writer.committed.length >= atRestart + 200, { message: 'the writer stalled once the bridge was back' });
    } finally {
      await writer.stop();
    }
    try {
      await expectAllDelivered(file, writer.committed);
    } finally {
      expect(await cli.stop('SIGTERM')).toBe(0);
    }
  }, 180_000);

  it('after Postgres restarts under a running bridge', async () => {
    const parent = fileURLToPath(new URL('../../.hookbridge/', import.meta.url));
    const dataDir = await mkdtemp(join(parent, 'restart-'));
    await chmod(dataDir, 0o755);
    let server = await startEmbeddedPostgres({ binDir: testPgBin(), dataDir: join(dataDir, 'pg'), persistent: true });
    const port = server.port;
    cleanups.push(async () => {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    });
    await withClient(server.url, (c) => c.query(`create table journal (id bigserial primary key, note text)`));
    const dir = await tempDir();
    cleanups.push(() => dir.remove());
    await writeTree(dir.path, { 'hooks/recorder/index.js': recorder });
    const file = join(dir.path, 'delivered.log');

    const cli = await startBridge(server.url, dir.path, file, 'hookbridge');
    const before = startWriter(server.url);
    await waitFor(() => before.committed.length >= 100, { message: 'writer did not start' });
    await before.stop();

    await server.stop();
    server = await startEmbeddedPostgres({ binDir: testPgBin(), dataDir: join(dataDir, 'pg'), persistent: true, port });
    const after = startWriter(server.url);
    await waitFor(() => after.committed.length >= 100, { message: 'writer did not resume' });
    await after.stop();
    try {
      // The stream came back: reconnected, or (its instance session lost too) led and started again.
      await waitFor(
        () =>
          cli.logLines().some((l) => l['msg'] === 'replication connection lost; reconnecting') ||
          cli.logLines().filter((l) => l['msg'] === 'replication streaming').length >= 2,
        { timeoutMs: 60_000, message: () => `the replication stream never came back:\n${cli.output()}` },
      );
      await expectAllDelivered(file, [...before.committed, ...after.committed]);
    } finally {
      expect(await cli.stop('SIGTERM')).toBe(0);
    }
  }, 120_000);
});
