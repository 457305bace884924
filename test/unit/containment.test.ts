/**
 * Containment's attribution: which extension an error thrown outside its handlers came from, by the
 * files on its stack (plain inputs, then real stacks of extensions loaded by the runtime), and a
 * handler that logs anything, counts it, and never throws.
 */
import { pathToFileURL } from 'node:url';
import { Counter, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attributeError, installContainment, stackFiles } from '../../bridge/containment.js';
import { ExtensionOrigins } from '../../hooks/extension-origin.js';
import { HookRuntime } from '../../hooks/runtime.js';
import { captureLogger } from '../support/capture-logger.js';
import { tempDir, writeTree } from '../support/file-tree.js';

const ROOT = '/srv/ext';
const OWN = '/opt/hookbridge';

function origins(): ExtensionOrigins {
  const o = new ExtensionOrigins();
  o.remember({
    root: ROOT,
    loaded: [
      { name: 'alpha', path: `${ROOT}/hooks/alpha/index.js`, events: [], schedules: [] },
      { name: 'single', path: `${ROOT}/hooks/single.ts`, events: [], schedules: [] },
      { name: 'my-pkg', path: `${ROOT}/my-pkg/dist/index.js`, events: [], schedules: [] },
      // a built bundle: its hooks share one file
      { name: '@acme/bundle/a', path: `${ROOT}/bundles/acme/dist/api.js`, events: [], schedules: [] },
      { name: '@acme/bundle/b', path: `${ROOT}/bundles/acme/dist/api.js`, events: [], schedules: [] },
      // a bundle loaded from its sources
      { name: 'kit/one', path: `${ROOT}/bundles/kit/src/one/index.ts`, events: [], schedules: [] },
      { name: 'kit/two', path: `${ROOT}/bundles/kit/src/two.ts`, events: [], schedules: [] },
      { name: 'kit/three', path: `${ROOT}/bundles/kit/src/three.ts`, events: [], schedules: [] },
      // a bundle folder without package.json
      { name: 'legacy/x', path: `${ROOT}/bundles/legacy/hooks/x/index.js`, events: [], schedules: [] },
      { name: 'legacy/y', path: `${ROOT}/bundles/legacy/hooks/y.js`, events: [], schedules: [] },
    ],
    failed: [
      // its module ran (and may have started a timer) before registering failed
      { name: 'broken', path: `${ROOT}/hooks/broken/index.js`, code: 'E_EXTENSION_REGISTER', reason: 'x' },
      { path: `${ROOT}/hooks/empty`, code: 'E_EXTENSION_DISCOVERY', reason: 'no index file' },
    ],
  });
  return o;
}

describe('ExtensionOrigins', () => {
  const o = origins();
  it.each([
    [`${ROOT}/hooks/alpha/index.js`, 'alpha'],
    [`${ROOT}/hooks/alpha/lib/retry.js`, 'alpha'],
    [`${ROOT}/hooks/alpha/node_modules/got/dist/source/core/index.js`, 'alpha'],
    [`${ROOT}/hooks/alpha/node_modules/@scope/dep/node_modules/inner/index.js`, 'alpha'],
    [`${ROOT}/hooks/alphabet/index.js`, undefined],
    [`${ROOT}/hooks/single.ts`, 'single'],
    [`${ROOT}/hooks/single-helper.ts`, undefined],
    [`${ROOT}/my-pkg/src/index.ts`, 'my-pkg'],
    [`${ROOT}/my-pkg/node_modules/axios/index.js`, 'my-pkg'],
    [`${ROOT}/bundles/acme/dist/api.js`, '@acme/bundle'],
    [`${ROOT}/bundles/kit/src/one/index.ts`, 'kit/one'],
    [`${ROOT}/bundles/kit/src/one/helper.ts`, 'kit/one'],
    [`${ROOT}/bundles/kit/src/two.ts`, 'kit/two'],
    [`${ROOT}/bundles/kit/src/shared.ts`, 'kit'],
    [`${ROOT}/bundles/kit/node_modules/lodash/lodash.js`, 'kit'],
    [`${ROOT}/bundles/legacy/hooks/x/util.js`, 'legacy/x'],
    [`${ROOT}/bundles/legacy/hooks/y.js`, 'legacy/y'],
    [`${ROOT}/bundles/legacy/common.js`, 'legacy'],
    [`${ROOT}/hooks/broken/index.js`, 'broken'],
    [`${ROOT}/hooks/empty/whatever.js`, undefined],
    [`${ROOT}/node_modules/shared/index.js`, undefined],
    [`${OWN}/dist/hooks/runtime.js`, undefined],
  ])('%s → %s', (file, extension) => {
    expect(o.extensionOf(file)).toBe(extension);
  });

  it('remembers an extension after a reload drops it (its timers may outlive it)', () => {
    const o2 = origins();
    o2.remember({ root: ROOT, loaded: [], failed: [] });
    expect(o2.extensionOf(`${ROOT}/hooks/alpha/index.js`)).toBe('alpha');
  });
});

