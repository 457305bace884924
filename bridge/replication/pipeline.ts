/**
 * The action pipeline: stream events in, handled changes out, and the one number that matters for
 * "nothing lost": the LSN up to which every change has been handled (or parked), which is the only
 * LSN ever confirmed to Postgres past a change. (While the pipeline is `settled`, owing nothing, the
 * stream also confirms positions it merely received: see stream.ts.)
 *
 * - At most `concurrency` handlers run at once. Changes sharing an order key (same table and primary
 *   key) run one after another in commit order: a change whose key has an unfinished earlier change
 *   waits *beside* the slots, listed on that change, and becomes ready when it finishes. So a hot row
 *   with a long queue holds one slot, never all of them, and other rows' changes go past it
 *   (no head-of-line blocking). Ready changes start in the order they became ready.
 * - A transaction is done when its Commit arrived and all its changes finished. Transactions finish
 *   out of order; the confirmable LSN only moves past a prefix of finished transactions.
 * - Backpressure: every change counts as in flight from the moment it is pushed — running, ready or
 *   waiting for its key — so a hot row's queue is bounded by the same budget. `waitForCapacity()`
 *   makes the stream reader wait at `highWater` until in-flight changes fell to `lowWater` (and
 *   Postgres stops sending meanwhile).
 * - A TRUNCATE is a barrier: everything before it finishes first, nothing after starts until it did.
 *
 * RxJS carries the two streams of the design: the stream of changes in (`changes`, in commit order)
 * and the stream of confirmable positions out (`positions`, which the replication stream follows).
 * Between them the scheduler is plain code: `mergeMap`'s concurrency counts a change from the moment
 * it is taken, waiting for its key included — which is exactly head-of-line blocking — and this loop
 * runs once per row (an RxJS `groupBy` + `concatMap` version measured 80k events/s against 260–320k
 * for plain code). Two things RxJS has no words for stay methods beside the streams: backpressure
 * (RxJS only pushes; the reader awaits `waitForCapacity()`, which the library's flow control turns into
 * Postgres not sending), and a change the pipeline cannot take (a Begin inside a transaction): an
 * error thrown in a subscriber never reaches the producer (RxJS reports it as unhandled), so it is
 * kept and `waitForCapacity()` rejects with it, and the reader drops that connection.
 */
import type { Logger } from 'pino';
import { Subject, type Observable, type Subscription } from 'rxjs';
import type { ChangeEvent, StreamEvent, TruncateEvent } from './change-events.js';

export interface PipelineOptions {
  /** The stream of changes: Begin, changes and truncates, Commit, and positions between transactions, in commit order. */
  changes: Observable<StreamEvent>;
  handleChange: (change: ChangeEvent) => Promise<void>;
  handleTruncate: (truncate: TruncateEvent) => Promise<void>;
  /** Handlers running at once. */
  concurrency?: number;
  /** In-flight changes (running, ready or waiting) at which reading pauses. */
  highWater?: number;
  lowWater?: number;
  logger: Logger;
}

interface Slot {
  /** Confirmable once done: a transaction's commit end LSN, or a marker's LSN. */
  lsn: bigint | undefined;
  pending: number;
  closed: boolean;
  /** A change of it was neither handled nor parked: never confirmable (sticky, a later Commit cannot undo it). */
  failed?: boolean;
}

/** The changes between two truncates. */
interface Segment {
  /** Its changes not yet finished. */
  pending: number;
  /** Set while the next truncate waits for this segment to finish. */
  onDrained?: (() => void) | undefined;
  /** Changes held until the truncate before this segment is done; undefined once it is. */
  held: Work[] | undefined;
}

interface Work {
  change: ChangeEvent;
  slot: Slot;
  segment: Segment;
  /** How many earlier changes (and truncates) must finish before this one may start. */
  blockers: number;
  /** Later changes waiting for this one (of the same key). */
  followers: Work[] | undefined;
}

export class ChangePipeline {
  readonly #options: Required<Omit<PipelineOptions, 'logger' | 'changes'>> & { logger: Logger };
  readonly #positions = new Subject<bigint>();
  readonly #input: Subscription;
  /** Why the last event could not be taken; `waitForCapacity()` rejects with it once. */
  #rejected: unknown;
  readonly #slots: Slot[] = [];
  /** Per order key, its latest unfinished change: the one a new change of that key waits for. */
  readonly #tails = new Map<string, Work>();
  /** Changes free to start, waiting for a handler slot (FIFO from `#readyHead`). */
  #ready: Array<Work | undefined> = [];
  #readyHead = 0;
  #running = 0;
  #closed = false;
  #open: Slot | undefined;
  #inFlight = 0;
  #confirmable = 0n;
  #capacityWaiters: Array<() => void> = [];
  #idleWaiters: Array<() => void> = [];
  /** Settles when the latest truncate is done and the changes after it are released. */
  #barrier: Promise<void> = Promise.resolve();
  #segment: Segment = { pending: 0, held: undefined };
  #failed: unknown;

