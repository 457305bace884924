/**
 * Filter workers start with the first filter on writes (bridge/filters/filter-service.ts,
 * #startWorkersIfWanted): none for a bridge with only actions; a reload that brings a filter starts
 * them, and its trigger never lets a write through, whether they load or never finish loading. A
 * database of its own: a second bridge on it would answer some of the calls.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { expect, it } from 'vitest';
import { startTestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();

const insert = (table: string, title: string) =>
  withClient(db.url, (c) => c.query(`insert into ${table} (title) values ($1)`, [title])).then(
    () => 'written',
    (e: pg.DatabaseError) => e.code ?? e.message,
  );

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
      // Two workers load the bridge's TypeScript sources through jiti, beside two other test files: 9–23 s
      // in whole runs on a slow day, and past 20 s once in a CI dry run (the writes meanwhile were all
      // 'written' unfiltered, as they must be before the trigger goes in).
      {
        timeoutMs: 45_000,
        message: () =>
          `the reloaded filter never ran: ${JSON.stringify(seen)}; the bridge said: ${JSON.stringify(
            tb.log
              .lines()
              .slice(-15)
              .map((l) => l['msg']),
          )}`,
      },
    );
    expect(outcomes.filter((o) => o !== 'written' && o !== 'HB503' && o !== 'HB504')).toEqual([]);
    expect(seen.filter((t) => t.endsWith(' on main'))).toEqual([]);
    expect(starting()).toHaveLength(1);
    expect(starting()[0]).toMatchObject({ workers: 2 });
  } finally {
    await tb.dispose();
    await rm(`${tb.extensionsPath}-late`, { recursive: true, force: true });
  }
}, 90_000);

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
      { timeoutMs: 45_000, message: () => `the trigger never went in: ${JSON.stringify(outcomes)}` },
    );
    // Whatever was written went in before the trigger; nothing since.
    for (let i = 0; i < 2; i++) expect(await insert('stuck_jobs', `later ${i}`)).toBe('HB504');
  } finally {
    await tb.dispose();
    await rm(staging, { recursive: true, force: true });
  }
}, 90_000);
