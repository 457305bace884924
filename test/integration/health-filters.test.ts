/**
 * `/health` says 503 when writers cannot reach the bridge for filter calls (issue 14): the direct
 * transport's filter server stops taking connections while the bridge runs, and the probe's finding
 * (within its 5 s beat) reaches /health, served by its own thread.
 */
import { createServer, Server, type AddressInfo } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
let tb: TestBridge;
let filterPort: number;

const extensions = {
  'hooks/stamp/index.js': `module.exports = ({ filter }) => { filter('notes.items.create', (payload) => ({ ...payload, title: payload.title + '!' })); };`,
};

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

beforeAll(async () => {
  await withClient(db.url, (c) => c.query(`create table notes (id serial primary key, title text not null)`));
  filterPort = await freePort();
  tb = await startTestBridge(db.url, extensions, { filterTransport: 'direct', filterPort, filterTimeoutMs: 1500 });
});

afterAll(async () => {
  await tb?.dispose();
});

async function health(): Promise<{ status: number; body: Record<string, any> }> {
  const response = await fetch(`http://127.0.0.1:${String(tb.bridge.httpPort)}/health`, { signal: AbortSignal.timeout(10_000) });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

const insert = (title: string) =>
  withClient(db.url, async (c) => (await c.query<{ title: string }>(`insert into notes (title) values ($1) returning title`, [title])).rows[0]?.title);

it('answers 503 once the filter server takes no new connections, naming why', async () => {
  expect(await insert('hello')).toBe('hello!');
  expect(await health()).toMatchObject({ status: 200, body: { status: 'ok', filters: { transport: 'direct', reachable: true } } });
  // A writer's session that keeps its connection to the filter server.
  const held = new pg.Client({ connectionString: db.url });
  await held.connect();
  try {
    await held.query(`insert into notes (title) values ('held')`);

    // The filter server stops taking connections inside a living process. The one it has stays:
    // the session holding it still gets answers, new writers' sessions cannot reach it, and the
    // probe must find it as a new writer would.
    const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
    const listener = handles.find((h): h is Server => h instanceof Server && (h.address() as AddressInfo | null)?.port === filterPort);
    expect(listener).toBeDefined();
    listener!.close();
    expect((await held.query<{ title: string }>(`insert into notes (title) values ('still') returning title`)).rows[0]?.title).toBe('still!');
    await expect(insert('after')).rejects.toThrow(/bridge/i);

    const unhealthy = await waitFor(
      async () => {
        const answer = await health();
        return answer.status === 503 ? answer : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 250, message: '/health never said 503 with the filter server taking no connections' },
    );
    expect(unhealthy.body).toMatchObject({
      status: 'unavailable',
      reason: expect.stringMatching(/writers cannot reach this bridge for filter calls/),
      filters: { reachable: false, problem: expect.any(String) },
    });
  } finally {
    await held.end();
  }
});