describe('stackFiles', () => {
  it('reads every V8 frame shape and leaves out Node internals and evals', () => {
    const stack = [
      'Error: boom',
      '    at Timeout._onTimeout (/srv/ext/hooks/alpha/index.js:2:57)',
      '    at module.exports [as exported] (/srv/ext/hooks/a b/index.js:2:113)',
      '    at /srv/ext/hooks/anonymous.js:1:2',
      '    at async Promise.all (index 0)',
      '    at async run (file:///srv/ext/hooks/esm/index.mjs:3:9)',
      '    at new Thing (/srv/ext/hooks/ctor.js:4:5)',
      '    at eval (eval at <anonymous> (/srv/ext/hooks/evil.js:1:2), <anonymous>:1:1)',
      '    at listOnTimeout (node:internal/timers:581:17)',
      '    at process.processTimers (node:internal/timers:519:7)',
    ].join('\n');
    expect(stackFiles(stack)).toEqual([
      '/srv/ext/hooks/alpha/index.js',
      '/srv/ext/hooks/a b/index.js',
      '/srv/ext/hooks/anonymous.js',
      '/srv/ext/hooks/esm/index.mjs',
      '/srv/ext/hooks/ctor.js',
    ]);
  });
});

describe('attributeError', () => {
  const o = origins();
  const attribute = (reason: unknown) => attributeError(reason, { extensionOf: (file) => o.extensionOf(file), ownRoot: OWN });
  const withStack = (...frames: string[]) => Object.assign(new Error('x'), { stack: ['Error: x', ...frames.map((f) => `    at f (${f}:1:1)`)].join('\n') });

  it('names the first extension frame, below hookbridge and dependency frames', () => {
    expect(
      attribute(withStack(`${OWN}/node_modules/kysely/dist/index.js`, `${OWN}/dist/bridge/services/items-service.js`, `${ROOT}/hooks/alpha/index.js`)),
    ).toEqual({
      source: 'extension',
      extension: 'alpha',
      file: `${ROOT}/hooks/alpha/index.js`,
    });
  });

  it('names the extension whose nested node_modules threw', () => {
    expect(attribute(withStack(`${ROOT}/hooks/alpha/node_modules/got/index.js`, 'node:internal/timers')).extension).toBe('alpha');
  });

  it('names a bundle by its shared file', () => {
    expect(attribute(withStack(`${ROOT}/bundles/acme/dist/api.js`)).extension).toBe('@acme/bundle');
  });

  it('reads file:// URLs (an ES module with top-level await is imported natively)', () => {
    expect(attribute(withStack(pathToFileURL(`${ROOT}/my-pkg/index.mjs`).href)).extension).toBe('my-pkg');
  });

  it('follows causes and AggregateErrors', () => {
    const wrapped = Object.assign(withStack(`${OWN}/node_modules/pg/lib/client.js`), { cause: withStack(`${ROOT}/hooks/single.ts`) });
    expect(attribute(wrapped).extension).toBe('single');
    expect(attribute(new AggregateError([withStack('/elsewhere/x.js'), withStack(`${ROOT}/hooks/alpha/x.js`)])).extension).toBe('alpha');
    const cycle = withStack('/elsewhere/x.js') as Error & { cause?: unknown };
    cycle.cause = cycle;
    expect(attribute(cycle)).toEqual({ source: 'unknown' });
  });

  it("calls it hookbridge's own when only its code (not its dependencies) is on the stack", () => {
    expect(attribute(withStack(`${OWN}/dist/bridge/replication/stream.js`, 'node:internal/timers'))).toEqual({
      source: 'hookbridge',
      file: `${OWN}/dist/bridge/replication/stream.js`,
    });
    expect(attribute(withStack(`${OWN}/node_modules/pg/lib/client.js`))).toEqual({ source: 'unknown' });
  });

  it.each([
    ['a string', 'nope'],
    ['undefined', undefined],
    ['null', null],
    ['a number', 42],
    ['a symbol', Symbol('s')],
    ['a BigInt', 10n],
    ['an object without prototype', Object.create(null)],
    ['an error without stack', Object.assign(new Error('x'), { stack: undefined })],
    [
      'an object whose stack getter throws',
      Object.defineProperty({}, 'stack', {
        get: () => {
          throw new Error('no');
        },
      }),
    ],
    [
      'a hostile proxy',
      new Proxy(
        {},
        {
          get: () => {
            throw new Error('no');
          },
          getPrototypeOf: () => {
            throw new Error('no');
          },
        },
      ),
    ],
  ])('%s comes from an unknown source', (_label, reason) => {
    expect(attribute(reason)).toEqual({ source: 'unknown' });
  });
});

