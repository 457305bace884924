import { accessSync, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import pg from 'pg';

/**
 * Runs `fn` with a connected pg Client and always closes it, so a failing
 * assertion cannot leak a connection into the leak check of the database.
 */
export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  // A terminated backend (e.g. DROP DATABASE ... WITH (FORCE)) emits 'error'
  // on an idle client; unhandled, that would crash the test worker.
  let lateError: unknown;
  client.on('error', (err) => {
    lateError = err;
  });
  await client.connect();
  try {
    return await fn(client);
  } catch (err) {
    if (lateError && err instanceof Error && !err.cause) err.cause = lateError;
    throw err;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface WaitForOptions {
  /** Give up after this long; default 10 s. */
  timeoutMs?: number;
  /** Pause between attempts; default 50 ms. */
  intervalMs?: number;
  /** What was expected, for the failure message. */
  message: string | (() => string);
}

/**
 * Polls until `predicate` returns a truthy value and returns it. A throwing
 * predicate counts as "not yet" and its last error is reported on timeout,
 * so tests fail with a reason instead of hanging.
 */
export async function waitFor<T>(predicate: () => T | Promise<T>, options: WaitForOptions): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(0, deadline - Date.now()))));
  }
  const message = typeof options.message === 'function' ? options.message() : options.message;
  const detail = lastError === undefined ? '' : `; last error: ${lastError instanceof Error ? lastError.message : String(lastError)}`;
  throw new Error(`waitFor timed out after ${timeoutMs} ms (${attempts} attempts): ${message}${detail}`, {
    cause: lastError,
  });
}

/** The psql client from PATH, else Debian's PostgreSQL 15 install; undefined if neither exists. */
export function findPsql(): string | undefined {
  const candidates = [
    ...(process.env['PATH'] ?? '')
      .split(path.delimiter)
      .filter(Boolean)
      .map((dir) => path.join(dir, 'psql')),
    '/usr/lib/postgresql/15/bin/psql',
  ];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** host:port/db of a URL, for messages that must not carry credentials. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return '<unparseable url>';
  }
}
