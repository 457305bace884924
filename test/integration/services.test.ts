/** `services.ItemsService` from inside hooks, emitEvents: false, and recursion. */
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServices } from '../../bridge/services/items-service.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';
import { waitUntilHandled } from '../support/slot.js';

const db = useTestDatabase();
const out: Record<string, unknown> = { audit: [] as unknown[], echoes: 0 };
(globalThis as Record<string, unknown>)['__svc'] = out;
let tb: TestBridge;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create table posts (id serial primary key, title text, status text, views int default 0)`);
    await c.query(`create table audit (id serial primary key, note text)`);
    await c.query(`create table echo (id serial primary key, depth int)`);
  });
  tb = await startTestBridge(db.url, {
    'hooks/services/index.js': `
      module.exports = ({ action, filter, init }, { services, getSchema }) => {
        const { ItemsService } = services;
        init('app.after', async () => {
          const posts = new ItemsService('posts', { schema: await getSchema() });
          const ids = await posts.createMany([{ title: 'a', status: 'draft' }, { title: 'b', status: 'live' }, { title: 'c', status: 'live' }]);
          await posts.updateOne(ids[0], { status: 'live' });
          await posts.deleteOne(ids[2]);
          globalThis.__svc.one = await posts.readOne(ids[0], { fields: ['id', 'status'] });
          globalThis.__svc.query = await posts.readByQuery({ filter: { _and: [{ status: { _eq: 'live' } }, { title: { _in: ['a', 'b', 'z'] } }] }, sort: ['-title'], fields: ['title'] });
          globalThis.__svc.many = (await posts.readMany(ids)).length;
          globalThis.__svc.ready = true;
        });
        // Directus-style recursion guard: the hook writes to its own table without events.
        action('audit.items.create', async ({ key }) => {
          globalThis.__svc.audit.push(key);
          const audit = new ItemsService('audit');
          await audit.updateOne(key, { note: 'seen' }, { emitEvents: false });
        });
        filter('audit.items.update', () => { throw new Error('the bypassed update must not reach filters'); });
        action('audit.items.update', () => { globalThis.__svc.auditUpdates = (globalThis.__svc.auditUpdates ?? 0) + 1; });
        // With events on, a hook that writes once more fires once more and stops as its author intends.
        action('echo.items.create', async ({ payload }) => {
          globalThis.__svc.echoes += 1;
          if (payload.depth < 1) await new ItemsService('echo').createOne({ depth: payload.depth + 1 });
        });
        filter('items.query', (query, meta) => (meta.collection === 'posts' ? { ...query, limit: 10 } : query));
      };`,
  });
});

afterAll(async () => {
  await tb?.dispose();
});

describe('ItemsService in hooks', () => {
  it('creates, reads (fields, filter, sort), updates and deletes', async () => {
    await waitFor(() => out['ready'] === true, {
      message: () => `init hook did not finish: ${JSON.stringify(tb.log.lines().filter((l) => Number(l['level']) >= 40))}`,
    });
    expect(out['one']).toEqual({ id: 1, status: 'live' });
    expect(out['query']).toEqual([{ title: 'b' }, { title: 'a' }]);
    expect(out['many']).toBe(2);
    expect(await withClient(db.url, async (c) => (await c.query(`select title, status from posts order by id`)).rows)).toEqual([
      { title: 'a', status: 'live' },
      { title: 'b', status: 'live' },
    ]);
  });

  it('skips filters and actions for writes made with emitEvents: false, so a hook writing its own table does not loop', async () => {
    await withClient(db.url, (c) => c.query(`insert into audit (note) values ('x')`));
    await waitFor(async () => (await withClient(db.url, async (c) => (await c.query(`select note from audit`)).rows))[0]?.note === 'seen', {
      message: 'the hook never updated its row',
    });
    // The bypassed update is committed: once the bridge handled everything up to here, an action for
    // it (or a second create) would have run.
    await waitUntilHandled(db.url, tb.slotName);
    expect(out['audit']).toEqual([1]);
    expect(out['auditUpdates']).toBeUndefined();
  });

  it('fires once more, and stops, when a hook writes with events on', async () => {
    await withClient(db.url, (c) => c.query(`insert into echo (depth) values (0)`));
    await waitFor(() => out['echoes'] === 2, { message: 'the echo did not fire twice' });
    // First the second echo's handler finishes (a row it wrote is then committed), then whatever that
    // row would fire has run.
    await waitUntilHandled(db.url, tb.slotName);
    await waitUntilHandled(db.url, tb.slotName);
    expect(out['echoes']).toBe(2);
  });

  it('reads as many rows as keys, and refuses unknown fields with INVALID_QUERY', async () => {
    const pool = new pg.Pool({ connectionString: db.url, max: 2 });
    const database = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
    try {
      const { ItemsService } = createServices({ database, runtime: tb.bridge.runtime, getSchema: () => tb.bridge.getSchema() });
      // echo: no items.query filter of the test's hook rewrites its limit.
      const posts = new ItemsService('echo');
      const ids = await posts.createMany(
        Array.from({ length: 150 }, () => ({ depth: 5 })),
        { emitEvents: false },
      );
      expect(await posts.readMany(ids)).toHaveLength(150);
      for (const query of [{ fields: ['nope'] }, { sort: ['-nope'] }, { filter: { _or: [{ nope: { _eq: 1 } }] } }, { sort: ['id; drop table echo'] }]) {
        await expect(posts.readByQuery(query)).rejects.toMatchObject({ code: 'INVALID_QUERY' });
      }
      await expect(new ItemsService('missing').readByQuery()).rejects.toMatchObject({ code: 'INVALID_QUERY' });
    } finally {
      await database.destroy();
    }
  });
});