describe("attributeError in the CLI's bundle, where hookbridge and its bundled dependencies share files", () => {
  const frameAt = (file: string, line: number) => Object.assign(new Error('x'), { stack: `Error: x\n    at f (${file}:${line}:7)` });

  it("counts a frame on a dependency's lines as a dependency's, and one on hookbridge's lines as hookbridge's", async () => {
    const own = await tempDir();
    try {
      // Lines 1-9: esbuild's helpers; 10-49: a bundled dependency; 50 on: hookbridge's code.
      await writeTree(own.path, {
        'dist/cli/bundle-sources.json': JSON.stringify({
          'chunk-A.js': [
            [10, 1],
            [50, 0],
          ],
        }),
        'dist/cli/chunk-A.js': '',
      });
      const chunk = `${own.path}/dist/cli/chunk-A.js`;
      const at = (line: number) => attributeError(frameAt(chunk, line), { extensionOf: () => undefined, ownRoot: own.path });
      expect(at(20)).toEqual({ source: 'unknown' });
      expect(at(10)).toEqual({ source: 'unknown' });
      expect(at(49)).toEqual({ source: 'unknown' });
      expect(at(50)).toEqual({ source: 'hookbridge', file: chunk });
      expect(at(5)).toEqual({ source: 'hookbridge', file: chunk });
      // A file the table does not name (another chunk) is all hookbridge's.
      expect(attributeError(frameAt(`${own.path}/dist/cli/cli.js`, 20), { extensionOf: () => undefined, ownRoot: own.path }).source).toBe('hookbridge');
    } finally {
      await own.remove();
    }
  });
});

describe('real stacks of loaded extensions', () => {
  let dir: { path: string; remove(): Promise<void> };
  const made = globalThis as { __containmentErrors?: Record<string, () => unknown> };
  const o = new ExtensionOrigins();
  let runtime: HookRuntime;

  beforeAll(async () => {
    dir = await tempDir();
    await writeTree(dir.path, {
      'hooks/typed/index.ts': `
        import { defineHook } from 'hookbridge';
        const make = (): Error => new Error('typed');
        export default defineHook(() => { (globalThis as any).__containmentErrors.typed = make; });`,
      'hooks/nested/node_modules/helper/index.js': `exports.make = () => new Error('from a dependency');`,
      'hooks/nested/index.js': `
        const helper = require('helper');
        module.exports = () => { globalThis.__containmentErrors.nested = () => helper.make(); };`,
      'bundles/kit/package.json': JSON.stringify({
        name: 'kit',
        'directus:extension': {
          type: 'bundle',
          path: { api: 'dist/api.js' },
          entries: [
            { type: 'hook', name: 'one', source: 'src/one.ts' },
            { type: 'hook', name: 'two', source: 'src/two.ts' },
          ],
        },
      }),
      'bundles/kit/dist/api.js': `
        function make() { return new Error('bundle'); }
        module.exports = { hooks: [
          { name: 'one', config: () => { globalThis.__containmentErrors.bundle = make; } },
          { name: 'two', config: () => {} },
        ] };`,
    });
    made.__containmentErrors = {};
    const { logger } = captureLogger();
    runtime = new HookRuntime({ extensionsPath: dir.path, logger });
    runtime.onSwap((report) => o.remember(report));
    const report = await runtime.reload();
    expect(report.failed).toEqual([]);
  });

  afterAll(async () => {
    await runtime?.stop();
    delete made.__containmentErrors;
    await dir?.remove();
  });

  it.each([
    ['typed', 'typed'],
    ['nested', 'nested'],
    ['bundle', 'kit'],
  ])('an error made by %s is attributed to %s', (key, extension) => {
    const error = made.__containmentErrors?.[key]?.();
    expect(error).toBeInstanceOf(Error);
    expect(attributeError(error, { extensionOf: (file) => o.extensionOf(file), ownRoot: OWN })).toMatchObject({ source: 'extension', extension });
  });
});

