/**
 * Configuration, resolved once at start: explicit options > environment > documented defaults.
 * Nothing else in the bridge reads `process.env`.
 */
import { statSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { parse as parseConnectionString } from 'pg-connection-string';
import { HookbridgeError } from '../hooks/errors.js';

export type FilterFailureMode = 'closed' | 'open';
/** How filter calls travel (see bridge/filters/filter-service.ts). */
export type FilterTransport = 'auto' | 'direct' | 'notify';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export type DatabaseSource =
  /** `DATABASE_URL` (or an explicit option). */
  | { kind: 'url'; url: string }
  /** libpq's `PG*` variables (PGHOST set, no DATABASE_URL). */
  | { kind: 'pg-env'; host: string; port: number; user?: string; password?: string; database?: string }
  /** Neither: start an embedded Postgres under `dataDir`. */
  | { kind: 'embedded'; dataDir: string };

export interface Config {
  database: DatabaseSource;
  extensionsPath: string;
  /**
   * Where `extensionsPath` came from: the CLI's -e/--extensions flag, a programmatic option, the
   * EXTENSIONS_PATH variable, or the default (./extensions). Only the default may be missing.
   */
  extensionsPathSource: 'flag' | 'option' | 'env' | 'default';
  extensionsAutoReload: boolean;
  /** HTTP listen address (health, metrics, routes of init hooks). */
  host: string;
  port: number;
  logLevel: LogLevel;
  /** Pretty, human logs (when a person watches a terminal) or pino's JSON lines. */
  logFormat: 'pretty' | 'json';
  schema: string;
  slotName: string;
  publicationName: string;
  filterTimeoutMs: number;
  filterFailureMode: FilterFailureMode;
  filterTransport: FilterTransport;
  /** Filter calls that can be in flight at once (more writers wait for a free one). */
  filterTickets: number;
  /** Worker threads that run filter hooks; 0 runs them on the main thread (one hook can then stall all). */
  filterWorkers: number;
  /** Where the filter server listens (triggers reach it through dblink). */
  filterListenHost: string;
  /** Its port; 0 picks a free one (triggers read the current one from the database). */
  filterPort: number;
  /** The address the *database server* uses to reach the bridge. */
  filterCallbackHost: string;
  /** Tries per action handler and event before the event is parked in failed_events. */
  actionAttempts: number;
  /** Longest an action handler may run before the try counts as failed. */
  actionTimeoutMs: number;
  /**
   * HOOKBRIDGE_USER_MAP: the application user (`accountability.user`) of writes by a database role that
   * sets none itself (`role=user,role2=user2`). A writer's own `hookbridge.user` or JWT claims win.
   */
  userMap: Readonly<Record<string, string>>;
  /** What extensions receive as `env`: the environment with numbers and booleans parsed. */
  env: Readonly<Record<string, unknown>>;
}

export type ConfigOptions = Partial<Omit<Config, 'database' | 'env' | 'port'>> & {
  databaseUrl?: string;
  dataDir?: string;
  /** A number, or the text of a flag (checked like the PORT variable). */
  port?: number | string;
};

export class ConfigError extends HookbridgeError {
  constructor(setting: string, message: string) {
    super('E_CONFIG', `${setting}: ${message}`, { details: { setting } });
    this.name = 'ConfigError';
  }
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

export function resolveConfig(
  options: ConfigOptions = {},
  env: Readonly<Record<string, string | undefined>> = process.env,
  context: { cwd?: string; isTTY?: boolean } = {},
): Readonly<Config> {
  const cwd = context.cwd ?? process.cwd();
  const pick = <T>(option: T | undefined, name: string): T | string | undefined =>
    option !== undefined ? option : nonEmpty(env[name]);

  const config: Config = {
    database: resolveDatabase(options, env, cwd),
    extensionsPath: resolve(cwd, String(pick(options.extensionsPath, 'EXTENSIONS_PATH') ?? './extensions')),
    extensionsPathSource:
      options.extensionsPath !== undefined ? (options.extensionsPathSource ?? 'option') : nonEmpty(env['EXTENSIONS_PATH']) !== undefined ? 'env' : 'default',
    extensionsAutoReload: toBoolean('EXTENSIONS_AUTO_RELOAD', pick(options.extensionsAutoReload, 'EXTENSIONS_AUTO_RELOAD') ?? false),
    host: String(pick(options.host, 'HOST') ?? '127.0.0.1'),
    port: toInteger('PORT', pick(options.port, 'PORT') ?? 8056, 0, 65535),
    logLevel: toChoice('LOG_LEVEL', pick(options.logLevel, 'LOG_LEVEL') ?? 'info', LOG_LEVELS),
    logFormat: toChoice('LOG_FORMAT', pick(options.logFormat, 'LOG_FORMAT') ?? (context.isTTY ? 'pretty' : 'json'), ['pretty', 'json'] as const),
    schema: toIdentifier('HOOKBRIDGE_SCHEMA', pick(options.schema, 'HOOKBRIDGE_SCHEMA') ?? 'hookbridge'),
    slotName: toIdentifier('HOOKBRIDGE_SLOT', pick(options.slotName, 'HOOKBRIDGE_SLOT') ?? 'hookbridge'),
    publicationName: toIdentifier('HOOKBRIDGE_PUBLICATION', pick(options.publicationName, 'HOOKBRIDGE_PUBLICATION') ?? 'hookbridge'),
    filterTimeoutMs: toInteger('FILTER_TIMEOUT_MS', pick(options.filterTimeoutMs, 'FILTER_TIMEOUT_MS') ?? 5000, 1, 3_600_000),
    filterFailureMode: toChoice('FILTER_FAILURE_MODE', pick(options.filterFailureMode, 'FILTER_FAILURE_MODE') ?? 'closed', ['closed', 'open'] as const),
    filterTransport: toChoice('FILTER_TRANSPORT', pick(options.filterTransport, 'FILTER_TRANSPORT') ?? 'auto', ['auto', 'direct', 'notify'] as const),
    filterTickets: toInteger('FILTER_TICKETS', pick(options.filterTickets, 'FILTER_TICKETS') ?? 64, 1, 10_000),
    filterWorkers: toInteger('FILTER_WORKERS', pick(options.filterWorkers, 'FILTER_WORKERS') ?? 2, 0, 64),
    filterListenHost: String(pick(options.filterListenHost, 'FILTER_LISTEN_HOST') ?? '127.0.0.1'),
    filterPort: toInteger('FILTER_PORT', pick(options.filterPort, 'FILTER_PORT') ?? 0, 0, 65535),
    filterCallbackHost: String(pick(options.filterCallbackHost, 'FILTER_CALLBACK_HOST') ?? '127.0.0.1'),
    actionAttempts: toInteger('ACTION_ATTEMPTS', pick(options.actionAttempts, 'ACTION_ATTEMPTS') ?? 5, 1, 1000),
    actionTimeoutMs: toInteger('ACTION_TIMEOUT_MS', pick(options.actionTimeoutMs, 'ACTION_TIMEOUT_MS') ?? 30_000, 1, 86_400_000),
    userMap: Object.freeze(options.userMap ?? toUserMap('HOOKBRIDGE_USER_MAP', nonEmpty(env['HOOKBRIDGE_USER_MAP']))),
    env: {},
  };
  config.env = Object.freeze(extensionEnv(parseEnvValues(env), config, cwd));
  return Object.freeze(config);
}

/**
 * What extensions read as `env`: Directus's defaults for the names that mean something here (an
 * extension that reads `env.PUBLIC_URL` or `env.DB_CLIENT` at registration finds what it would in
 * Directus), the environment over them, and the settings this bridge resolved (a flag included) over both.
 */
function extensionEnv(parsed: Record<string, unknown>, config: Config, cwd: string): Record<string, unknown> {
  return {
    CONFIG_PATH: resolve(cwd, '.env'),
    PUBLIC_URL: '/',
    DB_CLIENT: 'pg',
    QUERY_LIMIT_DEFAULT: 100,
    QUERY_LIMIT_MAX: Number.POSITIVE_INFINITY,
    MAX_BATCH_MUTATION: Number.POSITIVE_INFINITY,
    ...parsed,
    HOST: config.host,
    PORT: config.port,
    LOG_LEVEL: config.logLevel,
    LOG_STYLE: config.logFormat === 'pretty' ? 'pretty' : 'raw',
    EXTENSIONS_PATH: config.extensionsPath,
    EXTENSIONS_AUTO_RELOAD: config.extensionsAutoReload,
  };
}

const EXTENSIONS_PATH_SOURCES: Record<Config['extensionsPathSource'], string> = {
  flag: 'the -e/--extensions flag',
  option: 'the extensionsPath option',
  env: 'the EXTENSIONS_PATH environment variable',
  default: 'the default',
};

/**
 * A configured extensions folder must exist: a wrong path would start a bridge without the hooks that
 * guard the user's tables. Only the default (./extensions) may be missing — a fresh checkout has none,
 * and `hookbridge start` must work there; tables that extensions guarded before stay guarded anyway
 * (see bridge/extension-guards.ts). The message names the path and where it came from, nothing else.
 */
export function checkExtensionsPath(config: Pick<Config, 'extensionsPath' | 'extensionsPathSource'>): void {
  if (config.extensionsPathSource === 'default') return;
  let isFolder: boolean | undefined;
  try {
    isFolder = statSync(config.extensionsPath).isDirectory();
  } catch {
    isFolder = undefined;
  }
  if (isFolder) return;
  throw new ConfigError(
    'EXTENSIONS_PATH',
    `${isFolder === false ? 'not a folder' : 'no such folder'}: ${config.extensionsPath} (set by ${EXTENSIONS_PATH_SOURCES[config.extensionsPathSource]}); ` +
      'point it at the folder that holds your extensions',
  );
}

/**
 * The HTTP port must be free before the bridge touches the database: found only when the server
 * listens, a busy port would stop a start that has already put triggers and replication in place.
 * A free port can still be taken before the bridge listens; that start then fails as before.
 */
export async function checkPortFree(config: Pick<Config, 'host' | 'port'>): Promise<void> {
  if (config.port === 0) return;
  const problem = await new Promise<NodeJS.ErrnoException | undefined>((done) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => done(error));
    server.listen({ host: config.host, port: config.port, exclusive: true }, () => server.close(() => done(undefined)));
  });
  if (!problem) return;
  const address = `${config.host}:${config.port}`;
  if (problem.code === 'EADDRINUSE') {
    throw new ConfigError('PORT', `${address} is already in use (another hookbridge, or another program); stop it, or set PORT (-p) to a free port (0 picks one)`);
  }
  if (problem.code === 'EACCES') {
    throw new ConfigError('PORT', `not allowed to listen on ${address} (ports below 1024 need privileges); set PORT (-p) to a port from 1024 up`);
  }
  if (problem.code === 'EADDRNOTAVAIL' || problem.code === 'ENOTFOUND' || problem.code === 'EAI_AGAIN') {
    throw new ConfigError('HOST', `cannot listen on ${config.host}: no such address on this machine (${problem.code})`);
  }
  throw new ConfigError('PORT', `cannot listen on ${address}: ${problem.message}`);
}

