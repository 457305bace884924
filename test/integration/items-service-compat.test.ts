/**
 * `services.ItemsService` against Directus' method set and query language, on a real Postgres: every
 * method, filters (shorthand included), search, aggregates and groupBy, the options hookbridge refuses,
 * `emitEvents: false` on every write method, translated errors, and Directus' other services.
 */
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServices } from '../../bridge/services/items-service.js';
import { DIRECTUS_SERVICES } from '../../bridge/services/other-services.js';
import { driverTypes } from '../../bridge/typing/values.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
interface Seen {
  block: boolean;
  actions: Array<{ event: string; keys: unknown }>;
  guardedQueries: number;
  mailError?: { code: string; message: string };
  registered?: boolean;
}
const seen: Seen = { block: false, actions: [], guardedQueries: 0 };
(globalThis as Record<string, unknown>)['__compat'] = seen;

let tb: TestBridge;
let pool: pg.Pool;
let database: Kysely<any>;
let services: ReturnType<typeof createServices>;

const UID = '11111111-1111-4111-8111-111111111111';

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`
      create table articles (id serial primary key, title text, status text, views int, rating numeric(4,1),
                             author varchar(40), tags text[], meta jsonb, uid uuid, published timestamptz);
      insert into articles (title, status, views, rating, author, tags, meta, uid, published) values
        ('Alpha', 'draft', 10, 4.5, 'ann', '{a,b}', '{"k":1}', '${UID}', now() - interval '2 days'),
        ('beta', 'live', 20, 3.0, 'bob', '{}', null, null, now() + interval '1 day'),
        ('Gamma 50%', 'live', 30, null, 'ann', null, '[]', null, null),
        ('delta_x', null, null, 2.5, '', '{b}', null, null, null),
        ('Epsilon', 'archived', 50, 5.0, 'cy', '{a}', null, null, null);
      create table posts (id serial primary key, title text, status text default 'draft', body jsonb, n int check (n >= 0));
      create table codes (code text primary key, label text not null);
      create table racing (code text primary key, label text not null);
      create table settings (id serial primary key, site text default 'hookbridge', enabled boolean);
      create table guarded (id serial primary key, note text);
      create table pairs (a int, b int, primary key (a, b));
      create table nokey (x int);
      create table many (id serial primary key, n int);
      insert into many (n) select g from generate_series(1, 105) g;
      insert into pairs values (1, 1), (1, 2);
      insert into nokey values (2), (1);
    `);
  });
  tb = await startTestBridge(db.url, {
    'hooks/compat/index.js': `
      module.exports = ({ filter, action, init }, { services, exceptions }) => {
        // Extensions destructure Directus' services at register time and may never use them.
        const { ItemsService, MailService, FilesService, UsersService } = services;
        const seen = globalThis.__compat;
        seen.registered = typeof ItemsService === 'function' && typeof FilesService === 'function' && typeof UsersService === 'function';
        init('app.after', () => {
          try { new MailService({}); } catch (error) { seen.mailError = { code: error.code, message: error.message }; }
        });
        for (const event of ['create', 'update', 'delete']) {
          filter('guarded.items.' + event, (payload) => {
            if (seen.block) throw new exceptions.InvalidPayloadException('guarded is closed');
            return payload;
          });
          action('guarded.items.' + event, (meta) => { seen.actions.push({ event, keys: meta.key ?? meta.keys }); });
        }
        filter('guarded.items.query', (query) => { seen.guardedQueries += 1; return query; });
        // Slow enough that two upserts of one new key overlap.
        filter('racing.items.create', async (payload) => { await new Promise((r) => setTimeout(r, 300)); return payload; });
      };`,
  });
  pool = new pg.Pool({ connectionString: db.url, max: 3, types: driverTypes(pg.types) });
  database = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  services = createServices({ database, runtime: tb.bridge.runtime, getSchema: () => tb.bridge.getSchema() });
});

