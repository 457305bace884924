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
import { LEADER_KEY, lockClassFor } from '../../bridge/filters/tickets.js';
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
          // Filters off the main thread on one worker (also the test helper's default): up to four bridges
          // share 2 cores here with the writers (the suite's slowest file; workers have tests of their own).
          FILTER_WORKERS: '1',
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
/** What a standby logs when it takes over as the leader. */
const TAKES_OVER = 'this bridge leads the database now: streaming action events and running schedules';

/**
 * A writer's pause between its inserts. Without one, 4 writers took whatever CPU the bridges left
 * (~17,000 filtered rows a run, most while a test waited for a bridge to start or take over), and
 * ran the other test files short of it. With it, ~150 rows a second at most (10 ms let through ~2,000
 * rows a test, the file took ~120 s of CPU); each writer has a statement in flight part of the time,
 * and every kill waits until one does (writing()).
 */
const WRITER_PAUSE_MS = 25;

/** 4 writers inserting one row per statement until stopped; every committed key, and every failure. */
function startWriters(url: string, count = 4) {
  const committed: string[] = [];
  const failures: string[] = [];
  let running = true;
  let inFlight = 0;
  const done = Promise.all(
    Array.from({ length: count }, async () => {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => undefined);
      await client.connect();
      try {
        while (running) {
          try {
            inFlight++;
            const { rows } = await client.query<{ id: string }>(`insert into cluster_items (note) values ('x') returning id`).finally(() => inFlight--);
            committed.push(...rows.map((r) => r.id));
            await new Promise((resolve) => setTimeout(resolve, WRITER_PAUSE_MS));
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
    /** Resolves while an insert is under way: a kill right after it lands on a write in flight. */
    writing: () => waitFor(() => inFlight > 0, { timeoutMs: 10_000, message: 'no insert under way' }),
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
    const [b, third] = await Promise.all([c.start('b'), c.start('c')]);
    expect(roleOf(b)).toBe('standby');
    expect(roleOf(third)).toBe('standby');

    // Every instance answers filter calls: rows are marked by more than one process. A session's pid
    // decides which instance it tries first, so 4 writers all pick one of 3 instances 1 time in 27:
    // 12 sessions of one insert each do so 1 time in 177,147.
    for (let i = 0; i < 12; i++) await withClient(db.url, (client) => client.query(`insert into cluster_items (note) values ('probe')`));
    const { rows: markers } = await withClient(db.url, (client) => client.query(`select count(distinct filtered_by)::int as n from cluster_items`));
    expect(markers[0]?.n).toBeGreaterThan(1);
    const probes = (await withClient(db.url, (client) => client.query<{ id: string }>(`select id from cluster_items`))).rows.map((r) => r.id);

    const writers = startWriters(db.url);
    writers.committed.push(...probes);
    try {
      await writers.progress(200);

      // The leader dies: a standby leads and streams within 10 s.
      await writers.writing();
      const killedAt = Date.now();
      await a.stop('SIGKILL');
      await waitFor(() => [b, third].find((s) => s.logLines().some((l) => l['msg'] === 'replication streaming')), {
        timeoutMs: 10_000,
        message: 'no standby streamed within 10 s of the leader being killed',
      });
      process.stdout.write(`[cluster ${transport}] a standby streams ${Date.now() - killedAt} ms after the leader was killed\n`);
      await writers.progress(200);

      // A standby dies (the one that did not take over).
      const leader = [b, third].find((s) => s.logLines().some((l) => l['msg'] === 'replication streaming')) as RunningCli;
      const standby = leader === b ? third : b;
      await writers.writing();
      await standby.stop('SIGKILL');
      await writers.progress(200);
      // The leader dies too, with a fresh standby beside it.
      await c.start('d');
      await writers.progress(100);
      await writers.writing();
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
    const [a, b] = await Promise.all([c.start('a'), c.start('b')]);
    expect([roleOf(a), roleOf(b)].sort()).toEqual(['leader', 'standby']);
    // A rolling restart: each instance stopped (and a new one started) in turn, the leader first; the
    // other takes over from it, and hands over in its turn to the first one's replacement.
    const [leader, other] = roleOf(a) === 'leader' ? ['a', 'b'] : ['b', 'a'];
    const writers = startWriters(db.url);
    try {
      await writers.progress(100);
      for (const [name, successor] of [
        [leader, other],
        [other, `${leader}2`],
      ] as const) {
        const cli = c.bridges.get(name) as RunningCli;
        await writers.writing();
        const stopping = Date.now();
        expect(await cli.stop('SIGTERM')).toBe(0);
        process.stdout.write(`[cluster ${transport} rolling] ${name} stopped in ${Date.now() - stopping} ms\n`);
        await (c.bridges.get(successor) as RunningCli).waitForLog(TAKES_OVER, 15_000);
        await writers.progress(100);
        await c.start(`${name}2`);
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

    // About one a second (5 ticks within 7 s), each second once (a standby firing too would share the
    // leader's seconds), all on the leader.
    const before = (await lines(c.ticks)).length;
    await waitFor(async () => (await lines(c.ticks)).length >= before + 5, { timeoutMs: 7_000, message: 'the schedule did not fire 5 times within 7 s' });
    const ticks = (await lines(c.ticks)).slice(before).map((line) => line.split(' ').map(Number) as [number, number]);
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

  it('say so when a session that is no bridge holds the leader lock, and lead once it is gone', async () => {
    await createTable();
    await withClient(db.url, (client) => client.query(`truncate cluster_items`));
    // Any role may take advisory locks: an impostor takes the leader lock before any bridge runs.
    const impostor = new pg.Client({ connectionString: db.url });
    await impostor.connect();
    try {
      // A bridge ran before (its triggers and slot are in place), then the impostor strikes.
      const c = await cluster('notify');
      expect(await (await c.start('first')).stop('SIGTERM')).toBe(0);
      await impostor.query(`select pg_advisory_lock($1, $2)`, [lockClassFor('hookbridge') + 2, LEADER_KEY]);
      const { rows } = await impostor.query<{ pid: number }>(`select pg_backend_pid() as pid`);
      const a = await c.start('a');
      expect(roleOf(a)).toBe('standby');
      const line = await a.waitForLog(
        `a session that is no bridge holds hookbridge's leader lock: no bridge streams action events or runs schedules while it does; as a superuser: select pg_terminate_backend(${rows[0]?.pid})`,
        15_000,
      );
      expect(line['pid']).toBe(rows[0]?.pid);
      // Filter calls are served all the same.
      await withClient(db.url, (client) => client.query(`insert into cluster_items (note) values ('while nobody leads')`));
      await impostor.end();
      await a.waitForLog('replication streaming', 15_000);
      await withClient(db.url, (client) => client.query(`insert into cluster_items (note) values ('led')`));
      const { rows: all } = await withClient(db.url, (client) => client.query<{ id: string }>(`select id::text from cluster_items`));
      await expectNothingSlipped(
        c,
        all.map((r) => r.id),
      );
    } finally {
      await impostor.end().catch(() => undefined);
    }
  }, 120_000);

  it("never lets a write through unfiltered because a writer holds a stopped open-mode instance's lock", async () => {
    await createTable();
    const c = await cluster('notify');
    const a = await c.start('a');
    const lockClass = lockClassFor('hookbridge');
    // A row a stopped open-mode instance left (slot 7, its session long gone), beside this closed one's.
    await withClient(db.url, (client) =>
      client.query(
        `insert into hookbridge.filter_endpoint (slot, conninfo, failure_mode, timeout_ms, transport, tickets, first_ticket, lock_class, generation, backend_pid)
         values (7, 'host=127.0.0.1 port=1', 'open', 5000, 'notify', 4, 70000, $1, 1, 2147483000)`,
        [lockClass],
      ),
    );
    expect(await a.stop('SIGTERM')).toBe(0);
    // The writer plays that instance's "alive" lock: still closed (no bridge runs), never unfiltered.
    await withClient(db.url, async (client) => {
      await client.query(`select pg_advisory_lock($1, 7)`, [lockClass + 2]);
      const error = await client.query(`insert into cluster_items (note) values ('forced open')`).then(
        () => undefined,
        (e: pg.DatabaseError) => e,
      );
      expect(error?.code).toBe('HB503');
    });
    const { rows } = await withClient(db.url, (client) => client.query(`select count(*)::int as n from cluster_items where note = 'forced open'`));
    expect(rows[0]?.n).toBe(0);
    await withClient(db.url, (client) => client.query(`delete from hookbridge.filter_endpoint where slot = 7`));
  }, 60_000);

  it('does not stall when a session holds its serving lock; serves once it lets go', async () => {
    await createTable();
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      // Writers take it shared for a moment to test it; one that keeps it (a cancel at the wrong time,
      // or on purpose) must not block the instance session.
      await holder.query(`select pg_advisory_lock_shared($1, 0)`, [lockClassFor('hookbridge') + 3]);
      const c = await cluster('notify');
      const a = await c.start('a');
      await a.waitForLog(
        "another session holds this instance's serving lock: writers do not choose it until that session lets go (pg_terminate_backend on its pid)",
        15_000,
      );
      await holder.end();
      await waitFor(
        () =>
          withClient(db.url, (client) => client.query(`insert into cluster_items (note) values ('served')`)).then(
            () => true,
            () => false,
          ),
        { timeoutMs: 15_000, message: 'the instance never served once the lock was let go' },
      );
      const { rows } = await withClient(db.url, (client) => client.query(`select filtered_by from cluster_items where note = 'served'`));
      expect(rows[0]?.filtered_by).toBe(String(a.child.pid));
    } finally {
      await holder.end().catch(() => undefined);
    }
  }, 60_000);

  it.each(['notify', 'direct'] as const)(
    'moves writers off a frozen instance (%s): no failed write',
    async (transport) => {
      await createTable();
      const c = await cluster(transport);
      // The standby is frozen (the leader streams actions meanwhile), whichever of the two it is.
      const started = await Promise.all([c.start('a'), c.start('b')]);
      const b = started.find((cli) => roleOf(cli) === 'standby') as RunningCli;
      expect(b).toBeDefined();
      const writers = startWriters(db.url);
      try {
        await writers.progress(100);
        await writers.writing();
        b.child.kill('SIGSTOP');
        try {
          // Frozen for longer than FILTER_TIMEOUT_MS (5 s), so a writer left waiting on it would fail. The
          // freeze is what the test applies, and no event marks every writer having moved off: timed.
          await new Promise((resolve) => setTimeout(resolve, 6_000));
          await writers.progress(100);
        } finally {
          b.child.kill('SIGCONT');
        }
        await writers.progress(100);
      } finally {
        await writers.stop();
      }
      process.stdout.write(`[cluster ${transport} frozen] committed=${writers.committed.length} failed=${writers.failures.length}\n`);
      expect(writers.failures).toEqual([]);
    },
    90_000,
  );
});
