/**
 * The CLI in scripts, through the built binary: stdout holds only what a command prints (logs go to
 * stderr), exit codes follow the README, failed starts and read-only commands leave the database as
 * they found it, commands against the embedded Postgres end cleanly.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closePool } from '../../bridge/database.js';
import { startEmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { migrate } from '../../bridge/migrate.js';
import { runCli, startCli } from '../support/cli.js';
import { createTestDatabase, testPgBin, useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { withClient } from '../support/helpers.js';

const examples = fileURLToPath(new URL('../../examples/extensions', import.meta.url));
const db = useTestDatabase();
const suffix = randomBytes(4).toString('hex');

/** What hookbridge left in a database: its schema, slots of this database, publications, triggers. */
async function leftovers(url: string): Promise<{ schemas: number; slots: number; publications: number; triggers: number }> {
  return withClient(url, async (c) => {
    const { rows } = await c.query(
      `select (select count(*) from pg_namespace where nspname = 'hookbridge')::int as schemas,
              (select count(*) from pg_replication_slots where database = current_database())::int as slots,
              (select count(*) from pg_publication)::int as publications,
              (select count(*) from pg_trigger where tgname like 'hookbridge%')::int as triggers`,
    );
    return rows[0];
  });
}

const NOTHING = { schemas: 0, slots: 0, publications: 0, triggers: 0 };

/** Runs `work` with a URL for a new role of these attributes (`login replication`, ...), dropped after. */
async function asRole(name: string, attributes: string, work: (url: string, role: string, password: string) => Promise<void>): Promise<void> {
  const role = `hb_cli_${name}_${suffix}`;
  const password = randomBytes(12).toString('hex');
  await withClient(db.url, (c) => c.query(`create role ${role} ${attributes} password '${password}'`));
  try {
    const url = new URL(db.url);
    url.username = role;
    url.password = password;
    await work(url.toString(), role, password);
  } finally {
    await withClient(db.url, async (c) => {
      await c.query(`drop owned by ${role}`);
      await c.query(`drop role ${role}`);
    });
  }
}

describe('usage errors exit 2', () => {
  it.each([
    ['an unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
    ['an unknown option', ['status', '--frobnicate'], /unknown option '--frobnicate'/],
    ['init without a name', ['init'], /missing required argument 'name'/],
    ['no command at all', [], /Usage: hookbridge/],
    ['uninstall without --yes', ['uninstall'], /uninstall needs --yes: it would remove schema "hookbridge".*slot "hookbridge"/],
  ])('%s', async (_what, args, message) => {
    const result = await runCli(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
  });

  it('--help and --version exit 0', async () => {
    expect((await runCli(['--version'])).code).toBe(0);
    expect((await runCli(['failed', 'list', '--help'])).code).toBe(0);
  });
});

describe('bad configuration exits 2, naming the setting', () => {
  it('a malformed DATABASE_URL, never echoing it', async () => {
    for (const url of ['postgres://app:s3cret-pass@db:port/app', 'postgres://app:s3cret-pass@[db/app']) {
      for (const command of [['start'], ['status'], ['failed', 'list', '--json']]) {
        const result = await runCli(command, { env: { DATABASE_URL: url } });
        expect(result.code, `${command.join(' ')} with ${url}`).toBe(2);
        expect(result.stderr).toMatch(/^hookbridge: DATABASE_URL: is not a valid URL \(the form is postgres:\/\/user:password@host:port\/database/);
        expect(result.stderr + result.stdout).not.toContain('s3cret-pass');
      }
    }
  });

  it('a PORT that is no number says what it got', async () => {
    const env = await runCli(['start'], { env: { DATABASE_URL: db.url, PORT: 'abc' } });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/PORT: expected an integer from 0 to 65535, got "abc"/);
    const flag = await runCli(['start', '-p', '80x'], { env: { DATABASE_URL: db.url } });
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/PORT: expected an integer from 0 to 65535, got "80x"/);
  });

  it('a busy PORT is found before anything is set up', async () => {
    const busy = await listening();
    try {
      const port = (busy.address() as { port: number }).port;
      const result = await runCli(['start', '-e', examples], { env: { DATABASE_URL: db.url, PORT: String(port) } });
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(new RegExp(`PORT: 127\\.0\\.0\\.1:${port} is already in use`));
      // Only the error line: no log line of a start that went on.
      expect(result.stdout).toBe('');
      expect(await leftovers(db.url)).toEqual(NOTHING);
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });
});

describe('failed starts and read-only commands leave the database as it was', () => {
  it('read-only commands install nothing, and say so', async () => {
    const env = { DATABASE_URL: db.url };
    const list = await runCli(['failed', 'list'], { env });
    expect(list).toMatchObject({ code: 0, stdout: 'no failed events: hookbridge is not installed in this database (no bridge has started here)\n' });
    expect(JSON.parse((await runCli(['failed', 'list', '--json'], { env })).stdout)).toEqual([]);
    const status = await runCli(['status', '--json', '-e', examples], { env });
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ installed: false, slot: { exists: false }, failedEvents: 0 });
    expect((await runCli(['status'], { env })).stdout).toMatch(/^hookbridge schema: not installed$/m);
    expect((await runCli(['failed', 'replay'], { env })).stdout).toMatch(/^nothing to replay: hookbridge is not installed/);
    const forget = await runCli(['forget', 'mailer'], { env });
    expect(forget.code).toBe(1);
    expect(forget.stderr).toMatch(/hookbridge is not installed in this database/);
    await runCli(['doctor', '--json'], { env });
    expect(await leftovers(db.url)).toEqual(NOTHING);
  });

  it('a slot of another database stops the start before the schema is installed', async () => {
    const other = await createTestDatabase('cli_other_slot');
    const slot = `hb_cli_other_${suffix}`;
    try {
      await withClient(other.url, (c) => c.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]));
      const result = await runCli(['start', '-e', examples], { env: { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: slot, PORT: '0' } });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`hookbridge: The replication slot "${slot}" belongs to database "${other.name}"`));
      expect(await leftovers(db.url)).toEqual(NOTHING);
    } finally {
      await withClient(other.url, (c) => c.query(`select pg_drop_replication_slot($1)`, [slot]));
      await other.drop();
    }
  });

  it('a role that may not replicate stops the start before the schema is installed (the replication preflight runs first)', async () => {
    await asRole('norepl', 'login', async (url, role, password) => {
      const result = await runCli(['start', '-e', examples], { env: { DATABASE_URL: url, PORT: '0' } });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`The role "?${role}"? may not use replication`));
      expect(result.stderr + result.stdout).not.toContain(password);
      expect(await leftovers(db.url)).toEqual(NOTHING);
    });
  });
});

