import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { guardScheduleHandler, validateCronExpression } from '../../hooks/schedule.js';
import { HookRuntime } from '../../hooks/runtime.js';
import { captureLogger } from '../support/capture-logger.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor } from '../support/helpers.js';

const ticks = () => ((globalThis as Record<string, unknown>)['__ticks'] as number | undefined) ?? 0;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function runtimeWith(files: Record<string, string>, options: { autoReload?: boolean } = {}) {
  const dir = await tempDir('hookbridge-rt-');
  await writeTree(dir.path, files);
  const log = captureLogger();
  const runtime = new HookRuntime({ extensionsPath: dir.path, logger: log.logger, reloadDebounceMs: 50, ...options });
  cleanups.push(
    () => dir.remove(),
    () => runtime.stop(),
  );
  return { runtime, log, dir: dir.path };
}

describe('schedule', () => {
  it.each([
    ['*/15 * * * *', true],
    ['15 14 1 * *', true],
    ['5 4 * * sun', true],
    ['*/5 * * * * *', true],
    ['61 * * * *', false],
    ['* * * *', false],
    ['* * * * * * *', false],
    ['every minute', false],
    ['', false],
  ])('validates %j', (expression, valid) => {
    expect(validateCronExpression(expression) === undefined).toBe(valid);
  });

  it('skips a tick while the previous run is still going, and logs a failing run', async () => {
    const log = captureLogger();
    let running = 0;
    let maxRunning = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const run = guardScheduleHandler(
      {
        extension: 'slow',
        expression: '* * * * * *',
        handler: async () => {
          running += 1;
          maxRunning = Math.max(maxRunning, running);
          await gate;
          running -= 1;
          throw new Error('job failed');
        },
      },
      log.logger,
    );
    const first = run();
    await run();
    await run();
    release();
    await first;
    expect(maxRunning).toBe(1);
    const messages = log.lines().map((l) => l['msg']);
    expect(messages.filter((m) => m === 'schedule skipped: the previous run is still going')).toHaveLength(2);
    expect(log.lines().find((l) => l['msg'] === 'schedule handler failed')).toMatchObject({ extension: 'slow' });
  });

  it('runs a six-field schedule on node-cron and stops it with the runtime', async () => {
    const { runtime } = await runtimeWith({
      'hooks/ticker/index.js': `module.exports = ({ schedule }) => schedule('* * * * * *', () => { globalThis.__ticks = (globalThis.__ticks ?? 0) + 1; });`,
    });
    await runtime.start();
    await waitFor(() => ticks() >= 1, { timeoutMs: 5000, message: 'schedule never ran' });
    await runtime.stop();
    const after = ticks();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(ticks()).toBe(after);
  });
});

