/**
 * Filter hooks off the main thread: a few worker threads (FILTER_WORKERS), each with the extensions
 * loaded (filter-worker.ts). A call goes to the worker with the fewest calls in hand. The main thread
 * keeps a hard deadline per call: a worker whose event loop a hook blocks past FILTER_TIMEOUT_MS is
 * answered for (HB504, never a pass) and replaced, so one busy hook stalls only its own writers.
 * Module state is therefore not shared between filter hooks (one copy per worker) and action hooks
 * (the main thread's copy).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { FilterFailureMode } from '../config.js';
import { transferable } from '../multi-host.js';
import { rejectionVerdict, type FilterOutcome, type NotLoadedFilter, type Verdict } from './filter-requests.js';

export interface WorkerSetup {
  index: number;
  extensionsPath: string;
  env: Readonly<Record<string, unknown>>;
  schema: string;
  /** For hooks' `database` (the user's search_path, a lock timeout). */
  /** Both as transferable() makes them (fromTransferable() in the worker). */
  hooksConnection: pg.ClientConfig;
  /** For the schema overview (pg_catalog only). */
  internalConnection: pg.ClientConfig;
  timeoutMs: number;
  /** Action handlers of events emitted on the worker (no committed change): one try, this long at most. */
  actionTimeoutMs: number;
  failureMode: FilterFailureMode;
  userMap: Readonly<Record<string, string>>;
  logLevel: string;
}

export type WorkerRequest =
  | { type: 'call'; id: number; body: string }
  | { type: 'keys'; primaryKeys: Array<[string, string[]]> }
  /** Writes that extensions which are not loaded guarded: `[collection, action, why]`. */
  | { type: 'not-loaded'; filters: Array<[string, string, NotLoadedFilter]> }
  | { type: 'reload' };

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'beat' }
  | { type: 'reloaded' }
  | { type: 'log'; line: string }
  | { type: 'verdict'; id: number; verdict: Verdict; collection?: string; op?: string; timedOut?: boolean };

/** jiti's ESM register hook (exported for `import` only, so found through its package.json). */
export function jitiRegister(from: string): string {
  const manifest = createRequire(from).resolve('jiti/package.json');
  const exported =
    (createRequire(from)('jiti/package.json') as { exports: Record<string, { import: string }> }).exports['./register']?.import ?? './lib/jiti-register.mjs';
  return pathToFileURL(join(dirname(manifest), exported)).href;
}

/** How long past FILTER_TIMEOUT_MS a worker may stay silent before its call is answered for it. */
const GRACE_MS = 250;
/** A worker silent for this long has its event loop blocked (it beats every 200 ms). */
const SILENT_MS = 1_000;
const READY_TIMEOUT_MS = 60_000;

interface Slot {
  index: number;
  worker: Worker;
  ready: boolean;
  pending: Map<number, (outcome: FilterOutcome) => void>;
  /** When the worker last said anything (a beat, a verdict). */
  heardAt: number;
  /** Respawns of this slot in a row without becoming ready: the next waits longer. */
  failures: number;
  /** A call of it timed out while it was silent: given no new calls until it beats again, or is replaced. */
  suspect: boolean;
}

export class FilterWorkers {
  readonly #setup: Omit<WorkerSetup, 'index'>;
  readonly #logger: Logger;
  readonly #slots: Slot[] = [];
  #nextId = 0;
  #primaryKeys: Array<[string, string[]]> = [];
  #notLoaded: Array<[string, string, NotLoadedFilter]> = [];
  /** Calls waiting for a worker to be ready. */
  #waiting: Array<{ id: number; send: (slot: Slot) => void }> = [];
  #stopped = false;

