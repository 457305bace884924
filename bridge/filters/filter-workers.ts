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
import { rejectionVerdict, type Verdict } from './filter-requests.js';

export interface WorkerSetup {
  index: number;
  extensionsPath: string;
  env: Readonly<Record<string, unknown>>;
  schema: string;
  /** For hooks' `database` (the user's search_path, a lock timeout). */
  hooksConnection: pg.ClientConfig;
  /** For the schema overview (pg_catalog only). */
  internalConnection: pg.ClientConfig;
  timeoutMs: number;
  failureMode: FilterFailureMode;
  logLevel: string;
}

export type WorkerRequest =
  | { type: 'call'; id: number; body: string }
  | { type: 'keys'; primaryKeys: Array<[string, string[]]> }
  | { type: 'reload' };

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'reloaded' }
  | { type: 'log'; line: string }
  | { type: 'verdict'; id: number; verdict: Verdict; collection?: string; op?: string; timedOut?: boolean };

export interface FilterOutcome {
  verdict: Verdict;
  collection?: string;
  op?: string;
  /** The hooks themselves ran past the timeout (the worker said so). */
  timedOut?: boolean;
}

/** jiti's ESM register hook (exported for `import` only, so found through its package.json). */
function jitiRegister(from: string): string {
  const manifest = createRequire(from).resolve('jiti/package.json');
  const exported = (createRequire(from)('jiti/package.json') as { exports: Record<string, { import: string }> }).exports['./register']?.import ?? './lib/jiti-register.mjs';
  return pathToFileURL(join(dirname(manifest), exported)).href;
}

/** How long past FILTER_TIMEOUT_MS a worker may stay silent before its call is answered for it. */
const GRACE_MS = 250;
const RESPAWN_DELAY_MS = 1_000;

interface Slot {
  index: number;
  worker: Worker;
  ready: boolean;
  pending: Map<number, (outcome: FilterOutcome) => void>;
}

export class FilterWorkers {
  readonly #setup: Omit<WorkerSetup, 'index'>;
  readonly #logger: Logger;
  readonly #slots: Slot[] = [];
  #nextId = 0;
  #primaryKeys: Array<[string, string[]]> = [];
  #stopped = false;

  constructor(setup: Omit<WorkerSetup, 'index'>, size: number, logger: Logger) {
    this.#setup = setup;
    this.#logger = logger.child({ component: 'filter-workers' });
    for (let index = 0; index < size; index++) this.#slots.push(this.#spawn(index));
  }

  /** Resolves once every worker has loaded the extensions. */
  async ready(): Promise<void> {
    await Promise.all(this.#slots.map((slot) => this.#whenReady(slot)));
  }

  call(body: string): Promise<FilterOutcome> {
    const live = this.#slots.filter((slot) => slot.ready);
    const slot = (live.length ? live : this.#slots).reduce((best, s) => (s.pending.size < best.pending.size ? s : best));
    const id = ++this.#nextId;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (!slot.pending.delete(id)) return;
        resolve({ verdict: this.#stuckVerdict() });
        this.#replace(slot, 'a filter hook kept its worker busy past FILTER_TIMEOUT_MS');
      }, this.#setup.timeoutMs + GRACE_MS);
      slot.pending.set(id, (outcome) => {
        clearTimeout(timer);
        resolve(outcome);
      });
      slot.worker.postMessage({ type: 'call', id, body } satisfies WorkerRequest);
    });
  }

  /** Primary keys by collection, for update and delete filters' keys. */
  setPrimaryKeys(primaryKeys: Map<string, string[]>): void {
    this.#primaryKeys = [...primaryKeys];
    for (const slot of this.#slots) slot.worker.postMessage({ type: 'keys', primaryKeys: this.#primaryKeys } satisfies WorkerRequest);
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

  #spawn(index: number): Slot {
    const here = import.meta.url;
    // From source (tests), the worker is TypeScript too: jiti loads it, as it loads extensions.
    const source = here.endsWith('.ts');
    const url = new URL(source ? './filter-worker.ts' : './filter-worker.js', here);
    const execArgv = source ? ['--import', jitiRegister(here)] : [];
    const worker = new Worker(url, { workerData: { ...this.#setup, index } satisfies WorkerSetup, execArgv, stdout: false, stderr: false });
    const slot: Slot = { index, worker, ready: false, pending: new Map() };
    worker.on('message', (message: WorkerReply) => {
      if (message.type === 'ready') {
        slot.ready = true;
        if (this.#primaryKeys.length) worker.postMessage({ type: 'keys', primaryKeys: this.#primaryKeys } satisfies WorkerRequest);
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
      const onMessage = (message: WorkerReply) => {
        if (message.type !== 'ready') return;
        cleanup();
        resolve();
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`a filter worker exited (code ${code}) before it was ready`));
      };
      const cleanup = () => {
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
    const start = () => {
      if (this.#stopped) return;
      this.#slots.push(this.#spawn(slot.index));
    };
    // Never two restarts of one slot in a tight loop (an extension that crashes its worker at load).
    if (this.#slots.length > 0) start();
    else setTimeout(start, RESPAWN_DELAY_MS).unref();
  }

  async #end(slot: Slot): Promise<void> {
    for (const resolve of slot.pending.values()) resolve({ verdict: this.#stuckVerdict() });
    slot.pending.clear();
    slot.worker.removeAllListeners('exit');
    await slot.worker.terminate().catch(() => undefined);
  }

  #log(line: string): void {
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const { level, msg, time: _time, pid: _pid, hostname: _hostname, ...rest } = record;
    const method = typeof level === 'number' && level >= 50 ? 'error' : level === 40 ? 'warn' : level === 30 ? 'info' : 'debug';
    this.#logger[method](rest, String(msg ?? ''));
  }
}
