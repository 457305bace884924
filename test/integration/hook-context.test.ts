/** What hooks get besides the payload: getSchema(), context.schema, database (kysely), accountability. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const seen: Record<string, any> = { filterWho: {}, actionWho: {}, readBack: {} };
(globalThis as Record<string, unknown>)['__context'] = seen;
let tb: TestBridge;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create schema shop`);
    await c.query(`create table authors (id serial primary key, name varchar(80) not null)`);
    await c.query(`create table shop.books (
      isbn text, edition int, author_id int references authors (id), price numeric(8,2) default 9.99,
      tags text[], meta jsonb, published timestamptz, primary key (isbn, edition))`);
  });
  tb = await startTestBridge(db.url, {
    'hooks/context/index.js': `
      module.exports = ({ init, action, filter }, { getSchema, database }) => {
        init('app.before', async () => { globalThis.__context.schema = await getSchema(); });
        // Keyed by the author's name: actions run at least once, so a change delivered again (after a
        // reconnect) may run after a later one; the last value alone would say nothing.
        filter('authors.items.create', async (payload, meta, ctx) => {
          globalThis.__context.filterSchemaHasAuthors = Boolean(ctx.schema?.collections?.authors);
          globalThis.__context.filterWho[payload.name] = ctx.accountability;
          return payload;
        });
        action('authors.items.create', async ({ key, payload }, ctx) => {
          globalThis.__context.actionWho[payload.name] = ctx.accountability;
          // database is Knex (as in Directus); kysely the same database, typed.
          const row = await ctx.database('authors').select('name').where('id', key).first();
          const { sql } = require('hookbridge');
          const raw = await sql\`select count(*)::int as n from authors where id <= \${key}\`.execute(ctx.kysely);
          const viaKysely = await ctx.kysely.selectFrom('authors').select('name').where('id', '=', key).executeTakeFirst();
          globalThis.__context.readBack[payload.name] = row?.name + ':' + raw.rows[0]?.n + ':' + viaKysely?.name;
        });
      };`,
  });
});

/** What the bridge warned about, for a failure's message. */
function warnings(): string {
  const lines = tb.log.lines().filter((l) => Number(l['level']) >= 40);
  return JSON.stringify(lines.map((l) => [l['msg'], (l['err'] as { message?: string } | undefined)?.message]));
}

afterAll(async () => {
  await tb?.dispose();
});

describe('hook context', () => {
  it('getSchema() describes tables, columns, keys and relations', async () => {
    await waitFor(() => seen['schema'] !== undefined, { message: 'init hook never ran' });
    const schema = seen['schema'] as { collections: Record<string, any>; relations: any[] };
    expect(schema.collections['authors']).toMatchObject({
      primary: 'id',
      fields: { id: { type: 'integer', nullable: false, generated: false }, name: { dbType: 'character varying(80)', type: 'string', nullable: false } },
    });
    expect(schema.collections['authors'].fields.id.defaultValue).toMatch(/nextval/);
    expect(schema.collections['shop.books']).toMatchObject({
      primaryKey: ['isbn', 'edition'],
      fields: {
        price: { dbType: 'numeric(8,2)', type: 'decimal', defaultValue: '9.99' },
        tags: { type: 'csv' },
        meta: { type: 'json' },
        published: { type: 'timestamp' },
      },
    });
    expect(schema.relations).toEqual([
      { collection: 'shop.books', field: 'author_id', related_collection: 'authors', related_field: 'id', constraint: 'books_author_id_fkey' },
    ]);
    expect(schema.collections['hookbridge.failed_events']).toBeUndefined();
  });

  it('gives handlers the schema and a kysely database', async () => {
    await withClient(db.url, (c) => c.query(`insert into authors (name) values ('Ada')`));
    await waitFor(() => seen['readBack']['Ada'] === 'Ada:1:Ada', {
      message: () => `the action hook could not read back through database (Knex) and kysely: ${String(seen['readBack']['Ada'])} ${warnings()}`,
    });
    expect(seen['filterSchemaHasAuthors']).toBe(true);
  });

  it('tells filters and actions who wrote: a plain role with a PostgREST claim, then with hookbridge.user', async () => {
    const role = `hb_web_${Date.now()}`;
    await withClient(db.url, async (c) => {
      await c.query(`create role ${role} login password 'pw'`);
      await c.query(`grant insert, select on authors to ${role}; grant usage on sequence authors_id_seq to ${role}`);
    });
    const url = new URL(db.url);
    url.username = role;
    url.password = 'pw';
    try {
      await withClient(url.toString(), async (c) => {
        await c.query('begin');
        await c.query(`select set_config('request.jwt.claims', '{"sub":"bob","role":"web"}', true)`);
        await c.query(`insert into authors (name) values ('Bob')`);
        await c.query('commit');
      });
      await waitFor(() => seen['readBack']['Bob'] === 'Bob:2:Bob', {
        message: () => `the action for Bob never read its row back: ${String(seen['readBack']['Bob'])} ${warnings()}`,
      });
      for (const who of [seen['filterWho']['Bob'], seen['actionWho']['Bob']]) {
        expect(who).toMatchObject({ role, admin: false, user: 'bob', claims: { sub: 'bob', role: 'web' } });
      }
      // The same role naming its application user itself (USER is reserved: quote it).
      await withClient(url.toString(), async (c) => {
        await c.query(`set hookbridge."user" = 'carol'`);
        await c.query(`insert into authors (name) values ('Carol')`);
      });
      await waitFor(() => seen['readBack']['Carol'] === 'Carol:3:Carol', {
        message: () => `the action for Carol never read its row back: ${String(seen['readBack']['Carol'])} ${warnings()}`,
      });
      for (const who of [seen['filterWho']['Carol'], seen['actionWho']['Carol']]) {
        expect(who).toMatchObject({ role, admin: false, user: 'carol', claims: null });
      }
    } finally {
      await withClient(db.url, async (c) => {
        await c.query(`drop owned by ${role}`);
        await c.query(`drop role ${role}`);
      });
    }
  });

  it('sees schema changes', async () => {
    await withClient(db.url, (c) => c.query(`alter table authors add column born date`));
    await waitFor(async () => Boolean((await tb.bridge.getSchema()).collections['authors']?.fields['born']), {
      message: 'the new column never appeared',
    });
    expect((await tb.bridge.getSchema()).collections['authors']?.fields['born']?.type).toBe('date');
  });
});
