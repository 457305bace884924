import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverExtensions } from '../../hooks/extension-discovery.js';
import { loadExtensionModule } from '../../hooks/extension-loader.js';
import { ForbiddenError } from '../../hooks/errors.js';
import * as sdk from '../../hooks/sdk.js';
import { FilterRejection } from '../../hooks/filter-chain.js';
import { HookRuntime, type LoadReport } from '../../hooks/runtime.js';
import { captureLogger } from '../support/capture-logger.js';
import { tempDir, writeTree } from '../support/file-tree.js';

/** Every registration style and layout of the seeds, plus the ways an extension can be broken. */
const tree: Record<string, string> = {
  // Directus 10: defineHook from the extensions SDK, ESM
  'hooks/modern/index.mjs': `
    import { defineHook } from '@directus/extensions-sdk';
    export default defineHook(({ filter, action }, { exceptions }) => {
      filter('articles.items.create', (payload) => ({ ...payload, trail: [...(payload.trail ?? []), 'modern'] }));
      action('items.create', (meta, ctx) => { globalThis.__actions?.push(['modern', meta.event, meta.key, ctx.accountability?.role]); });
    });`,
  // TypeScript, no build step, importing from hookbridge
  'hooks/typed/index.ts': `
    import { defineHook, InvalidPayloadError } from 'hookbridge';
    import type { FilterHandler } from 'hookbridge';
    interface Article { title?: string; trail?: string[] }
    const check: FilterHandler<Article> = (payload) => {
      if (payload.title === 'bad') throw new InvalidPayloadError({ reason: 'Title may not be "bad"' });
      return { ...payload, trail: [...(payload.trail ?? []), 'typed'] };
    };
    export default defineHook(({ filter }) => { filter('items.create.articles.before', check); });`,
  // Directus 9 GA, CommonJS: module.exports = function registerHook({ filter }, { exceptions })
  'hooks/commonjs/index.cjs': `
    module.exports = function registerHook({ filter, init }, { exceptions }) {
      const { ForbiddenException } = exceptions;
      filter('items.delete', (keys, meta) => { if (meta.collection === 'locked') throw new ForbiddenException(); });
      init('app.before', () => { globalThis.__inits?.push('commonjs'); });
    };`,
  // Plain CommonJS requiring the SDK: resolved by hookbridge, and the very same classes the bridge uses
  'hooks/cjs-require/index.js': `
    const { defineHook } = require('@directus/extensions-sdk');
    const { ForbiddenError } = require('hookbridge');
    module.exports = defineHook(({ filter }) => {
      filter('vault.items.create', () => { throw new ForbiddenError(); });
    });`,
  // Directus 9 RC (seed 001): a file under hooks/, returning an event map; .before = filter with an array
  'hooks/rc-sync.js': `
    module.exports = function registerHook({ exceptions }) {
      const { ServiceUnavailableException } = exceptions;
      return {
        'item.recipes.create.before': async function (input) {
          if (input[0].fail) throw new ServiceUnavailableException(new Error('recipes service down'));
          input[0].syncedWithExample = true;
          return input;
        },
        'items.update': function ({ item, collection, action }) { globalThis.__actions?.push(['rc', collection, action, item]); },
      };
    };`,
  // Directus 8 (seed 004): { actions, filters } with a Payload helper
  'hooks/v8-articles/index.js': `
    export default {
      actions: {
        'item.create.articles': function (data, collectionName) { globalThis.__actions?.push(['v8', collectionName, data.title]); },
      },
      filters: {
        'item.create.articles:before': function (payload) {
          if (payload.has('uuid')) throw new Error('User are not allowed to set UUID');
          payload.set('uuid', 'generated');
          payload.set('meta.collection', payload.attribute('collection_name'));
          return payload;
        },
      },
    };`,
  // A package (Directus 10.7+ layout) whose TypeScript source has not been built
  'my-package/package.json': JSON.stringify({
    name: 'directus-extension-my-package',
    'directus:extension': { type: 'hook', path: 'dist/index.js', source: 'src/index.ts', host: '^10.0.0' },
  }),
  'my-package/src/index.ts': `
    import { defineHook } from '@directus/extensions-sdk';
    export default defineHook(({ action }) => { action('articles.items.delete', () => {}); });`,
  // A built bundle exporting { hooks: [{ name, config }] }
  'bundles/my-bundle/package.json': JSON.stringify({
    name: 'my-bundle',
    'directus:extension': {
      type: 'bundle',
      path: { app: 'dist/app.js', api: 'dist/api.js' },
      entries: [
        { type: 'hook', name: 'first', source: 'src/first.ts' },
        { type: 'endpoint', name: 'ep', source: 'src/ep.ts' },
      ],
    },
  }),
  'bundles/my-bundle/dist/api.js': `
    export const hooks = [{ name: 'first', config: ({ action }) => { action('items.delete', () => {}); } }];
    export const endpoints = [];`,
  // The seeds' bundle layout without package.json
  'bundles/legacy/hooks/one/index.js': `module.exports = ({ action }) => action('server.start', () => {});`,
  // An extension of another type is not a hook and not a problem
  'other-type/package.json': JSON.stringify({ name: 'iface', 'directus:extension': { type: 'interface', path: 'dist/index.js' } }),
  // Broken ones
  'hooks/syntax-error/index.js': `export default defineHook(({ filter }) => { filter('items.create', ( => {}) });`,
  'hooks/throws/index.js': `module.exports = () => { throw new Error('missing API key'); };`,
  'hooks/bad-event/index.js': `module.exports = ({ filter }) => { filter('items.create', () => {}); filter('users.create', () => {}); };`,
  'hooks/bad-cron/index.js': `module.exports = ({ schedule }) => { schedule('61 * * * *', () => {}); };`,
  'hooks/not-a-hook/index.js': `export default 42;`,
  'hooks/v8-after-filter/index.js': `export default { filters: { 'item.create.articles': (p) => p } };`,
  'hooks/no-index/README.md': 'nothing to load',
  'bad-json/package.json': '{ "name": ',
};

