/**
 * `/health` answers promptly in every state and tells the truth (issue 14): while a hook blocks the
 * main thread's event loop it answers 503 from its own thread, and 200 again once the loop runs; the
 * port also keeps serving /metrics and the routes init hooks add (passed on to the main thread).
 * A real bridge process: the HTTP port is the CLI's.
 */
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

it('passes other requests to the main thread: init hooks\' routes (body, client address) and /metrics', async () => {
  const response = await fetch(`${base}/custom/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: [1, 'two'] }) });
  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({ body: { a: [1, 'two'] }, ip: expect.stringMatching(/^(::ffff:)?127\.0\.0\.1$/), protocol: 'http' });
  const metrics = await fetch(`${base}/metrics`);
  expect(metrics.status).toBe(200);
  expect(await metrics.text()).toMatch(/hookbridge_/);
  expect((await fetch(`${base}/nothing-here`)).status).toBe(404);
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
