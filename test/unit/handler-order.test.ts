/**
 * Directus's handler order for one write: it emits `items.<action>`, then `<collection>.items.<action>`,
 * and its emitter (EventEmitter2, wildcards on, `.` between segments) runs, per emitted name, the
 * listeners of an exact segment before those of `*`, segment by segment; registration order among
 * equals. Expected orders below are what Directus 11's emitter gives for the same registrations.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HookRuntime } from '../../hooks/runtime.js';
import { captureLogger } from '../support/capture-logger.js';
import { tempDir, writeTree } from '../support/file-tree.js';

let dir: { path: string; remove(): Promise<void> };
let runtime: HookRuntime;
const seen: string[] = [];

beforeAll(async () => {
  (globalThis as Record<string, unknown>)['__order'] = seen;
  dir = await tempDir('hookbridge-order-');
  const names = ['*.items.create', 'items.*', 'articles.items.create', 'items.create', 'articles.items.*'];
  await writeTree(dir.path, {
    // Two extensions, loaded in name order: registration order across them is the tie-breaker.
    'hooks/a-first/index.js': `
      module.exports = ({ filter, action }) => {
        for (const name of ${JSON.stringify(names)}) {
          filter(name, (payload) => [...payload, name]);
          action(name, () => globalThis.__order.push(name));
        }
      };`,
    'hooks/b-second/index.js': `
      module.exports = ({ filter }) => { filter('items.create', (payload) => [...payload, 'items.create (b)']); };`,
  });
  runtime = new HookRuntime({ extensionsPath: dir.path, logger: captureLogger('warn').logger });
  const report = await runtime.reload();
  expect(report.failed).toEqual([]);
});

afterAll(async () => {
  await runtime?.stop();
  await dir?.remove();
});

it("filters: items.<action> ones first, then the collection's, exact segments before wildcards, registration order among equals", async () => {
  expect(await runtime.runFilters('create', 'articles', [] as string[], {})).toEqual([
    'items.create',
    'items.create (b)',
    'items.*',
    'articles.items.create',
    'articles.items.*',
    '*.items.create',
  ]);
});

it('actions in the same order', async () => {
  await runtime.dispatchActions('create', 'articles', {});
  expect(seen).toEqual(['items.create', 'items.*', 'articles.items.create', 'articles.items.*', '*.items.create']);
});

it('a table the collection-named handlers do not match gets only the generic ones and the wildcard', async () => {
  expect(await runtime.runFilters('create', 'notes', [] as string[], {})).toEqual(['items.create', 'items.create (b)', 'items.*', '*.items.create']);
});
