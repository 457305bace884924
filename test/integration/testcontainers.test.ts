/**
 * Postgres in a container, the bridge on this host (issue 17): what changes when the database sits in
 * another network namespace. It cannot reach the host's loopback, so FILTER_TRANSPORT=auto must fall
 * back to the notify transport; the direct transport works once the bridge listens where the server
 * can reach it; a restarted container loses no change; and `hookbridge/testing` starts a container of
 * its own. Runs with HOOKBRIDGE_TEST_PG=testcontainers (`npm run test:testcontainers`), else skipped.
 */
import { createServer } from 'node:net';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { startTestBridge as startHookbridgeTesting } from '../../bridge/testing.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { createTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';
import { postgresCommand, testPgImage, THROWAWAY_INITDB } from '../support/testcontainers.js';

const inContainer = inject('hookbridgeTestPg').source === 'testcontainers';

const slugs = `
  module.exports = ({ filter, action }) => {
    filter('notes.items.create', (p) => ({ ...p, slug: String(p.title).toLowerCase().replace(/[^a-z0-9]+/g, '-') }));
    action('notes.items.create', ({ key }) => { (globalThis.__containerSeen ??= []).push(String(key)); });
  };`;
const seen = (): string[] => ((globalThis as Record<string, unknown>)['__containerSeen'] as string[] | undefined) ?? [];

async function withDatabase(label: string, fn: (url: string) => Promise<void>): Promise<void> {
  const db = await createTestDatabase(label);
  try {
    await withClient(db.url, (c) => c.query('create table notes (id bigserial primary key, title text not null, slug text)'));
    await fn(db.url);
  } finally {
    await db.drop();
  }
}

async function insertNote(url: string, title: string): Promise<{ id: string; slug: string }> {
  return withClient(url, async (c) => {
    const { rows } = await c.query<{ id: string; slug: string }>('insert into notes (title) values ($1) returning id, slug', [title]);
    return rows[0]!;
  });
}

/** The address the database server sees this host's connections come from: it routes back to us. */
async function addressSeenByServer(url: string): Promise<string> {
  return withClient(url, async (c) => (await c.query<{ addr: string }>('select host(inet_client_addr()) as addr')).rows[0]!.addr);
}