function resolveDatabase(options: ConfigOptions, env: Readonly<Record<string, string | undefined>>, cwd: string): DatabaseSource {
  const url = options.databaseUrl ?? nonEmpty(env['DATABASE_URL']);
  if (url !== undefined) {
    // Never echo the value: it may hold a password.
    if (!/^postgres(ql)?:\/\//.test(url)) {
      throw new ConfigError('DATABASE_URL', 'must be a postgres:// or postgresql:// URL');
    }
    // The parser pg itself uses: what it refuses here would fail later as a bare "Invalid URL".
    try {
      parseConnectionString(url);
    } catch (error) {
      // The URL parsed, but a file it names (sslcert, sslkey, sslrootcert) could not be read: say which.
      const file = error as NodeJS.ErrnoException;
      if (typeof file.code === 'string' && file.code.startsWith('E') && typeof file.path === 'string') {
        throw new ConfigError('DATABASE_URL', `names a file that could not be read (${file.code}: ${file.path}); check its ssl* parameters`);
      }
      throw new ConfigError(
        'DATABASE_URL',
        'is not a valid URL (the form is postgres://user:password@host:port/database; a port must be a number, ' +
          'and characters such as @ : / ? # % in the user name or password must be percent-encoded, e.g. @ as %40)',
      );
    }
    return { kind: 'url', url };
  }
  const host = nonEmpty(env['PGHOST']) ?? nonEmpty(env['PGHOSTADDR']);
  if (host !== undefined) {
    return {
      kind: 'pg-env',
      host,
      port: toInteger('PGPORT', nonEmpty(env['PGPORT']) ?? 5432, 1, 65535),
      user: nonEmpty(env['PGUSER']),
      password: env['PGPASSWORD'],
      database: nonEmpty(env['PGDATABASE']),
    };
  }
  return { kind: 'embedded', dataDir: resolve(cwd, options.dataDir ?? nonEmpty(env['HOOKBRIDGE_DATA_DIR']) ?? './.hookbridge') };
}