describe('installContainment', () => {
  it('logs and counts every reason, attributed, and never throws', () => {
    const { logger, lines } = captureLogger();
    const registry = new Registry();
    const errors = new Counter({ name: 'hook_errors_total', help: 'h', labelNames: ['extension', 'kind'], registers: [registry] });
    const o = origins();
    const before = { rejection: process.listeners('unhandledRejection'), exception: process.listeners('uncaughtException') };
    const uninstall = installContainment({ logger, extensionOf: (file) => o.extensionOf(file), errors, ownRoot: OWN });
    const onRejection = process.listeners('unhandledRejection').find((l) => !before.rejection.includes(l))!;
    const onException = process.listeners('uncaughtException').find((l) => !before.exception.includes(l))!;
    try {
      const boom = Object.assign(new Error('boom'), { stack: `Error: boom\n    at Timeout._onTimeout (${ROOT}/hooks/alpha/index.js:2:57)` });
      const ours = Object.assign(new Error('bug'), { stack: `Error: bug\n    at x (${OWN}/dist/bridge/http.js:1:1)` });
      const hostile = new Proxy(
        {},
        {
          get: () => {
            throw new Error('no');
          },
          getPrototypeOf: () => {
            throw new Error('no');
          },
          ownKeys: () => {
            throw new Error('no');
          },
        },
      );
      const call = (listener: (...args: any[]) => void, reason: unknown) => expect(() => listener(reason, Promise.resolve())).not.toThrow();
      call(onException, boom);
      call(onRejection, 'a string');
      call(onRejection, undefined);
      call(onRejection, 10n);
      call(onRejection, hostile);
      call(onException, ours);

      const logged = lines().map(({ level, extension, source, kind, err, reason }) => ({
        level,
        extension,
        source,
        kind,
        err: (err as { message?: string })?.message,
        reason,
      }));
      expect(logged).toEqual([
        { level: 50, extension: 'alpha', source: 'extension', kind: 'uncaught_exception', err: 'boom', reason: undefined },
        { level: 50, extension: undefined, source: 'unknown', kind: 'unhandled_rejection', err: undefined, reason: 'a string' },
        { level: 50, extension: undefined, source: 'unknown', kind: 'unhandled_rejection', err: undefined, reason: 'undefined' },
        { level: 50, extension: undefined, source: 'unknown', kind: 'unhandled_rejection', err: undefined, reason: '10' },
        { level: 50, extension: undefined, source: 'unknown', kind: 'unhandled_rejection', err: undefined, reason: expect.any(String) },
        { level: 60, extension: undefined, source: 'hookbridge', kind: 'uncaught_exception', err: 'bug', reason: undefined },
      ]);
    } finally {
      uninstall();
    }
    expect(process.listeners('unhandledRejection')).toEqual(before.rejection);
    expect(process.listeners('uncaughtException')).toEqual(before.exception);
    return registry.getMetricsAsJSON().then((metrics) => {
      const values = Object.fromEntries((metrics[0]?.values ?? []).map((v) => [`${v.labels['extension']} ${v.labels['kind']}`, v.value]));
      expect(values).toEqual({
        'alpha uncaught_exception': 1,
        '(unknown) unhandled_rejection': 4,
        '(hookbridge) uncaught_exception': 1,
      });
    });
  });
});
