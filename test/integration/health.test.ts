/**
 * `/health` answers promptly in every state and tells the truth (issue 14): while a hook blocks the
 * main thread's event loop it answers 503 from its own thread, and 200 again once the loop runs; the
 * port also keeps serving /metrics and the routes init hooks add (passed on to the main thread).
 * A real bridge process: the HTTP port is the CLI's.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dropTestSlot } from '../support/bridge.js';
import { startCli, type RunningCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const SLOT = 'hb_health';
let cli: RunningCli;
let dir: { path: string; remove(): Promise<void> };
let base: string;
let staleDir: string;

// An action handler that keeps the main thread busy for 4 s, and routes of an init hook.
const spin = `
  module.exports = ({ action, init }) => {
    action('jobs.items.create', ({ payload }) => {
      const until = Date.now() + payload.spin_ms;
      while (Date.now() < until) {}
    });
    init('routes.custom.before', ({ app }) => {
      app.post('/custom/echo', (req, res) => res.json({ body: req.body, ip: req.ip, protocol: req.protocol }));
    });
  };`;

beforeAll(async () => {
  await withClient(db.url, (c) => c.query(`create table jobs (id serial primary key, spin_ms int not null)`));
  dir = await tempDir();
  await writeTree(dir.path, { 'hooks/spin/index.js': spin });
  // The socket folder a bridge killed with SIGKILL left: the next start removes it.
  const gone = spawnSync(process.execPath, ['-e', '']).pid as number;
  staleDir = join(tmpdir(), `hookbridge-http-${gone}-stale`);
  await mkdir(staleDir, { mode: 0o700 });
  cli = startCli(['start', '-e', dir.path], { env: { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: SLOT } });
  await cli.waitForLog('ready');
  base = `http://127.0.0.1:${String((await cli.waitForLog('http listening'))['port'])}`;
});

afterAll(async () => {
  if (cli) expect(await cli.stop('SIGTERM')).toBe(0);
  await dropTestSlot(db.url, SLOT);
  await dir?.remove();
});

/** One /health request, with how long it took to answer. */
async function health(): Promise<{ status: number; body: Record<string, any>; ms: number }> {
  const started = Date.now();
  const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(10_000) });
  const body = (await response.json()) as Record<string, any>;
  return { status: response.status, body, ms: Date.now() - started };
}

it('removed the socket folder a bridge that is gone left behind', async () => {
  expect(existsSync(staleDir)).toBe(false);
});

it('answers 200 with the report, its event loop part included', async () => {
  const { status, body } = await health();
  expect(status).toBe(200);
  expect(body).toMatchObject({
    status: 'ok',
    reason: null,
    role: 'leader',
    replication: { streaming: true },
    filters: { reachable: true },
    extensions: { loaded: 1, failed: 0 },
    eventLoop: { blockedMs: expect.any(Number) },
  });
  expect(Object.keys(body)).toEqual(expect.arrayContaining(['status', 'role', 'leader', 'instance', 'replication', 'filters', 'extensions']));
});

it("passes other requests to the main thread: init hooks' routes (body, client address) and /metrics", async () => {
  const response = await fetch(`${base}/custom/echo`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ a: [1, 'two'] }),
  });
  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({ body: { a: [1, 'two'] }, ip: expect.stringMatching(/^(::ffff:)?127\.0\.0\.1$/), protocol: 'http' });
  const metrics = await fetch(`${base}/metrics`);
  expect(metrics.status).toBe(200);
  expect(await metrics.text()).toMatch(/hookbridge_/);
  expect((await fetch(`${base}/nothing-here`)).status).toBe(404);
});

it("never lets a client set its own address or scheme: forwarded headers are the proxy's, and an upgrade the app refuses ends the connection", async () => {
  // The client's own X-Forwarded-* do not make it local or https.
  const spoofed = await fetch(`${base}/custom/echo`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': '10.9.9.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example' },
    body: '{}',
  });
  expect(await spoofed.json()).toMatchObject({ ip: expect.stringMatching(/^(::ffff:)?127\.0\.0\.1$/), protocol: 'http' });
  // An upgrade the app does not switch for: its answer comes back, then the connection ends (the
  // review found it left a raw tunnel to the app, where a client wrote its own X-Forwarded-For).
  const { port } = new URL(base);
  const socket = connect(Number(port), '127.0.0.1');
  let received = '';
  socket.on('data', (chunk) => (received += chunk.toString('latin1')));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.write('GET /nope HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n');
  await waitFor(() => received.includes('\r\n\r\n'), { message: () => `no answer to the upgrade: ${received}` });
  socket.write('POST /custom/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-forwarded-for: 127.0.0.1\r\ncontent-length: 2\r\n\r\n{}');
  await closed;
  expect(received).toMatch(/^HTTP\/1\.1 404 /);
  expect(received).not.toContain('"ip"');
});

it('answers 503 within 1.5 s while an action handler blocks the event loop, and 200 once it runs again', async () => {
  await withClient(db.url, (c) => c.query(`insert into jobs (spin_ms) values (4000)`));
  const answers: Array<{ status: number; body: Record<string, any>; ms: number }> = [];
  const blocked = await waitFor(
    async () => {
      const answer = await health();
      answers.push(answer);
      return answer.status === 503 ? answer : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 100, message: () => `/health never said 503; answers: ${JSON.stringify(answers.map((a) => [a.status, a.ms]))}` },
  );
  expect(blocked.body).toMatchObject({ status: 'unavailable', reason: expect.stringMatching(/event loop blocked for \d+ ms/), role: 'leader' });
  expect(blocked.body['eventLoop'].blockedMs).toBeGreaterThanOrEqual(2_000);
  await waitFor(
    async () => {
      const answer = await health();
      answers.push(answer);
      return answer.status === 200;
    },
    { timeoutMs: 20_000, intervalMs: 100, message: '/health never said 200 again' },
  );
  // Every answer came promptly, the ones during the block included.
  expect(answers.filter((a) => a.ms > 1_500)).toEqual([]);
});
