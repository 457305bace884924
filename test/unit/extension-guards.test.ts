/**
 * Why a remembered guard's extension is not loaded — never "removed on purpose": a guard is only
 * forgotten by `hookbridge forget` (bridge/extension-guards.ts). The database side is tested in
 * test/integration/extension-guards.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { classifyGuards, guardsOf, notLoadedReason, type GuardRow } from '../../bridge/extension-guards.js';
import type { UserTable } from '../../bridge/catalog.js';
import { parseEventName } from '../../hooks/event-name.js';
import type { ExtensionHooks } from '../../hooks/register.js';
import type { LoadReport } from '../../hooks/runtime.js';

const root = '/srv/extensions';
const report = (failed: LoadReport['failed'], exists = true, loaded: string[] = ['other']): LoadReport => ({
  root,
  exists,
  loaded: loaded.map((name) => ({ name, path: `${root}/hooks/${name}/index.js`, events: [], schedules: [] })),
  failed,
});
const gone = (extension: string) => `gone from the extensions folder ${root}; if it was removed on purpose: npx hookbridge forget ${extension}`;

describe('notLoadedReason', () => {
  const cases: Array<[string, string, string, LoadReport, string | undefined]> = [
    ['a missing extensions folder keeps everything', 'guard', 'hooks/guard/index.js', report([], false), `the extensions folder ${root} does not exist`],
    [
      'a failed load, by name',
      'guard',
      'hooks/guard/index.js',
      report([{ name: 'guard', path: `${root}/hooks/guard/index.js`, code: 'E_EXTENSION_LOAD', reason: 'SyntaxError' }]),
      'E_EXTENSION_LOAD: SyntaxError',
    ],
    [
      'a failed bundle covers its hooks',
      'shop/orders',
      'bundles/shop/dist/api.js',
      report([{ name: 'shop', path: `${root}/bundles/shop/dist/api.js`, code: 'E_EXTENSION_LOAD', reason: 'boom' }]),
      'E_EXTENSION_LOAD: boom',
    ],
    [
      'a name that merely starts the same is another extension',
      'guards',
      'hooks/guards/index.js',
      report([{ name: 'guard', path: `${root}/hooks/guard/index.js`, code: 'E_EXTENSION_LOAD', reason: 'x' }]),
      gone('guards'),
    ],
    [
      'a folder that lost its index file',
      'guard',
      'hooks/guard/index.js',
      report([{ path: `${root}/hooks/guard`, code: 'E_EXTENSION_DISCOVERY', reason: 'no index file' }]),
      'E_EXTENSION_DISCOVERY: no index file',
    ],
    [
      'a package whose package.json broke',
      'my-hook',
      'my-hook/dist/index.js',
      report([{ path: `${root}/my-hook/package.json`, code: 'E_EXTENSION_DISCOVERY', reason: 'unreadable package.json' }]),
      'E_EXTENSION_DISCOVERY: unreadable package.json',
    ],
    [
      'a folder problem elsewhere does not cover it',
      'guard',
      'hooks/guard/index.js',
      report([{ path: `${root}/hooks/gua`, code: 'E_EXTENSION_DISCOVERY', reason: 'x' }]),
      gone('guard'),
    ],
    // Could be a removal as much as a mistake (a partial deploy): it keeps guarding until forgotten.
    ['gone while other extensions load', 'guard', 'hooks/guard/index.js', report([]), gone('guard')],
    // An emptied folder, or Docker's empty directory for a wrong bind mount.
    [
      'a folder that holds no extension at all',
      'guard',
      'hooks/guard/index.js',
      report([], true, []),
      `the extensions folder ${root} holds no extension at all (emptied, or the wrong folder mounted?); if it was removed on purpose: npx hookbridge forget guard`,
    ],
  ];
  it.each(cases)('%s', (_name, extension, path, given, expected) => {
    expect(notLoadedReason(extension, path, given)).toBe(expected);
  });
});

const row = (extension: string, table: string, notLoaded: string | null = null): GuardRow => ({
  extension,
  path: `hooks/${extension}/index.js`,
  schema: 'public',
  table,
  filters: ['create'],
  actions: ['update'],
  notLoaded,
});

describe('classifyGuards', () => {
  it('keeps the loaded ones out, and every other one guarding, gone or failed', () => {
    const stored = [row('guard', 'notes'), row('guard', 'shop.orders'), row('gone', 'notes'), row('fine', 'notes')];
    const failed = report([{ name: 'guard', path: `${root}/hooks/guard/index.js`, code: 'E_EXTENSION_LOAD', reason: 'SyntaxError' }]);
    expect(classifyGuards(stored, failed, new Set(['fine']))).toEqual([
      {
        extension: 'guard',
        reason: 'E_EXTENSION_LOAD: SyntaxError',
        tables: [
          { collection: 'notes', filters: ['create'], actions: ['update'] },
          { collection: 'shop.orders', filters: ['create'], actions: ['update'] },
        ],
      },
      { extension: 'gone', reason: gone('gone'), tables: [{ collection: 'notes', filters: ['create'], actions: ['update'] }] },
    ]);
  });
});

describe('guardsOf', () => {
  const table = (schema: string, name: string, oid: number): UserTable => ({
    oid,
    schema,
    name,
    collection: schema === 'public' ? name : `${schema}.${name}`,
    replicaIdentity: 'default',
    hasIdentityKey: true,
    primaryKey: ['id'],
  });
  const hooks = (name: string, events: Array<['filter' | 'action', string]>): ExtensionHooks =>
    ({
      name,
      path: `${root}/hooks/${name}/index.js`,
      handlers: events.map(([kind, event]) => ({
        kind,
        extension: name,
        pattern: parseEventName(event, kind),
        style: 'define-hook',
        handler: () => undefined,
      })),
      schedules: [],
      embeds: 0,
    }) as unknown as ExtensionHooks;

  it('records what each extension hears on each table; truncate only when named', () => {
    const tables = [table('public', 'notes', 1), table('shop', 'orders', 2), table('public', 'other', 3)];
    const extensions = [
      hooks('guard', [
        ['filter', 'notes.items.create'],
        ['action', 'items.update'],
        ['action', 'shop.*.items.truncate'],
      ]),
      hooks('quiet', []),
    ];
    expect(guardsOf(extensions, tables, root)).toEqual([
      { extension: 'guard', path: 'hooks/guard/index.js', schema: 'public', table: 'notes', filters: ['create'], actions: ['update'], notLoaded: null },
      { extension: 'guard', path: 'hooks/guard/index.js', schema: 'public', table: 'other', filters: [], actions: ['update'], notLoaded: null },
      { extension: 'guard', path: 'hooks/guard/index.js', schema: 'shop', table: 'orders', filters: [], actions: ['update', 'truncate'], notLoaded: null },
    ]);
  });
});
