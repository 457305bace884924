/**
 * Hooks' `database` is Knex, loaded when a hook first uses it: most hooks never do, and loading Knex
 * cost every thread that runs hooks ~0.3 s of CPU at start. No server is needed: pools connect when used.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { openHookDatabase } from '../../bridge/hook-database.js';
import { captureLogger } from '../support/capture-logger.js';

const knexLoaded = () => Object.keys(createRequire(import.meta.url).cache).some((file) => file.includes('/node_modules/knex/'));

describe("hooks' database", () => {
  // First: once loaded, Knex stays in this file's module cache.
  it('closes without loading Knex when no hook used it', async () => {
    expect(knexLoaded()).toBe(false);
    const opened = openHookDatabase(
      { host: '127.0.0.1', port: 1, user: 'nobody' },
      { applicationName: 'test', max: 1, servicesMax: 1, logger: captureLogger().logger },
    );
    // Code that only looks at it (await, JSON, ItemsService's transaction check) loads nothing.
    expect(await Promise.resolve(opened.knex)).toBe(opened.knex);
    expect(JSON.stringify({ database: opened.knex })).toBe('{}');
    expect((opened.knex as unknown as { isTransaction?: boolean }).isTransaction).toBeUndefined();
    expect(knexLoaded()).toBe(false);
    await opened.close();
    expect(knexLoaded()).toBe(false);
    // A hook still running while the bridge stops: told so, instead of opening a pool nothing closes.
    expect(() => opened.knex('articles')).toThrow(/the hooks' database is closed/);
    expect(await Promise.resolve(opened.knex)).toBe(opened.knex);
  });

  it('loads Knex on first use, and is Knex from then on', async () => {
    const opened = openHookDatabase(
      { host: '127.0.0.1', port: 1, user: 'nobody' },
      { applicationName: 'test', max: 1, servicesMax: 1, logger: captureLogger().logger },
    );
    const database = opened.knex;
    // Handed around and read off a context, as extensions do at registration: still not loaded.
    const { knex: again } = opened;
    expect(typeof again).toBe('function');
    expect(knexLoaded()).toBe(false);

    expect(database('articles').where({ id: 1 }).toString()).toBe('select * from "articles" where "id" = 1');
    expect(knexLoaded()).toBe(true);
    expect(database.raw('select ?', [2]).toString()).toBe('select 2');
    expect(database.client.config.client).toBe('pg');
    expect(Object.keys(database)).toContain('select');
    expect('transaction' in database).toBe(true);
    // Shared by every hook of the thread: one defining a property on it breaks nothing for the others.
    Object.defineProperty(database, 'tag', { value: 1 });
    expect((database as unknown as { tag: number }).tag).toBe(1);
    expect(Object.keys(database)).toContain('select');
    expect(Object.getOwnPropertyDescriptor(database, 'tag')).toMatchObject({ value: 1, configurable: false });
    expect(() => Object.freeze(database)).toThrow(TypeError);
    expect(database('articles').select('id').toString()).toBe('select "id" from "articles"');
    await opened.close();
  });
});
