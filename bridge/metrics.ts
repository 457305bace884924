/**
 * Prometheus metrics (prom-client), one registry per bridge so that two bridges in one process (tests)
 * never share counters.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface BridgeMetrics {
  registry: Registry;
  actionEvents: Counter<'collection' | 'action'>;
  actionFailures: Counter<'extension'>;
  parkedEvents: Counter<'extension'>;
  hookErrors: Counter<'extension' | 'kind'>;
  filterCalls: Histogram<'collection' | 'operation' | 'outcome'>;
  filterConnections: Gauge;
  filterUnfiltered: Counter<'reason'>;
  replicationLag: Gauge;
  instanceInfo: Gauge<'slot' | 'role'>;
}

export interface MetricsSources {
  filterConnections: () => number;
  replicationLag: () => Promise<number | undefined>;
  /** This instance's part in the cluster of bridges on its database (hookbridge_instance_info: none without it). */
  role?: () => 'leader' | 'standby';
  /** Its slot (undefined until its instance session first opened). */
  slot?: () => number | undefined;
}

export function createMetrics(options: MetricsSources): BridgeMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'hookbridge_process_' });
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
