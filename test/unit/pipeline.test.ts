import { Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent, StreamEvent, TruncateEvent } from '../../bridge/replication/change-events.js';
import { ChangePipeline } from '../../bridge/replication/pipeline.js';
import { captureLogger } from '../support/capture-logger.js';

const transaction = { xid: 1, commitLsn: 0n, lsn: '0/0', commitTime: new Date(0) };

function change(id: string, key: string, extra: Partial<ChangeEvent> = {}): StreamEvent {
  return {
    kind: 'change',
    change: {
      id,
      action: 'update',
      collection: 't',
      table: { schema: 'public', name: 't' },
      key,
      row: {},
      previous: null,
      unchangedToast: [],
      orderKeys: [`t\u0000${key}`],
      transaction,
      accountability: null,
      ...extra,
    },
  };
}
const begin = (): StreamEvent => ({ kind: 'begin', transaction });
const commit = (endLsn: bigint): StreamEvent => ({ kind: 'commit', transaction, endLsn });

/** A handler whose calls finish only when the test says so. */
function controlled() {
  const started: string[] = [];
  const finished: string[] = [];
  const gates = new Map<string, { resolve: () => void; reject: (e: unknown) => void }>();
  const handle = (c: { id: string }) =>
    new Promise<void>((resolve, reject) => {
      started.push(c.id);
      gates.set(c.id, {
        resolve: () => {
          finished.push(c.id);
          resolve();
        },
        reject,
      });
    });
  const release = async (id: string) => {
    await tick();
    const gate = gates.get(id);
    if (!gate) throw new Error(`${id} has not started (started: ${started.join(',')})`);
    gate.resolve();
    await tick();
  };
  return { started, finished, handle, release, gates };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

function pipelineWith(
  handle: (c: ChangeEvent) => Promise<void>,
  options: { highWater?: number; lowWater?: number; concurrency?: number; truncate?: (t: TruncateEvent) => Promise<void> } = {},
) {
  const confirmed: bigint[] = [];
  const changes = new Subject<StreamEvent>();
  const pipeline = new ChangePipeline({
    changes,
    handleChange: handle,
    handleTruncate: options.truncate ?? (async () => {}),
    logger: captureLogger().logger,
    ...options,
  });
  pipeline.positions.subscribe((lsn) => confirmed.push(lsn));
  /** An event on the stream of changes. */
  const push = (event: StreamEvent) => changes.next(event);
  return { pipeline, confirmed, push };
}

describe('ChangePipeline', () => {
  it('runs different keys concurrently and one key in commit order', async () => {
    const h = controlled();
    const { pipeline, push } = pipelineWith(h.handle);
    for (const e of [begin(), change('a1', 'a'), change('b1', 'b'), change('a2', 'a'), commit(10n)]) push(e);
    await tick();
    expect(h.started).toEqual(['a1', 'b1']);
    await h.release('b1');
    expect(h.started).toEqual(['a1', 'b1']);
    await h.release('a1');
    expect(h.started).toEqual(['a1', 'b1', 'a2']);
    await h.release('a2');
    pipeline.close();
  });

  it('confirms a transaction only when it and every earlier one are done', async () => {
    const h = controlled();
    const { pipeline, confirmed, push } = pipelineWith(h.handle);
    for (const e of [begin(), change('t1', 'a'), commit(100n), begin(), change('t2', 'b'), commit(200n)]) push(e);
    await h.release('t2');
    expect(confirmed).toEqual([]);
    await h.release('t1');
    expect(confirmed).toEqual([200n]);
    expect(pipeline.confirmable).toBe(200n);
    pipeline.close();
  });

  it('does not confirm a transaction before its commit arrived', async () => {
    const h = controlled();
    const { pipeline, confirmed, push } = pipelineWith(h.handle);
    push(begin());
    push(change('x', 'a'));
    await h.release('x');
    expect(confirmed).toEqual([]);
    push(commit(50n));
    expect(confirmed).toEqual([50n]);
    pipeline.close();
  });

  it('confirms markers (heartbeats) between transactions, never inside one', async () => {
    const h = controlled();
    const { pipeline, confirmed, push } = pipelineWith(h.handle);
    push({ kind: 'marker', lsn: 5n });
    expect(confirmed).toEqual([5n]);
    push(begin());
    push(change('x', 'a'));
    push({ kind: 'marker', lsn: 7n });
    push(commit(9n));
    push({ kind: 'marker', lsn: 11n });
    expect(confirmed).toEqual([5n]);
    await h.release('x');
    expect(confirmed).toEqual([5n, 11n]);
    pipeline.close();
  });

  it('applies backpressure above the high-water mark and releases at the low-water mark', async () => {
    const h = controlled();
    const { pipeline, push } = pipelineWith(h.handle, { highWater: 4, lowWater: 2 });
    push(begin());
    for (let i = 0; i < 4; i++) push(change(`c${i}`, `k${i}`));
    let released = false;
    const wait = pipeline.waitForCapacity().then(() => (released = true));
    await h.release('c0');
    expect(released).toBe(false);
    await h.release('c1');
    await wait;
    expect(released).toBe(true);
    await h.release('c2');
    await h.release('c3');
    pipeline.close();
  });

  it('lets a truncate wait for earlier changes and hold later ones', async () => {
    const h = controlled();
    const order: string[] = [];
    const { pipeline, confirmed, push } = pipelineWith(
      async (c) => {
        await h.handle(c);
        order.push(c.id);
      },
      { truncate: async (t) => void order.push(t.tables[0]?.id ?? '') },
    );
    const truncate: StreamEvent = {
      kind: 'truncate',
      truncate: { tables: [{ collection: 't', id: 'trunc' }], cascade: false, restartIdentity: false, transaction, accountability: null },
    };
    for (const e of [begin(), change('before', 'a'), truncate, change('after', 'b'), commit(30n)]) push(e);
    await tick();
    expect(h.started).toEqual(['before']);
    await h.release('before');
    await tick();
    expect(order).toEqual(['before', 'trunc']);
    await h.release('after');
    expect(order).toEqual(['before', 'trunc', 'after']);
    expect(confirmed).toEqual([30n]);
    pipeline.close();
  });

  it('never confirms past a change that could not be handled', async () => {
    const h = controlled();
    const { pipeline, confirmed, push } = pipelineWith(h.handle);
    for (const e of [begin(), change('bad', 'a'), commit(10n), begin(), change('good', 'b'), commit(20n)]) push(e);
    await tick();
    h.gates.get('bad')?.reject(new Error('stopping'));
    await h.release('good');
    await tick();
    expect(confirmed).toEqual([]);
    expect(pipeline.failure).toBeInstanceOf(Error);
    pipeline.close();
  });

  it('keeps a failed transaction unconfirmed even when its commit arrives after the failure', async () => {
    const h = controlled();
    const { pipeline, confirmed, push } = pipelineWith(h.handle);
    push(begin());
    push(change('bad', 'a'));
    await tick();
    h.gates.get('bad')?.reject(new Error('stopping'));
    await tick();
    push(commit(10n));
    push({ kind: 'marker', lsn: 20n });
    expect(confirmed).toEqual([]);
    pipeline.close();
  });

  it('refuses a transaction that begins inside another: the reader hears it once, from waitForCapacity', async () => {
    const { pipeline, push } = pipelineWith(async () => {});
    push(begin());
    await expect(pipeline.waitForCapacity()).resolves.toBeUndefined();
    push(begin());
    await expect(pipeline.waitForCapacity()).rejects.toThrow(/inside another/);
    await expect(pipeline.waitForCapacity()).resolves.toBeUndefined();
    pipeline.close();
  });

  it('forgets an event it could not take when the connection that sent it is reset', async () => {
    const { pipeline, push } = pipelineWith(async () => {});
    push(begin());
    push(begin());
    pipeline.resetOpenTransactions();
    await expect(pipeline.waitForCapacity()).resolves.toBeUndefined();
    pipeline.close();
  });

  it('takes a failed stream of changes as an event it could not take, not as an unhandled error', async () => {
    const changes = new Subject<StreamEvent>();
    const pipeline = new ChangePipeline({ changes, handleChange: async () => {}, handleTruncate: async () => {}, logger: captureLogger().logger });
    changes.error(new Error('the source broke'));
    await expect(pipeline.waitForCapacity()).rejects.toThrow('the source broke');
    pipeline.close();
  });

  it('is never settled once closed: what arrives after is owed, not confirmable', () => {
    const { pipeline } = pipelineWith(async () => {});
    expect(pipeline.settled).toBe(true);
    pipeline.close();
    expect(pipeline.settled).toBe(false);
  });

  it('ends the stream of positions when it closes: later finishes confirm nothing', async () => {
    const h = controlled();
    const { pipeline, confirmed, push } = pipelineWith(h.handle);
    let completed = false;
    pipeline.positions.subscribe({ complete: () => (completed = true) });
    for (const e of [begin(), change('a', 'a'), commit(10n)]) push(e);
    await tick();
    pipeline.close();
    expect(completed).toBe(true);
    await h.release('a');
    expect(pipeline.confirmable).toBe(10n);
    expect(confirmed).toEqual([]);
  });

  it('is idle only when nothing is in flight', async () => {
    const h = controlled();
    const { pipeline, push } = pipelineWith(h.handle);
    push(begin());
    push(change('x', 'a'));
    push(change('y', 'b'));
    let idle = false;
    const waiting = pipeline.whenIdle().then(() => (idle = true));
    await h.release('x');
    expect(idle).toBe(false);
    await h.release('y');
    await waiting;
    expect(idle).toBe(true);
    pipeline.close();
  });

  it('orders an update that changed the key after events on the old and the new key', async () => {
    const h = controlled();
    const { pipeline, push } = pipelineWith(h.handle);
    push(begin());
    push(change('old', '1'));
    push(change('new', '2'));
    push(change('move', '2', { orderKeys: ['t\u00002', 't\u00001'] }));
    await tick();
    expect(h.started).toEqual(['old', 'new']);
    await h.release('new');
    expect(h.started).toEqual(['old', 'new']);
    await h.release('old');
    expect(h.started).toEqual(['old', 'new', 'move']);
    await h.release('move');
    pipeline.close();
  });
});

describe('ChangePipeline with a hot key (no head-of-line blocking)', () => {
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it("lets other keys' changes past a hot key's queue: a waiting change holds no handler slot", async () => {
    const completed: string[] = [];
    let running = 0;
    let maxRunning = 0;
    let hotRunning = 0;
    let maxHotRunning = 0;
    const { pipeline, push } = pipelineWith(
      async (c) => {
        running += 1;
        maxRunning = Math.max(maxRunning, running);
        if (c.key === 'hot') {
          hotRunning += 1;
          maxHotRunning = Math.max(maxHotRunning, hotRunning);
          await sleep(5); // a slow handler
          hotRunning -= 1;
        }
        running -= 1;
        completed.push(c.id);
      },
      { concurrency: 4 },
    );
    const hot = Array.from({ length: 50 }, (_, i) => `h${i}`);
    const others = Array.from({ length: 20 }, (_, i) => `o${i}`);
    let lsn = 0n;
    for (const id of hot) for (const e of [begin(), change(id, 'hot'), commit((lsn += 10n))]) push(e);
    for (const [i, id] of others.entries()) for (const e of [begin(), change(id, `k${i}`), commit((lsn += 10n))]) push(e);
    await pipeline.whenIdle();

    // Every other key finished before the hot key's first change did; the hot key kept its order.
    expect([...completed.slice(0, others.length)].sort()).toEqual([...others].sort());
    expect(completed.slice(others.length)).toEqual(hot);
    expect(maxHotRunning).toBe(1);
    expect(maxRunning).toBeLessThanOrEqual(4);
    expect(pipeline.confirmable).toBe(lsn);
    pipeline.close();
  });

  it('never acknowledges past an unfinished change of the hot key while later transactions finish around it', async () => {
    const h = controlled();
    const othersDone: string[] = [];
    const { pipeline, confirmed, push } = pipelineWith((c) => (c.key === 'hot' ? h.handle(c) : Promise.resolve().then(() => void othersDone.push(c.id))), {
      concurrency: 2,
    });
    // Transactions alternate: one hot change (LSN 100i + 10), then one other row (100i + 50).
    for (let i = 0; i < 10; i++) {
      for (const e of [begin(), change(`h${i}`, 'hot'), commit(BigInt(100 * i + 10))]) push(e);
      for (const e of [begin(), change(`o${i}`, `k${i}`), commit(BigInt(100 * i + 50))]) push(e);
    }
    await tick();
    expect(othersDone).toHaveLength(10);
    expect(h.started).toEqual(['h0']);
    expect(confirmed).toEqual([]);
    expect(pipeline.inFlight).toBe(10);
    for (let i = 0; i < 10; i++) {
      await h.release(`h${i}`);
      // Up to the other row's transaction right after it, never past the next hot change.
      expect(pipeline.confirmable).toBe(BigInt(100 * i + 50));
      expect(h.started).toEqual(Array.from({ length: Math.min(i + 2, 10) }, (_, j) => `h${j}`));
    }
    expect(confirmed).toEqual(Array.from({ length: 10 }, (_, i) => BigInt(100 * i + 50)));
    pipeline.close();
  });

  it('keeps each key in commit order, one change at a time, with several hot keys sharing few slots', async () => {
    const completed = new Map<string, string[]>();
    const active = new Set<string>();
    const overlaps: string[] = [];
    const { pipeline, push } = pipelineWith(
      async (c) => {
        const key = String(c.key);
        if (active.has(key)) overlaps.push(c.id);
        active.add(key);
        await sleep(Number(c.id.split(':')[1]) % 3); // uneven durations
        active.delete(key);
        completed.set(key, [...(completed.get(key) ?? []), c.id]);
      },
      { concurrency: 2 },
    );
    const expected = new Map<string, string[]>();
    let lsn = 0n;
    push(begin());
    for (let i = 0; i < 60; i++) {
      const key = ['a', 'b', 'c'][(i * 7) % 3] as string;
      const id = `${key}:${i}`;
      expected.set(key, [...(expected.get(key) ?? []), id]);
      push(change(id, key));
      if (i % 10 === 9) {
        push(commit((lsn += 10n)));
        push(begin());
      }
    }
    push(commit(lsn + 10n));
    await pipeline.whenIdle();
    expect(overlaps).toEqual([]);
    expect(completed).toEqual(expected);
    pipeline.close();
  });

  it("counts a hot key's waiting changes against the in-flight budget, so backpressure still reaches the reader", async () => {
    const h = controlled();
    const { pipeline, push } = pipelineWith(h.handle, { concurrency: 4, highWater: 8, lowWater: 4 });
    push(begin());
    for (let i = 0; i < 8; i++) push(change(`h${i}`, 'hot'));
    await tick();
    expect(h.started).toEqual(['h0']);
    expect(pipeline.inFlight).toBe(8);
    let released = false;
    const wait = pipeline.waitForCapacity().then(() => (released = true));
    for (let i = 0; i < 3; i++) await h.release(`h${i}`);
    expect(released).toBe(false);
    await h.release('h3');
    await wait;
    expect(released).toBe(true);
    for (let i = 4; i < 8; i++) await h.release(`h${i}`);
    pipeline.close();
  });

  it('runs truncates and the changes between them in stream order, also when one truncate follows another', async () => {
    const order: string[] = [];
    const { pipeline, confirmed, push } = pipelineWith(
      async (c) => {
        await sleep(1);
        order.push(c.id);
      },
      { concurrency: 4, truncate: async (t) => void order.push(t.tables[0]?.id ?? '') },
    );
    const truncate = (id: string): StreamEvent => ({
      kind: 'truncate',
      truncate: { tables: [{ collection: 't', id }], cascade: false, restartIdentity: false, transaction, accountability: null },
    });
    for (const e of [
      begin(),
      change('a1', 'a'),
      change('b1', 'b'),
      truncate('T1'),
      truncate('T2'),
      change('a2', 'a'),
      change('c1', 'c'),
      truncate('T3'),
      change('b2', 'b'),
      commit(40n),
    ]) {
      push(e);
    }
    await pipeline.whenIdle();
    expect(order.slice(0, 2).sort()).toEqual(['a1', 'b1']);
    expect(order.slice(2, 4)).toEqual(['T1', 'T2']);
    expect(order.slice(4, 6).sort()).toEqual(['a2', 'c1']);
    expect(order.slice(6)).toEqual(['T3', 'b2']);
    expect(confirmed).toEqual([40n]);
    pipeline.close();
  });
});

describe('ChangePipeline memory with transactions that have no changes', () => {
  it('keeps them bounded while one slow change holds the confirmable LSN back, and confirms past them after', async () => {
    const h = controlled();
    const { pipeline, confirmed, push } = pipelineWith(h.handle);
    for (const e of [begin(), change('slow', 'k'), commit(10n)]) push(e);
    // 100,000 transactions without row changes (a 0-row UPDATE still sends its identity message).
    for (let i = 1; i <= 100_000; i++) {
      push(begin());
      push(commit(10n + BigInt(i)));
    }
    push({ kind: 'marker', lsn: 200_000n });
    expect(pipeline.trackedTransactions).toBeLessThanOrEqual(3);
    expect(confirmed).toEqual([]);
    await h.release('slow');
    expect(confirmed.at(-1)).toBe(200_000n);
    expect(pipeline.trackedTransactions).toBe(0);
  });

  it('never merges past a transaction that is still running', async () => {
    const h = controlled();
    const { confirmed, push } = pipelineWith(h.handle);
    for (const e of [begin(), change('a', 'a'), commit(10n), begin(), commit(20n), begin(), change('b', 'b'), commit(30n), begin(), commit(40n)]) push(e);
    await h.release('b');
    expect(confirmed).toEqual([]);
    await h.release('a');
    expect(confirmed.at(-1)).toBe(40n);
  });
});
