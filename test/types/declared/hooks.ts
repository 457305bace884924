// Type tests with the collections of ./hookbridge-env.d.ts declared (the output of `hookbridge types`
// for test/types/sample-tables.ts). Every `@ts-expect-error` line must fail to compile.
import { defineHook, type ActionMeta, type CollectionKey, type Collections, type FilterPayload, type JsonValue } from 'hookbridge';
import type { Kysely } from 'kysely';
import type { Database } from 'hookbridge';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T | void {}

type Article = Collections['articles'];

export default defineHook(({ filter, action }, { database, kysely, logger }) => {
  // --- names: declared collections only, in every spelling
  filter('articles.items.create', () => undefined);
  filter('item.create.articles:before', () => undefined);
  filter('items.create.shop.orders', () => undefined);
  filter('my table.items.update', () => undefined);
  filter('blog_*.items.create', () => undefined);
  action('shop.*.items.create', () => undefined);
  action('*.items.create', () => undefined);
  // @ts-expect-error no such collection
  filter('nope.items.create', () => undefined);
  // @ts-expect-error a typo in a declared name
  action('article.items.create', () => undefined);
  // @ts-expect-error names are compared exactly
  action('Articles.items.create', () => undefined);
  // @ts-expect-error the 9 RC spelling is checked too
  filter('items.create.nope', () => undefined);
  // @ts-expect-error a glob that matches no declared collection
  action('blgo_*.items.create', () => undefined);
  // @ts-expect-error the grammar is still checked
  filter('articles.itemz.create', () => undefined);
  const built: string = 'nope.items.create';
  filter(built, () => undefined);

  // --- create filters: Partial of the row, lossless typing
  filter('articles.items.create', (payload, meta) => {
    expectType<Equal<typeof payload, Partial<Article>>>();
    expectType<Equal<typeof payload.views, string | undefined>>();
    expectType<Equal<typeof payload.created_at, string | undefined>>();
    expectType<Equal<typeof payload.data, JsonValue | null | undefined>>();
    expectType<Equal<typeof payload.cover, Buffer | null | undefined>>();
    expectType<Equal<typeof payload.tags, (string | null)[] | null | undefined>>();
    expectType<Equal<typeof payload.status, 'draft' | 'published' | undefined>>();
    expectType<Equal<typeof meta, { event: 'articles.items.create'; collection: 'articles' } & {}>>();
    // @ts-expect-error int8 arrives as a string, never as a number
    const views: number | undefined = payload.views;
    // @ts-expect-error a typo in a column
    void payload.titel;
    // @ts-expect-error a typo in the meta
    void meta.colection;
    return { ...payload, title: payload.title ?? 'untitled', status: 'draft' };
  });
  // @ts-expect-error not one of the enum's labels
  filter('articles.items.create', (payload) => ({ ...payload, status: 'archived' }));
  // @ts-expect-error int8 is written as a string too (a number could not hold every value)
  filter('articles.items.create', (payload) => ({ ...payload, views: 5 }));
  filter('articles.items.create', (payload) => {
    // @ts-expect-error no such column
    payload.titel = 'x';
    return payload;
  });

  filter('articles.items.update', (payload, meta) => {
    expectType<Equal<typeof payload, Partial<Article>>>();
    expectType<Equal<typeof meta.keys, number[]>>();
    expectType<Equal<typeof meta.event, 'articles.items.update'>>();
  });
  filter('order_lines.items.delete', (payload) => {
    expectType<Equal<typeof payload, { order_id: string; line: number }[]>>();
  });
  // a table without a primary key: its events carry a null key
  filter('my table.items.update', (payload, meta) => {
    expectType<Equal<typeof meta.keys, null[]>>();
    void payload['first name'];
    void payload["it's \"quoted\""];
    void payload.select;
  });
  // its key is not the same in filters and actions (REPLICA IDENTITY FULL without a primary key)
  action('events_log.items.delete', (meta) => {
    expectType<Equal<typeof meta.keys, unknown[]>>();
  });

  // --- generic names: the union of the declared collections
  filter('items.create', (payload, meta) => {
    expectType<Equal<typeof meta.collection, keyof Collections>>();
    // @ts-expect-error not every collection has a title
    void payload.title;
    if ('title' in payload) void payload.title;
  });
  filter('blog_*.items.create', (payload, meta) => {
    expectType<Equal<typeof meta.collection, 'blog_posts' | 'blog_comments'>>();
    expectType<Equal<typeof meta.event, 'blog_posts.items.create' | 'blog_comments.items.create'>>();
    expectType<Equal<typeof payload, Partial<Collections['blog_posts']> | Partial<Collections['blog_comments']>>>();
  });
  // actions tell the collections apart by meta.collection
  action('items.create', (meta) => {
    if (meta.collection === 'articles') {
      expectType<Equal<typeof meta.key, number>>();
      expectType<Equal<typeof meta.payload, Article>>();
    } else if (meta.collection === 'shop.orders') {
      expectType<Equal<typeof meta.payload.address, { street: string | null; 'zip code': string | null } | null>>();
    }
    expectType<Equal<typeof meta.event, 'items.create'>>();
  });

  // --- actions
  action('articles.items.create', ({ key, payload, collection, event }) => {
    expectType<Equal<typeof key, number>>();
    expectType<Equal<typeof payload, Article>>();
    expectType<Equal<typeof collection, 'articles'>>();
    expectType<Equal<typeof event, 'articles.items.create'>>();
  });
  action('shop.orders.items.update', ({ keys, payload, previous }) => {
    expectType<Equal<typeof keys, string[]>>();
    expectType<Equal<typeof payload, Partial<Collections['shop.orders']>>>();
    expectType<Equal<typeof previous, Collections['shop.orders'] | undefined>>();
  });
  action('order_lines.items.delete', ({ keys, payload }) => {
    expectType<Equal<typeof keys, { order_id: string; line: number }[]>>();
    expectType<Equal<typeof payload, { order_id: string; line: number }[]>>();
  });
  action('articles.items.update', (meta) => {
    // @ts-expect-error update actions carry keys, not key
    void meta.key;
    // @ts-expect-error a typo
    void meta.paylod;
  });

  // --- the databases: kysely typed from Database (the driver's typing), database stays Knex
  expectType<Equal<typeof kysely, Kysely<Database>>>();
  void kysely
    .selectFrom('articles')
    .select(['id', 'created_at', 'status'])
    .execute()
    .then((rows) => {
      for (const row of rows) {
        expectType<Equal<typeof row.created_at, Date>>();
        expectType<Equal<typeof row.status, 'draft' | 'published'>>();
        logger.info({ id: row.id });
      }
    });
  void kysely.selectFrom('shop.orders').select('total').execute();
  void kysely.insertInto('articles').values({ title: 'x', created_at: '2024-01-01T00:00:00Z' }).execute();
  // @ts-expect-error a generated column is not written
  void kysely.insertInto('articles').values({ title: 'x', slug: 'x' }).execute();
  // @ts-expect-error no such table
  void kysely.selectFrom('nope').selectAll().execute();
  // @ts-expect-error no such column
  void kysely.selectFrom('articles').select('titel').execute();
  // @ts-expect-error Knex has no such method
  void database.nonexistent();
  void database('articles').where({ id: 1 }).first();
});

export type CreatePayload = FilterPayload<'articles.items.create'>;
export type OrderLineKey = CollectionKey<'order_lines'>;
export type UpdateMeta = ActionMeta<'shop.orders.items.update'>;
