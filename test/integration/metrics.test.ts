/**
 * What an operator reads on /metrics, from a running bridge: the stream is connected, what waits in
 * failed_events now (a gauge that goes down when events are replayed), how long handlers take and by
 * what outcome, how long after its commit a change reaches them, and how much WAL the slot holds and
 * may still hold before max_slot_wal_keep_size invalidates it.
 */
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../bridge/embedded-postgres.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { testPgBin, useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();

const seen: string[] = [];
(globalThis as Record<string, unknown>)['__metricsSeen'] = seen;
const slowCalls = { n: 0 };
(globalThis as Record<string, unknown>)['__metricsSlow'] = slowCalls;

const extensions = {
  'hooks/recorder/index.js': `
    module.exports = ({ action }) => {
      action('items.items.create', (meta) => { globalThis.__metricsSeen.push('items:' + meta.key); });
    };`,
  'hooks/broken/index.js': `
    module.exports = ({ action }) => {
      action('flaky.items.create', () => { throw new Error('downstream is down'); });
    };`,
  // Its first try outlives ACTION_TIMEOUT_MS (a timeout), its second is at once (ok).
  'hooks/slow/index.js': `
    module.exports = ({ action }) => {
      action('slow.items.create', async (meta) => {
        if (globalThis.__metricsSlow.n++ === 0) await new Promise((resolve) => setTimeout(resolve, 3000));
        globalThis.__metricsSeen.push('slow:' + meta.key);
      });
    };`,
};

interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** The samples of one series name in Prometheus' text format. */
function samplesOf(text: string, name: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labels = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1] as string, m[2] as string]));
    samples.push({ labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample of `name` whose labels include `labels`; undefined when there is none. */
function valueOf(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const matching = samplesOf(text, name).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (matching.length > 1) throw new Error(`${name} ${JSON.stringify(labels)}: ${matching.length} samples`);
  return matching[0]?.value;
}

describe('metrics of a running bridge', () => {
  let tb: TestBridge;
  const scrape = () => tb.bridge.metrics.registry.metrics();

  beforeAll(async () => {
    await withClient(db.url, async (c) => {
      await c.query(`create table items (id int primary key, title text)`);
      await c.query(`create table flaky (id int primary key)`);
      await c.query(`create table slow (id int primary key)`);
    });
    tb = await startTestBridge(db.url, extensions, { actionAttempts: 2, actionTimeoutMs: 1_000, env: {} });
  });

  afterAll(async () => {
    await tb?.dispose();
  });

  it('say the stream is connected, what is parked now, and how handlers did', async () => {
    await withClient(db.url, async (c) => {
      await c.query(`insert into items (id, title) values (1, 'a'), (2, 'b'), (3, 'c')`);
      await c.query(`insert into flaky (id) values (1)`);
      await c.query(`insert into slow (id) values (1)`);
    });
    await waitFor(() => seen.includes('slow:1') && seen.filter((s) => s.startsWith('items:')).length === 3, {
      timeoutMs: 30_000,
      message: () => `the handlers never ran: ${JSON.stringify(seen)}`,
    });
    const text = await waitFor(
      async () => {
        const text = await scrape();
        return valueOf(text, 'hookbridge_failed_events', { reason: 'handler_failed' }) === 1 ? text : undefined;
      },
      { timeoutMs: 30_000, message: 'the failing event was never parked (hookbridge_failed_events)' },
    );

    // The process' own metrics under their standard names, once.
    expect(valueOf(text, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(text).not.toMatch(/process_process|hookbridge_process_/);

    expect(valueOf(text, 'hookbridge_replication_connected')).toBe(1);
    expect(valueOf(text, 'hookbridge_failed_events', { reason: 'extension_not_loaded' })).toBe(0);
    expect(valueOf(text, 'hookbridge_parked_events_total', { extension: 'broken' })).toBe(1);

    const tries = (extension: string, collection: string, outcome: string) =>
      valueOf(text, 'hookbridge_action_handler_seconds_count', { extension, collection, action: 'create', outcome });
    expect(tries('recorder', 'items', 'ok')).toBe(3);
    expect(tries('broken', 'flaky', 'error')).toBe(2);
    expect(tries('slow', 'slow', 'timeout')).toBe(1);
    expect(tries('slow', 'slow', 'ok')).toBe(1);
    expect(
      valueOf(text, 'hookbridge_action_handler_seconds_bucket', { extension: 'slow', collection: 'slow', action: 'create', outcome: 'timeout', le: '0.5' }),
    ).toBe(0);
    expect(valueOf(text, 'hookbridge_action_handler_seconds_sum', { extension: 'slow', outcome: 'timeout' })).toBeGreaterThanOrEqual(0.9);

    // One observation per change that reached handlers: 3 items, 1 flaky, 1 slow.
    expect(valueOf(text, 'hookbridge_action_delay_seconds_count')).toBe(5);
    expect(valueOf(text, 'hookbridge_action_delay_seconds_bucket', { le: '+Inf' })).toBe(5);
    expect(valueOf(text, 'hookbridge_action_delay_seconds_sum')).toBeGreaterThanOrEqual(0);

    // The slot holds some WAL; the distance to invalidation only exists under max_slot_wal_keep_size.
    const retained = valueOf(text, 'hookbridge_slot_retained_wal_bytes', { slot_name: tb.slotName });
    expect(retained).toBeGreaterThanOrEqual(0);
    const limit = await withClient(db.url, async (c) => (await c.query<{ s: string }>(`select current_setting('max_slot_wal_keep_size') as s`)).rows[0]?.s);
    if (limit === '-1') expect(samplesOf(text, 'hookbridge_slot_safe_wal_bytes')).toEqual([]);
    else expect(valueOf(text, 'hookbridge_slot_safe_wal_bytes', { slot_name: tb.slotName })).toBeGreaterThan(0);
  }, 60_000);

  it('count parked events down when they are replayed (a gauge read from the database, not a counter)', async () => {
    await withClient(db.url, (c) => c.query(`update hookbridge.failed_events set replayed_at = now() where replayed_at is null`));
    const text = await scrape();
    expect(valueOf(text, 'hookbridge_failed_events', { reason: 'handler_failed' })).toBe(0);
    expect(valueOf(text, 'hookbridge_parked_events_total', { extension: 'broken' })).toBe(1);
  });

  it('say the stream is not connected once the bridge stopped, and leave out what they cannot read', async () => {
    await tb.stop();
    const text = await scrape();
    expect(valueOf(text, 'hookbridge_replication_connected')).toBe(0);
    expect(samplesOf(text, 'hookbridge_failed_events')).toEqual([]);
    expect(samplesOf(text, 'hookbridge_slot_retained_wal_bytes')).toEqual([]);
  });
});

describe('metrics of a slot under max_slot_wal_keep_size', () => {
  it('give the WAL retained and the distance to invalidation', async () => {
    const parent = fileURLToPath(new URL('../../.hookbridge/', import.meta.url));
    await mkdir(parent, { recursive: true });
    const dataDir = await mkdtemp(join(parent, 'metrics-'));
    // The embedded Postgres runs as the postgres OS user when tests run as root.
    await chmod(dataDir, 0o755);
    const server = await startEmbeddedPostgres({
      binDir: testPgBin(),
      dataDir: join(dataDir, 'pg'),
      persistent: false,
      settings: { max_slot_wal_keep_size: '1GB' },
    });
    let tb: TestBridge | undefined;
    try {
      await withClient(server.url, (c) => c.query(`create table items (id int primary key)`));
      tb = await startTestBridge(server.url, { 'hooks/recorder/index.js': extensions['hooks/recorder/index.js'] }, { env: {} });
      await withClient(server.url, (c) => c.query(`insert into items select g from generate_series(1, 1000) g`));
      const text = await tb.bridge.metrics.registry.metrics();
      const retained = valueOf(text, 'hookbridge_slot_retained_wal_bytes', { slot_name: tb.slotName });
      const safe = valueOf(text, 'hookbridge_slot_safe_wal_bytes', { slot_name: tb.slotName });
      expect(retained).toBeGreaterThan(0);
      expect(safe).toBeGreaterThan(0);
      // About the limit less what the slot holds (Postgres counts in whole segments).
      expect(safe).toBeLessThan(2 * 1024 ** 3);
    } finally {
      await tb?.dispose();
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
