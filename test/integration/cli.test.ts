import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { LEADER_KEY, lockClassFor } from '../../bridge/filters/tickets.js';
import { migrate } from '../../bridge/migrate.js';
import { runCli, startCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { findPsql, withClient } from '../support/helpers.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

const examples = fileURLToPath(new URL('../../examples/extensions', import.meta.url));
const db = useTestDatabase();

describe('hookbridge CLI', () => {
  it('prints help for every command', async () => {
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/start \[options\]/);
    expect(top.stdout).toMatch(/extensions \[options\]/);
    const start = await runCli(['start', '--help']);
    expect(start.code).toBe(0);
    expect(start.stdout).toMatch(/--database-url <url>.*DATABASE_URL/s);
  });

  it('lists extensions and their events, and fails when one is broken', async () => {
    const ok = await runCli(['extensions', '--json', '-e', examples]);
    expect(ok.code).toBe(0);
    const report = JSON.parse(ok.stdout);
    expect(report.loaded.map((e: { name: string }) => e.name)).toContain('articles-validation');

    const dir = await tempDir();
    try {
      await writeTree(dir.path, { 'hooks/broken/index.js': `module.exports = ({ action }) => action('users.create', () => {});` });
      const broken = await runCli(['extensions', '-e', dir.path]);
      expect(broken.code).toBe(1);
      expect(broken.stdout).toContain(join(dir.path, 'hooks/broken/index.js'));
      expect(broken.stdout).toMatch(/E_EXTENSION_REGISTER: extension "broken": invalid event name "users.create"/);
    } finally {
      await dir.remove();
    }
  });

  it('scaffolds a hook that loads', async () => {
    const dir = await tempDir();
    try {
      const created = await runCli(['init', 'my-hook', '-e', dir.path]);
      expect(created.stdout).toContain(join(dir.path, 'hooks/my-hook/index.ts'));
      const listed = await runCli(['extensions', '--json', '-e', dir.path]);
      expect(JSON.parse(listed.stdout).loaded).toEqual([
        expect.objectContaining({ name: 'my-hook', events: ['filter articles.items.create', 'action articles.items.create'] }),
      ]);
      expect((await runCli(['init', 'my-hook', '-e', dir.path])).code).toBe(2);
    } finally {
      await dir.remove();
    }
  });

  it('refuses bad configuration with exit code 2, naming the setting and no secret', async () => {
    const mode = await runCli(['start'], { env: { FILTER_FAILURE_MODE: 'maybe' } });
    expect(mode.code).toBe(2);
    expect(mode.stderr).toMatch(/FILTER_FAILURE_MODE: expected one of closed, open, got "maybe"/);
    const url = await runCli(['start'], { env: { DATABASE_URL: 'mysql://root:s3cret-pass@db/app' } });
    expect(url.code).toBe(2);
    expect(url.stderr).toMatch(/DATABASE_URL: must be a postgres:\/\//);
    expect(url.stderr).not.toContain('s3cret-pass');
  });

  it('lists and replays parked events', async () => {
    const dir = await tempDir();
    try {
      const out = join(dir.path, 'replayed.json');
      await writeTree(dir.path, {
        'hooks/mailer/index.js': `
          const { writeFileSync } = require('node:fs');
          module.exports = ({ action }, { env }) => {
            action('orders.items.create', (meta, ctx) => writeFileSync(env.OUT, JSON.stringify({ meta, who: ctx.accountability })));
          };`,
      });
      const env = { DATABASE_URL: db.url, OUT: out, EXTENSIONS_PATH: dir.path };
      // Read-only: a database where no bridge started stays without hookbridge's schema.
      const absent = await runCli(['failed', 'list'], { env });
      expect(absent.stdout).toBe('no failed events: hookbridge is not installed in this database (no bridge has started here)\n');
      const pool = new pg.Pool({ connectionString: db.url, max: 1 });
      await migrate(pool, { schema: 'hookbridge' }).finally(() => pool.end());
      const empty = await runCli(['failed', 'list'], { env });
      expect(empty.stdout).toBe('no failed events\n');
      await withClient(db.url, (c) =>
        c.query(
          `insert into hookbridge.failed_events (event_id, extension, event, collection, action, meta, accountability, error, attempts)
           values ('0/1:0', 'mailer', 'orders.items.create', 'orders', 'create', '{"key": 7, "payload": {"id": 7}}',
                   '{"role": "shop"}', '{"message": "smtp down", "code": "INTERNAL"}', 5)`,
        ),
      );
      const listed = await runCli(['failed', 'list'], { env });
      expect(listed.stdout).toMatch(/#\d+ {2}orders\.items\.create {2}extension=mailer {2}event-id=0\/1:0 {2}attempts=5/);
      expect(listed.stdout).toMatch(/INTERNAL smtp down/);
      const replay = await runCli(['failed', 'replay'], { env });
      expect(replay.stdout).toMatch(/#\d+ replayed/);
      expect(replay.code).toBe(0);
      expect(JSON.parse(await readFile(out, 'utf8'))).toMatchObject({ meta: { key: 7, event: 'orders.items.create' }, who: { role: 'shop' } });
      expect((await runCli(['failed', 'list'], { env })).stdout).toBe('no failed events\n');
      expect((await runCli(['failed', 'list', '--all', '--json'], { env })).stdout).toMatch(/"replayedAt": "/);
    } finally {
      await dir.remove();
    }
  });

  it('exits 1 with a clear error when the database cannot be reached, without the password', async () => {
    const result = await runCli(['start'], { env: { DATABASE_URL: 'postgres://app:s3cret-pass@127.0.0.1:1/app' } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/hookbridge: .*ECONNREFUSED 127\.0\.0\.1:1/);
    expect(result.stderr + result.stdout).not.toContain('s3cret-pass');
  });

  it('starts against DATABASE_URL, logs ready without the password, stops cleanly on SIGTERM, and uninstalls', async () => {
    const env = { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: 'hb_cli_test' };
    await withClient(db.url, (c) => c.query(`create table articles (id serial primary key, title text, uuid uuid)`));
    const cli = startCli(['start', '-e', examples], { env });
    try {
      const ready = await cli.waitForLog('ready');
      expect(ready['extensions']).toBe(5);
      expect(ready['database']).toMatch(/^postgres:\/\/.*\*\*\*@/);
      const port = (await cli.waitForLog('http listening'))['port'];
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: 'ok', replication: { streaming: true }, filters: { triggersInSync: true } });
      await withClient(db.url, (c) => c.query(`insert into articles (title) values ('HelloWorld42')`));
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toMatch(/hookbridge_filter_call_seconds_count\{collection="articles",operation="INSERT",outcome="modified"\} 1/);
      expect(metrics).toMatch(/hookbridge_replication_lag_bytes \d+/);

      // The one bridge: slot 0, leading and serving; never its connection string.
      const running = await runCli(['status', '--json', '-e', examples], { env });
      expect(running.code).toBe(0);
      const { instances, staleInstances } = JSON.parse(running.stdout);
      expect(instances).toEqual([
        {
          slot: 0,
          role: 'leader',
          serving: true,
          starting: false,
          transport: expect.stringMatching(/^(direct|notify)$/),
          failureMode: 'closed',
          process: expect.stringMatching(new RegExp(`:${String(cli.child.pid)}$`)),
          http: `127.0.0.1:${String(port)}`,
          since: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
          backendPid: expect.any(Number),
        },
      ]);
      expect(staleInstances).toEqual([]);
      expect(JSON.parse(running.stdout).leaderLockHeldBy).toBeNull();
      expect(running.stdout).not.toMatch(/conninfo|password=/);
      const text = await runCli(['status', '-e', examples], { env });
      expect(text.stdout).toMatch(/^bridges: 1 running, 1 serving filter calls, leader: slot 0$/m);
      expect(text.stdout).toMatch(
        new RegExp(`^  slot 0: leader, serving, (direct|notify), [^,]+:${String(cli.child.pid)}, http 127\\.0\\.0\\.1:${String(port)}, since `, 'm'),
      );
      expect((await runCli(['doctor'], { env })).stdout).toMatch(/^✓ bridges on this database: 1 running, 1 serving filter calls, leader: slot 0$/m);
    } finally {
      expect(await cli.stop('SIGTERM')).toBe(0);
    }
    const password = new URL(db.url).password;
    if (password) expect(cli.output()).not.toContain(password);

    const statusRun = await runCli(['status', '--json', '-e', examples], { env });
    expect(statusRun.code).toBe(0);
    const report = JSON.parse(statusRun.stdout);
    expect(report).toMatchObject({ installed: true, slot: { name: 'hb_cli_test', exists: true, active: false } });
    expect(report.filterTriggers).toEqual([{ table: 'articles', operations: ['INSERT', 'UPDATE'] }]);
    expect(report.publications.hookbridge).toContain('public.articles');
    expect(report.extensions.loaded).toHaveLength(5);
    // Stopped: its row stays (until the slot is reused), marked gone.
    expect(report.instances).toEqual([]);
    expect(report.staleInstances).toEqual([expect.objectContaining({ slot: 0, process: expect.stringMatching(new RegExp(`:${String(cli.child.pid)}$`)) })]);
    expect((await runCli(['status', '-e', examples], { env })).stdout).toMatch(/^bridges: none running\n {2}slot 0: gone \(stale row\)/m);
    // A session that takes the leader lock (any role may take advisory locks) is named.
    await withClient(db.url, async (c) => {
      const { rows } = await c.query(`select pg_backend_pid() as pid, pg_advisory_lock($1, $2)`, [lockClassFor('hookbridge') + 2, LEADER_KEY]);
      const squatted = await runCli(['status', '--json', '-e', examples], { env });
      expect(JSON.parse(squatted.stdout)).toMatchObject({ instances: [], leaderLockHeldBy: rows[0].pid });
      const doctorSquatted = await runCli(['doctor'], { env });
      expect(doctorSquatted.stdout).toMatch(new RegExp(`✗ bridges on this database: none running; backend pid ${String(rows[0].pid)} holds the leader lock`));
      expect(doctorSquatted.code).toBe(1);
    });
    const doctorRun = await runCli(['doctor'], { env });
    expect(doctorRun.stdout).toMatch(/✓ wal_level: logical/);
    expect(doctorRun.stdout).toMatch(/✓ dblink \(filter hooks\): installed/);
    expect(doctorRun.stdout).toMatch(/✓ bridges on this database: none running/);
    expect(doctorRun.code).toBe(0);

    const dryRun = await runCli(['uninstall'], { env });
    expect(dryRun.code).toBe(2);
    expect(dryRun.stderr).toMatch(/uninstall needs --yes: it would remove .*slot "hb_cli_test"/);
    const removed = await runCli(['uninstall', '--yes'], { env });
    expect(removed.stderr).toBe('');
    expect(removed.code).toBe(0);
    await withClient(db.url, async (c) => {
      const left = await c.query(
        `select (select count(*) from pg_replication_slots where slot_name = 'hb_cli_test')::int as slots,
                (select count(*) from pg_publication)::int as publications,
                (select count(*) from pg_namespace where nspname = 'hookbridge')::int as schemas,
                (select count(*) from pg_trigger where tgname like 'hookbridge%')::int as triggers,
                (select count(*) from articles)::int as articles`,
      );
      expect(left.rows[0]).toEqual({ slots: 0, publications: 0, schemas: 0, triggers: 0, articles: 1 });
    });
  });

  it('starts an embedded Postgres (npm start: examples and demo tables), prints its URL, filters, and stops it all on SIGINT', async () => {
    const cwd = await mkdtemp(join(fileURLToPath(new URL('../../.hookbridge/', import.meta.url)), 'cli-'));
    // mkdtemp makes it 0700; when tests run as root, Postgres runs as the postgres user and must get in.
    await chmod(cwd, 0o755);
    const cli = startCli(['start', '-e', examples, '--demo'], { cwd });
    let url: string | undefined;
    try {
      await cli.waitForLog('ready', 120_000);
      url = /psql '(postgres:\/\/[^']+)'/.exec(cli.output())?.[1];
      expect(url).toBeDefined();
      const port = (await cli.waitForLog('http listening'))['port'];
      expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
      const psql = findPsql();
      const shortTitle = psql
        ? await run(psql, [url as string, '-c', `insert into articles (title) values ('short')`]).then(
            () => 'inserted',
            (e: { stderr: string }) => e.stderr,
          )
        : await withClient(url as string, (c) => c.query(`insert into articles (title) values ('short')`)).then(
            () => 'inserted',
            (e: Error) => e.message,
          );
      expect(shortTitle).toMatch(/Article title is too short/);
      await withClient(url as string, (c) => c.query(`insert into articles (title) values ('HelloWorld42')`));
      const { rows } = await withClient(url as string, (c) => c.query(`select uuid::text, current_setting('wal_level') as wal_level from articles`));
      expect(rows).toEqual([{ uuid: expect.stringMatching(/^[0-9a-f-]{36}$/), wal_level: 'logical' }]);
    } finally {
      expect(await cli.stop('SIGINT', 60_000)).toBe(0);
    }
    // Ctrl-C took the embedded server down with the bridge.
    await expect(withClient(url as string, (c) => c.query('select 1'))).rejects.toThrow(/ECONNREFUSED/);
    await rm(cwd, { recursive: true, force: true });
  });
});
