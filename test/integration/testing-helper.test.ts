/** `hookbridge/testing` as a hook author uses it: its own embedded Postgres and a bridge. */
import { expect, it } from 'vitest';
import { startTestBridge } from '../../bridge/testing.js';
import { waitFor, withClient } from '../support/helpers.js';

it('starts Postgres and a bridge with the given extensions, and stops both', async () => {
  const created: unknown[] = [];
  (globalThis as Record<string, unknown>)['__testingCreated'] = created;
  const hb = await startTestBridge({
    extensions: {
      'hooks/shout/index.js': `
        module.exports = ({ filter, action, init }) => {
          init('routes.custom.before', ({ app }) => app.get('/custom/ping', (_req, res) => res.json({ pong: true })));
          filter('notes.items.create', (p) => ({ ...p, body: String(p.body).toUpperCase() }));
          action('notes.items.create', ({ key }) => globalThis.__testingCreated.push(key));
        };`,
    },
    setup: (url) => withClient(url, (c) => c.query(`create table notes (id int primary key, body text)`)).then(() => undefined),
  });
  const url = hb.url;
  try {
    await withClient(url, (c) => c.query(`insert into notes values (1, 'quiet')`));
    expect(await withClient(url, async (c) => (await c.query(`select body from notes`)).rows)).toEqual([{ body: 'QUIET' }]);
    await waitFor(() => created.length === 1, { message: 'the action hook never ran' });
    // Init hooks get the express app, as in Directus.
    const ping = await fetch(`http://127.0.0.1:${hb.bridge.httpPort}/custom/ping`);
    expect(await ping.json()).toEqual({ pong: true });
  } finally {
    await hb.stop();
  }
  await expect(withClient(url, (c) => c.query('select 1'))).rejects.toThrow(/ECONNREFUSED/);
});
