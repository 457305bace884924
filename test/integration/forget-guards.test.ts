/**
 * `hookbridge forget <extension>` forgets exactly that extension (and the hooks of a bundle of that
 * name): never every package of an npm scope, which would unguard their tables silently.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { forgetGuards, readGuards } from '../../bridge/extension-guards.js';
import { migrate } from '../../bridge/migrate.js';
import { useTestDatabase } from '../support/database.js';

const db = useTestDatabase();
let pool: pg.Pool;

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: db.url, max: 2 });
  await migrate(pool, { schema: 'hookbridge' });
  await pool.query(
    `insert into hookbridge.extension_guards (extension, path, table_schema, table_name, filters, actions)
     values ('@acme/a', 'a', 'public', 'ta', '{create}', '{}'), ('@acme/b', 'b', 'public', 'tb', '{create}', '{}'),
            ('tools', 't', 'public', 'tt', '{create}', '{}'), ('tools/mailer', 't', 'public', 'tm', '{}', '{create}'),
            ('tools-extra', 'x', 'public', 'tx', '{create}', '{}')`,
  );
});

afterAll(async () => {
  await pool.end();
});

const remembered = async () => (await readGuards(pool, 'hookbridge')).map((r) => r.extension).sort();

it('forgets a bare npm scope as nothing, never as every package in it', async () => {
  expect(await forgetGuards(pool, 'hookbridge', '@acme')).toEqual({ tables: [], held: 0 });
  expect(await remembered()).toEqual(['@acme/a', '@acme/b', 'tools', 'tools-extra', 'tools/mailer']);
});

it('forgets a scoped package by its name, and a bundle with its hooks, nothing that only starts alike', async () => {
  expect((await forgetGuards(pool, 'hookbridge', '@acme/a')).tables).toEqual(['ta']);
  expect((await forgetGuards(pool, 'hookbridge', 'tools')).tables).toEqual(['tm', 'tt']);
  expect(await remembered()).toEqual(['@acme/b', 'tools-extra']);
});