describe('hot reload', () => {
  it('replaces the handlers of an edited extension and drops the old ones', async () => {
    const { runtime, dir } = await runtimeWith(
      { 'hooks/tagger/index.js': `module.exports = ({ filter }) => filter('items.create', (p) => ({ ...p, tag: 'v1' }));` },
      { autoReload: true },
    );
    await runtime.start();
    expect(await runtime.runFilters('create', 't', {}, {})).toEqual({ tag: 'v1' });

    await writeFile(join(dir, 'hooks/tagger/index.js'), `module.exports = ({ filter }) => filter('items.update', (p) => ({ ...p, tag: 'v2' }));`);
    await waitFor(async () => (await runtime.runFilters<Record<string, unknown>>('update', 't', {}, {}))['tag'] === 'v2', {
      timeoutMs: 10000,
      message: 'reload never happened',
    });
    expect(await runtime.runFilters('create', 't', {}, {})).toEqual({});
  });

  it('keeps the last good version of an extension an edit broke, and reports it', async () => {
    const { runtime, dir, log } = await runtimeWith(
      {
        'hooks/a/index.js': `module.exports = ({ filter }) => filter('items.create', (p) => ({ ...p, a: 1 }));`,
        'hooks/b/index.js': `module.exports = ({ filter }) => filter('items.create', (p) => ({ ...p, b: 1 }));`,
      },
      { autoReload: true },
    );
    await runtime.start();
    await writeFile(join(dir, 'hooks/b/index.js'), `module.exports = ({ filter }) => filter('items.create', (p) => ({ ...p, b: 1 })`);
    await waitFor(() => runtime.report?.failed.length === 1, { timeoutMs: 10000, message: 'broken edit not reported' });
    // b's last good version stays: a typo must not make writes pass unfiltered.
    expect(await runtime.runFilters('create', 't', {}, {})).toEqual({ a: 1, b: 1 });
    expect(runtime.report?.failed[0]?.reason).toMatch(/its previous version stays active/);
    expect(log.lines().some((l) => l['msg'] === 'extension not loaded: ' + runtime.report?.failed[0]?.reason)).toBe(true);
  });

  it('keeps the last good version of an extension whose folder lost its index file; drops one whose folder is gone', async () => {
    const { runtime, dir } = await runtimeWith({
      'hooks/a/index.js': `module.exports = ({ filter }) => filter('items.create', (p) => ({ ...p, a: 1 }));`,
      'hooks/b/index.js': `module.exports = ({ filter }) => filter('items.create', (p) => ({ ...p, b: 1 }));`,
    });
    // Listeners see each new set before the registry swaps it in (the bridge's guards follow it there).
    const swaps: Array<{ before: string[]; next: string[] }> = [];
    runtime.onSwap((_report, next) => swaps.push({ before: runtime.registry.extensions.map((e) => e.name), next: next.map((e) => e.name).sort() }));
    await runtime.start();
    await rm(join(dir, 'hooks/b/index.js'));
    const report = await runtime.reload();
    // A deleted index file (an editor's save, a deploy half done) is like an edit that broke it.
    expect(await runtime.runFilters('create', 't', {}, {})).toEqual({ a: 1, b: 1 });
    expect(report.loaded.map((l) => l.name)).toEqual(['a', 'b']);
    expect(report.failed).toMatchObject([
      { code: 'E_EXTENSION_DISCOVERY', path: join(dir, 'hooks/b'), reason: expect.stringMatching(/its previous version stays active: b\)$/) },
    ]);
    await rm(join(dir, 'hooks/b'), { recursive: true });
    await runtime.reload();
    expect(await runtime.runFilters('create', 't', {}, {})).toEqual({ a: 1 });
    expect(swaps).toEqual([
      { before: [], next: ['a', 'b'] },
      { before: ['a', 'b'], next: ['a', 'b'] },
      { before: ['a', 'b'], next: ['a'] },
    ]);
  });
});

describe('emitter', () => {
  it('lets extensions emit and hear custom and item events', async () => {
    const { runtime } = await runtimeWith({
      'hooks/listener/index.js': `
        module.exports = ({ filter }, { emitter }) => {
          filter('articles.items.create', (p) => ({ ...p, seen: true }));
          emitter.onAction('reports.generated', (meta) => { globalThis.__reports = meta.count; });
        };`,
    });
    await runtime.start();
    expect(await runtime.emitter.emitFilter('articles.items.create', { a: 1 })).toEqual({ a: 1, seen: true });
    runtime.emitter.emitAction('reports.generated', { count: 3 });
    await waitFor(() => (globalThis as Record<string, unknown>)['__reports'] === 3, { timeoutMs: 2000, message: 'custom action not heard' });

    const handler = (p: Record<string, unknown>) => ({ ...p, extra: 1 });
    runtime.emitter.onFilter('articles.items.create', handler);
    expect(await runtime.runFilters('create', 'articles', {}, {})).toEqual({ seen: true, extra: 1 });
    runtime.emitter.offFilter('articles.items.create', handler);
    expect(await runtime.runFilters('create', 'articles', {}, {})).toEqual({ seen: true });
  });
});
