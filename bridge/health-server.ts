/**
 * `GET /health` from a thread of its own, so it answers while the main thread's event loop is blocked
 * (a hook's synchronous busy loop, a huge JSON parse): a health check that hangs is no health check.
 *
 * The simplest design that keeps `PORT` one port: a worker thread (health-worker.ts) owns the
 * listening socket. It answers `/health` itself and passes every other request (`/metrics`, the routes
 * init hooks add to the express app) to the main thread's express app, which listens on a private
 * socket only this process' user can open (a Unix socket in a 0700 temp folder; a named pipe on
 * Windows). Sockets cannot move between threads, so the worker proxies rather than hands them over.
 *
 * What `/health` says comes from the main thread, which knows the state: the worker asks for a fresh
 * report on each request, and the main thread also sends one every BEAT_MS — its heartbeat. A main
 * thread that does not answer within ASK_MS gets its last report served while it is younger than
 * BLOCKED_MS; after that the worker answers 503 itself: a blocked main thread answers no filter call
 * and runs no action.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { jitiRegister } from './filters/filter-workers.js';

export interface HealthReport {
  status: 'ok' | 'unavailable';
  [key: string]: unknown;
}

/** The main thread's heartbeat (a fresh report each time). */
export const BEAT_MS = 250;
/** How long a request waits for a fresh report before the last one is used. */
export const ASK_MS = 500;
/** A main thread silent for this long is blocked: /health answers 503. */
export const BLOCKED_MS = 2_000;
/** A worker that exits on its own is started again, at most this often. */
const RESPAWN_MS = 1_000;

export interface HealthWorkerSetup {
  host: string;
  port: number;
  /** Where the main thread's express app listens (a Unix socket path or a Windows pipe name). */
  upstream: string;
  askMs: number;
  blockedMs: number;
}

export type ToHealthWorker = { type: 'report'; report: HealthReport; id?: number } | { type: 'close' };

export type FromHealthWorker =
  | { type: 'listening'; port: number }
  | { type: 'failed'; error: { message: string; code?: string; errno?: number; syscall?: string; address?: string; port?: number } }
  | { type: 'ask'; id: number }
  | { type: 'log'; level: 'debug' | 'warn'; msg: string; detail?: Record<string, unknown> }
  | { type: 'closed' };

export interface HealthServerOptions {
  host: string;
  port: number;
  upstream: string;
  health: () => HealthReport;
  logger: Logger;
}

/** The worker that owns the HTTP port; `close()` stops it (safe to call twice). */
export class HealthServer {
  readonly #options: HealthServerOptions;
  #worker: Worker | undefined;
  #beat: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  #port = 0;

  private constructor(options: HealthServerOptions) {
    this.#options = options;
  }

  static async start(options: HealthServerOptions): Promise<HealthServer> {
    const server = new HealthServer(options);
    server.#port = await server.#spawn(options.port);
    server.#beat = setInterval(() => server.#send(), BEAT_MS);
    server.#beat.unref();
    return server;
  }

  /** The port the worker listens on (the one asked for, or the one taken for port 0). */
  get port(): number {
    return this.#port;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    clearInterval(this.#beat);
    const worker = this.#worker;
    this.#worker = undefined;
    if (!worker) return;
    // The worker closes its server (and its connections); past a second it is stopped regardless.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1_000);
      worker.on('message', (message: FromHealthWorker) => {
        if (message.type !== 'closed') return;
        clearTimeout(timer);
        resolve();
      });
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      worker.postMessage({ type: 'close' } satisfies ToHealthWorker);
    });
    await worker.terminate();
  }

  #report(): HealthReport {
    try {
      return this.#options.health();
    } catch (error) {
      return { status: 'unavailable', reason: `the health report failed: ${(error as Error).message}` };
    }
  }

  #send(id?: number): void {
    const worker = this.#worker;
    if (!worker) return;
    try {
      worker.postMessage({ type: 'report', report: this.#report(), id } satisfies ToHealthWorker);
    } catch (error) {
      // A value that cannot be cloned: said, rather than thrown from a timer.
      worker.postMessage({
        type: 'report',
        report: { status: 'unavailable', reason: `the health report failed: ${(error as Error).message}` },
        id,
      } satisfies ToHealthWorker);
    }
  }

  /** Starts the worker on `port`; resolves with the port it listens on, rejects as `listen` would. */
  #spawn(port: number): Promise<number> {
    const here = import.meta.url;
    // From source (tests), the worker is TypeScript too: jiti loads it, as it loads extensions. In the
    // CLI's bundle this file is a chunk in dist/cli/, beside health-worker.js (scripts/build.mjs).
    const source = here.endsWith('.ts');
    const url = new URL(source ? './health-worker.ts' : './health-worker.js', here);
    const execArgv = source ? ['--import', jitiRegister(here)] : [];
    const setup: HealthWorkerSetup = { host: this.#options.host, port, upstream: this.#options.upstream, askMs: ASK_MS, blockedMs: BLOCKED_MS };
    const worker = new Worker(url, { workerData: setup, execArgv });
    this.#worker = worker;
    const logger = this.#options.logger.child({ component: 'http' });
    const startedAt = Date.now();
    return new Promise((resolve, reject) => {
      let listening = false;
      worker.on('message', (message: FromHealthWorker) => {
        if (message.type === 'ask') this.#send(message.id);
        else if (message.type === 'log') logger[message.level](message.detail ?? {}, message.msg);
        else if (message.type === 'listening') {
          listening = true;
          this.#send();
          resolve(message.port);
        } else if (message.type === 'failed') {
          reject(Object.assign(new Error(message.error.message), message.error));
        }
      });
      worker.on('error', (error) => {
        if (!listening) reject(error);
        else logger.error({ err: error }, 'the HTTP thread failed');
      });
      worker.on('exit', (code) => {
        if (!listening) return reject(new Error(`the HTTP thread exited (code ${code}) before it listened`));
        if (this.#worker !== worker || this.#closing) return;
        // Without it there is no /health and no HTTP API at all: start another on the same port.
        logger.error({ code }, 'the HTTP thread exited; starting another');
        this.#worker = undefined;
        const wait = Math.max(0, startedAt + RESPAWN_MS - Date.now());
        setTimeout(() => {
          if (this.#closing) return;
          this.#spawn(this.#port).catch((error: unknown) => logger.error({ err: error }, 'starting the HTTP thread again failed: no /health'));
        }, wait).unref();
      });
    });
  }
}

/** A private place for the main thread's express app to listen: only this user can connect. */
export function privateSocketPath(dir: string): string {
  if (process.platform === 'win32') return `\\\\.\\pipe\\hookbridge-http-${process.pid}-${randomBytes(6).toString('hex')}`;
  return join(dir, 'app.sock');
}
