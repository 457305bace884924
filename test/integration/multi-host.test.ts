/**
 * Several hosts in DATABASE_URL, against real servers: sessions go to the writable one, follow it when
 * the roles swap (the old primary back as a read-only server), are not held up by a host that accepts
 * connections and never answers, and a session pg gave up on is never opened later.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtemp, chmod, rm } from 'node:fs/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { connectionFromUrl } from '../../bridge/multi-host.js';
import { testPgBin } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const info = inject('hookbridgeTestPg');

/** Accepts TCP connections and never says a word (a dead server behind a live proxy, a black hole). */
async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function hostList(url: string, hosts: Array<{ port: number }>): string {
  const u = new URL(url);
  return `postgres://${u.username}:${u.password}@${hosts.map((h) => `127.0.0.1:${h.port}`).join(',')}${u.pathname}`;
}

async function serverPort(config: pg.ClientConfig): Promise<number> {
  const client = new pg.Client(config);
  await client.connect();
  try {
    return Number((await client.query<{ port: string }>(`select current_setting('port') as port`)).rows[0]?.port);
  } finally {
    await client.end();
  }
}

describe.skipIf(info.source !== 'embedded')('several hosts in DATABASE_URL', () => {
  // Two servers of this test's own: it makes them read-only in turn, which the shared one must never be.
  const servers: EmbeddedPostgres[] = [];
  let root: string;
  let url: (ports: number[]) => string;

  beforeAll(async () => {
    root = await mkdtemp(join(fileURLToPath(new URL('../../.hookbridge/', import.meta.url)), 'multi-host-'));
    await chmod(root, 0o755);
    for (const name of ['a', 'b']) servers.push(await startEmbeddedPostgres({ binDir: testPgBin(), dataDir: join(root, name), persistent: false }));
    const [a, b] = servers as [EmbeddedPostgres, EmbeddedPostgres];
    // One password for both, so one URL reaches either.
    await withClient(b.url, (c) => c.query(`alter role postgres password ${pg.escapeLiteral(decodeURIComponent(new URL(a.url).password))}`));
    url = (ports) =>
      hostList(
        a.url,
        ports.map((port) => ({ port })),
      );
  });

  afterAll(async () => {
    for (const server of servers) await server.stop();
    await rm(root, { recursive: true, force: true });
  });

  const setReadOnly = (port: number, on: boolean) =>
    withClient(url([port]), async (c) => {
      await c.query(`alter system set default_transaction_read_only = ${on ? 'on' : 'off'}`);
      await c.query('select pg_reload_conf()');
    });

  it('goes to the writable server, and follows it when the roles swap', async () => {
    const [a, b] = servers as [EmbeddedPostgres, EmbeddedPostgres];
    await setReadOnly(b.port, true);
    const config = connectionFromUrl(url([b.port, a.port]), { recheckMs: 0 });
    expect(await serverPort(config)).toBe(a.port);

    // A switchover: the first becomes read-only (as an old primary back as a standby), the other writable.
    await setReadOnly(a.port, true);
    await setReadOnly(b.port, false);
    await waitFor(async () => (await serverPort(config)) === b.port, { timeoutMs: 10_000, message: 'sessions never moved to the new writable server' });
    await setReadOnly(a.port, false);
  });

  it('is not held up by a host that accepts connections and never answers', async () => {
    const silent = await silentServer();
    try {
      const config = connectionFromUrl(url([silent.port, servers[0]!.port]), { probeTimeoutMs: 500 });
      const started = Date.now();
      expect(await serverPort(config)).toBe(servers[0]!.port);
      // Bounded by the probe's timeout, not by TCP's (minutes) or the silent server's (never).
      expect(Date.now() - started).toBeLessThan(30_000);
    } finally {
      await silent.close();
    }
  });

  it('never opens a session that pg already gave up on (its connection timeout)', async () => {
    const silent = await silentServer();
    const application = `hb_zombie_${Date.now()}`;
    try {
      const config = connectionFromUrl(url([silent.port, servers[0]!.port]), { probeTimeoutMs: 1_500 });
      const client = new pg.Client({ ...config, connectionTimeoutMillis: 200, application_name: application });
      client.on('error', () => undefined);
      await expect(client.connect()).rejects.toThrow(/timeout/i);
      // The probe finds the writable server after the timeout; a second session waits for that same answer,
      // so once it is in, the abandoned socket has had its turn, and must have stayed closed.
      const after = new pg.Client({ ...config, application_name: `${application}_after` });
      await after.connect();
      try {
        const { rows } = await after.query<{ n: number }>('select count(*)::int as n from pg_stat_activity where application_name = $1', [application]);
        expect(rows[0]?.n).toBe(0);
      } finally {
        await after.end();
      }
    } finally {
      await silent.close();
    }
  });
});