afterAll(async () => {
  await database?.destroy();
  await tb?.dispose();
});

const thrownBy = (fn: () => unknown): unknown => {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
};
const ids = (rows: Array<Record<string, unknown>>) => rows.map((row) => row['id']);
const rowsOf = (sql: string) => withClient(db.url, async (c) => (await c.query(sql)).rows);

describe('ItemsService filters', () => {
  const cases: Array<[string, Record<string, unknown>, number[]]> = [
    ['shorthand value', { status: 'live' }, [2, 3]],
    ['shorthand null', { status: null }, [4]],
    ['_eq', { status: { _eq: 'draft' } }, [1]],
    ['_neq (nulls excluded, as SQL)', { status: { _neq: 'draft' } }, [2, 3, 5]],
    ['_lt', { views: { _lt: 20 } }, [1]],
    ['_lte', { views: { _lte: 20 } }, [1, 2]],
    ['_gt', { views: { _gt: 30 } }, [5]],
    ['_gte', { views: { _gte: 30 } }, [3, 5]],
    ['several operators on one field', { views: { _gt: 10, _lt: 50 } }, [2, 3]],
    ['_in', { status: { _in: ['draft', 'archived'] } }, [1, 5]],
    ['_in empty', { status: { _in: [] } }, []],
    ['_nin', { status: { _nin: ['live'] } }, [1, 5]],
    ['_null', { status: { _null: true } }, [4]],
    ['_null false', { status: { _null: false } }, [1, 2, 3, 5]],
    ['_nnull', { status: { _nnull: true } }, [1, 2, 3, 5]],
    ['_contains (case-sensitive)', { title: { _contains: 'A' } }, [1]],
    ['_contains escapes %', { title: { _contains: '%' } }, [3]],
    ['_contains escapes _', { title: { _contains: '_' } }, [4]],
    ['_ncontains', { title: { _ncontains: 'a' } }, [5]],
    ['_icontains', { title: { _icontains: 'ALP' } }, [1]],
    ['_nicontains', { title: { _nicontains: 'E' } }, [1, 3]],
    ['_ieq', { title: { _ieq: 'ALPHA' } }, [1]],
    ['_starts_with', { title: { _starts_with: 'G' } }, [3]],
    ['_nstarts_with', { title: { _nstarts_with: 'G' } }, [1, 2, 4, 5]],
    ['_istarts_with', { title: { _istarts_with: 'gam' } }, [3]],
    ['_ends_with', { title: { _ends_with: 'on' } }, [5]],
    ['_nends_with', { title: { _nends_with: 'a' } }, [3, 4, 5]],
    ['_iends_with', { title: { _iends_with: 'ON' } }, [5]],
    ['_between', { views: { _between: [15, 30] } }, [2, 3]],
    ['_nbetween', { views: { _nbetween: [15, 30] } }, [1, 5]],
    ['_empty on text', { author: { _empty: true } }, [4]],
    ['_nempty on text', { author: { _nempty: true } }, [1, 2, 3, 5]],
    ['_empty on an array', { tags: { _empty: true } }, [2, 3]],
    ['_null on jsonb', { meta: { _null: true } }, [2, 4, 5]],
    ['numeric', { rating: { _eq: 4.5 } }, [1]],
    ['uuid', { uid: { _eq: UID } }, [1]],
    ['_and', { _and: [{ status: 'live' }, { views: { _gt: 25 } }] }, [3]],
    ['_or', { _or: [{ status: { _eq: 'draft' } }, { views: { _gte: 50 } }] }, [1, 5]],
    ['empty _or constrains nothing (as Directus)', { _or: [] }, [1, 2, 3, 4, 5]],
    ['$NOW', { published: { _lt: '$NOW' } }, [1]],
    ['$NOW(-1 day)', { published: { _gt: '$NOW(-1 day)' } }, [2]],
    ['_between $NOW(-3 days) and $NOW', { published: { _between: ['$NOW(-3 days)', '$NOW'] } }, [1]],
    ['a value that merely starts with $NOW is itself', { title: { _neq: '$NOWHERE' } }, [1, 2, 3, 4, 5]],
  ];
  it.each(cases)('%s', async (_name, filter, expected) => {
    const articles = new services.ItemsService('articles');
    expect(ids(await articles.readByQuery({ filter, fields: ['id'] }))).toEqual(expected);
  });
});