  constructor(setup: Omit<WorkerSetup, 'index'>, size: number, logger: Logger) {
    this.#setup = setup;
    this.#logger = logger.child({ component: 'filter-workers' });
    try {
      for (let index = 0; index < size; index++) this.#slots.push(this.#spawn(index, 0));
    } catch (error) {
      // None is left running that nobody would stop.
      this.#stopped = true;
      for (const slot of this.#slots) void slot.worker.terminate();
      throw error;
    }
  }

  /** Resolves once every worker has loaded the extensions. */
  async ready(): Promise<void> {
    await Promise.all(this.#slots.map((slot) => this.#whenReady(slot)));
  }

  call(body: string): Promise<FilterOutcome> {
    const id = ++this.#nextId;
    const deadline = Date.now() + this.#setup.timeoutMs + GRACE_MS;
    return new Promise((resolve) => {
      let slot: Slot | undefined;
      const timer = setTimeout(
        () => {
          this.#waiting = this.#waiting.filter((w) => w.id !== id);
          if (slot && !slot.pending.delete(id)) return;
          resolve({ verdict: this.#stuckVerdict() });
          // Replace the worker only if its event loop is blocked; a merely slow hook costs just its call.
          if (slot && Date.now() - slot.heardAt > SILENT_MS) this.#checkBlocked(slot);
        },
        Math.max(0, deadline - Date.now()),
      );
      const send = (to: Slot) => {
        slot = to;
        to.pending.set(id, (outcome) => {
          clearTimeout(timer);
          resolve(outcome);
        });
        to.worker.postMessage({ type: 'call', id, body } satisfies WorkerRequest);
      };
      const ready = this.#pick();
      // No worker is ready (all starting): the call waits for one, within its deadline.
      if (ready) send(ready);
      else this.#waiting.push({ id, send });
    });
  }

  /**
   * A worker silent when its call timed out is blocked — or the whole process was stopped (SIGSTOP, a
   * paused VM) and the main thread has not read its beats yet: replacing it then would leave writers
   * waiting for a new worker. So it gets no new calls, and is replaced only if it is still silent a
   * beat period later.
   */
  #checkBlocked(slot: Slot): void {
    if (slot.suspect) return;
    slot.suspect = true;
    const askedAt = Date.now();
    setTimeout(() => {
      slot.suspect = false;
      if (!this.#slots.includes(slot) || this.#stopped) return;
      if (slot.heardAt < askedAt) this.#replace(slot, 'a filter hook kept its worker busy past FILTER_TIMEOUT_MS');
    }, SILENT_MS).unref();
  }

  /** The ready worker with the fewest calls in hand; among equals, the one heard from last. Suspects last. */
  #pick(): Slot | undefined {
    let best: Slot | undefined;
    for (const slot of this.#slots) {
      if (!slot.ready || (slot.suspect && this.#slots.some((other) => other.ready && !other.suspect))) continue;
      if (!best || slot.pending.size < best.pending.size || (slot.pending.size === best.pending.size && slot.heardAt > best.heardAt)) best = slot;
    }
    return best;
  }

  /** Primary keys by collection, for update and delete filters' keys. */
  setPrimaryKeys(primaryKeys: Map<string, string[]>): void {
    this.#primaryKeys = [...primaryKeys];
    for (const slot of this.#slots) slot.worker.postMessage({ type: 'keys', primaryKeys: this.#primaryKeys } satisfies WorkerRequest);
  }

  /** The writes to refuse because an extension that guarded them is not loaded (the main thread decides). */
  setNotLoadedFilters(filters: Array<[string, string, NotLoadedFilter]>): void {
    this.#notLoaded = filters;
    for (const slot of this.#slots) slot.worker.postMessage({ type: 'not-loaded', filters } satisfies WorkerRequest);
  }

  reload(): void {
    for (const slot of this.#slots) slot.worker.postMessage({ type: 'reload' } satisfies WorkerRequest);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#slots.map((slot) => this.#end(slot)));
  }

  #stuckVerdict(): Verdict {
    return rejectionVerdict({
      sqlstate: 'HB504',
      message: `hookbridge: the filter hooks did not answer within ${this.#setup.timeoutMs} ms (their worker was busy)`,
      detail: 'code: FILTER_TIMEOUT',
      hint: 'a hook blocks its thread (a busy loop, synchronous I/O); make it asynchronous, or raise FILTER_TIMEOUT_MS',
    });
  }

  #spawn(index: number, failures: number): Slot {
    const here = import.meta.url;
    // From source (tests), the worker is TypeScript too: jiti loads it, as it loads extensions. In the
    // CLI's bundle this file is a chunk in dist/cli/, beside filter-worker.js (scripts/build.mjs).
    const source = here.endsWith('.ts');
    const url = new URL(source ? './filter-worker.ts' : './filter-worker.js', here);
    const execArgv = source ? ['--import', jitiRegister(here)] : [];
    const worker = new Worker(url, {
      workerData: {
        ...this.#setup,
        hooksConnection: transferable(this.#setup.hooksConnection),
        internalConnection: transferable(this.#setup.internalConnection),
        index,
      } satisfies WorkerSetup,
      execArgv,
      stdout: false,
      stderr: false,
    });
    const slot: Slot = { index, worker, ready: false, pending: new Map(), heardAt: Date.now(), failures, suspect: false };
    worker.on('message', (message: WorkerReply) => {
      slot.heardAt = Date.now();
      slot.suspect = false;
      if (message.type === 'ready') {
        slot.ready = true;
        slot.failures = 0;
        if (this.#primaryKeys.length) worker.postMessage({ type: 'keys', primaryKeys: this.#primaryKeys } satisfies WorkerRequest);
        if (this.#notLoaded.length) worker.postMessage({ type: 'not-loaded', filters: this.#notLoaded } satisfies WorkerRequest);
        for (const waiting of this.#waiting.splice(0)) waiting.send(this.#pick() ?? slot);
      } else if (message.type === 'failed') {
        this.#logger.error({ worker: index, reason: message.message }, 'a filter worker could not start');
      } else if (message.type === 'verdict') {
        const resolve = slot.pending.get(message.id);
        slot.pending.delete(message.id);
        resolve?.({ verdict: message.verdict, collection: message.collection, op: message.op, timedOut: message.timedOut });
      } else if (message.type === 'log') {
        this.#log(message.line);
      }
    });
    worker.on('error', (error) => this.#logger.error({ err: error, worker: index }, 'a filter worker failed'));
    worker.on('exit', (code) => {
      if (this.#stopped || !this.#slots.includes(slot)) return;
      this.#logger.error({ worker: index, code }, 'a filter worker exited; starting another');
      this.#replace(slot, 'its worker exited');
    });
    return slot;
  }

  #whenReady(slot: Slot): Promise<void> {
    if (slot.ready) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`a filter worker did not load the extensions within ${READY_TIMEOUT_MS / 1000} s`));
      }, READY_TIMEOUT_MS);
      const onMessage = (message: WorkerReply) => {
        if (message.type === 'ready') {
          cleanup();
          resolve();
        } else if (message.type === 'failed') {
          cleanup();
          reject(new Error(`a filter worker could not start: ${message.message}`));
        }
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`a filter worker exited (code ${code}) before it was ready`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        slot.worker.off('message', onMessage);
        slot.worker.off('exit', onExit);
      };
      slot.worker.on('message', onMessage);
      slot.worker.on('exit', onExit);
    });
  }

  /** Ends a worker (answering its calls in hand for it) and starts another in its place. */
  #replace(slot: Slot, reason: string): void {
    const position = this.#slots.indexOf(slot);
    if (position < 0 || this.#stopped) return;
    this.#logger.warn({ worker: slot.index, calls: slot.pending.size, reason }, 'replacing a filter worker');
    this.#slots.splice(position, 1);
    void this.#end(slot);
    // A slot that keeps failing before it is ready waits longer each time (never a tight loop).
    const failures = slot.ready ? 0 : slot.failures + 1;
    const delay = failures === 0 ? 0 : Math.min(30_000, 250 * 2 ** Math.min(failures, 7));
    setTimeout(() => {
      if (!this.#stopped) this.#slots.push(this.#spawn(slot.index, failures));
    }, delay).unref();
  }

  async #end(slot: Slot): Promise<void> {
    for (const resolve of slot.pending.values()) resolve({ verdict: this.#stuckVerdict() });
    slot.pending.clear();
    // terminate() cannot interrupt synchronous I/O: do not wait on it for ever.
    await Promise.race([slot.worker.terminate().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
  }

  #log(line: string): void {
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const { level, msg, time: _time, pid: _pid, hostname: _hostname, ...rest } = record;
    const method =
      typeof level !== 'number'
        ? 'info'
        : level >= 60
          ? 'fatal'
          : level >= 50
            ? 'error'
            : level >= 40
              ? 'warn'
              : level >= 30
                ? 'info'
                : level >= 20
                  ? 'debug'
                  : 'trace';
    this.#logger[method](rest, String(msg ?? ''));
  }
}
