/**
 * The bridge's pino logger: JSON lines by default, pretty when a person watches a terminal.
 * Secrets never reach a line: known secret-bearing fields are redacted wherever they appear.
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

export function createLogger(config: Pick<Config, 'logLevel' | 'logFormat'>, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    name: 'hookbridge',
    level: config.logLevel,
    redact: { paths: REDACTED_PATHS, censor: '***' },
    serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
  };
  if (destination) return pino(options, destination);
  if (config.logFormat === 'pretty') {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' } } });
  }
  return pino(options);
}