describe('ItemsService search', () => {
  const cases: Array<[string, number[]]> = [
    ['alp', [1]], // text columns, case-insensitive
    ['ANN', [1, 3]], // a varchar column too
    ['50', [3, 5]], // "Gamma 50%" contains it, and views equals it
    ['4.5', [1]], // numeric column; no integer column can hold 4.5, and none is compared
    [UID, [1]], // uuid column
    ['%', [3]], // the term is literal
    ['zzz', []],
  ];
  it.each(cases)('%s', async (search, expected) => {
    const articles = new services.ItemsService('articles');
    expect(ids(await articles.readByQuery({ search, fields: ['id'] }))).toEqual(expected);
  });

  it('combines with the filter', async () => {
    const articles = new services.ItemsService('articles');
    expect(ids(await articles.readByQuery({ search: 'a', filter: { status: 'live' }, fields: ['id'] }))).toEqual([2, 3]);
  });
});

describe('ItemsService aggregates and groupBy', () => {
  it('shapes each aggregate as Directus does (bigint and numeric results as strings, as on Directus with Postgres)', async () => {
    const articles = new services.ItemsService('articles');
    const read = (aggregate: Record<string, string[]>, more: Record<string, unknown> = {}) => articles.readByQuery({ aggregate, ...more });
    expect(await read({ count: ['*'] })).toEqual([{ count: '5' }]);
    expect(await read({ countAll: [] })).toEqual([{ countAll: '5' }]);
    expect(await read({ count: ['views'] })).toEqual([{ count: { views: '4' } }]);
    expect(await read({ countDistinct: ['status'] })).toEqual([{ countDistinct: { status: '3' } }]);
    expect(await read({ sum: ['views'] })).toEqual([{ sum: { views: '110' } }]);
    expect(await read({ sumDistinct: ['rating'] })).toEqual([{ sumDistinct: { rating: '15.0' } }]);
    const [avg] = await read({ avg: ['views'], avgDistinct: ['rating'] });
    expect(Number((avg?.['avg'] as Record<string, string>)['views'])).toBe(27.5);
    expect(Number((avg?.['avgDistinct'] as Record<string, string>)['rating'])).toBe(3.75);
    expect(await read({ min: ['views', 'rating'], max: ['views'] })).toEqual([{ min: { views: 10, rating: '2.5' }, max: { views: 50 } }]);
    expect(await read({ count: ['id'], sum: ['views'] }, { filter: { status: 'live' } })).toEqual([{ count: { id: '2' }, sum: { views: '50' } }]);
    // As Directus: with aggregates, `fields` gives way to them.
    expect(await read({ count: ['*'] }, { fields: ['id', 'title'] })).toEqual([{ count: '5' }]);
  });

  it('groups: grouped columns beside the aggregates, in group order unless sorted', async () => {
    const articles = new services.ItemsService('articles');
    expect(await articles.readByQuery({ aggregate: { count: ['*'], sum: ['views'] }, groupBy: ['status'] })).toEqual([
      { status: 'archived', count: '1', sum: { views: '50' } },
      { status: 'draft', count: '1', sum: { views: '10' } },
      { status: 'live', count: '2', sum: { views: '50' } },
      { status: null, count: '1', sum: { views: null } },
    ]);
    // `group` is the option's name in Directus' own services.
    expect(await articles.readByQuery({ aggregate: { count: ['id'] }, group: ['author'], sort: ['-author'], filter: { author: { _nempty: true } } })).toEqual([
      { author: 'cy', count: { id: '1' } },
      { author: 'bob', count: { id: '1' } },
      { author: 'ann', count: { id: '2' } },
    ]);
    expect(await articles.readByQuery({ groupBy: ['author', 'status'], filter: { author: 'ann' } })).toEqual([
      { author: 'ann', status: 'draft' },
      { author: 'ann', status: 'live' },
    ]);
    expect(await articles.readByQuery({ aggregate: { count: ['*'] }, groupBy: ['status'], limit: 1, page: 2 })).toEqual([{ status: 'draft', count: '1' }]);
  });
});

