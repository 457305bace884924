/**
 * The bridge's pino logger: JSON lines by default, pretty when a person watches a terminal.
 * Secrets never reach a line: known secret-bearing fields are redacted wherever they appear.
 *
 * `start` logs to stdout (its output is the log). Every other command logs to stderr, so that what
 * it prints on stdout (`--json` above all) is all a script reads.
 */
import pino, { type Logger } from 'pino';
import type { Config } from './config.js';

export const REDACTED_PATHS = [
  'password',
  '*.password',
  'connectionString',
  '*.connectionString',
  'databaseUrl',
  '*.databaseUrl',
  'env.DATABASE_URL',
  'env.PGPASSWORD',
];

/** Where log lines go: a stream of the caller's, or one of the process's own. */
export type LogDestination = pino.DestinationStream | 'stdout' | 'stderr';

export function createLogger(config: Pick<Config, 'logLevel' | 'logFormat'>, destination: LogDestination = 'stdout'): Logger {
  const options: pino.LoggerOptions = {
    name: 'hookbridge',
    level: config.logLevel,
    redact: { paths: REDACTED_PATHS, censor: '***' },
    serializers: { err: serializeError, error: serializeError },
  };
  if (typeof destination !== 'string') return pino(options, destination);
  const fd = destination === 'stderr' ? 2 : 1;
  if (config.logFormat === 'pretty') {
    return pino({
      ...options,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name', destination: fd } },
    });
  }
  return fd === 1 ? pino(options) : pino(options, pino.destination({ fd, sync: true }));
}

/**
 * pino's error serializer, minus what no reader wants: pg's pool puts the whole client (its socket,
 * parsers and settings: hundreds of lines) on the errors it emits, and the stack of a lost connection
 * only shows pg's internals. A connection error keeps its type, message and code.
 */
export function serializeError(error: unknown): unknown {
  if (error instanceof Error) {
    if (isConnectionError(error)) return brief(error.name || 'Error', error.message, (error as { code?: unknown }).code);
    const serialized = pino.stdSerializers.err(error) as unknown as Record<string, unknown>;
    delete serialized['client'];
    return serialized;
  }
  // An error serialized in another thread (a filter worker's log line) arrives as a plain object.
  if (typeof error === 'object' && error !== null && typeof (error as { message?: unknown }).message === 'string') {
    const { client: _client, ...rest } = error as Record<string, unknown>;
    const message = rest['message'] as string;
    if (isConnectionError({ message, code: rest['code'] })) return brief(typeof rest['type'] === 'string' ? rest['type'] : 'Error', message, rest['code']);
    return rest;
  }
  return error;
}

function brief(type: string, message: string, code: unknown): Record<string, unknown> {
  return { type, message, ...(typeof code === 'string' ? { code } : {}) };
}

/** SQLSTATE classes 08 (connection exception) and 57P0x (the server shut down or is starting), and lost sockets. */
const CONNECTION_SQLSTATE = /^(08|57P0[1-4])/;
const CONNECTION_ERRNO = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const CONNECTION_MESSAGE = /^(Connection terminated|Client has encountered a connection error|Client was closed and is not queryable)/;

export function isConnectionError(error: { message: string; code?: unknown }): boolean {
  const code = error.code;
  if (typeof code === 'string' && (CONNECTION_SQLSTATE.test(code) || CONNECTION_ERRNO.has(code))) return true;
  return CONNECTION_MESSAGE.test(error.message);
}
