/**
 * The action pipeline: stream events in, handled changes out, and the one number that matters for
 * "nothing lost": the LSN up to which every change has been handled (or parked), which is the only
 * LSN ever confirmed to Postgres.
 *
 * - Changes run concurrently (up to `concurrency`), except that changes sharing an order key (same
 *   table and primary key) run one after another in commit order.
 * - A transaction is done when its Commit arrived and all its changes finished. Transactions finish
 *   out of order; the confirmable LSN only moves past a prefix of finished transactions.
 * - Backpressure: `waitForCapacity()` resolves once in-flight changes fell to `lowWater`, so the
 *   stream reader can stop reading (and Postgres stop sending) while handlers catch up.
 * - A TRUNCATE is a barrier: everything before it finishes first, nothing after starts until it did.
 */
import { Subject, from, mergeMap, type Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { ChangeEvent, StreamEvent, TruncateEvent } from './change-events.js';

export interface PipelineOptions {
  handleChange: (change: ChangeEvent) => Promise<void>;
  handleTruncate: (truncate: TruncateEvent) => Promise<void>;
  /** Called with every new confirmable LSN (monotonic). */
  onConfirmable: (lsn: bigint) => void;
  concurrency?: number;
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

type Work = { slot: Slot; run: () => Promise<void>; orderKeys: string[]; done: () => void };

export class ChangePipeline {
  readonly #options: Required<Omit<PipelineOptions, 'logger'>> & { logger: Logger };
  readonly #work = new Subject<Work>();
  readonly #subscription: Subscription;
  readonly #slots: Slot[] = [];
  readonly #tails = new Map<string, Promise<void>>();
  #open: Slot | undefined;
  #inFlight = 0;
  #confirmable = 0n;
  #capacityWaiters: Array<() => void> = [];
  #idleWaiters: Array<() => void> = [];
  #barrier: Promise<void> = Promise.resolve();
  /** Completion of every submitted, unfinished piece of work (what a barrier waits for). */
  readonly #unfinished = new Set<Promise<void>>();
  #failed: unknown;

  constructor(options: PipelineOptions) {
    this.#options = { concurrency: 64, highWater: 10_000, lowWater: 5_000, ...options };
    this.#subscription = this.#work
      .pipe(mergeMap((work) => from(this.#runInOrder(work)), this.#options.concurrency))
      .subscribe();
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get confirmable(): bigint {
    return this.#confirmable;
  }

  /** Set when a change could not be handled nor parked: nothing after it will ever be confirmed. */
  get failure(): unknown {
    return this.#failed;
  }

  push(event: StreamEvent): void {
    switch (event.kind) {
      case 'begin':
        if (this.#open) throw new Error('pgoutput began a transaction inside another one');
        this.#open = { lsn: undefined, pending: 0, closed: false };
        this.#slots.push(this.#open);
        return;
      case 'change': {
        const slot = this.#require();
        const change = event.change;
        this.#submit(slot, change.orderKeys, () => this.#options.handleChange(change));
        return;
      }
      case 'truncate': {
        const slot = this.#require();
        const truncate = event.truncate;
        // Everything submitted so far finishes first; work submitted later waits for the truncate.
        const before = Promise.allSettled([this.#barrier, ...this.#unfinished]);
        slot.pending += 1;
        this.#inFlight += 1;
        this.#barrier = before
          .then(() => this.#options.handleTruncate(truncate))
          .then(
            () => this.#finish(slot),
            (error) => this.#fail(slot, error),
          );
        return;
      }
      case 'commit': {
        const slot = this.#require();
        slot.lsn = event.endLsn;
        slot.closed = true;
        this.#open = undefined;
        this.#advance();
        return;
      }
      case 'marker':
        if (this.#open) return; // a position inside an open transaction is not confirmable
        this.#slots.push({ lsn: event.lsn, pending: 0, closed: true });
        this.#advance();
        return;
    }
  }

  /** Resolves when the pipeline can take more (immediately when below the high-water mark). */
  waitForCapacity(): Promise<void> {
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
    const open = this.#open;
    this.#open = undefined;
    if (open) {
      const index = this.#slots.indexOf(open);
      if (index >= 0) this.#slots.splice(index, 1);
    }
    this.#advance();
  }

  close(): void {
    this.#subscription.unsubscribe();
    this.#work.complete();
  }

  #submit(slot: Slot, orderKeys: string[], run: () => Promise<void>): void {
    slot.pending += 1;
    this.#inFlight += 1;
    const barrier = this.#barrier;
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    this.#unfinished.add(finished);
    this.#work.next({
      slot,
      orderKeys,
      run: () => barrier.then(run),
      done: () => {
        this.#unfinished.delete(finished);
        done();
      },
    });
  }

  async #runInOrder(work: Work): Promise<void> {
    const previous = work.orderKeys.map((key) => this.#tails.get(key)).filter((p): p is Promise<void> => p !== undefined);
    const current = (previous.length ? Promise.allSettled(previous) : Promise.resolve()).then(() => work.run());
    const settled = current.then(
      () => undefined,
      () => undefined,
    );
    for (const key of work.orderKeys) this.#tails.set(key, settled);
    try {
      await current;
      this.#finish(work.slot);
    } catch (error) {
      this.#fail(work.slot, error);
    } finally {
      for (const key of work.orderKeys) if (this.#tails.get(key) === settled) this.#tails.delete(key);
      work.done();
    }
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
      this.#options.onConfirmable(confirmable);
    }
  }

  #require(): Slot {
    if (!this.#open) throw new Error('a change arrived outside a transaction');
    return this.#open;
  }
}