describe('ItemsService query options', () => {
  it('selects fields, sorts, pages, and defaults to primary key order and 100 rows (as Directus)', async () => {
    const articles = new services.ItemsService('articles');
    expect(await articles.readByQuery({ fields: ['id', 'title'], filter: { id: { _lte: 2 } } })).toEqual([
      { id: 1, title: 'Alpha' },
      { id: 2, title: 'beta' },
    ]);
    expect(Object.keys((await articles.readByQuery({ fields: ['*'], limit: 1 }))[0] ?? {})).toHaveLength(10);
    // Postgres sorts nulls first in descending order.
    expect(ids(await articles.readByQuery({ fields: ['id'], sort: ['-views', 'id'] }))).toEqual([4, 5, 3, 2, 1]);
    expect(ids(await articles.readByQuery({ fields: ['id'], limit: 2, page: 2 }))).toEqual([3, 4]);
    expect(ids(await articles.readByQuery({ fields: ['id'], limit: 2, offset: 3 }))).toEqual([4, 5]);
    const many = new services.ItemsService('many');
    expect(await many.readByQuery({ fields: ['id'] })).toHaveLength(100);
    expect(await many.readByQuery({ fields: ['id'], limit: -1 })).toHaveLength(105);
    expect(await many.getKeysByQuery({})).toHaveLength(100);
    expect(await many.getKeysByQuery({ limit: -1, filter: { n: { _gt: 100 } } })).toEqual([101, 102, 103, 104, 105]);
  });

  const refused: Array<[Record<string, unknown>, RegExp]> = [
    [{ deep: { author: { _limit: 1 } } }, /query option "deep" is not supported/],
    [{ alias: { t: 'title' } }, /query option "alias" is not supported/],
    [{ meta: ['total_count'] }, /query option "meta" is not supported.*count/],
    [{ export: 'csv' }, /query option "export" is not supported/],
    [{ version: 'draft' }, /query option "version" is not supported/],
    [{ nope: 1 }, /unknown query option "nope"/],
    [{ fields: ['author.name'] }, /"author.name" in fields is a relational path/],
    [{ fields: ['year(published)'] }, /"year\(published\)" in fields is a function/],
    [{ sort: 'title' }, /sort must be an array/],
    [{ sort: ['-nope'] }, /unknown field "nope" in sort/],
    [{ limit: -2 }, /limit must be an integer of at least -1/],
    [{ page: 0 }, /page must be an integer of at least 1/],
    [{ filter: { author: { name: { _eq: 'x' } } } }, /relational filter \("author.name"\)/],
    [{ filter: { tags: { _some: { _eq: 'a' } } } }, /"_some" on "tags" is not supported/],
    [{ filter: { title: { _regex: 'a' } } }, /"_regex" on "title" is not supported/],
    [{ filter: { title: { _like: 'a' } } }, /unknown filter operator "_like" on "title"/],
    [{ filter: { title: { _eq: '$CURRENT_USER' } } }, /\$CURRENT_USER is not supported/],
    [{ filter: { published: { _lt: '$NOW(soon)' } } }, /dynamic variable "\$NOW\(soon\)"/],
    [{ filter: { views: { _contains: '1' } } }, /"_contains" needs a text column; "views" is integer/],
    [{ filter: { views: { _between: [1] } } }, /needs an array of two values/],
    [{ filter: { status: ['live'] } }, /is an array: .*_in/],
    [{ filter: { views: { _eq: 'many' } } }, /invalid input syntax for type integer/],
    [{ aggregate: { median: ['views'] } }, /unknown aggregate function "median"/],
    [{ aggregate: { sum: ['title'] } }, /aggregate.sum needs a numeric column/],
    [{ aggregate: { count: ['*', 'id'] } }, /countAll/],
    [{ aggregate: { count: ['*'] }, groupBy: ['status'], sort: ['views'] }, /sort "views" is not a grouped field/],
    [{ group: ['status'], groupBy: ['status'] }, /not both/],
  ];
  it.each(refused)('refuses %j with INVALID_QUERY', async (query, message) => {
    const articles = new services.ItemsService('articles');
    const error = await articles.readByQuery(query as never).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ name: 'DirectusError', code: 'INVALID_QUERY', status: 400 });
    expect((error as Error).message).toMatch(message);
  });

  it('refuses aggregates where rows are selected by key', async () => {
    const articles = new services.ItemsService('articles');
    await expect(articles.getKeysByQuery({ aggregate: { count: ['*'] } })).rejects.toMatchObject({ code: 'INVALID_QUERY' });
    await expect(articles.deleteByQuery({ groupBy: ['status'] })).rejects.toMatchObject({ code: 'INVALID_QUERY' });
    expect(await rowsOf('select count(*)::int as n from articles')).toEqual([{ n: 5 }]);
  });

  it('reads tables without a single-column key by query only', async () => {
    expect(await new services.ItemsService('nokey').readByQuery({ sort: ['x'] })).toEqual([{ x: 1 }, { x: 2 }]);
    expect(await new services.ItemsService('pairs').readByQuery({ filter: { b: 2 } })).toEqual([{ a: 1, b: 2 }]);
    await expect(new services.ItemsService('pairs').readOne(1)).rejects.toThrow(/composite primary key \(a, b\)/);
    await expect(new services.ItemsService('nokey').createOne({ x: 3 })).rejects.toThrow(/has no primary key/);
  });
});