describe.skipIf(!inContainer)('Postgres in a container (HOOKBRIDGE_TEST_PG=testcontainers only)', () => {
  it('is another host: the server sees the bridge come from the container network, not from its own loopback', async () => {
    await withDatabase('seen_from', async (url) => {
      const addr = await addressSeenByServer(url);
      expect(addr).not.toMatch(/^(127\.|::1$)/);
    });
  });

  it("asks other hosts for the password (the official image's pg_hba), and refuses a wrong one", async () => {
    const url = new URL(inject('hookbridgeTestPg').adminUrl);
    url.password = 'not-the-password';
    const error = await withClient(url.toString(), (c) => c.query('select 1')).then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    );
    expect(error?.code).toBe('28P01');
  });

  it('FILTER_TRANSPORT=auto chooses notify, since the server cannot reach the bridge on the host loopback', async () => {
    await withDatabase('auto_notify', async (url) => {
      let tb: TestBridge | undefined;
      try {
        // Defaults: the filter server listens on 127.0.0.1, and tells triggers to call 127.0.0.1, the container's own.
        tb = await startTestBridge(url, { 'hooks/slugs/index.js': slugs }, { filterTransport: 'auto' });
        expect(tb.bridge.filters?.transport).toBe('notify');
        const fallback = tb.log.lines().find((l) => l['msg'] === 'the database cannot reach the bridge directly: using the notify transport');
        expect(fallback?.['reason']).toEqual(expect.any(String));

        const note = await insertNote(url, 'Hello, Container!');
        expect(note.slug).toBe('hello-container-');
        await waitFor(() => seen().includes(note.id), { message: 'the action for the note never ran' });
      } finally {
        await tb?.dispose();
      }
    });
  });

  it('the direct transport works when the bridge listens on the address the server sees it from (the network gateway)', async () => {
    await withDatabase('gateway_direct', async (url) => {
      const gateway = await addressSeenByServer(url);
      let tb: TestBridge | undefined;
      try {
        tb = await startTestBridge(
          url,
          { 'hooks/slugs/index.js': slugs },
          {
            filterTransport: 'auto',
            filterListenHost: gateway,
            filterCallbackHost: gateway,
          },
        );
        expect(tb.bridge.filters?.transport).toBe('direct');
        const endpoint = await withClient(url, async (c) => (await c.query<{ transport: string }>('select transport from hookbridge.filter_endpoint')).rows);
        expect(endpoint).toEqual([{ transport: 'direct' }]);
        // A writer in the container called back through the gateway (the only way the slug gets set).
        expect((await insertNote(url, 'Through The Gateway')).slug).toBe('through-the-gateway');
      } finally {
        await tb?.dispose();
      }
    });
  });

  it('loses no committed change when the Postgres container restarts under a running bridge, and filters again after', async () => {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    // A fixed host port: after a restart, an ephemeral one would change under the bridge's DATABASE_URL.
    const port = await freePort();
    const container = await new PostgreSqlContainer(testPgImage())
      .withExposedPorts({ container: 5432, host: port })
      .withEnvironment(THROWAWAY_INITDB)
      .withCommand(postgresCommand({ wal_level: 'logical', max_wal_senders: 10, max_replication_slots: 10 }))
      .start();
    let tb: TestBridge | undefined;
    try {
      const url = container.getConnectionUri();
      await withClient(url, (c) => c.query('create table notes (id bigserial primary key, title text not null, slug text)'));
      tb = await startTestBridge(url, { 'hooks/slugs/index.js': slugs }, { filterTimeoutMs: 2000 });
      expect(tb.bridge.filters?.transport).toBe('notify');

      const before = await writeNotes(url, 'before', 50);
      await container.restart();
      expect(container.getMappedPort(5432)).toBe(port);
      const after = await waitFor(() => writeNotes(url, 'after', 50), {
        timeoutMs: 60_000,
        intervalMs: 500,
        message: 'writes (through the filter) never succeeded after the restart',
      });
      expect(after.every((n) => n.slug.startsWith('after-'))).toBe(true);
      const committed = [...before, ...after].map((n) => n.id);
      await waitFor(() => committed.every((id) => seen().includes(id)), {
        timeoutMs: 60_000,
        message: () => `actions missing for ${committed.filter((id) => !seen().includes(id)).length} of ${committed.length} committed rows`,
      });
    } finally {
      await tb?.dispose();
      await container.stop();
    }
  }, 180_000);

  it('hookbridge/testing: startTestBridge({ postgres: "testcontainers", image }) runs Postgres in a container of its own', async () => {
    const hb = await startHookbridgeTesting({
      postgres: 'testcontainers',
      image: testPgImage(),
      extensions: { 'hooks/slugs/index.js': slugs },
      setup: (url) => withClient(url, (c) => c.query('create table notes (id bigserial primary key, title text not null, slug text)')).then(() => undefined),
    });
    const url = hb.url;
    try {
      expect(hb.postgres).toBe('testcontainers');
      expect(hb.bridge.filters?.transport).toBe('notify');
      const note = await insertNote(url, 'From The Helper');
      expect(note.slug).toBe('from-the-helper');
      await waitFor(() => seen().includes(note.id), { message: 'the action for the note never ran' });
    } finally {
      await hb.stop();
    }
    // stop() removed the container, and its port with it.
    await expect(withClient(url, (c) => c.query('select 1'))).rejects.toThrow();
  }, 120_000);
});

// With or without Docker: an image that cannot be had (no engine, or nothing to pull it from) is a clear error.
it('hookbridge/testing: a container that cannot start is an E_TESTCONTAINERS error naming the image and the way out', async () => {
  const image = 'localhost:1/hookbridge-test-missing:never';
  const error = await startHookbridgeTesting({ postgres: 'testcontainers', image }).then(
    async (hb) => {
      await hb.stop();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(error).toMatchObject({ code: 'E_TESTCONTAINERS', message: expect.stringContaining(image) });
  expect((error as Error).message).toContain('postgres: "embedded"');
});

async function writeNotes(url: string, prefix: string, count: number): Promise<Array<{ id: string; slug: string }>> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const written: Array<{ id: string; slug: string }> = [];
    for (let i = 0; i < count; i += 1) {
      const { rows } = await client.query<{ id: string; slug: string }>('insert into notes (title) values ($1) returning id, slug', [`${prefix} ${i}`]);
      written.push(rows[0]!);
    }
    return written;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
