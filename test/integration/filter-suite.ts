/**
 * Filter hooks on table writes: BEFORE triggers call the bridge and apply its verdict inside the
 * writer's transaction, from any client. The same suite runs for each transport
 * (filters-direct.test.ts, filters-notify.test.ts).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { findPsql, waitFor, withClient } from '../support/helpers.js';

const run = promisify(execFile);

export function filterSuite(transport: 'direct' | 'notify'): void {
  const db = useTestDatabase();
  const seen: Array<{ event: string; payload: unknown; meta: Record<string, unknown>; who: unknown }> = [];
  (globalThis as Record<string, unknown>)['__filterSeen'] = seen;

  const extensions = {
    'hooks/articles/index.js': `
      module.exports = ({ filter }, { exceptions }) => {
        filter('articles.items.create', (payload, meta, ctx) => {
          globalThis.__filterSeen.push({ event: meta.event, payload, meta, who: ctx.accountability });
          if (payload.title === 'reject me') throw new exceptions.InvalidPayloadException('Title may not be "reject me"');
          if (payload.title === 'hang') return new Promise(() => {});
          if (payload.title === 'slow') return new Promise((resolve) => setTimeout(() => resolve(payload), 1000));
          if (payload.title === 'bad column') return { ...payload, nope: 1 };
          return { ...payload, slug: String(payload.title).toLowerCase().replace(/[^a-z0-9]+/g, '-') };
        });
        filter('articles.items.update', (payload, meta) => {
          globalThis.__filterSeen.push({ event: meta.event, payload, meta, who: null });
          if ('title' in payload) return { ...payload, title: payload.title.toUpperCase() };
          return payload;
        });
        filter('articles.items.delete', (keys, meta) => {
          globalThis.__filterSeen.push({ event: meta.event, payload: keys, meta, who: null });
          if (keys[0] === 999) throw new exceptions.ForbiddenException();
        });
        filter('Odd "Table".items.create', (payload) => ({ ...payload, "Note": 'filtered' }));
        filter('late_*.items.create', (payload) => ({ ...payload, v: 'late and filtered' }));
        filter('selflock.items.update', async (payload, meta, ctx) => {
          // Writes the very row being updated, on the bridge's own connection: it waits for the writer.
          await ctx.database('selflock').update({ n: 99 }).where('id', meta.keys[0]);
          return payload;
        });
        filter('readings.items.create', (payload) => ({ ...payload, note: 'via ' + 'readings' }));
        filter('accounts.items.create', (payload) => { delete payload.is_admin; return payload; });
        filter('accounts.items.update', (payload) => { const { amount, ...rest } = payload; return rest; });
      };`,
  };

  let tb: TestBridge;

  beforeAll(async () => {
    await withClient(db.url, async (c) => {
      await c.query(`create table articles (id int primary key, title text not null, slug text, body text, n int8)`);
      await c.query(`create table "Odd ""Table""" (id int primary key, "Note" text)`);
      await c.query(`create table untouched (id int primary key)`);
      await c.query(`create table readings (id int, at date not null, note text, primary key (id, at)) partition by range (at)`);
      await c.query(`create table readings_2026 partition of readings for values from ('2026-01-01') to ('2027-01-01')`);
      await c.query(`create table accounts (id int primary key, name text, is_admin boolean, amount numeric)`);
      await c.query(`create table selflock (id int primary key, n int)`);
      await c.query(`insert into selflock values (1, 0)`);
    });
    tb = await startTestBridge(db.url, extensions, { filterTimeoutMs: 1500, filterTransport: transport });
  });

  afterAll(async () => {
    await tb?.dispose();
  });

  const rows = (sql: string, params: unknown[] = []) => withClient(db.url, async (c) => (await c.query(sql, params)).rows);
  const failure = (sql: string, url = db.url) =>
    withClient(url, (c) => c.query(sql)).then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    );

  describe(`filter hooks on writes (${transport} transport)`, () => {
    it('use the transport asked for', () => {
      expect(tb.bridge.filters?.transport).toBe(transport);
    });

    it('install triggers only where filters match, for just those operations', async () => {
      const triggers = await rows(`select tgrelid::regclass::text as t from pg_trigger where tgname = '~hookbridge_filter' order by 1`);
      expect(triggers.map((r) => r.t)).toEqual(['"Odd ""Table"""', 'accounts', 'articles', 'readings', 'readings_2026', 'selflock']);
    });

    it('let a filter modify the row, seeing the writer', async () => {
      await withClient(db.url, async (c) => {
        await c.query(`set application_name = 'cms'`);
        await c.query(`insert into articles (id, title) values (1, 'Hello World')`);
      });
      expect(await rows(`select slug from articles where id = 1`)).toEqual([{ slug: 'hello-world' }]);
      expect(seen.at(-1)).toMatchObject({ event: 'articles.items.create', payload: { id: 1, title: 'Hello World' } });
      expect(seen.at(-1)?.payload).not.toHaveProperty('slug');
      expect(seen.at(-1)?.who).toMatchObject({ role: 'postgres', admin: true, userAgent: 'cms' });
    });

    it('let a filter reject the write with its message, a SQLSTATE and the code in DETAIL', async () => {
      const error = await failure(`insert into articles (id, title) values (2, 'reject me')`);
      expect(error).toMatchObject({ code: 'HB400', message: 'Title may not be "reject me"', detail: 'code: INVALID_PAYLOAD' });
      expect(await rows(`select * from articles where id = 2`)).toEqual([]);
    });

    it('give update filters the changed fields and keys, and delete filters [key]', async () => {
      await withClient(db.url, (c) => c.query(`update articles set title = 'shout', body = 'b' where id = 1`));
      const update = seen.at(-1);
      expect(update).toMatchObject({ event: 'articles.items.update', payload: { title: 'shout', body: 'b' }, meta: { keys: [1] } });
      expect(await rows(`select title, body from articles where id = 1`)).toEqual([{ title: 'SHOUT', body: 'b' }]);
      await withClient(db.url, (c) => c.query(`insert into articles (id, title) values (999, 'protected')`));
      const error = await failure(`delete from articles where id = 999`);
      expect(error).toMatchObject({ code: 'HB403', detail: 'code: FORBIDDEN' });
      expect(seen.at(-1)).toMatchObject({ event: 'articles.items.delete', payload: [999] });
      await withClient(db.url, (c) => c.query(`delete from articles where id = 1`));
      expect(await rows(`select id from articles where id in (1, 999) order by id`)).toEqual([{ id: 999 }]);
    });

    it.each(['read committed', 'repeatable read', 'serializable'])('work in %s transactions', async (level) => {
      const id = { 'read committed': 10, 'repeatable read': 11, serializable: 12 }[level] as number;
      await withClient(db.url, async (c) => {
        await c.query(`begin isolation level ${level}`);
        await c.query(`insert into articles (id, title) values ($1, 'In Tx')`, [id]);
        await c.query(`update articles set title = 'again' where id = $1`, [id]);
        await c.query('commit');
      });
      expect(await rows(`select slug, title from articles where id = $1`, [id])).toEqual([{ slug: 'in-tx', title: 'AGAIN' }]);
    });

    it('filter every row of multi-row statements and COPY', async () => {
      await withClient(db.url, (c) => c.query(`insert into articles (id, title) select g, 'Row ' || g from generate_series(100, 149) g`));
      expect(await rows(`select count(*)::int as n from articles where slug like 'row-%'`)).toEqual([{ n: 50 }]);
      const psql = findPsql();
      if (psql) {
        const copy = run(psql, [db.url, '-v', 'ON_ERROR_STOP=1', '-c', `copy articles (id, title) from stdin`]);
        copy.child.stdin?.end('200\tCopied One\n201\tCopied Two\n');
        await copy;
        expect(await rows(`select slug from articles where id in (200, 201) order by id`)).toEqual([{ slug: 'copied-one' }, { slug: 'copied-two' }]);
      }
    });

    it('carry rows far larger than NOTIFY allows (200 kB)', async () => {
      const body = 'x'.repeat(200_000);
      await withClient(db.url, (c) => c.query(`insert into articles (id, title, body) values (300, 'Big One', $1)`, [body]));
      expect(await rows(`select slug, length(body) as len from articles where id = 300`)).toEqual([{ slug: 'big-one', len: 200_000 }]);
    });

    it('work for a non-superuser writer, who can neither read the endpoint nor skip the filters', async () => {
      const role = `hb_writer_${randomBytes(4).toString('hex')}`;
      await withClient(db.url, async (c) => {
        await c.query(`create role ${role} login password 'pw'`);
        await c.query(`grant insert, select on articles to ${role}`);
      });
      const url = new URL(db.url);
      url.username = role;
      url.password = 'pw';
      try {
        await withClient(url.toString(), (c) => c.query(`insert into articles (id, title) values (400, 'Plain Role')`));
        expect(await rows(`select slug from articles where id = 400`)).toEqual([{ slug: 'plain-role' }]);
        expect(seen.at(-1)?.who).toMatchObject({ role, admin: false });
        expect(await failure(`select conninfo from hookbridge.filter_endpoint`, url.toString())).toMatchObject({ code: '42501' });
        expect(await failure(`set session_replication_role = replica`, url.toString())).toMatchObject({ code: '42501' });
        const bypass = await withClient(url.toString(), async (c) => {
          await c.query(`set hookbridge.skip_filters = 'on'`);
          await c.query(`set hookbridge.bypass = 'on'`);
          return c.query(`insert into articles (id, title) values (401, 'reject me')`).then(
            () => 'written',
            (e: pg.DatabaseError) => e.code,
          );
        });
        expect(bypass).toBe('HB400');
      } finally {
        await withClient(db.url, async (c) => {
          await c.query(`reassign owned by ${role} to postgres`);
          await c.query(`drop owned by ${role}`);
          await c.query(`drop role ${role}`);
        });
      }
    });

    it("skip filters only for the bridge's own role when it opts in (emitEvents: false)", async () => {
      await withClient(db.url, async (c) => {
        await c.query(`set hookbridge.bypass = 'on'`);
        await c.query(`insert into articles (id, title) values (450, 'reject me')`);
      });
      expect(await rows(`select title, slug from articles where id = 450`)).toEqual([{ title: 'reject me', slug: null }]);
    });

    it('serve 16 concurrent writers', async () => {
      const pool = new pg.Pool({ connectionString: db.url, max: 16 });
      try {
        await Promise.all(
          Array.from({ length: 16 }, (_, w) =>
            (async () => {
              for (let i = 0; i < 20; i++) await pool.query(`insert into articles (id, title) values ($1, $2)`, [1000 + w * 100 + i, `W ${w} ${i}`]);
            })(),
          ),
        );
      } finally {
        await pool.end();
      }
      expect(await rows(`select count(*)::int as n from articles where id >= 1000 and slug like 'w-%'`)).toEqual([{ n: 320 }]);
    });

    it('name quoted tables verbatim', async () => {
      await withClient(db.url, (c) => c.query(`insert into "Odd ""Table""" (id) values (1)`));
      expect(await rows(`select "Note" from "Odd ""Table"""`)).toEqual([{ Note: 'filtered' }]);
    });

    it('refuse unknown columns in a returned payload', async () => {
      const error = await failure(`insert into articles (id, title) values (500, 'bad column')`);
      expect(error).toMatchObject({ code: 'HB400', message: expect.stringMatching(/unknown column "nope"/) });
    });

    it('turn a filter that writes the row being written into a clear error, not a hang', async () => {
      const error = await failure(`update selflock set n = 1 where id = 1`);
      expect(error).toMatchObject({ code: 'HB409', detail: 'code: FILTER_SELF_LOCK' });
      expect(error?.message).toMatch(/waited too long for a lock, most likely one the write itself holds/);
    });

    it('time out a hook that hangs instead of hanging the writer', async () => {
      const error = await failure(`insert into articles (id, title) values (501, 'hang')`);
      expect(error).toMatchObject({ code: 'HB504', detail: 'code: FILTER_TIMEOUT' });
    });

    it('answer the writer who holds a ticket now, not one who gave up on it', async () => {
      // Both start their search at ticket 10: the first gives up (statement_timeout) while the bridge is
      // still busy with its row; the second claims the same ticket and must get its own verdict.
      const hinted = (sql: string, timeout?: number) =>
        withClient(db.url, async (c) => {
          await c.query(`set hookbridge.ticket_hint = '9'`);
          if (timeout) await c.query(`set statement_timeout = ${timeout}`);
          return c.query(sql).then(
            () => 'written',
            (e: pg.DatabaseError) => e.code,
          );
        });
      expect(await hinted(`insert into articles (id, title) values (700, 'slow')`, 200)).toBe('57014');
      expect(await hinted(`insert into articles (id, title) values (701, 'reject me')`)).toBe('HB400');
      expect(await hinted(`insert into articles (id, title) values (702, 'Mine')`)).toBe('written');
      expect(await rows(`select id, slug from articles where id between 700 and 702 order by id`)).toEqual([{ id: 702, slug: 'mine' }]);
    });

    it("serve a REPEATABLE READ transaction whose snapshot is older than the bridge's last heartbeat", async () => {
      const outcome = await withClient(db.url, async (c) => {
        await c.query('begin isolation level repeatable read');
        await c.query('select 1');
        await c.query('select pg_sleep(1.3)');
        const result = await c.query(`insert into articles (id, title) values (710, 'Old Snapshot') returning slug`).then(
          (r) => r.rows[0]?.slug as string,
          (e: pg.DatabaseError) => e.code,
        );
        await c.query('commit');
        return result;
      });
      expect(outcome).toBe('old-snapshot');
    });

    it('put back a filter trigger its table owner disabled', async () => {
      await withClient(db.url, (c) => c.query(`alter table articles disable trigger "~hookbridge_filter"`));
      await waitFor(
        async () =>
          (await rows(`select tgenabled from pg_trigger where tgname = '~hookbridge_filter' and tgrelid = 'articles'::regclass`))[0]?.tgenabled === 'O',
        {
          message: 'the disabled trigger stayed disabled',
        },
      );
      expect(await failure(`insert into articles (id, title) values (711, 'reject me')`)).toMatchObject({ code: 'HB400' });
    });

    it('fail writes clearly while the bridge is stopped, and recover when it is back', async () => {
      await tb.stop();
      const error = await failure(`insert into articles (id, title) values (600, 'Bridge Down')`);
      expect(error).toMatchObject({ code: 'HB503', detail: 'code: SERVICE_UNAVAILABLE' });
      expect(error?.message).toMatch(/^hookbridge: filter hooks could not run/);
      await tb.restart();
      await waitFor(() => tb.bridge.healthy, { message: 'bridge not healthy after restart' });
      await withClient(db.url, (c) => c.query(`insert into articles (id, title) values (601, 'Back Again')`));
      expect(await rows(`select slug from articles where id = 601`)).toEqual([{ slug: 'back-again' }]);
    });

    it('put the trigger on a table created while the bridge runs', async () => {
      await withClient(db.url, (c) => c.query(`create table late_arrival (id int primary key, v text)`));
      await waitFor(
        async () => (await rows(`select 1 from pg_trigger where tgname = '~hookbridge_filter' and tgrelid = 'late_arrival'::regclass`)).length === 1,
        {
          message: 'the new table never got its trigger',
        },
      );
      await withClient(db.url, (c) => c.query(`insert into late_arrival values (1, 'raw')`));
      expect(await rows(`select v from late_arrival`)).toEqual([{ v: 'late and filtered' }]);
    });

    it('filter rows of a partitioned table as that table, through its partitions', async () => {
      await withClient(db.url, (c) => c.query(`insert into readings (id, at) values (1, '2026-05-01')`));
      expect(await rows(`select note from readings`)).toEqual([{ note: 'via readings' }]);
    });

    it('do not write a field a create filter removed, and restore an update field left out without rounding it', async () => {
      await withClient(db.url, (c) => c.query(`insert into accounts values (1, 'eve', true, 0.1000000000000000055511151231257827)`));
      expect(await rows(`select is_admin, amount::text from accounts`)).toEqual([{ is_admin: null, amount: '0.1000000000000000055511151231257827' }]);
      await withClient(db.url, (c) => c.query(`update accounts set amount = 5, name = 'eve2' where id = 1`));
      expect(await rows(`select name, amount::text from accounts`)).toEqual([{ name: 'eve2', amount: '0.1000000000000000055511151231257827' }]);
    });

    it('give writers no way to point the trigger elsewhere or stand in for built-ins', async () => {
      const role = `hb_mallory_${randomBytes(4).toString('hex')}`;
      await withClient(db.url, async (c) => {
        await c.query(`create role ${role} login password 'pw'`);
        await c.query(`grant insert, select on articles to ${role}`);
        await c.query(`grant create on schema public to ${role}`);
      });
      const url = new URL(db.url);
      url.username = role;
      url.password = 'pw';
      const as = url.toString();
      try {
        expect(await failure(`select hookbridge.dblink_connect('hookbridge_filter', 'host=127.0.0.1 port=1')`, as)).toMatchObject({ code: '42501' });
        expect(await failure(`select hookbridge.filter_call('{}')`, as)).toMatchObject({ code: '42501' });
        const outcome = await withClient(as, async (c) => {
          // A look-alike of a built-in the trigger uses, in a schema the writer may create in.
          await c.query(`create function public.pg_get_userbyid(oid) returns name language sql as $$ select session_user $$`);
          await c.query(`set hookbridge.bypass = 'on'`);
          return c.query(`insert into articles (id, title) values (460, 'reject me')`).then(
            () => 'written',
            (e: pg.DatabaseError) => e.code,
          );
        });
        expect(outcome).toBe('HB400');
      } finally {
        await withClient(db.url, async (c) => {
          await c.query(`drop function if exists public.pg_get_userbyid(oid)`);
          await c.query(`revoke create on schema public from ${role}`);
          await c.query(`reassign owned by ${role} to postgres`);
          await c.query(`drop owned by ${role}`);
          await c.query(`drop role ${role}`);
        });
      }
    });

    it('leave tables without filters alone', async () => {
      await withClient(db.url, (c) => c.query(`insert into untouched values (1)`));
      expect(await rows(`select count(*)::int as n from pg_trigger where tgrelid = 'untouched'::regclass`)).toEqual([{ n: 0 }]);
    });
  });
}
