/**
 * Filter hooks run on worker threads (FILTER_WORKERS, default 2): a hook that blocks its thread stalls
 * only its own writers, and a hook's stray rejection ends nothing. A real bridge process, so that a busy
 * loop blocks nobody but the bridge.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dropTestSlot } from '../support/bridge.js';
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