let root: { path: string; remove(): Promise<void> };
let runtime: HookRuntime;
let report: LoadReport;
const log = captureLogger();

beforeAll(async () => {
  root = await tempDir('hookbridge-ext-');
  await writeTree(root.path, tree);
  runtime = new HookRuntime({ extensionsPath: root.path, logger: log.logger });
  report = await runtime.start();
});

afterAll(async () => {
  await runtime.stop();
  await root.remove();
});

describe('discovery and loading', () => {
  it('loads every style and layout', () => {
    expect(report.loaded.map((e) => e.name)).toEqual([
      'cjs-require',
      'commonjs',
      'directus-extension-my-package',
      'legacy/one',
      'modern',
      'my-bundle/first',
      'rc-sync',
      'typed',
      'v8-articles',
    ]);
    const events = Object.fromEntries(report.loaded.map((e) => [e.name, e.events]));
    expect(events['rc-sync']).toEqual(['filter recipes.items.create', 'action items.update']);
    expect(events['v8-articles']).toEqual(['action articles.items.create', 'filter articles.items.create']);
    expect(events['legacy/one']).toEqual(['action server.start']);
  });

  it('reports each broken extension with its path and reason, without stopping the others', () => {
    const failed = Object.fromEntries(report.failed.map((f) => [f.path.slice(root.path.length + 1), f.reason]));
    expect(failed['hooks/syntax-error/index.js']).toMatch(/cannot load .*syntax-error.*: .+/);
    expect(failed['hooks/throws/index.js']).toMatch(/"throws": its register function threw: missing API key/);
    expect(failed['hooks/bad-event/index.js']).toMatch(/"bad-event": invalid event name "users.create": .*Directus system scope/);
    expect(failed['hooks/bad-cron/index.js']).toMatch(/"bad-cron": schedule\("61 \* \* \* \*"\): invalid cron expression/);
    expect(failed['hooks/not-a-hook/index.js']).toMatch(/"not-a-hook": it exports number 42; expected a register function/);
    expect(failed['hooks/v8-after-filter/index.js']).toMatch(/would run after the write.*"item.create.articles:before"/);
    expect(failed['hooks/no-index']).toMatch(/no index file/);
    expect(failed['bad-json/package.json']).toMatch(/unreadable package.json/);
    expect(report.failed).toHaveLength(8);
    // A broken extension registers nothing, not even the events before the bad one.
    expect(runtime.registry.extensions.find((e) => e.name === 'bad-event')).toBeUndefined();
    const logged = log.lines().filter((l) => l['msg'] && String(l['msg']).startsWith('extension not loaded'));
    expect(logged.map((l) => l['path'])).toContain(`${root.path}/hooks/throws/index.js`);
  });

  it('treats a missing extensions folder as empty', async () => {
    const discovery = await discoverExtensions(`${root.path}/does-not-exist`);
    expect(discovery).toMatchObject({ exists: false, extensions: [], problems: [] });
  });
});