describe('ItemsService methods', () => {
  it('creates, reads, updates, upserts and deletes with Directus return values', async () => {
    const posts = new services.ItemsService('posts');
    expect(await posts.createOne({ title: 'one', body: [1, 2] })).toBe(1);
    expect(await posts.createMany([{ title: 'two', n: 2 }, {}])).toEqual([2, 3]);
    expect(await posts.createMany([{}, {}])).toEqual([4, 5]);
    expect(await posts.createMany([])).toEqual([]);
    expect(await posts.readOne(1)).toEqual({ id: 1, title: 'one', status: 'draft', body: [1, 2], n: null });
    expect(await posts.readOne(2, { fields: ['title'] })).toEqual({ title: 'two' });
    await expect(posts.readOne(99)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await expect(posts.readOne('abc')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(ids(await posts.readMany([3, 1]))).toEqual([1, 3]);
    expect(ids(await posts.readMany([3, 1, 2], { sort: ['-id'], limit: 2 }))).toEqual([3, 2]);
    expect(await posts.readMany([])).toEqual([]);

    expect(await posts.updateOne(1, { id: 1, title: 'uno', body: { a: [1] } })).toBe(1);
    expect(await posts.updateMany([2, 3], { status: 'live' })).toEqual([2, 3]);
    expect(
      await posts.updateBatch([
        { id: 4, title: 'four' },
        { id: 5, n: 5 },
      ]),
    ).toEqual([4, 5]);
    expect(await posts.updateByQuery({ filter: { status: 'live' } }, { n: 9 })).toEqual([2, 3]);
    expect(await posts.updateByQuery({ filter: { title: 'nothing' } }, { n: 1 })).toEqual([]);
    expect(await rowsOf('select id, title, status, body, n from posts order by id')).toEqual([
      { id: 1, title: 'uno', status: 'draft', body: { a: [1] }, n: null },
      { id: 2, title: 'two', status: 'live', body: null, n: 9 },
      { id: 3, title: null, status: 'live', body: null, n: 9 },
      { id: 4, title: 'four', status: 'draft', body: null, n: null },
      { id: 5, title: null, status: 'draft', body: null, n: 5 },
    ]);

    expect(await posts.upsertOne({ title: 'six' })).toBe(6);
    expect(await posts.upsertOne({ id: 6, title: 'sechs' })).toBe(6);
    expect(await posts.upsertOne({ id: 500, title: 'explicit' })).toBe(500);
    expect(await posts.upsertMany([{ id: 1, n: 1 }, { title: 'fresh' }])).toEqual([1, 7]);
    expect(await rowsOf('select id, title, n from posts where id in (1, 6, 7, 500) order by id')).toEqual([
      { id: 1, title: 'uno', n: 1 },
      { id: 6, title: 'sechs', n: null },
      { id: 7, title: 'fresh', n: null },
      { id: 500, title: 'explicit', n: null },
    ]);
    const codes = new services.ItemsService('codes');
    expect(
      await codes.upsertMany([
        { code: 'a', label: 'A' },
        { code: 'a', label: 'A2' },
      ]),
    ).toEqual(['a', 'a']);
    expect(await codes.readByQuery()).toEqual([{ code: 'a', label: 'A2' }]);

    expect(await posts.deleteOne(500)).toBe(500);
    expect(await posts.deleteMany([6, 7])).toEqual([6, 7]);
    expect(await posts.deleteByQuery({ filter: { status: 'live' } })).toEqual([2, 3]);
    expect(await posts.deleteByQuery({ filter: { title: 'nothing' } })).toEqual([]);
    expect(ids(await rowsOf('select id from posts order by id'))).toEqual([1, 4, 5]);
  });

  it('runs updateBatch and upsertMany in one transaction: one failing item writes none', async () => {
    const posts = new services.ItemsService('posts');
    const before = await rowsOf('select id, title, n from posts order by id');
    await expect(
      posts.updateBatch([
        { id: 4, title: 'changed' },
        { id: 5, n: -1 },
      ]),
    ).rejects.toThrow(/check constraint/);
    await expect(
      posts.upsertMany([
        { id: 4, title: 'changed' },
        { title: 'new', n: -1 },
      ]),
    ).rejects.toThrow(/check constraint/);
    expect(await rowsOf('select id, title, n from posts order by id')).toEqual(before);
  });

  it('refuses bad payloads and keys before writing', async () => {
    const posts = new services.ItemsService('posts');
    await expect(posts.createOne({ title: 'x', nope: 1 } as never)).rejects.toMatchObject({
      code: 'INVALID_PAYLOAD',
      message: expect.stringMatching(/no field "nope"/),
    });
    await expect(posts.createMany({ title: 'x' } as never)).rejects.toMatchObject({ code: 'INVALID_PAYLOAD' });
    await expect(posts.updateBatch([{ title: 'no key' }])).rejects.toMatchObject({
      code: 'INVALID_PAYLOAD',
      message: expect.stringMatching(/misses its primary key "id"/),
    });
    await expect(posts.updateOne('1; drop table posts' as never, { title: 'x' })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await expect(posts.deleteMany([1, null] as never)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(ids(await rowsOf('select id from posts order by id'))).toEqual([1, 4, 5]);
  });

  it('translates constraint violations as Directus does', async () => {
    const codes = new services.ItemsService('codes');
    await expect(codes.createOne({ code: 'a', label: 'again' })).rejects.toMatchObject({
      code: 'RECORD_NOT_UNIQUE',
      extensions: { collection: 'codes', field: 'code', value: 'a', primaryKey: true },
    });
    await expect(codes.createOne({ code: 'z' })).rejects.toMatchObject({ code: 'NOT_NULL_VIOLATION', extensions: { collection: 'codes', field: 'label' } });
  });

  it('writes columns added after the service was made with its schema', async () => {
    await rowsOf('create table evolving (id serial primary key, a text)');
    const schema = await waitFor(
      async () => {
        const latest = await tb.bridge.getSchema();
        return latest.collections['evolving'] ? latest : undefined;
      },
      { message: 'the schema never showed the new table' },
    );
    const evolving = new services.ItemsService('evolving', { schema });
    await rowsOf('alter table evolving add column b text');
    // The schema cache notices the new column within a second.
    await waitFor(() => evolving.createOne({ b: 'new' }).catch(() => undefined), { message: 'the new column never became writable' });
    expect(await rowsOf('select a, b from evolving')).toEqual([{ a: null, b: 'new' }]);
  });

  it('reads and upserts a singleton', async () => {
    const settings = new services.ItemsService('settings');
    // An empty table: every requested field null (Postgres defaults are expressions only an insert evaluates).
    expect(await settings.readSingleton({})).toEqual({ id: null, site: null, enabled: null });
    expect(await settings.readSingleton({ fields: ['site'] })).toEqual({ site: null });
    expect(await settings.upsertSingleton({ enabled: false })).toBe(1);
    expect(await settings.upsertSingleton({ enabled: true })).toBe(1);
    expect(await settings.readSingleton({})).toEqual({ id: 1, site: 'hookbridge', enabled: true });
    expect(await rowsOf('select count(*)::int as n from settings')).toEqual([{ n: 1 }]);
  });
});

describe('ItemsService upserts under concurrency', () => {
  it('two upserts of one new key both succeed: one creates it, the other updates it', async () => {
    const racing = new services.ItemsService('racing');
    const results = await Promise.allSettled([racing.upsertOne({ code: 'k', label: 'first' }), racing.upsertOne({ code: 'k', label: 'second' })]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as { code?: string }).code))).toEqual(['k', 'k']);
    const rows = await withClient(db.url, async (c) => (await c.query(`select code, label from racing`)).rows);
    expect(rows).toHaveLength(1);
    expect(['first', 'second']).toContain(rows[0].label);
  });
});

describe('ItemsService with emitEvents: false', () => {
  it('skips filters and actions on every write method', async () => {
    seen.block = true;
    const guarded = new services.ItemsService('guarded');
    const quiet = { emitEvents: false };
    const queriesBefore = seen.guardedQueries;
    expect(await guarded.createOne({ note: 'a' }, quiet)).toBe(1);
    expect(await guarded.createMany([{ note: 'b' }, { note: 'c' }, { note: 'd' }, { note: 'e' }], quiet)).toEqual([2, 3, 4, 5]);
    expect(await guarded.updateOne(1, { note: 'a1' }, quiet)).toBe(1);
    expect(await guarded.updateMany([2, 3], { note: 'bc' }, quiet)).toEqual([2, 3]);
    expect(
      await guarded.updateBatch(
        [
          { id: 4, note: 'd1' },
          { id: 5, note: 'e1' },
        ],
        quiet,
      ),
    ).toEqual([4, 5]);
    expect(await guarded.updateByQuery({ filter: { note: 'bc' } }, { note: 'bc2' }, quiet)).toEqual([2, 3]);
    expect(await guarded.upsertOne({ id: 1, note: 'a2' }, quiet)).toBe(1);
    expect(await guarded.upsertOne({ note: 'f' }, quiet)).toBe(6);
    expect(await guarded.upsertMany([{ id: 6, note: 'f1' }, { note: 'g' }], quiet)).toEqual([6, 7]);
    expect(await guarded.upsertSingleton({ note: 'first' }, quiet)).toBe(1);
    expect(await guarded.deleteOne(7, quiet)).toBe(7);
    expect(await guarded.deleteMany([5, 6], quiet)).toEqual([5, 6]);
    expect(await guarded.deleteByQuery({ filter: { note: 'bc2' } }, quiet)).toEqual([2, 3]);
    expect(await rowsOf('select id, note from guarded order by id')).toEqual([
      { id: 1, note: 'first' },
      { id: 4, note: 'd1' },
    ]);
    // The key reads of updateByQuery and deleteByQuery fired no items.query either.
    expect(seen.guardedQueries).toBe(queriesBefore);

    // A write with events on, after all of those: once its action has run, any action of the writes
    // above would have been dispatched before it (one stream, in commit order).
    seen.block = false;
    const [sentinel] = await rowsOf(`insert into guarded (note) values ('sentinel') returning id`);
    await waitFor(() => seen.actions.some((a) => a.keys === sentinel?.['id']), {
      message: () => `no action for the sentinel: ${JSON.stringify(seen.actions)}`,
    });
    expect(seen.actions).toEqual([{ event: 'create', keys: sentinel?.['id'] }]);
  });

  it("reaches hooks with events on: a rejecting filter stops the write, with the hook's Directus error", async () => {
    seen.block = true;
    const guarded = new services.ItemsService('guarded');
    await expect(guarded.createOne({ note: 'x' })).rejects.toMatchObject({
      name: 'DirectusError',
      code: 'INVALID_PAYLOAD',
      status: 400,
      message: 'guarded is closed',
    });
    await expect(guarded.upsertMany([{ note: 'x' }])).rejects.toMatchObject({ code: 'INVALID_PAYLOAD' });
    expect(await rowsOf(`select * from guarded where note = 'x'`)).toEqual([]);
  });

  it('fires the read hooks only with events on', async () => {
    const guarded = new services.ItemsService('guarded');
    const before = seen.guardedQueries;
    await guarded.readByQuery({}, { emitEvents: false });
    await guarded.readOne(1, {}, { emitEvents: false });
    expect(seen.guardedQueries).toBe(before);
    await guarded.readByQuery({});
    expect(seen.guardedQueries).toBe(before + 1);
  });
});

describe("Directus' other services", () => {
  it('can be destructured at register time; constructing one says hookbridge does not offer it', async () => {
    await waitFor(() => seen.mailError, { message: 'the init hook did not try MailService' });
    expect(seen.registered).toBe(true);
    expect(seen.mailError).toEqual({
      code: 'E_SERVICE_NOT_OFFERED',
      message: expect.stringMatching(
        /^MailService is a Directus service that hookbridge does not offer: hookbridge's services are ItemsService\. hookbridge runs beside PostgreSQL, without Directus' users, files, mail/,
      ),
    });
    for (const name of DIRECTUS_SERVICES) {
      const Service = (services as Record<string, new (options: unknown) => unknown>)[name];
      expect(Service, name).toBeTypeOf('function');
      expect(
        thrownBy(() => new Service!({ schema: {} })),
        name,
      ).toMatchObject({
        name: 'HookbridgeError',
        code: 'E_SERVICE_NOT_OFFERED',
        message: expect.stringContaining(`${name} is a Directus service that hookbridge does not offer`),
      });
    }
    for (const name of [
      'MailService',
      'FilesService',
      'UsersService',
      'RolesService',
      'PermissionsService',
      'CollectionsService',
      'FieldsService',
      'RelationsService',
      'ActivityService',
      'RevisionsService',
      'SettingsService',
      'AssetsService',
      'ImportService',
      'ExportService',
      'UtilsService',
      'ServerService',
      'SchemaService',
      'SpecificationService',
      'NotificationsService',
      'FlowsService',
      'WebhooksService',
      'DashboardsService',
      'PanelsService',
      'PresetsService',
      'SharesService',
      'TranslationsService',
      'FoldersService',
      'ExtensionsService',
      'GraphQLService',
      'MetaService',
      'PayloadService',
      'AuthorizationService',
      'AuthenticationService',
      'TFAService',
    ]) {
      expect(DIRECTUS_SERVICES as readonly string[]).toContain(name);
    }
  });
});