/** Directus hands extensions its environment with types parsed; so do we. */
export function parseEnvValues(env: Readonly<Record<string, string | undefined>>): Record<string, unknown> {
  const parsed: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) continue;
    if (value === 'true' || value === 'false') parsed[key] = value === 'true';
    else if (value.trim() !== '' && /^-?\d+(\.\d+)?$/.test(value) && String(Number(value)) === value) parsed[key] = Number(value);
    else parsed[key] = value;
  }
  return parsed;
}

/** A connection string fit for logs: the password replaced, nothing else hidden. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable connection string)';
  }
}

/** `role=user,role2=user2`; a role named twice, or a pair without both halves, is an error. */
export function toUserMap(name: string, value: string | undefined): Record<string, string> {
  const map: Record<string, string> = Object.create(null);
  if (value === undefined) return map;
  for (const [index, pair] of value.split(',').entries()) {
    const at = pair.indexOf('=');
    const role = at < 0 ? '' : pair.slice(0, at).trim();
    const user = at < 0 ? '' : pair.slice(at + 1).trim();
    if (!role || !user) {
      throw new ConfigError(name, `pair ${index + 1} (${JSON.stringify(pair)}) is not role=user; expected e.g. "reporting=7f1c…,etl=etl-service"`);
    }
    if (role in map) throw new ConfigError(name, `the role "${role}" is mapped twice`);
    map[role] = user;
  }
  return map;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

function toBoolean(name: string, value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  const text = String(value).toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(text)) return true;
  if (['false', '0', 'no', 'off'].includes(text)) return false;
  throw new ConfigError(name, `expected true or false, got ${JSON.stringify(value)}`);
}

function toInteger(name: string, value: unknown, min: number, max: number): number {
  const number = typeof value === 'number' ? value : Number(String(value).trim());
  if (!Number.isInteger(number) || number < min || number > max) {
    throw new ConfigError(name, `expected an integer from ${min} to ${max}, got ${describeValue(value)}`);
  }
  return number;
}

/** A bad value as the user wrote it (JSON.stringify turns NaN into null). */
function describeValue(value: unknown): string {
  return typeof value === 'number' ? String(value) : JSON.stringify(value);
}

function toChoice<T extends string>(name: string, value: unknown, choices: readonly T[]): T {
  if (typeof value === 'string' && (choices as readonly string[]).includes(value.toLowerCase())) return value.toLowerCase() as T;
  throw new ConfigError(name, `expected one of ${choices.join(', ')}, got ${JSON.stringify(value)}`);
}

function toIdentifier(name: string, value: unknown): string {
  if (typeof value === 'string' && IDENTIFIER.test(value)) return value;
  throw new ConfigError(name, `expected a lower-case SQL identifier (letters, digits, _; at most 63), got ${JSON.stringify(value)}`);
}
