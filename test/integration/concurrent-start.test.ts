/**
 * Bridges that start together on one database (a deployment's replicas, a rolling restart) change the
 * same catalog rows: CREATE EXTENSION dblink, and GRANT/REVOKE on dblink's and the trigger functions. Done
 * at once, PostgreSQL refuses one of them ("tuple concurrently updated", a duplicate extension); the
 * bridges take turns under the schema's lock instead, and every one starts.
 */
import { expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { withClient } from '../support/helpers.js';

const db = useTestDatabase();

// A filter on an existing table: without a usable dblink such a bridge may not start.
const extensions = {
  'hooks/guard/index.js': `module.exports = ({ filter }) => { filter('together.items.create', (payload) => payload); };`,
};

it('starts every bridge of several that start together on a database without dblink', async () => {
  await withClient(db.url, (c) => c.query('create table together (id int primary key)'));
  for (let round = 0; round < 3; round++) {
    await withClient(db.url, (c) => c.query('drop extension if exists dblink'));
    const outcomes = await Promise.allSettled([1, 2, 3].map(() => startTestBridge(db.url, extensions)));
    const started = outcomes.filter((o): o is PromiseFulfilledResult<TestBridge> => o.status === 'fulfilled').map((o) => o.value);
    try {
      expect(outcomes.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason))).toEqual([]);
      // And the set-up is whole: dblink is made, and nobody but the bridge may call it.
      const { rows } = await withClient(db.url, (c) =>
        c.query(`select bool_or(pg_catalog.has_function_privilege('public', p.oid, 'execute')) as open, count(*)::int > 0 as made
                   from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                  where n.nspname = 'hookbridge' and p.proname like 'dblink%'`),
      );
      expect(rows[0]).toEqual({ open: false, made: true });
    } finally {
      for (const bridge of started) await bridge.dispose();
    }
  }
});
