/**
 * Filter hooks run on worker threads (FILTER_WORKERS, default 2): a hook that blocks its thread stalls
 * only its own writers, and a hook's stray rejection ends nothing. A real bridge process, so that a busy
 * loop blocks nobody but the bridge.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dropTestSlot, startTestBridge } from '../support/bridge.js';
import { startCli, type RunningCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const SLOT = 'hb_filter_workers';
let cli: RunningCli;
let removeDir: () => Promise<void>;

const extension = `
  module.exports = ({ filter }) => {
    filter('slow_jobs.items.create', (payload) => {
      if (payload.title === 'busy') { const end = Date.now() + 6000; while (Date.now() < end) {} }
      return payload;
    });
    filter('fast_jobs.items.create', async (payload, meta, { database, kysely }) => {
      if (payload.title === 'knex') {
        // Knex and kysely on the worker's own connections, as on the main thread.
        const viaKnex = await database('slow_jobs').count({ n: '*' }).first();
        const viaKysely = await kysely.selectFrom('slow_jobs').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst();
        return { ...payload, title: 'knex ' + viaKnex.n + ' kysely ' + viaKysely.n };
      }
      if (payload.title === 'stray') setTimeout(() => Promise.reject(new Error('a stray rejection')), 0);
      return { ...payload, title: payload.title + ' (filtered)' };
    });
  };`;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create table slow_jobs (id serial primary key, title text)`);
    await c.query(`create table fast_jobs (id serial primary key, title text)`);
  });
  const dir = await tempDir();
  removeDir = dir.remove;
  await writeTree(dir.path, { 'hooks/jobs/index.js': extension });
  cli = startCli(['start', '-e', dir.path], { env: { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: SLOT, FILTER_TIMEOUT_MS: '2000', FILTER_WORKERS: '2' } });
  await cli.waitForLog('ready');
});

afterAll(async () => {
  await cli?.stop('SIGTERM');
  await dropTestSlot(db.url, SLOT);
  await removeDir?.();
});

const insert = (table: string, title: string) =>
  withClient(db.url, (c) => c.query(`insert into ${table} (title) values ($1)`, [title])).then(
    () => 'written',
    (e: pg.DatabaseError) => e.code ?? e.message,
  );

it('lets writers of other tables through while a hook blocks its own worker, and replaces that worker', async () => {
  let settled = false;
  const blocked = withClient(db.url, (c) => c.query(`insert into slow_jobs (title) values ('busy')`)).then(
    () => 'written',
    (e: pg.DatabaseError) => e,
  );
  void blocked.finally(() => (settled = true));
  await waitFor(
    () =>
      withClient(
        db.url,
        async (c) =>
          (await c.query(`select 1 from pg_stat_activity where datname = current_database() and query like 'insert into slow_jobs%' and state = 'active'`))
            .rowCount === 1,
      ),
    { message: 'the blocked write never started' },
  );
  // Still inside the busy hook (it runs for 6 s): other writes are filtered meanwhile.
  const others: string[] = [];
  for (let i = 0; i < 5; i++) others.push(await insert('fast_jobs', `other ${i}`));
  expect(settled).toBe(false);
  expect(others).toEqual(['written', 'written', 'written', 'written', 'written']);
  expect(await withClient(db.url, async (c) => (await c.query(`select title from fast_jobs order by id`)).rows.map((r) => r.title))).toEqual([
    'other 0 (filtered)',
    'other 1 (filtered)',
    'other 2 (filtered)',
    'other 3 (filtered)',
    'other 4 (filtered)',
  ]);
  // Its own writer gets HB504 from the main thread (never a pass), and the worker is replaced.
  expect(await blocked).toMatchObject({ code: 'HB504', message: expect.stringMatching(/their worker was busy/) });
  expect(await withClient(db.url, async (c) => (await c.query(`select count(*)::int as n from slow_jobs`)).rows[0])).toEqual({ n: 0 });
  await waitFor(() => cli.logLines().some((l) => l['msg'] === 'replacing a filter worker'), { message: 'the busy worker was never replaced' });
  // The new worker has the hooks (a worker without them would refuse, never keep the row unfiltered).
  for (let i = 0; i < 4; i++) expect(await insert('fast_jobs', `after ${i}`)).toBe('written');
  expect(
    await withClient(db.url, async (c) => (await c.query(`select count(*)::int as n from fast_jobs where title like 'after % (filtered)'`)).rows[0]),
  ).toEqual({ n: 4 });
});

it("survives a hook's stray rejection", async () => {
  expect(await insert('fast_jobs', 'stray')).toBe('written');
  await waitFor(() => cli.logLines().some((l) => l['kind'] === 'unhandled_rejection' && l['extension'] === 'jobs'), {
    message: 'the stray rejection was never logged',
  });
  expect(await insert('fast_jobs', 'after')).toBe('written');
  expect(cli.child.exitCode).toBeNull();
});

it('gives filters on a worker thread the same database (Knex) and kysely', async () => {
  expect(await insert('fast_jobs', 'knex')).toBe('written');
  const { rows } = await withClient(db.url, (c) => c.query(`select title from fast_jobs where title like 'knex %'`));
  expect(rows).toEqual([{ title: 'knex 0 kysely 0' }]);
});

it('starts no worker for a bridge without write filters, and starts them when a reload brings one', async () => {
  await withClient(db.url, (c) => c.query(`create table late_jobs (id serial primary key, title text)`));
  const tb = await startTestBridge(
    db.url,
    { 'hooks/acts/index.js': `module.exports = ({ action }) => { action('late_jobs.items.create', () => {}); };` },
    { filterWorkers: 2, extensionsAutoReload: true },
  );
  const starting = () => tb.log.lines().filter((l) => l['msg'] === 'filter workers starting (an extension has write filters)');
  const titles = () => withClient(db.url, async (c) => (await c.query(`select title from late_jobs order by id`)).rows.map((r) => r.title));
  try {
    expect(starting()).toEqual([]);
    expect(await insert('late_jobs', 'before')).toBe('written');
    // A filter arrives: the workers load it, then the trigger goes in; the hook runs on a worker thread.
    // Moved in whole (written in place, a reload may see the folder before its file).
    const staging = `${tb.extensionsPath}-late`;
    await mkdir(staging);
    await writeFile(
      join(staging, 'index.js'),
      `const { isMainThread } = require('node:worker_threads');
       module.exports = ({ filter }) => { filter('late_jobs.items.create', (p) => ({ ...p, title: p.title + (isMainThread ? ' on main' : ' on a worker') })); };`,
    );
    await rename(staging, join(tb.extensionsPath, 'hooks/late'));
    // Writes go on meanwhile: none is filtered on the main thread; one that meets the reload half done is
    // refused (HB503, or HB504 while a worker is busy loading), never let through by a trigger without its filter.
    const outcomes: string[] = [];
    let seen: string[] = [];
    await waitFor(
      async () => {
        outcomes.push(await insert('late_jobs', `after ${outcomes.length + 1}`));
        seen = await titles();
        return seen.at(-1)?.endsWith(' on a worker');
      },
      { timeoutMs: 20_000, message: () => `the reloaded filter never ran: ${JSON.stringify(seen)}` },
    );
    expect(outcomes.filter((o) => o !== 'written' && o !== 'HB503' && o !== 'HB504')).toEqual([]);
    expect(seen.filter((t) => t.endsWith(' on main'))).toEqual([]);
    expect(starting()).toHaveLength(1);
    expect(starting()[0]).toMatchObject({ workers: 2 });
  } finally {
    await tb.dispose();
    await rm(`${tb.extensionsPath}-late`, { recursive: true, force: true });
  }
});

it('puts the trigger in place when workers a reload started never finish loading: writers are refused, never let through', async () => {
  await withClient(db.url, (c) => c.query(`create table stuck_jobs (id serial primary key, title text)`));
  const tb = await startTestBridge(db.url, {}, { filterWorkers: 1, filterTimeoutMs: 1_000, extensionsAutoReload: true });
  const staging = `${tb.extensionsPath}-stuck`;
  try {
    await mkdir(staging);
    // Loads on the main thread (which decides the trigger); never on a worker.
    await writeFile(
      join(staging, 'index.js'),
      `const { isMainThread } = require('node:worker_threads');
       module.exports = async ({ filter }) => {
         if (!isMainThread) await new Promise(() => {});
         filter('stuck_jobs.items.create', (p) => p);
       };`,
    );
    await mkdir(join(tb.extensionsPath, 'hooks'), { recursive: true });
    await rename(staging, join(tb.extensionsPath, 'hooks/stuck'));
    const outcomes: string[] = [];
    await waitFor(
      async () => {
        outcomes.push(await insert('stuck_jobs', `row ${outcomes.length + 1}`));
        return outcomes.at(-1) === 'HB504';
      },
      { timeoutMs: 20_000, message: () => `the trigger never went in: ${JSON.stringify(outcomes)}` },
    );
    // Whatever was written went in before the trigger; nothing since.
    for (let i = 0; i < 2; i++) expect(await insert('stuck_jobs', `later ${i}`)).toBe('HB504');
  } finally {
    await tb.dispose();
    await rm(staging, { recursive: true, force: true });
  }
});