  constructor({ changes, ...options }: PipelineOptions) {
    this.#options = { concurrency: 64, highWater: 10_000, lowWater: 5_000, ...options };
    this.#input = changes.subscribe({
      next: (event) => {
        try {
          this.#push(event);
        } catch (error) {
          this.#rejected ??= error;
        }
      },
      // A source that fails is a change not taken either (RxJS would otherwise report it as unhandled).
      error: (error: unknown) => (this.#rejected ??= error),
    });
  }

  /**
   * The stream of confirmable positions: every LSN up to which each change was handled or parked, as
   * it grows (monotonic; the only LSN ever confirmed past a change). Completes when the pipeline closes.
   * Hot: subscribe before the first change arrives (`changes` must be hot too, as a Subject is).
   */
  get positions(): Observable<bigint> {
    return this.#positions.asObservable();
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get confirmable(): bigint {
    return this.#confirmable;
  }

  /**
   * Nothing is owed: no transaction open, every change pushed finished and its position was passed
   * to `positions`. Only then may the stream confirm positions it merely received (stream.ts).
   */
  get settled(): boolean {
    // Closed, it takes no more changes: what the server sends from then on is owed, never confirmable.
    return this.#open === undefined && this.#inFlight === 0 && this.#slots.length === 0 && this.#failed === undefined && !this.#closed;
  }

  /** Set when a change could not be handled nor parked: nothing after it will ever be confirmed. */
  get failure(): unknown {
    return this.#failed;
  }

  #push(event: StreamEvent): void {
    switch (event.kind) {
      case 'begin':
        if (this.#open) throw new Error('pgoutput began a transaction inside another one');
        this.#open = { lsn: undefined, pending: 0, closed: false };
        this.#slots.push(this.#open);
        return;
      case 'change': {
        const slot = this.#require();
        this.#submit(slot, event.change);
        return;
      }
      case 'truncate': {
        const slot = this.#require();
        const truncate = event.truncate;
        // Everything submitted so far finishes first (the earlier truncate, then this segment's
        // changes); changes submitted later are held in a new segment until the truncate is done.
        const before = this.#segment;
        const after: Segment = { pending: 0, held: [] };
        this.#segment = after;
        slot.pending += 1;
        this.#inFlight += 1;
        const drained = before.pending === 0 ? undefined : new Promise<void>((resolve) => (before.onDrained = resolve));
        this.#barrier = Promise.all([this.#barrier, drained])
          .then(() => this.#options.handleTruncate(truncate))
          .then(
            () => this.#finish(slot),
            (error) => this.#fail(slot, error),
          )
          .then(
            () => this.#release(after),
            () => this.#release(after),
          );
        return;
      }
      case 'commit': {
        const slot = this.#require();
        slot.lsn = event.endLsn;
        slot.closed = true;
        this.#open = undefined;
        this.#mergeDone();
        this.#advance();
        return;
      }
      case 'marker':
        if (this.#open) return; // a position inside an open transaction is not confirmable
        this.#slots.push({ lsn: event.lsn, pending: 0, closed: true });
        this.#mergeDone();
        this.#advance();
        return;
    }
  }

  /**
   * Resolves when the pipeline can take more (immediately when below the high-water mark); rejects
   * if the events since the last call held one it could not take (see the header).
   */
  waitForCapacity(): Promise<void> {
    if (this.#rejected !== undefined) {
      const rejected = this.#rejected;
      this.#rejected = undefined;
      return Promise.reject(rejected);
    }
    if (this.#inFlight < this.#options.highWater) return Promise.resolve();
    return new Promise((resolve) => this.#capacityWaiters.push(resolve));
  }

  /** Resolves when every submitted change finished. */
  whenIdle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Forgets transactions that were cut off (a lost connection): their changes will be sent again.
   * Call only when idle.
   */
  resetOpenTransactions(): void {
    // What the lost connection sent is sent again: an event it could not take is no concern of the next.
    this.#rejected = undefined;
    const open = this.#open;
    this.#open = undefined;
    if (open) {
      const index = this.#slots.indexOf(open);
      if (index >= 0) this.#slots.splice(index, 1);
    }
    this.#advance();
  }

  close(): void {
    // Running handlers finish (and are accounted for); nothing new starts nor is confirmed.
    this.#closed = true;
    this.#input.unsubscribe();
    this.#positions.complete();
  }

  #submit(slot: Slot, change: ChangeEvent): void {
    slot.pending += 1;
    this.#inFlight += 1;
    const segment = this.#segment;
    segment.pending += 1;
    const work: Work = { change, slot, segment, blockers: 0, followers: undefined };
    for (const key of change.orderKeys) {
      const previous = this.#tails.get(key);
      if (previous !== undefined && previous !== work) {
        // An update that changed its key may find the same change as the tail of both keys: wait once.
        const followers = (previous.followers ??= []);
        if (followers[followers.length - 1] !== work) {
          followers.push(work);
          work.blockers += 1;
        }
      }
      this.#tails.set(key, work);
    }
    if (segment.held) {
      segment.held.push(work);
      work.blockers += 1;
    }
    if (work.blockers === 0) this.#makeReady(work);
  }

  #makeReady(work: Work): void {
    // The common case (a free slot, nobody queued ahead) starts at once, without touching the queue.
    if (this.#running < this.#options.concurrency && this.#readyHead === this.#ready.length && !this.#closed) this.#start(work);
    else this.#ready.push(work);
  }

  #startReady(): void {
    while (this.#running < this.#options.concurrency && this.#readyHead < this.#ready.length && !this.#closed) {
      const work = this.#ready[this.#readyHead] as Work;
      this.#ready[this.#readyHead++] = undefined; // let the queue forget it
      this.#start(work);
    }
    if (this.#readyHead === this.#ready.length) {
      this.#ready.length = 0;
      this.#readyHead = 0;
    } else if (this.#readyHead > 1024 && this.#readyHead * 2 > this.#ready.length) {
      this.#ready = this.#ready.slice(this.#readyHead);
      this.#readyHead = 0;
    }
  }

  #start(work: Work): void {
    this.#running += 1;
    let handled: Promise<void>;
    try {
      handled = this.#options.handleChange(work.change);
    } catch (error) {
      handled = Promise.reject(error);
    }
    handled.then(
      () => this.#settle(work, false, undefined),
      (error: unknown) => this.#settle(work, true, error),
    );
  }

  #settle(work: Work, failed: boolean, error: unknown): void {
    this.#running -= 1;
    for (const key of work.change.orderKeys) if (this.#tails.get(key) === work) this.#tails.delete(key);
    // Its followers run even after a failure (only a stopping bridge fails a change): nothing after a
    // failure is ever confirmed, so Postgres sends all of it again.
    const followers = work.followers;
    if (followers) for (const follower of followers) if (--follower.blockers === 0) this.#ready.push(follower);
    const segment = work.segment;
    segment.pending -= 1;
    if (segment.pending === 0 && segment.onDrained) {
      segment.onDrained();
      segment.onDrained = undefined;
    }
    if (failed) this.#fail(work.slot, error);
    else this.#finish(work.slot);
    this.#startReady();
  }

  /** A truncate is done: the changes submitted after it may start. */
  #release(segment: Segment): void {
    const held = segment.held ?? [];
    segment.held = undefined;
    for (const work of held) if (--work.blockers === 0) this.#ready.push(work);
    this.#startReady();
  }

  #finish(slot: Slot): void {
    slot.pending -= 1;
    this.#inFlight -= 1;
    this.#advance();
    if (this.#inFlight <= this.#options.lowWater && this.#capacityWaiters.length) {
      for (const resolve of this.#capacityWaiters.splice(0)) resolve();
    }
    if (this.#inFlight === 0 && this.#idleWaiters.length) for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  #fail(slot: Slot, error: unknown): void {
    // The change was neither handled nor parked: keep its transaction (and all after it) unconfirmed,
    // so Postgres sends them again after a restart.
    this.#failed ??= error;
    this.#options.logger.error({ err: error }, 'a change could not be handled nor parked; confirmations stop here');
    slot.failed = true;
    this.#finish(slot);
  }

  /**
   * A transaction (or marker) that is already done, right after another that is done, adds nothing
   * the earlier one cannot say: the earlier takes its LSN. So while one slow change holds the
   * confirmable LSN back, transactions without changes (a 0-row UPDATE still sends its identity
   * message) do not pile up: slots stay bounded by the changes in flight, which backpressure bounds.
   */
  #mergeDone(): void {
    const n = this.#slots.length;
    if (n < 2) return;
    const last = this.#slots[n - 1] as Slot;
    const previous = this.#slots[n - 2] as Slot;
    const done = (slot: Slot) => slot.closed && slot.pending === 0 && !slot.failed && slot.lsn !== undefined;
    if (!done(last) || !done(previous)) return;
    if ((last.lsn as bigint) > (previous.lsn as bigint)) previous.lsn = last.lsn;
    this.#slots.pop();
  }

  /** Transactions (and positions) tracked until they are confirmable: bounded, see #mergeDone. */
  get trackedTransactions(): number {
    return this.#slots.length;
  }

  #advance(): void {
    let confirmable = this.#confirmable;
    while (this.#slots.length) {
      const head = this.#slots[0] as Slot;
      if (head.failed || !head.closed || head.pending > 0 || head.lsn === undefined) break;
      if (head.lsn > confirmable) confirmable = head.lsn;
      this.#slots.shift();
    }
    if (confirmable > this.#confirmable) {
      this.#confirmable = confirmable;
      this.#positions.next(confirmable);
    }
  }

  #require(): Slot {
    if (!this.#open) throw new Error('a change arrived outside a transaction');
    return this.#open;
  }
}
