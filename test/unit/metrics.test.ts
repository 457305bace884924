import { readFile } from 'node:fs/promises';
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createMetrics, HotPathHistogram, type MetricsSources } from '../../bridge/metrics.js';

const sources = (more: Partial<MetricsSources> = {}): MetricsSources => ({ filterConnections: () => 0, replicationLag: async () => undefined, ...more });

/** The metric names a registry serves (from its `# TYPE` lines). */
const names = async (registry: Registry) => [...(await registry.metrics()).matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] as string);

/** The sample lines of one metric (no HELP/TYPE). */
const samples = async (registry: Registry, name: string) =>
  (await registry.metrics()).split('\n').filter((line) => line.startsWith(name) && /[ {]/.test(line.charAt(name.length)));

describe('metric names', () => {
  it("are hookbridge_* for the bridge's own and the standard process_* / nodejs_* for the process, never prefixed twice", async () => {
    const { registry } = createMetrics(sources());
    const all = await names(registry);
    expect(all).toContain('process_cpu_seconds_total');
    expect(all).toContain('process_resident_memory_bytes');
    expect(all).toContain('nodejs_eventloop_lag_seconds');
    expect(all.filter((n) => /process_process|hookbridge_process_|hookbridge_nodejs_/.test(n))).toEqual([]);
    expect(all.filter((n) => !/^(hookbridge|process|nodejs)_/.test(n))).toEqual([]);
    expect(all).toEqual(
      expect.arrayContaining([
        'hookbridge_action_events_total',
        'hookbridge_action_failures_total',
        'hookbridge_action_handler_seconds',
        'hookbridge_action_delay_seconds',
        'hookbridge_parked_events_total',
        'hookbridge_failed_events',
        'hookbridge_filter_call_seconds',
        'hookbridge_filter_unfiltered_total',
        'hookbridge_filter_connections',
        'hookbridge_replication_lag_bytes',
        'hookbridge_replication_connected',
        'hookbridge_slot_retained_wal_bytes',
        'hookbridge_slot_safe_wal_bytes',
        'hookbridge_instance_info',
      ]),
    );
  });

  it("are the ones the README's Metrics table lists, with their types", async () => {
    const { registry } = createMetrics(sources());
    const served = (await registry.getMetricsAsJSON()).filter((m) => m.name.startsWith('hookbridge_')).map((m) => `${m.name} ${String(m.type)}`);
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Metrics\n'), readme.indexOf('\n## ', readme.indexOf('\n## Metrics\n') + 1));
    const listed = [...section.matchAll(/^\| `(hookbridge_\w+)` \| (\w+) \|/gm)].map((m) => `${m[1]} ${m[2]}`);
    expect(listed.sort()).toEqual(served.sort());
  });

  it('are declared once per registry: two bridges in one process have registries of their own', () => {
    expect(() => {
      createMetrics(sources());
      createMetrics(sources());
    }).not.toThrow();
  });
});

describe('hookbridge_instance_info', () => {
  it('has one series, with the current slot and role, and none before the instance has a slot', async () => {
    let role: 'leader' | 'standby' = 'standby';
    let slot: number | undefined;
    const metrics = createMetrics(sources({ role: () => role, slot: () => slot }));
    const series = async () => (await metrics.instanceInfo.get()).values.map((v) => ({ labels: v.labels, value: v.value }));
    expect(await series()).toEqual([]);
    slot = 3;
    expect(await series()).toEqual([{ labels: { slot: '3', role: 'standby' }, value: 1 }]);
    role = 'leader';
    expect(await series()).toEqual([{ labels: { slot: '3', role: 'leader' }, value: 1 }]);
    expect(await metrics.registry.metrics()).toMatch(/^hookbridge_instance_info\{slot="3",role="leader"\} 1$/m);
  });
});

describe('values read at scrape time', () => {
  it('hookbridge_replication_connected follows the stream', async () => {
    let streaming = false;
    const { registry } = createMetrics(sources({ replicationStreaming: () => streaming }));
    expect(await samples(registry, 'hookbridge_replication_connected')).toEqual(['hookbridge_replication_connected 0']);
    streaming = true;
    expect(await samples(registry, 'hookbridge_replication_connected')).toEqual(['hookbridge_replication_connected 1']);
  });

  it('hookbridge_failed_events is what waits now (0 for a known reason with none), and absent when the database cannot say', async () => {
    let read: () => Promise<Record<string, number> | undefined> = async () => ({ handler_failed: 2 });
    const { registry } = createMetrics(sources({ failedEvents: () => read() }));
    expect(await samples(registry, 'hookbridge_failed_events')).toEqual([
      'hookbridge_failed_events{reason="handler_failed"} 2',
      'hookbridge_failed_events{reason="extension_not_loaded"} 0',
    ]);
    // Replayed: the gauge goes down (a counter would not).
    read = async () => ({});
    expect(await samples(registry, 'hookbridge_failed_events')).toEqual([
      'hookbridge_failed_events{reason="handler_failed"} 0',
      'hookbridge_failed_events{reason="extension_not_loaded"} 0',
    ]);
    read = async () => {
      throw new Error('connection refused');
    };
    expect(await samples(registry, 'hookbridge_failed_events')).toEqual([]);
  });

  it('the slot gauges: retained WAL always, the distance to invalidation only under max_slot_wal_keep_size, one read per scrape', async () => {
    let reads = 0;
    let safeBytes: number | undefined;
    let slot = true;
    const { registry } = createMetrics(
      sources({
        slotWal: async () => {
          reads += 1;
          return slot ? { slotName: 'hookbridge', retainedBytes: 4096, safeBytes } : undefined;
        },
      }),
    );
    expect(await samples(registry, 'hookbridge_slot_retained_wal_bytes')).toEqual(['hookbridge_slot_retained_wal_bytes{slot_name="hookbridge"} 4096']);
    expect(await samples(registry, 'hookbridge_slot_safe_wal_bytes')).toEqual([]);
    reads = 0;
    safeBytes = 1_000_000;
    const text = await registry.metrics();
    expect(reads).toBe(1);
    expect(text).toMatch(/^hookbridge_slot_safe_wal_bytes\{slot_name="hookbridge"\} 1000000$/m);
    slot = false;
    expect(await samples(registry, 'hookbridge_slot_retained_wal_bytes')).toEqual([]);
    expect(await samples(registry, 'hookbridge_slot_safe_wal_bytes')).toEqual([]);
  });
});

describe('HotPathHistogram', () => {
  const buckets = [0.001, 0.01, 0.1, 1];
  const observations: Array<[number, string[]]> = [
    [0.0005, ['ext', 'items', 'create', 'ok']],
    [0.001, ['ext', 'items', 'create', 'ok']], // on a bound: counts in it (le)
    [0.05, ['ext', 'items', 'create', 'ok']],
    [7, ['ext', 'items', 'create', 'timeout']], // past the last bound: +Inf only
    [0.2, ['ext', 'Odd "Name"\\x', 'update', 'error']],
    [0, ['other', 'shop.orders', 'delete', 'ok']],
  ];

  it("prints exactly what prom-client's Histogram prints for the same observations", async () => {
    const labelNames = ['extension', 'collection', 'action', 'outcome'];
    const ours = new Registry();
    const theirs = new Registry();
    const hot = new HotPathHistogram({ name: 'h_seconds', help: 'help', labelNames, buckets, registers: [ours] });
    const reference = new Histogram({ name: 'h_seconds', help: 'help', labelNames, buckets, registers: [theirs] });
    for (const [value, labels] of observations) {
      hot.observe(value, ...labels);
      reference.observe(Object.fromEntries(labelNames.map((n, i) => [n, labels[i] as string])), value);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    // As JSON too (prom-client adds an empty exemplar to each value).
    const json = async (registry: Registry) =>
      (await registry.getMetricsAsJSON()).map((m) => ({
        ...m,
        values: m.values.map((v) => ({ labels: v.labels, value: v.value, metricName: (v as { metricName?: string }).metricName })),
      }));
    expect(await json(ours)).toEqual(await json(theirs));
  });

  it('without labels too, and reset() empties it as prom-client does', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const hot = new HotPathHistogram({ name: 'd_seconds', help: 'delay', labelNames: [], buckets, registers: [ours] });
    const reference = new Histogram({ name: 'd_seconds', help: 'delay', buckets, registers: [theirs] });
    for (const [value] of observations) {
      hot.observe(value);
      reference.observe(value);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    ours.resetMetrics();
    expect(await ours.metrics()).toBe('# HELP d_seconds delay\n# TYPE d_seconds histogram\n');
  });

  it('keeps one series per label set, and refuses the wrong number of label values', () => {
    const hot = new HotPathHistogram({ name: 'x', help: 'x', labelNames: ['a', 'b'], buckets, registers: [] });
    expect(hot.series('1', '2')).toBe(hot.series('1', '2'));
    expect(hot.series('1', '2')).not.toBe(hot.series('1', '3'));
    expect(() => hot.observe(1, 'only one')).toThrow(/takes 2 label value/);
  });
});
