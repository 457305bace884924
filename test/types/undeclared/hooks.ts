// Type tests before `hookbridge types` ran: no collection is declared, so any collection name is
// accepted and rows are loose, but event names are still checked against the grammar and metas
// against what the runtime passes. Every `@ts-expect-error` line must fail to compile.
import { defineHook, type ActionMeta, type FilterMeta, type FilterPayload, type HookContext, type RegisterContext } from 'hookbridge';
import type { Knex } from 'knex';
import type { Kysely } from 'kysely';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T | void {}

export default defineHook(({ filter, action, init, schedule, embed }, context) => {
  // --- names the runtime accepts, in every spelling of the seeds
  filter('articles.items.create', () => undefined);
  filter('items.create', () => undefined);
  filter('items.update.before', () => undefined);
  filter('item.create.articles:before', () => undefined);
  filter('items.create.shop.orders', () => undefined);
  filter('shop.orders.items.update', () => undefined);
  filter('blog_*.items.create', () => undefined);
  filter('my table.items.create', () => undefined);
  filter('статьи.items.create', () => undefined);
  filter('  articles.items.create  ', () => undefined);
  action('items.*', () => undefined);
  action('item.*.*', () => undefined);
  action('*', () => undefined);
  action('*.items.create', () => undefined);
  action('items.*ate', () => undefined);
  action('articles.items.create:after', () => undefined);
  action('items.truncate', () => undefined);
  action('server.start', () => undefined);
  action('server.*', () => undefined);
  init('routes.custom.before', () => undefined);
  schedule('*/15 * * * *', () => undefined);
  embed('head', '<style></style>');

  // --- names the runtime refuses
  // @ts-expect-error a typo in the scope and the action
  filter('articels.itemz.craete', () => undefined);
  // @ts-expect-error unknown action
  filter('items.craete', () => undefined);
  // @ts-expect-error `itemz` is no scope: x.itemz.create names the scope "x"
  filter('x.itemz.create', () => undefined);
  // @ts-expect-error unknown action after the collection
  action('articles.items.publish', () => undefined);
  // @ts-expect-error a glob that matches no action
  action('items.x*', () => undefined);
  // @ts-expect-error an empty segment
  action('items..create', () => undefined);
  // @ts-expect-error empty
  action('', () => undefined);
  // @ts-expect-error blank
  action('   ', () => undefined);
  // @ts-expect-error no action
  action('items', () => undefined);
  // @ts-expect-error a Directus system scope
  action('users.create', () => undefined);
  // @ts-expect-error `.before` makes it a filter
  action('items.create.before', () => undefined);
  // @ts-expect-error `:after` makes it an action
  filter('items.create:after', () => undefined);
  // @ts-expect-error an init event is registered with init()
  action('app.before', () => undefined);
  // @ts-expect-error server events are actions
  filter('server.start', () => undefined);
  // @ts-expect-error unknown server event
  action('server.explode', () => undefined);
  // @ts-expect-error unknown init event
  init('app.sideways', () => undefined);
  // @ts-expect-error a custom emitter event is not a register name (emitter.onAction takes it)
  action('my-extension.synced', () => undefined);

  // --- names built at run time are accepted as they are, with loose handlers
  const built: string = ['articles', 'items', 'create'].join('.');
  filter(built, (payload, meta) => {
    expectType<Equal<typeof payload, any>>();
    return meta['anything'];
  });
  action(built, (meta) => meta['anything']);
  init(built, () => undefined);
  context.emitter.onAction('my-extension.synced', () => undefined);

  // --- create filters: the new row (loose before declarations), meta { event, collection }
  filter('articles.items.create', (payload, meta, handlerContext) => {
    expectType<Equal<typeof payload, Partial<Record<string, any>>>>();
    expectType<Equal<typeof meta.event, 'articles.items.create'>>();
    expectType<Equal<typeof meta.collection, 'articles'>>();
    expectType<Equal<typeof handlerContext, HookContext>>();
    // @ts-expect-error a typo
    void meta.colection;
    // @ts-expect-error create filters have no keys
    void meta.keys;
    if (!payload['title']) throw new Error('A title is required');
    return { ...payload, slug: String(payload['title']).toLowerCase() };
  });
  // @ts-expect-error a filter returns the row (an object), not a string
  filter('articles.items.create', () => 'no');

  // --- the generic name: meta.event is generic, meta.collection any collection
  filter('items.create', (_payload, meta) => {
    expectType<Equal<typeof meta.event, 'items.create'>>();
    expectType<Equal<typeof meta.collection, string>>();
  });
  // glob collections: the event names the collection that matched
  action('blog_*.items.create', (meta) => {
    expectType<Equal<typeof meta.event, `${string}.items.create`>>();
  });

  filter('articles.items.update', (payload, meta) => {
    expectType<Equal<typeof payload, Partial<Record<string, any>>>>();
    expectType<Equal<typeof meta, { event: 'articles.items.update'; collection: 'articles'; keys: unknown[] }>>();
  });
  filter('articles.items.delete', (payload, meta) => {
    expectType<Equal<typeof payload, unknown[]>>();
    // @ts-expect-error delete filters have no keys in meta: the payload is the keys
    void meta.keys;
  });
  filter('articles.items.truncate', (payload, meta) => {
    expectType<Equal<typeof payload, null>>();
    expectType<Equal<typeof meta.partition, string | undefined>>();
  });

  // --- actions: Directus' metas plus the delivery fields
  action('articles.items.create', (meta) => {
    expectType<Equal<typeof meta.key, unknown>>();
    expectType<Equal<typeof meta.payload, Record<string, any>>>();
    expectType<Equal<typeof meta.id, string>>();
    expectType<Equal<typeof meta.lsn, string>>();
    expectType<Equal<typeof meta.xid, number>>();
    expectType<Equal<typeof meta.committedAt, Date>>();
    expectType<Equal<typeof meta.catchUp, true | undefined>>();
    // @ts-expect-error create actions carry one key, not keys
    void meta.keys;
    // @ts-expect-error a typo
    void meta.colection;
  });
  action('articles.items.update', ({ keys, payload, collection, previous, previousKeys, unchangedToast }) => {
    expectType<Equal<typeof keys, unknown[]>>();
    expectType<Equal<typeof payload, Partial<Record<string, any>>>>();
    expectType<Equal<typeof collection, 'articles'>>();
    expectType<Equal<typeof previous, Record<string, any> | undefined>>();
    expectType<Equal<typeof previousKeys, unknown[] | undefined>>();
    expectType<Equal<typeof unchangedToast, string[] | undefined>>();
  });
  action('articles.items.delete', ({ keys, payload }) => {
    expectType<Equal<typeof keys, unknown[]>>();
    expectType<Equal<typeof payload, unknown[]>>();
  });
  action('articles.items.truncate', (meta) => {
    expectType<Equal<typeof meta.keys, null>>();
    expectType<Equal<typeof meta.payload, null>>();
    expectType<Equal<typeof meta.cascade, boolean>>();
    expectType<Equal<typeof meta.restartIdentity, boolean>>();
  });
  // `*` never hears a truncate; `items.*` hears every other action, told apart by meta.event
  action('items.*', (meta) => {
    expectType<Equal<typeof meta.event, 'items.create' | 'items.update' | 'items.delete' | 'items.read'>>();
    if (meta.event === 'items.create') void meta.key;
    // @ts-expect-error only a create carries `key`
    else void meta.key;
  });
  action('items.*ate', (meta) => {
    expectType<Equal<typeof meta.event, 'items.create' | 'items.update'>>();
  });
  action('server.start', (meta) => {
    expectType<Equal<typeof meta.event, 'server.start'>>();
    void meta.server;
  });
  init('app.before', (meta) => {
    expectType<Equal<typeof meta.event, 'app.before'>>();
    void meta['app'];
  });

  // --- the databases
  expectType<Equal<typeof context.database, Knex>>();
  expectType<Equal<RegisterContext['kysely'], Kysely<any>>>();
  // @ts-expect-error Knex has no such method
  void context.database.nonexistent();
  void context.database('articles').where({ id: 1 }).first();
  void context.kysely.selectFrom('anything').selectAll().execute();
});

// The named types give the same as the handlers get.
export type CreatePayload = FilterPayload<'articles.items.create'>;
export type UpdateMeta = FilterMeta<'articles.items.update'>;
export type DeleteMeta = ActionMeta<'articles.items.delete'>;

// Directus' own typing: `filter<Payload>(name, handler)` gives the payload's type by hand.
type ArticleUpdate = { title?: string | null };
export const directusStyle = defineHook(({ filter }) => {
  filter<ArticleUpdate>('articles.items.update', (payload, meta) => {
    expectType<Equal<typeof payload, ArticleUpdate>>();
    void meta['keys'];
    return payload;
  });
  // @ts-expect-error the handler must return the given payload type
  filter<ArticleUpdate>('articles.items.update', () => 'no');
  filter<any>('articles.items.update', (payload) => payload.whatever);
});
