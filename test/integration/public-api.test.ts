/**
 * The package's public surface (index.ts): exactly these names, and the README's embedding example
 * run as written — a bridge in a Node program of its own, started, hearing a write, stopped.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, expect, it } from 'vitest';
import * as hookbridge from '../../index.js';
import { dropTestSlot } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const slotName = `hb_api_${randomBytes(3).toString('hex')}`;

afterAll(() => dropTestSlot(db.url, slotName));

it('exports the hook API and what an embedding program needs, and no internals', () => {
  const names = Object.keys(hookbridge).sort();
  // Embedding: the bridge, its configuration, its logger.
  expect(names).toEqual(expect.arrayContaining(['Bridge', 'ConfigError', 'createLogger', 'resolveConfig']));
  // Hooks: defineHook, the raw SQL tag for `kysely`, the Directus 8 Payload, Directus 9 and 10 errors.
  expect(names).toEqual(expect.arrayContaining(['defineHook', 'sql', 'Payload', 'exceptions', 'createError', 'InvalidPayloadError', 'ForbiddenException']));
  for (const internal of ['HookRuntime', 'FilterRejection', 'ActionStream', 'FilterService', 'migrate', 'openDatabase']) expect(names).not.toContain(internal);
});

it("runs the README's embedding example", async () => {
  const dir = await tempDir();
  const seen: unknown[] = [];
  (globalThis as Record<string, unknown>)['__embedded'] = seen;
  try {
    await withClient(db.url, (c) => c.query(`create table articles (id serial primary key, title text not null)`));
    await writeTree(dir.path, {
      'hooks/audit/index.js': `module.exports = ({ action }) => { action('articles.items.create', ({ key }) => globalThis.__embedded.push(key)); };`,
    });
    const { Bridge, createLogger, resolveConfig } = hookbridge;
    // As in README, "Use it in your own project" (with this test's own slot and a free port).
    const config = resolveConfig({ databaseUrl: db.url, extensionsPath: dir.path, port: 0, slotName, logLevel: 'warn' });
    const bridge = new Bridge(config, createLogger(config, 'stderr'));
    bridge.onFatal = (error) => {
      throw error;
    };
    await bridge.start();
    try {
      await withClient(db.url, (c) => c.query(`insert into articles (title) values ('embedded')`));
      await waitFor(() => seen.length === 1, { message: 'the embedded bridge never ran the action' });
      expect(bridge.healthy).toBe(true);
    } finally {
      await bridge.stop();
    }
  } finally {
    await dir.remove();
  }
});