describe('--json output is machine-readable', () => {
  it('logs go to stderr, whatever the log level', async () => {
    const extensions = await runCli(['extensions', '--json', '-e', examples], { env: { LOG_LEVEL: 'debug', LOG_FORMAT: 'json' } });
    expect(extensions.code).toBe(0);
    expect(JSON.parse(extensions.stdout).loaded.length).toBeGreaterThan(0);
    expect(extensions.stderr).toMatch(/"msg":"extension loaded"/);
    for (const command of [
      ['status', '--json'],
      ['doctor', '--json'],
      ['failed', 'list', '--json'],
    ]) {
      const result = await runCli([...command, '-e', examples], { env: { DATABASE_URL: db.url, LOG_LEVEL: 'trace' } });
      expect(() => JSON.parse(result.stdout), `${command.join(' ')}: ${result.stdout}`).not.toThrow();
    }
  });
});

describe('the init template', () => {
  it('scopes its hooks to one table', async () => {
    const dir = await tempDir();
    try {
      expect((await runCli(['init', 'my-hook', '-e', dir.path])).code).toBe(0);
      const listed = await runCli(['extensions', '--json', '-e', dir.path]);
      expect(JSON.parse(listed.stdout).loaded).toEqual([
        expect.objectContaining({ name: 'my-hook', events: ['filter articles.items.create', 'action articles.items.create'] }),
      ]);
    } finally {
      await dir.remove();
    }
  });
});

describe('extensions that do not load', () => {
  it('a parse error names file, line and column', async () => {
    const dir = await tempDir();
    try {
      await writeTree(dir.path, {
        'hooks/broken/index.js': `module.exports = ({ action }) => {\n  action('items.create', () => {\n    const x = ;\n  });\n};\n`,
      });
      const result = await runCli(['extensions', '-e', dir.path]);
      expect(result.code).toBe(1);
      expect(result.stdout).toContain(`E_EXTENSION_LOAD: cannot load ${join(dir.path, 'hooks/broken/index.js')}: `);
      expect(result.stdout).toMatch(new RegExp(`Unexpected token.*\\(${escape(join(dir.path, 'hooks/broken/index.js'))}:3:\\d+\\)`));
    } finally {
      await dir.remove();
    }
  });
});

