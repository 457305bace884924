/**
 * Prometheus metrics (prom-client), one registry per bridge so that two bridges in one process (tests)
 * never share counters.
 *
 * Names: every metric of hookbridge's own starts `hookbridge_`; the process and Node.js ones keep the
 * standard names every Prometheus client library exports (`process_cpu_seconds_total`,
 * `nodejs_eventloop_lag_seconds`, ...), so stock dashboards and alerts find them.
 */
import pg from 'pg';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric, type MetricValueWithName } from 'prom-client';
import { withTimeout } from './timeout.js';
import { readSlotState } from './replication/setup.js';

/** A scrape never waits longer than this on the database (a series it could not read is left out). */
const SCRAPE_QUERY_MS = 2_000;

export interface BridgeMetrics {
  registry: Registry;
  actionEvents: Counter<'collection' | 'action'>;
  actionFailures: Counter<'extension'>;
  /** One series per (extension, collection, action, outcome): `ok`, `error` or `timeout`. */
  actionHandlerSeconds: HotPathHistogram;
  /** From the transaction's commit (the server's clock) to its change reaching the handlers (ours). */
  actionDelaySeconds: HotPathHistogram;
  parkedEvents: Counter<'extension'>;
  hookErrors: Counter<'extension' | 'kind'>;
  filterCalls: Histogram<'collection' | 'operation' | 'outcome'>;
  filterConnections: Gauge;
  filterUnfiltered: Counter<'reason'>;
  replicationLag: Gauge;
  replicationConnected: Gauge;
  failedEvents: Gauge<'reason'>;
  slotRetainedWal: Gauge<'slot_name'>;
  slotSafeWal: Gauge<'slot_name'>;
  instanceInfo: Gauge<'slot' | 'role'>;
}

/** The slot's hold on WAL, as pg_replication_slots says. */
export interface SlotWal {
  slotName: string;
  /** WAL the slot keeps on the server: pg_current_wal_lsn() - restart_lsn. */
  retainedBytes: number;
  /** WAL that may still be written before the slot is invalidated (safe_wal_size): only with max_slot_wal_keep_size set. */
  safeBytes: number | undefined;
}

export interface MetricsSources {
  filterConnections: () => number;
  replicationLag: () => Promise<number | undefined>;
  /** True while this instance streams the slot (its leader's work; a standby never does). */
  replicationStreaming?: () => boolean;
  /** failed_events rows not replayed yet, by reason (undefined: the database cannot say now). */
  failedEvents?: () => Promise<Record<string, number> | undefined>;
  /** The slot's WAL (undefined: no slot, an invalidated one, or the database cannot say now). */
  slotWal?: () => Promise<SlotWal | undefined>;
  /** This instance's part in the cluster of bridges on its database (hookbridge_instance_info: none without it). */
  role?: () => 'leader' | 'standby';
  /** Its slot (undefined until its instance session first opened). */
  slot?: () => number | undefined;
}

/** The reasons failed_events knows: each has a series, at 0 when none waits. */
const FAILED_EVENT_REASONS = ['handler_failed', 'extension_not_loaded'];

