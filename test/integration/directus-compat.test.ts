/**
 * Directus compatibility: habits of real, published Directus hook extensions, each in a fixture that
 * must behave as it does in Directus. Default imports in ESM extensions; `database` used as Knex
 * (builder, raw, transaction, a rolled-back transaction); `items.<action>` handlers before
 * `<collection>.items.<action>` ones; Directus's env defaults; `accountability.user` for a database
 * role that cannot SET anything (HOOKBRIDGE_USER_MAP). ItemsService: items-service-compat.test.ts; a
 * hook's unhandled rejection: containment.test.ts (it needs a real process).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHookDatabase } from '../../bridge/hook-database.js';
import { createServices } from '../../bridge/services/items-service.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const seen: Record<string, any> = { order: [], actionOrder: [] };
(globalThis as Record<string, unknown>)['__compat'] = seen;
// Roles belong to the whole server: a name of this run's own.
const ROLE = `hb_reporting_${randomBytes(3).toString('hex')}`;
let tb: TestBridge;

const esmExtension = {
  'hooks/esm-imports/package.json': JSON.stringify({ name: 'esm-imports', type: 'module', 'directus:extension': { type: 'hook', path: 'index.js' } }),
  'hooks/esm-imports/index.js': `
    import fs from 'node:fs';
    import path, { join } from 'node:path';
    import helper from './helper.cjs';
    import yamlish from 'yamlish';
    import * as os from 'node:os';
    export default ({ init }) => {
      init('app.before', () => {
        globalThis.__compat.imports = {
          fs: typeof fs?.readFileSync, path: typeof path?.join, join: typeof join, os: typeof os.cpus,
          helper: typeof helper === 'function' ? helper(2) : 'undefined', yamlish: yamlish?.parse?.('a: 1'),
        };
      });
    };`,
  'hooks/esm-imports/helper.cjs': `module.exports = (n) => n * 21;`,
  'hooks/esm-imports/node_modules/yamlish/package.json': JSON.stringify({ name: 'yamlish', version: '1.0.0', main: 'index.js' }),
  'hooks/esm-imports/node_modules/yamlish/index.js': `module.exports = { parse: (text) => Object.fromEntries([text.split(': ')]) };`,
};

const knexExtension = {
  'hooks/knex-habits/index.js': `
    module.exports = ({ filter, action, init }, { database, env, services }) => {
      init('app.before', async () => {
        globalThis.__compat.env = { PUBLIC_URL: env.PUBLIC_URL, CONFIG_PATH: env.CONFIG_PATH, DB_CLIENT: env.DB_CLIENT, QUERY_LIMIT_DEFAULT: env.QUERY_LIMIT_DEFAULT };
      });
      filter('orders.items.create', async (payload, meta, { database, accountability }) => {
        globalThis.__compat.order.push('orders.items.create');
        const limit = await database('limits').where({ name: 'max_amount' }).first();
        if (payload.amount > limit.value) throw new Error('amount over the limit of ' + limit.value);
        return { ...payload, note: (payload.note ?? '') + '+specific', placed_by: accountability?.user ?? null };
      });
      action('orders.items.create', async ({ key }, { database, accountability }) => {
        globalThis.__compat.actionOrder.push('orders.items.create');
        await database.transaction(async (trx) => {
          await trx('audit').insert({ order_id: key, what: 'created' });
          await trx('counters').where({ name: 'orders' }).increment('n', 1);
        });
        // A transaction whose callback throws is rolled back, and the error reaches the caller.
        const failed = await database.transaction(async (trx) => {
          await trx('audit').insert({ order_id: key, what: 'rolled back' });
          throw new Error('undo');
        }).catch((error) => error.message);
        // The services run on their own connections: given Knex itself they work, given a transaction they say why not.
        const viaService = await new services.ItemsService('orders', { knex: database }).readOne(key, { fields: ['amount'] });
        const refused = await database.transaction(async (trx) => {
          try { new services.ItemsService('orders', { knex: trx }); return 'accepted'; } catch (error) { return error.code + ': ' + error.message; }
        });
        globalThis.__compat.services = { viaService, refused };
        const raw = await database.raw('select ?::int + 1 as n', [41]);
        const selected = await database.select('id', 'amount').from('orders').where('id', key).first();
        const counted = await database('audit').where({ order_id: key }).count({ n: '*' }).first();
        globalThis.__compat.knex = { failed, raw: raw.rows[0].n, selected, audit: Number(counted.n) };
        (globalThis.__compat.users ??= {})[key] = accountability?.user ?? null;
      });
    };`,
};

// A handler that leaves transactions open for ever (Knex and kysely): the bridge's stop must end them.
const stuckExtension = {
  'hooks/stuck/index.js': `
    module.exports = ({ action }, { database, kysely }) => {
      action('stuck.items.create', () => new Promise((resolve) => {
        let open = 0;
        const opened = () => { if (++open === 2) { globalThis.__compat.stuck = true; resolve(); } };
        database.transaction(async (trx) => { await trx('stuck').select('id'); opened(); await new Promise(() => {}); }).catch(() => {});
        kysely.transaction().execute(async (trx) => { await trx.selectFrom('stuck').select('id').execute(); opened(); await new Promise(() => {}); }).catch(() => {});
      }));
    };`,
};

// Registered in the "wrong" order: the generic handlers still run first, as in Directus.
const orderExtension = {
  'hooks/order/index.js': `
    module.exports = ({ filter, action }) => {
      filter('items.create', (payload, meta) => {
        if (meta.collection !== 'orders') return payload;
        globalThis.__compat.order.push('items.create');
        return { ...payload, note: 'generic' };
      });
      action('items.create', (meta) => {
        if (meta.collection === 'orders') globalThis.__compat.actionOrder.push('items.create');
      });
    };`,
};

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create table limits (name text primary key, value int not null)`);
    await c.query(`insert into limits values ('max_amount', 100)`);
    await c.query(`create table orders (id serial primary key, amount int not null, note text, placed_by text)`);
    await c.query(`create table audit (id serial primary key, order_id int not null, what text not null)`);
    await c.query(`create table counters (name text primary key, n int not null)`);
    await c.query(`insert into counters values ('orders', 0)`);
    await c.query(`create table stuck (id serial primary key, n int)`);
    await c.query(`create role ${ROLE} nologin`);
    await c.query(`grant insert, select on orders to ${ROLE}; grant usage on sequence orders_id_seq to ${ROLE}`);
  });
  tb = await startTestBridge(db.url, { ...esmExtension, ...knexExtension, ...orderExtension, ...stuckExtension }, { userMap: { [ROLE]: 'reporting-user' } });
});

afterAll(async () => {
  await tb?.dispose();
  await withClient(db.url, async (c) => {
    await c.query(`drop owned by ${ROLE}`);
    await c.query(`drop role if exists ${ROLE}`);
  });
});

describe('Directus habits', () => {
  it('default imports work in ESM extensions: builtins, a local CommonJS file, a package of their own', async () => {
    await waitFor(() => seen['imports'], { message: 'the init hook of esm-imports never ran' });
    expect(seen['imports']).toEqual({ fs: 'function', path: 'function', join: 'function', os: 'function', helper: 42, yamlish: { a: '1' } });
  });

  it("env carries Directus's defaults", () => {
    expect(seen['env']).toMatchObject({ PUBLIC_URL: '/', DB_CLIENT: 'pg', QUERY_LIMIT_DEFAULT: 100 });
    expect(seen['env'].CONFIG_PATH).toMatch(/\.env$/);
  });

  it('database is Knex: builder and raw in a filter; transaction, rollback, raw, select in an action', async () => {
    const id = await withClient(db.url, async (c) => (await c.query(`insert into orders (amount) values (10) returning id`)).rows[0].id);
    await waitFor(() => seen['knex'], {
      message: () => `the action never finished: ${JSON.stringify(tb.log.lines().filter((l) => Number(l['level']) >= 40))}`,
    });
    expect(seen['knex']).toEqual({ failed: 'undo', raw: 42, selected: { id, amount: 10 }, audit: 1 });
    expect(seen['users'][id]).toBeNull();
    expect(seen['services'].viaService).toEqual({ amount: 10 });
    expect(seen['services'].refused).toMatch(/^INVALID_QUERY: .*cannot join a Knex transaction/);
    await withClient(db.url, async (c) => {
      expect((await c.query(`select n from counters`)).rows[0].n).toBe(1);
      expect((await c.query(`select what from audit where order_id = $1`, [id])).rows).toEqual([{ what: 'created' }]);
      // The filter read `limits` through Knex and refuses what is over it.
      await expect(c.query(`insert into orders (amount) values (1000)`)).rejects.toThrow(/amount over the limit of 100/);
    });
  });

  it('items.create handlers run before orders.items.create ones, whatever the registration order', async () => {
    const row = await withClient(db.url, async (c) => (await c.query(`select note from orders order by id limit 1`)).rows[0]);
    expect(row.note).toBe('generic+specific');
    expect(seen['order'].slice(0, 2)).toEqual(['items.create', 'orders.items.create']);
    expect(seen['actionOrder'].slice(0, 2)).toEqual(['items.create', 'orders.items.create']);
  });

  it('HOOKBRIDGE_USER_MAP names the application user of a role that sets none, in filters and actions', async () => {
    const [mapped, declared] = await withClient(db.url, async (c) => {
      await c.query(`set role ${ROLE}`);
      const { rows } = await c.query(`insert into orders (amount) values (5) returning id, placed_by`);
      expect(rows[0].placed_by).toBe('reporting-user');
      // The writer's own declaration wins over the map.
      await c.query(`set hookbridge."user" = 'alice'`);
      const again = await c.query(`insert into orders (amount) values (6) returning id, placed_by`);
      expect(again.rows[0].placed_by).toBe('alice');
      return [rows[0].id, again.rows[0].id];
    });
    await waitFor(() => seen['users'][mapped] !== undefined && seen['users'][declared] !== undefined, {
      message: 'the actions of the mapped writer never ran',
    });
    expect(seen['users'][mapped]).toBe('reporting-user');
    expect(seen['users'][declared]).toBe('alice');
    // A service constructed with an accountability writes as its user, as in Directus.
    const hooks = openHookDatabase({ connectionString: db.url }, { applicationName: 'compat-test', max: 1, servicesMax: 1, logger: tb.log.logger });
    try {
      const { ItemsService } = createServices({ database: hooks.services, runtime: tb.bridge.runtime, getSchema: () => tb.bridge.getSchema() });
      const key = await new ItemsService('orders', {
        accountability: { user: 'service-user', role: null, admin: false, app: false, ip: null, userAgent: null },
      }).createOne({ amount: 3 });
      expect(await withClient(db.url, async (c) => (await c.query(`select placed_by from orders where id = $1`, [key])).rows[0])).toEqual({
        placed_by: 'service-user',
      });
      await waitFor(() => seen['users'][key] !== undefined, { message: "the service write's action never ran" });
      expect(seen['users'][key]).toBe('service-user');
    } finally {
      await hooks.close();
    }
    // A role the map does not name keeps no user.
    const other = await withClient(db.url, async (c) => (await c.query(`insert into orders (amount) values (7) returning placed_by`)).rows[0]);
    expect(other.placed_by).toBeNull();
  });

  // Last: it stops the bridge.
  it('ends the transactions a hook left open when the bridge stops: nothing of it stays connected', async () => {
    await withClient(db.url, (c) => c.query(`insert into stuck default values`));
    await waitFor(() => seen['stuck'], { message: 'the action never opened its transactions' });
    await tb.stop();
    const left = await withClient(
      db.url,
      async (c) =>
        (await c.query(`select application_name, state from pg_stat_activity where datname = current_database() and application_name like 'hookbridge%'`)).rows,
    );
    expect(left).toEqual([]);
  });
});
