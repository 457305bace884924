/**
 * A hot row does not hold up other rows' action hooks (issue 12, finding 6): while one row's queue
 * of updates waits on its slow first handler, inserts of other rows reach their hooks; the hot row's
 * updates still run one at a time in commit order, and the slot is never confirmed past one of them
 * that has not finished.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseLsn } from '../../bridge/replication/lsn.js';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();

/** More queued updates of the hot row than the pipeline has handler slots (64). */
const HOT_UPDATES = 100;
const OTHER_ROWS = 20;

const state = {
  hotStarted: [] as number[],
  hotFinished: [] as number[],
  /** The LSN of the first hot update's commit, as its handler saw it. */
  firstHotLsn: undefined as string | undefined,
  /** Each other row's insert, with how far the hot row's chain was when its handler ran. */
  others: [] as Array<{ key: unknown; lsn: string; hotFinished: number }>,
  open: undefined as (() => void) | undefined,
  gate: undefined as Promise<void> | undefined,
};
state.gate = new Promise<void>((resolve) => (state.open = resolve));
(globalThis as Record<string, unknown>)['__hotRow'] = state;

const extension = `
  module.exports = ({ action }) => {
    action('counters.items.update', async (meta) => {
      const s = globalThis.__hotRow;
      s.hotStarted.push(meta.payload.n);
      s.firstHotLsn ??= meta.lsn;
      await s.gate; // the hot row's handler is slow: it waits until the test lets it go
      s.hotFinished.push(meta.payload.n);
    });
    action('others.items.create', (meta) => {
      const s = globalThis.__hotRow;
      s.others.push({ key: meta.key, lsn: meta.lsn, hotFinished: s.hotFinished.length });
    });
  };`;

let tb: TestBridge;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create table counters (id int primary key, n int not null)`);
    await c.query(`create table others (id int primary key, v text)`);
    await c.query(`insert into counters values (1, 0)`);
  });
  tb = await startTestBridge(db.url, { 'hooks/hot-row/index.js': extension });
});

afterAll(async () => {
  state.open?.();
  await tb?.dispose();
});

it("runs other rows' action hooks while a hot row's chain of updates is still in progress", async () => {
  try {
    await withClient(db.url, async (c) => {
      for (let i = 0; i < HOT_UPDATES; i++) await c.query(`update counters set n = n + 1 where id = 1`);
      for (let id = 1; id <= OTHER_ROWS; id++) await c.query(`insert into others values ($1, $2)`, [id, `row ${id}`]);
    });

    // Committed after every hot update, yet handled while the hot row's first handler still waits.
    await waitFor(() => state.others.length === OTHER_ROWS, {
      timeoutMs: 30_000,
      message: () =>
        `other rows' hooks ran ${state.others.length} of ${OTHER_ROWS} times while the hot row's first handler waits ` +
        `(hot started: ${state.hotStarted.length}, finished: ${state.hotFinished.length})`,
    });
    expect(state.others.map((o) => o.key).sort((a, b) => Number(a) - Number(b))).toEqual(Array.from({ length: OTHER_ROWS }, (_, i) => i + 1));
    expect(state.others.every((o) => o.hotFinished === 0)).toBe(true);
    // The hot row's chain is in progress: its first update runs, the others wait for it.
    expect(state.hotStarted).toEqual([1]);
    expect(state.hotFinished).toEqual([]);

    // Nothing at or after the unfinished hot update is confirmed, although later transactions are done.
    const firstHot = parseLsn(state.firstHotLsn as string);
    const confirmed = tb.bridge.actions?.confirmedLsn;
    expect(confirmed).toBeDefined();
    expect(parseLsn(confirmed as string)).toBeLessThanOrEqual(firstHot);
    const slot = await withClient(db.url, (c) =>
      c.query<{ lsn: string }>(`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = $1`, [tb.slotName]),
    );
    expect(parseLsn(slot.rows[0]?.lsn as string)).toBeLessThanOrEqual(firstHot);
  } finally {
    state.open?.();
  }

  // Released, the hot row's updates run one after another in commit order.
  await waitFor(() => state.hotFinished.length === HOT_UPDATES, {
    timeoutMs: 30_000,
    message: () => `hot updates finished: ${state.hotFinished.length} of ${HOT_UPDATES}`,
  });
  const inOrder = Array.from({ length: HOT_UPDATES }, (_, i) => i + 1);
  expect(state.hotStarted).toEqual(inOrder);
  expect(state.hotFinished).toEqual(inOrder);
  // And the slot moves past all of it, the other rows' later transactions included, once it is handled.
  const lastOther = state.others.map((o) => parseLsn(o.lsn)).reduce((a, b) => (a > b ? a : b));
  await waitFor(
    async () => {
      const { rows } = await withClient(db.url, (c) =>
        c.query<{ lsn: string }>(`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = $1`, [tb.slotName]),
      );
      return parseLsn(rows[0]?.lsn as string) > lastOther;
    },
    { timeoutMs: 30_000, message: 'the slot never moved past the other rows once the hot row finished' },
  );
}, 120_000);
