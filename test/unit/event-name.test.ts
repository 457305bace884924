import { describe, expect, it } from 'vitest';
import { EventNameError, eventNameFor, formatPattern, matchesEvent, parseEventName, toEventRef, type EventRef, type HookKind } from '../../hooks/event-name.js';

type Row = [name: string, kind: HookKind | undefined, expected: { kind: string; action: string; collection: string | null }];

describe('parseEventName', () => {
  const cases: Row[] = [
    // canonical, Directus 9 GA / 10
    ['items.create', 'filter', { kind: 'filter', action: 'create', collection: null }],
    ['items.update', 'action', { kind: 'action', action: 'update', collection: null }],
    ['articles.items.delete', 'action', { kind: 'action', action: 'delete', collection: 'articles' }],
    ['articles.items.create', 'filter', { kind: 'filter', action: 'create', collection: 'articles' }],
    // Directus 9 RC: items.<action>.<collection>[.before]
    ['items.create.articles', undefined, { kind: 'action', action: 'create', collection: 'articles' }],
    ['items.update.articles.before', undefined, { kind: 'filter', action: 'update', collection: 'articles' }],
    ['items.create.before', undefined, { kind: 'filter', action: 'create', collection: null }],
    ['items.*', undefined, { kind: 'action', action: '*', collection: null }],
    ['item.*.*', undefined, { kind: 'action', action: '*', collection: null }],
    ['item.recipes.create.before', undefined, { kind: 'filter', action: 'create', collection: 'recipes' }],
    // Directus 8: item.<action>.<collection>[:before|:after]
    ['item.create.articles:before', undefined, { kind: 'filter', action: 'create', collection: 'articles' }],
    ['item.create.articles:after', undefined, { kind: 'action', action: 'create', collection: 'articles' }],
    ['item.create.articles', undefined, { kind: 'action', action: 'create', collection: 'articles' }],
    ['item.update', undefined, { kind: 'action', action: 'update', collection: null }],
    // the suffix agrees with the registration function
    ['items.update.before', 'filter', { kind: 'filter', action: 'update', collection: null }],
    ['items.create.after', 'action', { kind: 'action', action: 'create', collection: null }],
    // wildcards in every segment
    ['*', 'action', { kind: 'action', action: '*', collection: null }],
    ['*.create', 'action', { kind: 'action', action: 'create', collection: null }],
    ['*.items.create', 'filter', { kind: 'filter', action: 'create', collection: null }],
    ['articles.items.*', 'action', { kind: 'action', action: '*', collection: 'articles' }],
    ['blog_*.items.create', 'action', { kind: 'action', action: 'create', collection: 'blog_*' }],
    ['items.create.shop.*', 'action', { kind: 'action', action: 'create', collection: 'shop.*' }],
    ['items.*ate', 'action', { kind: 'action', action: '*ate', collection: null }],
    // odd collections: schema-qualified, dashes, upper case, unicode, spaces, scope words
    ['shop.orders.items.create', 'action', { kind: 'action', action: 'create', collection: 'shop.orders' }],
    ['items.create.shop.orders', undefined, { kind: 'action', action: 'create', collection: 'shop.orders' }],
    ['order-lines.items.update', 'action', { kind: 'action', action: 'update', collection: 'order-lines' }],
    ['BlogPosts.items.create', 'filter', { kind: 'filter', action: 'create', collection: 'BlogPosts' }],
    ['статьи.items.create', 'action', { kind: 'action', action: 'create', collection: 'статьи' }],
    ['記事.items.delete', 'action', { kind: 'action', action: 'delete', collection: '記事' }],
    ['my table.items.create', 'action', { kind: 'action', action: 'create', collection: 'my table' }],
    ['items.items.create', 'action', { kind: 'action', action: 'create', collection: 'items' }],
    ['users.items.create', 'action', { kind: 'action', action: 'create', collection: 'users' }],
    ['create.items.create', 'action', { kind: 'action', action: 'create', collection: 'create' }],
    ['foo.items.items.update', 'action', { kind: 'action', action: 'update', collection: 'foo.items' }],
    // reads (fired only by hookbridge's own services)
    ['items.read', 'action', { kind: 'action', action: 'read', collection: null }],
    ['items.query', 'filter', { kind: 'filter', action: 'query', collection: null }],
  ];

  it.each(cases)('%s (%s)', (name, kind, expected) => {
    const pattern = parseEventName(name, kind);
    expect({ kind: pattern.kind, action: pattern.action, collection: pattern.collection }).toEqual(expected);
    expect(pattern.source).toBe(name);
  });

  it('parses init and server events', () => {
    expect(parseEventName('routes.custom.before', 'init')).toMatchObject({ kind: 'init', action: 'routes.custom.before' });
    expect(parseEventName('app.after', 'init')).toMatchObject({ kind: 'init', action: 'app.after' });
    expect(parseEventName('server.start', 'action')).toMatchObject({ kind: 'action', scope: 'server', action: 'start' });
  });

  const errors: Array<[name: string, kind: HookKind | undefined, message: RegExp]> = [
    ['', 'filter', /empty/],
    ['   ', 'action', /empty/],
    ['items..create', 'action', /empty segment/],
    ['items', 'action', /names no action/],
    ['items.publish', 'action', /unknown action "publish"/],
    ['articles.items.publish', 'action', /unknown action "publish"/],
    ['items.x*', 'action', /unknown action "x\*"/],
    ['users.create', 'action', /Directus system scope.*users\.items\.create/],
    ['files.upload', 'action', /Directus system scope/],
    ['auth.login', 'filter', /Directus system scope/],
    ['orders.create', 'action', /unknown scope "orders"/],
    ['items.create.before', 'action', /makes it a filter.*registered with action\(\)/],
    ['items.create:after', 'filter', /makes it an action.*registered with filter\(\)/],
    ['app.before', 'action', /init event; register it with init\(\)/],
    ['app.sideways', 'init', /unknown init event/],
    ['server.explode', 'action', /unknown server event/],
    ['server.start', 'filter', /server events are actions/],
  ];

  it.each(errors)('rejects %j (%s)', (name, kind, message) => {
    let caught: unknown;
    try {
      parseEventName(name, kind);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(EventNameError);
    expect((caught as EventNameError).code).toBe('E_EVENT_NAME');
    expect((caught as Error).message).toMatch(message);
    expect((caught as Error).message).toContain(JSON.stringify(name));
  });
});

describe('matchesEvent and eventNameFor', () => {
  const ev = (action: string, collection?: string): EventRef => ({ scope: 'items', action, collection });
  const cases: Array<[pattern: string, event: EventRef, matches: boolean, seen?: string]> = [
    ['items.create', ev('create', 'articles'), true, 'items.create'],
    ['items.create', ev('update', 'articles'), false],
    ['articles.items.create', ev('create', 'articles'), true, 'articles.items.create'],
    ['articles.items.create', ev('create', 'Articles'), false],
    ['articles.items.create', ev('create', 'articles2'), false],
    ['items.create.articles', ev('create', 'articles'), true, 'articles.items.create'],
    ['items.*', ev('delete', 'x'), true, 'items.delete'],
    ['*.items.update', ev('update', 'x'), true, 'items.update'],
    ['blog_*.items.create', ev('create', 'blog_posts'), true, 'blog_posts.items.create'],
    ['blog_*.items.create', ev('create', 'news'), false],
    ['shop.*.items.create', ev('create', 'shop.orders'), true],
    ['shop.*.items.create', ev('create', 'public_orders'), false],
    ['a.b.items.create', ev('create', 'a.b'), true],
    ['a+b.items.create', ev('create', 'aab'), false],
    ['(x).items.create', ev('create', '(x)'), true],
    ['items.*ate', ev('create', 'x'), true],
    ['items.*ate', ev('update', 'x'), true],
    ['items.*ate', ev('delete', 'x'), false],
    ['статьи.items.create', ev('create', 'статьи'), true, 'статьи.items.create'],
    ['items.truncate', ev('truncate', 'x'), true, 'items.truncate'],
    ['items.*', ev('truncate', 'x'), false],
    ['*', ev('truncate', 'x'), false],
    ['items.*ate', ev('truncate', 'x'), false],
  ];

  it.each(cases)('%s vs %j → %s', (name, event, matches, seen) => {
    const pattern = parseEventName(name, 'action');
    expect(matchesEvent(pattern, event)).toBe(matches);
    if (seen) expect(eventNameFor(pattern, event)).toBe(seen);
  });

  it('keeps filters and actions apart by scope only, not kind (the registry separates kinds)', () => {
    expect(matchesEvent(parseEventName('server.start', 'action'), { scope: 'server', action: 'start' })).toBe(true);
    expect(matchesEvent(parseEventName('server.start', 'action'), ev('start'))).toBe(false);
  });

  it('formats patterns canonically', () => {
    expect(formatPattern(parseEventName('item.create.articles:before'))).toBe('articles.items.create');
    expect(formatPattern(parseEventName('items.update', 'filter'))).toBe('items.update');
  });
});

describe('toEventRef', () => {
  it.each([
    ['items.create', { scope: 'items', action: 'create' }],
    ['articles.items.update', { scope: 'items', action: 'update', collection: 'articles' }],
    ['shop.orders.items.delete', { scope: 'items', action: 'delete', collection: 'shop.orders' }],
    ['server.start', { scope: 'server', action: 'start' }],
    ['my-extension.synced', { scope: 'custom', action: 'my-extension.synced' }],
    ['items.publish', { scope: 'custom', action: 'items.publish' }],
  ])('%s', (name, expected) => {
    expect(toEventRef(name)).toEqual(expected);
  });
});