describe('commands against the embedded Postgres', () => {
  let dataDir: string;
  let extensions: { path: string; remove(): Promise<void> };

  beforeAll(async () => {
    const parent = fileURLToPath(new URL('../../.hookbridge/', import.meta.url));
    await mkdir(parent, { recursive: true });
    dataDir = await mkdtemp(join(parent, 'cli-scripting-'));
    // mkdtemp makes it 0700; when tests run as root, Postgres runs as the postgres user and must get in.
    await chmod(dataDir, 0o755);
    // hookbridge installed, one parked event: what a bridge that ran here leaves.
    const server = await startEmbeddedPostgres({ binDir: testPgBin(), dataDir, persistent: true });
    try {
      const pool = new pg.Pool({ connectionString: server.url, max: 1 });
      await migrate(pool, { schema: 'hookbridge' });
      await pool.query(
        `insert into hookbridge.failed_events (event_id, extension, event, collection, action, meta, error, attempts)
         values ('0/1:0', 'mailer', 'orders.items.create', 'orders', 'create', '{"key": 7}', '{"message": "smtp down"}', 5)`,
      );
      await closePool(pool);
    } finally {
      await server.stop();
    }
    extensions = await tempDir();
    await writeTree(extensions.path, { 'hooks/mailer/index.js': `module.exports = ({ action }) => { action('orders.items.create', () => {}); };` });
  });

  afterAll(async () => {
    await extensions?.remove();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('end with their own exit code and nothing but their output, run after run', async () => {
    const env = { HOOKBRIDGE_DATA_DIR: dataDir, EXTENSIONS_PATH: extensions.path };
    const replay = await runCli(['failed', 'replay'], { env, timeoutMs: 60_000 });
    expect(replay).toMatchObject({ code: 0, stderr: '' });
    expect(replay.stdout).toMatch(/^#\d+ replayed\n$/);
    for (let round = 0; round < 2; round++) {
      const list = await runCli(['failed', 'list', '--all', '--json'], { env: { ...env, LOG_LEVEL: 'info' }, timeoutMs: 60_000 });
      expect(list.code).toBe(0);
      expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ extension: 'mailer', replayedAt: expect.any(String) })]);
      // The embedded server's start, at info: on stderr, one line each, no stack.
      expect(list.stderr).toMatch(/"msg":"no DATABASE_URL: starting an embedded Postgres"/);
      expect(list.stderr).not.toMatch(/\n\s+at /);
      expect(await runCli(['failed', 'list'], { env, timeoutMs: 60_000 })).toMatchObject({ code: 0, stdout: 'no failed events\n', stderr: '' });
      expect(await runCli(['failed', 'replay'], { env, timeoutMs: 60_000 })).toMatchObject({ code: 0, stdout: 'nothing to replay\n', stderr: '' });
    }
  });
});

describe('closePool', () => {
  it('resolves once every connection of the pool has closed', async () => {
    const pool = new pg.Pool({ connectionString: db.url, max: 3 });
    let ended = 0;
    pool.on('connect', (client) => client.on('end', () => ended++));
    const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
    for (const client of clients) client.release();
    await closePool(pool);
    expect(ended).toBe(3);
  });
});

function listening(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('doctor says what a start will need', () => {
  it("a role that may not create the schema: the statement that makes it, before dblink's (which needs it)", async () => {
    await asRole('nocreate', 'login replication', async (url, role) => {
      const result = await runCli(['doctor', '--json'], { env: { DATABASE_URL: url } });
      expect(result.code).toBe(1);
      const checks = JSON.parse(result.stdout) as Array<{ name: string; ok: boolean; fix?: string }>;
      expect(checks.find((c) => c.name === 'schema "hookbridge"')).toMatchObject({
        ok: false,
        fix: expect.stringContaining(`CREATE SCHEMA "hookbridge" AUTHORIZATION "${role}";`),
      });
      const dblink = checks.find((c) => c.name === 'dblink (filter hooks)');
      if (dblink && !dblink.ok)
        expect(dblink.fix).toContain(`CREATE SCHEMA IF NOT EXISTS "hookbridge" AUTHORIZATION "${role}"; CREATE EXTENSION dblink SCHEMA "hookbridge"`);
      expect(await leftovers(db.url)).toEqual(NOTHING);
    });
  });
});

describe('uninstall', () => {
  it('refuses while a bridge runs on the database, and removes everything once it stopped', async () => {
    const other = await createTestDatabase('cli_uninstall_running');
    const slot = `hb_cli_uninstall_${suffix}`;
    const env = { DATABASE_URL: other.url, HOOKBRIDGE_SLOT: slot };
    try {
      const bridge = startCli(['start', '-e', examples, '--demo'], { env });
      try {
        await bridge.waitForLog('ready');
        const refused = await runCli(['uninstall', '--yes'], { env });
        expect(refused.code).toBe(1);
        expect(refused.stderr).toMatch(/^hookbridge: 1 bridge\(s\) still run on this database: slot 0 \(.+\); stop them first \(SIGTERM\), then uninstall$/m);
        expect((await leftovers(other.url)).schemas).toBe(1);
      } finally {
        expect(await bridge.stop('SIGTERM')).toBe(0);
      }
      const done = await runCli(['uninstall', '--yes'], { env });
      expect(done.code).toBe(0);
      expect(await leftovers(other.url)).toEqual(NOTHING);
    } finally {
      await withClient(other.url, (c) => c.query(`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1`, [slot])).catch(
        () => undefined,
      );
      await other.drop();
    }
  }, 90_000);
});
