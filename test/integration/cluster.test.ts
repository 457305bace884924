/**
 * Several bridges on one database (issue 11): every instance answers filter calls, one leader streams
 * actions and runs schedules, and a standby takes over. Each bridge is the built CLI in a process of
 * its own, so that it can be killed with SIGKILL at any moment.
 *
 * Under 4 writers inserting into a filtered table all along: kill -9 of the leader (a standby streams
 * within 10 s), kill -9 of a standby, SIGTERM of each instance in turn — and then 0 failed writes,
 * 0 rows that skipped the filter, 0 committed rows missing from the action hooks.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { dropTestSlot } from '../support/bridge.js';
import { startCli, type RunningCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const cleanups: Array<() => Promise<void>> = [];
/** Each test's bridges end with it: one left running would lead the next test's cluster. */
const running: RunningCli[] = [];
afterEach(async () => {
  for (const cli of running.splice(0)) await cli.stop('SIGKILL');
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A filter that marks each row (so a row that skipped it shows), an action that records each row's key. */
const extension = `
  const { appendFileSync } = require('node:fs');
  module.exports = ({ filter, action, schedule }, { env }) => {
    filter('cluster_items.items.create', (payload) => ({ ...payload, filtered_by: String(process.pid) }));
    action('cluster_items.items.create', (meta) => { appendFileSync(env.RECORD_FILE, meta.key + '\\n'); });
    if (env.TICK_FILE) schedule('* * * * * *', () => { appendFileSync(env.TICK_FILE, Date.now() + ' ' + process.pid + '\\n'); });
  };`;

async function lines(file: string): Promise<string[]> {
  try {
    return (await readFile(file, 'utf8')).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

interface Cluster {
  start(name: string): Promise<RunningCli>;
  bridges: Map<string, RunningCli>;
  record: string;
  ticks: string;
}

async function cluster(transport: 'direct' | 'notify', options: { ticks?: boolean } = {}): Promise<Cluster> {
  const dir = await tempDir();
  cleanups.push(() => dir.remove());
  await writeTree(dir.path, { 'hooks/cluster/index.js': extension });
  const slot = `hb_cluster_${randomBytes(3).toString('hex')}`;
  const bridges = new Map<string, RunningCli>();
  cleanups.push(() => dropTestSlot(db.url, slot));
  const record = join(dir.path, 'delivered.log');
  const ticks = join(dir.path, 'ticks.log');
  return {
    bridges,
    record,
    ticks,
    async start(name) {
      const cli = startCli(['start', '-e', dir.path], {
        env: {
          DATABASE_URL: db.url,
          HOOKBRIDGE_SLOT: slot,
          RECORD_FILE: record,
          ...(options.ticks ? { TICK_FILE: ticks } : {}),
          FILTER_TRANSPORT: transport,
          FILTER_PORT: '0',
          FILTER_TIMEOUT_MS: '5000',
          LOG_LEVEL: 'info',
        },
      });
      bridges.set(name, cli);
      running.push(cli);
      await cli.waitForLog('ready');
      return cli;
    },
  };
}

const roleOf = (cli: RunningCli) => cli.logLines().find((l) => l['msg'] === 'ready')?.['role'];

/** 4 writers inserting one row per statement until stopped; every committed key, and every failure. */
function startWriters(url: string, count = 4) {
  const committed: string[] = [];
  const failures: string[] = [];
  let running = true;
  const done = Promise.all(
    Array.from({ length: count }, async () => {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => undefined);
      await client.connect();
      try {
        while (running) {
          try {
            const { rows } = await client.query<{ id: string }>(`insert into cluster_items (note) values ('x') returning id`);
            committed.push(...rows.map((r) => r.id));
          } catch (error) {
            failures.push(`${(error as pg.DatabaseError).code ?? ''} ${(error as Error).message}`);
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }
      } finally {
        await client.end().catch(() => undefined);
      }
    }),
  );
  return {
    committed,
    failures,
    /** Resolves once `n` more rows have committed. */
    progress: (n: number) => {
      const target = committed.length + n;
      return waitFor(() => committed.length >= target, { timeoutMs: 30_000, message: () => `writers stalled (failures: ${failures.slice(-3).join('; ')})` });
    },
    stop: async () => {
      running = false;
      await done;
    },
  };
}

async function expectNothingSlipped(c: Cluster, committed: string[]): Promise<void> {
  // Every row went through a filter (one of the instances marked it).
  const unfiltered = await withClient(db.url, (client) => client.query(`select count(*)::int as n from cluster_items where filtered_by is null`));
  expect(unfiltered.rows[0]?.n).toBe(0);
  // Every committed row reached the action hooks (at least once).
  await waitFor(
    async () => {
      const got = new Set(await lines(c.record));
      return committed.every((key) => got.has(key));
    },
    { timeoutMs: 60_000, message: 'every committed row delivered' },
  ).catch(() => undefined);
  const delivered = new Set(await lines(c.record));
  expect(committed.filter((key) => !delivered.has(key))).toEqual([]);
}

async function createTable(): Promise<void> {
  await withClient(db.url, (c) => c.query(`create table if not exists cluster_items (id bigserial primary key, note text, filtered_by text)`));
}

describe.each(['notify', 'direct'] as const)('several bridges (%s transport)', (transport) => {
  it('survive kill -9 of the leader and of a standby under 4 writers: no failed write, nothing unfiltered, nothing lost', async () => {
    await createTable();
    await withClient(db.url, (c) => c.query(`truncate cluster_items`));
    const c = await cluster(transport);
    const a = await c.start('a');
    expect(roleOf(a)).toBe('leader');
    const b = await c.start('b');
    const third = await c.start('c');
    expect(roleOf(b)).toBe('standby');
    expect(roleOf(third)).toBe('standby');

    const writers = startWriters(db.url);
    try {
      await writers.progress(200);
      // Every instance answers filter calls: rows were marked by more than one process.
      const { rows: markers } = await withClient(db.url, (client) => client.query(`select count(distinct filtered_by)::int as n from cluster_items`));
      expect(markers[0]?.n).toBeGreaterThan(1);

      // The leader dies: a standby leads and streams within 10 s.
      const killedAt = Date.now();
      await a.stop('SIGKILL');
      await waitFor(
        () => [b, third].find((s) => s.logLines().some((l) => l['msg'] === 'replication streaming')),
        { timeoutMs: 10_000, message: 'no standby streamed within 10 s of the leader being killed' },
      );
      process.stdout.write(`[cluster ${transport}] a standby streams ${Date.now() - killedAt} ms after the leader was killed\n`);
      await writers.progress(200);

      // A standby dies (the one that did not take over).
      const leader = [b, third].find((s) => s.logLines().some((l) => l['msg'] === 'replication streaming')) as RunningCli;
      const standby = leader === b ? third : b;
      await standby.stop('SIGKILL');
      await writers.progress(200);
      // The leader dies too, with a fresh standby beside it.
      await c.start('d');
      await writers.progress(100);
      await leader.stop('SIGKILL');
      await writers.progress(200);
    } finally {
      await writers.stop();
    }
    process.stdout.write(`[cluster ${transport}] committed=${writers.committed.length} failed=${writers.failures.length}\n`);
    expect(writers.failures).toEqual([]);
    await expectNothingSlipped(c, writers.committed);
  }, 180_000);

  it('hand over on SIGTERM of each instance in turn: no failed write, nothing lost', async () => {
    await createTable();
    await withClient(db.url, (client) => client.query(`truncate cluster_items`));
    const c = await cluster(transport);
    await c.start('a');
    await c.start('b');
    const writers = startWriters(db.url);
    try {
      await writers.progress(100);
      // A rolling restart: each instance stopped (and a new one started) in turn.
      for (const [name, next] of [['a', 'a2'], ['b', 'b2'], ['a2', 'a3']] as const) {
        const cli = c.bridges.get(name) as RunningCli;
        const stopping = Date.now();
        expect(await cli.stop('SIGTERM')).toBe(0);
        process.stdout.write(`[cluster ${transport} rolling] ${name} stopped in ${Date.now() - stopping} ms\n`);
        await writers.progress(100);
        await c.start(next);
        await writers.progress(100);
      }
    } finally {
      await writers.stop();
    }
    process.stdout.write(`[cluster ${transport} rolling] committed=${writers.committed.length} failed=${writers.failures.length}\n`);
    expect(writers.failures).toEqual([]);
    await expectNothingSlipped(c, writers.committed);
  }, 180_000);
});

describe('several bridges: one cluster', () => {
  it('fire a once-a-second schedule once a second, and report each instance in /health', async () => {
    await createTable();
    const c = await cluster('notify', { ticks: true });
    const a = await c.start('a');
    const b = await c.start('b');
    const health = async (cli: RunningCli) => {
      const port = cli.logLines().find((l) => l['msg'] === 'http listening')?.['port'];
      const response = await fetch(`http://127.0.0.1:${String(port)}/health`);
      return { status: response.status, body: (await response.json()) as { role: string; instance: { slot: number } } };
    };
    expect(await health(a)).toMatchObject({ status: 200, body: { role: 'leader' } });
    expect(await health(b)).toMatchObject({ status: 200, body: { role: 'standby' } });

    const before = (await lines(c.ticks)).length;
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    const ticks = (await lines(c.ticks)).slice(before).map((line) => line.split(' ').map(Number) as [number, number]);
    // About one a second, each second once, all on the leader.
    expect(ticks.length).toBeGreaterThanOrEqual(4);
    expect(ticks.length).toBeLessThanOrEqual(7);
    const seconds = ticks.map(([at]) => Math.floor(at / 1000));
    expect(new Set(seconds).size).toBe(seconds.length);
    expect(new Set(ticks.map(([, pid]) => pid))).toEqual(new Set([a.child.pid]));

    // The leader goes: the schedule goes on, on the other one.
    expect(await a.stop('SIGTERM')).toBe(0);
    await waitFor(async () => (await health(b)).body.role === 'leader', { timeoutMs: 10_000, message: 'the standby never led' });
    const handover = (await lines(c.ticks)).length;
    await waitFor(async () => (await lines(c.ticks)).length >= handover + 2, { timeoutMs: 10_000, message: 'no tick after the handover' });
    const after = (await lines(c.ticks)).slice(handover).map((line) => Number(line.split(' ')[1]));
    expect(new Set(after)).toEqual(new Set([b.child.pid]));
  }, 120_000);
});