describe('filters', () => {
  it('run in registration order, each return replacing the payload', async () => {
    const out = await runtime.runFilters('create', 'articles', { title: 'hello' }, {});
    // modern, then typed, then v8-articles (extensions load in name order)
    expect(out).toEqual({ title: 'hello', trail: ['modern', 'typed'], uuid: 'generated', meta: { collection: 'articles' } });
  });

  it('stop at the first throw, keeping the Directus code and status', async () => {
    const error = await runtime.runFilters('create', 'articles', { title: 'bad' }, {}).catch((e) => e);
    expect(error).toBeInstanceOf(FilterRejection);
    expect(error).toMatchObject({ code: 'INVALID_PAYLOAD', status: 400, extension: 'typed', event: 'articles.items.create' });
    expect(error.message).toBe('Invalid payload. Title may not be "bad".');
    expect(error.cause).toMatchObject({ name: 'DirectusError' });
  });

  it('give Directus 9 RC filters the items as an array and unwrap what they return', async () => {
    expect(await runtime.runFilters('create', 'recipes', { name: 'soup' }, {})).toEqual({ name: 'soup', syncedWithExample: true });
    const error = await runtime.runFilters('create', 'recipes', { fail: true }, {}).catch((e) => e);
    expect(error).toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503, message: 'recipes service down' });
  });

  it('let a delete filter cancel by throwing (Directus 9 exceptions)', async () => {
    await expect(runtime.runFilters('delete', 'open', [1], {})).resolves.toEqual([1]);
    await expect(runtime.runFilters('delete', 'locked', [1], {})).rejects.toMatchObject({ code: 'FORBIDDEN', status: 403 });
  });

  it('make a Directus 8 filter error reach the writer', async () => {
    const error = await runtime.runFilters('create', 'articles', { title: 'x', uuid: 'mine' }, {}).catch((e) => e);
    expect(error).toMatchObject({ code: 'INTERNAL', extension: 'v8-articles', message: 'User are not allowed to set UUID' });
  });

  it("share the bridge's own error classes with CommonJS extensions that require the SDK", async () => {
    const error = await runtime.runFilters('create', 'vault', {}, {}).catch((e) => e);
    expect(error).toMatchObject({ code: 'FORBIDDEN', status: 403, extension: 'cjs-require' });
    expect(error.cause).toBeInstanceOf(ForbiddenError);
  });

  it('leave tables without filters alone', async () => {
    const payload = { a: 1 };
    expect(await runtime.runFilters('update', 'elsewhere', payload, { keys: [1] })).toBe(payload);
    expect(runtime.registry.has('filter', 'create', 'articles')).toBe(true);
    expect(runtime.registry.has('filter', 'update', 'articles')).toBe(false);
    expect(runtime.registry.has('filter', 'delete', 'anything')).toBe(true);
  });
});