export function createMetrics(options: MetricsSources): BridgeMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Both slot gauges come from one query per scrape (a scrape collects every metric at once).
  const slotWal = whilePending(async () => (options.slotWal ? scrapeRead(options.slotWal) : undefined));
  return {
    registry,
    actionEvents: new Counter({
      name: 'hookbridge_action_events_total',
      help: 'Committed changes delivered to action hooks (rate() gives events/s)',
      labelNames: ['collection', 'action'],
      registers: [registry],
    }),
    actionFailures: new Counter({
      name: 'hookbridge_action_failures_total',
      help: 'Action handler tries that threw or timed out',
      labelNames: ['extension'],
      registers: [registry],
    }),
    actionHandlerSeconds: new HotPathHistogram({
      name: 'hookbridge_action_handler_seconds',
      help: 'Time one action handler try took (outcome: ok, error, timeout); retries and replays are tries too',
      labelNames: ['extension', 'collection', 'action', 'outcome'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60],
      registers: [registry],
    }),
    actionDelaySeconds: new HotPathHistogram({
      name: 'hookbridge_action_delay_seconds',
      help: "From a transaction's commit (the database server's clock) to its change reaching the action handlers (the bridge's)",
      labelNames: [],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers: [registry],
    }),
    parkedEvents: new Counter({
      name: 'hookbridge_parked_events_total',
      help: 'Action events parked in failed_events after their retries',
      labelNames: ['extension'],
      registers: [registry],
    }),
    hookErrors: new Counter({
      name: 'hookbridge_hook_errors_total',
      help: 'Unhandled rejections and uncaught exceptions contained (kind); extension is its name, (unknown) or (hookbridge)',
      labelNames: ['extension', 'kind'],
      registers: [registry],
    }),
    filterCalls: new Histogram({
      name: 'hookbridge_filter_call_seconds',
      help: 'Time the bridge spent answering one filter call (one row)',
      labelNames: ['collection', 'operation', 'outcome'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 5],
      registers: [registry],
    }),
    filterUnfiltered: new Counter({
      name: 'hookbridge_filter_unfiltered_total',
      help: 'Rows written without their filter hooks in FILTER_FAILURE_MODE=open (reason: timeout, unreachable)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    filterConnections: new Gauge({
      name: 'hookbridge_filter_connections',
      help: 'Writer sessions connected to the filter server (direct transport)',
      registers: [registry],
      collect() {
        this.set(options.filterConnections());
      },
    }),
    replicationLag: new Gauge({
      name: 'hookbridge_replication_lag_bytes',
      help: 'WAL bytes between the server and what the bridge confirmed',
      registers: [registry],
      async collect() {
        const lag = await options.replicationLag().catch(() => undefined);
        if (lag !== undefined) this.set(lag);
      },
    }),
    replicationConnected: new Gauge({
      name: 'hookbridge_replication_connected',
      help: '1 while this instance streams the slot (the leader), else 0; max() over the instances is 1 in a healthy cluster',
      registers: [registry],
      collect() {
        this.set(options.replicationStreaming?.() ? 1 : 0);
      },
    }),
    failedEvents: new Gauge({
      name: 'hookbridge_failed_events',
      help: 'Action events in failed_events not replayed yet, read from the database at each scrape (reason: handler_failed, extension_not_loaded)',
      labelNames: ['reason'],
      registers: [registry],
      async collect() {
        this.reset();
        const counts = options.failedEvents ? await scrapeRead(options.failedEvents) : undefined;
        if (!counts) return;
        for (const reason of FAILED_EVENT_REASONS) this.set({ reason }, 0);
        for (const [reason, n] of Object.entries(counts)) this.set({ reason }, n);
      },
    }),
    slotRetainedWal: new Gauge({
      name: 'hookbridge_slot_retained_wal_bytes',
      help: 'WAL the replication slot keeps on the server (pg_current_wal_lsn() - restart_lsn); absent while there is no valid slot',
      labelNames: ['slot_name'],
      registers: [registry],
      async collect() {
        this.reset();
        const wal = await slotWal();
        if (wal) this.set({ slot_name: wal.slotName }, wal.retainedBytes);
      },
    }),
    slotSafeWal: new Gauge({
      name: 'hookbridge_slot_safe_wal_bytes',
      help: 'WAL that may still be written before max_slot_wal_keep_size invalidates the slot (safe_wal_size); absent when that setting is -1 (no limit)',
      labelNames: ['slot_name'],
      registers: [registry],
      async collect() {
        this.reset();
        const wal = await slotWal();
        if (wal?.safeBytes !== undefined) this.set({ slot_name: wal.slotName }, wal.safeBytes);
      },
    }),
    instanceInfo: new Gauge({
      name: 'hookbridge_instance_info',
      help: 'Always 1: this instance\'s slot and role (leader | standby); scrape every instance, count(...{role="leader"}) is 1 in a healthy cluster',
      labelNames: ['slot', 'role'],
      registers: [registry],
      collect() {
        // One series at a time: the last role or slot goes when it changes.
        this.reset();
        const slot = options.slot?.();
        const role = options.role?.();
        if (slot !== undefined && role !== undefined) this.set({ slot: String(slot), role }, 1);
      },
    }),
  };
}