describe('actions and init', () => {
  it('reach each style with its own arguments', async () => {
    const seen: unknown[] = [];
    (globalThis as Record<string, unknown>)['__actions'] = seen;
    const context = { accountability: { role: 'writer', user: null, admin: false, app: false, ip: null, userAgent: null } };
    const failures = await runtime.dispatchActions('create', 'articles', { key: 7, payload: { title: 'hi' } }, context);
    expect(failures).toEqual([]);
    expect(seen).toEqual(
      expect.arrayContaining([
        ['modern', 'items.create', 7, 'writer'],
        ['v8', 'articles', 'hi'],
      ]),
    );
    seen.length = 0;
    await runtime.dispatchActions('update', 'recipes', { keys: [1, 2], payload: { a: 1 } });
    expect(seen).toEqual([['rc', 'recipes', 'update', [1, 2]]]);
  });

  it('fire init events', async () => {
    const inits: string[] = [];
    (globalThis as Record<string, unknown>)['__inits'] = inits;
    await runtime.runInit('app.before', { app: {} });
    expect(inits).toEqual(['commonjs']);
  });
});

describe('plain CommonJS', () => {
  // Not transformed (babel is not even loaded for it): as before, strict mode, jiti's `require` (for
  // `hookbridge` and for a TypeScript file beside it) and module cache; a top-level return, as in Node.
  const files = {
    'hooks/plain/index.js': [
      `const strict = (function () { return this; })() === undefined;`,
      `const { double } = require('./helper.ts');`,
      `const same = require('./a.mjs').shared === require('./b.mjs').shared;`,
      `module.exports = Object.assign(() => {}, { strict, same, four: double(2), sdk: require('hookbridge'), file: __filename, dir: __dirname, self: require.resolve('./index.js') });`,
      `return;`,
      `module.exports = 'after the return';`,
    ].join('\n'),
    'hooks/plain/helper.ts': `export const double = (n: number): number => n * 2;`,
    // One module cache for the whole load: both see the same instance of what they import.
    'hooks/plain/a.mjs': `export { shared } from './shared.mjs';`,
    'hooks/plain/b.mjs': `export { shared } from './shared.mjs';`,
    'hooks/plain/shared.mjs': `export const shared = {};`,
    // At the top of a module, `await (x)` is top-level await, not a call of a function named await.
    'hooks/awaits/index.js': [
      `const value = await (Promise.resolve(5));`,
      `module.exports = Object.assign(() => {}, { value, later: async () => await (Promise.resolve(6)) });`,
    ].join('\n'),
    // The word import anywhere leaves the file to jiti, which rewrites import() to reach hookbridge.
    'hooks/dynamic/index.cjs': `module.exports = Object.assign(() => {}, { sdk: import('hookbridge') });`,
  };

  it("loads without babel and as before: strict, jiti's require and module cache, top-level await", async () => {
    const dir = await tempDir();
    try {
      await writeTree(dir.path, files);
      const { extensions } = await discoverExtensions(dir.path);
      const load = async (name: string) =>
        (
          await loadExtensionModule(
            extensions.find((e) => e.name === name)!,
            dir.path,
          )
        )[0]?.exported as Record<string, unknown>;
      const plain = await load('plain');
      const entry = `${dir.path}/hooks/plain/index.js`;
      expect({ ...plain }).toMatchObject({ strict: true, same: true, four: 4, file: entry, dir: `${dir.path}/hooks/plain`, self: entry });
      // The very classes and functions the bridge uses.
      expect((plain['sdk'] as typeof sdk).ForbiddenError).toBe(sdk.ForbiddenError);
      const awaits = await load('awaits');
      expect(awaits['value']).toBe(5);
      expect(await (awaits['later'] as () => Promise<number>)()).toBe(6);
      const dynamic = await load('dynamic');
      expect(((await dynamic['sdk']) as typeof sdk).defineHook).toBe(sdk.defineHook);
    } finally {
      await dir.remove();
    }
  });
});