/** failed_events rows not replayed yet, by reason. */
export async function readFailedEvents(pool: pg.Pool, schema: string): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ reason: string; n: number }>(
    `select reason, count(*)::int as n from ${pg.escapeIdentifier(schema)}.failed_events where replayed_at is null group by reason`,
  );
  return Object.fromEntries(rows.map((r) => [r.reason, r.n]));
}

/** The slot's hold on WAL; undefined when there is no slot, or it was invalidated (restart_lsn is gone). */
export async function readSlotWal(pool: pg.Pool, slotName: string): Promise<SlotWal | undefined> {
  // The slot facts status and doctor read (replication/setup.ts); only ours, of this database.
  const slot = await readSlotState(pool, slotName);
  if (!slot || slot.database !== slot.currentDatabase || slot.retainedWalBytes === null) return undefined;
  return { slotName, retainedBytes: slot.retainedWalBytes, safeBytes: slot.safeWalBytes ?? undefined };
}

/** A database read at scrape time: bounded, and a failure is "cannot say" rather than a failed scrape. */
function scrapeRead<T>(read: () => Promise<T | undefined>): Promise<T | undefined> {
  return withTimeout(read(), SCRAPE_QUERY_MS, () => new Error('metrics read timed out')).catch(() => undefined);
}

/** Calls made while one is pending share it. */
function whilePending<T>(run: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () =>
    (pending ??= run().finally(() => {
      pending = undefined;
    }));
}

/** One label set's counts: `counts[i]` observations in bucket i (not cumulative; the last is +Inf). */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += value;
    this.count += 1;
  }
}

/**
 * A Prometheus histogram for paths that run once per change. prom-client's `observe` costs about
 * 0.9 µs unlabeled and 1.7 µs with four labels (it turns each float bound into a string and hashes
 * the labels every time), measured against about 5 µs for a whole change end to end; this one costs
 * a few nested Map lookups and a bucket search. It registers with a prom-client Registry like any
 * metric (the registry reads `name`, `help`, `type` and `get()`), and prints exactly what
 * prom-client's Histogram prints (test/unit/metrics.test.ts holds it to that).
 */
export class HotPathHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly #bounds: readonly number[];
  /** Nested by label value, in labelNames order; the leaves are the series. */
  #root = new Map<string, unknown>();
  #series: HistogramSeries[] = [];

  constructor(config: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[]; registers: Registry[] }) {
    this.name = config.name;
    this.help = config.help;
    this.labelNames = config.labelNames;
    this.#bounds = [...config.buckets].sort((a, b) => a - b);
    for (const registry of config.registers) registry.registerMetric(this as unknown as Metric);
  }

  /** The series of these label values (in labelNames order), made on first use. */
  series(...values: string[]): HistogramSeries {
    if (values.length !== this.labelNames.length) throw new Error(`${this.name} takes ${this.labelNames.length} label value(s), got ${values.length}`);
    let node: Map<string, unknown> = this.#root;
    for (let i = 0; i < values.length - 1; i++) {
      const value = values[i] as string;
      let next = node.get(value) as Map<string, unknown> | undefined;
      if (!next) node.set(value, (next = new Map()));
      node = next;
    }
    const last = values.length ? (values[values.length - 1] as string) : '';
    let series = node.get(last) as HistogramSeries | undefined;
    if (!series) {
      series = new HistogramSeries(Object.fromEntries(this.labelNames.map((name, i) => [name, values[i] as string])), this.#bounds);
      node.set(last, series);
      this.#series.push(series);
    }
    return series;
  }

  observe(value: number, ...labelValues: string[]): void {
    this.series(...labelValues).observe(value);
  }

  reset(): void {
    this.#root = new Map();
    this.#series = [];
  }

  /** What prom-client's registry prints (and returns from getMetricsAsJSON). */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValueWithName<string>[] }> {
    const bucket = `${this.name}_bucket`;
    const values: MetricValueWithName<string>[] = [];
    for (const series of this.#series) {
      let cumulative = 0;
      // `le` first, as prom-client prints it.
      this.#bounds.forEach((le, i) => {
        cumulative += series.counts[i] as number;
        values.push({ labels: { le, ...series.labels }, value: cumulative, metricName: bucket });
      });
      values.push({ labels: { le: '+Inf', ...series.labels }, value: series.count, metricName: bucket });
      values.push({ labels: { ...series.labels }, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...series.labels }, value: series.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
