/**
 * Configuration, resolved once at start: explicit options > environment > documented defaults, every
 * setting read through its declaration in bridge/settings.ts. Nothing else in the bridge reads
 * `process.env` (the CLI's flags arrive here as options), so an empty variable means unset everywhere.
 */
import { statSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { parse as parseConnectionString } from 'pg-connection-string';
import { connectionFromUrl, HostListError, redactHostList } from './multi-host.js';
export { ConfigError } from './settings.js';
import { ConfigError, DEFAULT_DATA_DIR, nonEmpty, toInteger, VALUE_SETTINGS, type SettingContext, type ValueKey } from './settings.js';

export type FilterFailureMode = 'closed' | 'open';
/** How filter calls travel (see bridge/filters/filter-service.ts). */
export type FilterTransport = 'auto' | 'direct' | 'notify';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export type DatabaseSource =
  /** `DATABASE_URL` (or an explicit option). */
  | { kind: 'url'; url: string }
  /** libpq's `PG*` variables (PGHOST set, no DATABASE_URL). */
  | { kind: 'pg-env'; host: string; port: number; user?: string; password?: string; database?: string }
  /** Neither: start an embedded Postgres under `dataDir`, from the binaries in `binDir` (default: the installed ones). */
  | { kind: 'embedded'; dataDir: string; binDir?: string };

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
  /** HOOKBRIDGE_SLOT_FAILOVER: the slot is a failover slot (PostgreSQL 17+), kept by standbys that synchronise slots. */
  slotFailover: boolean;
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
  /** A folder with initdb, pg_ctl and postgres for the embedded Postgres. */
  pgBin?: string;
  /** A number, or the text of a flag (checked like the PORT variable). */
  port?: number | string;
};

export function resolveConfig(
  options: ConfigOptions = {},
  env: Readonly<Record<string, string | undefined>> = process.env,
  context: {
    cwd?: string;
    isTTY?: boolean;
    /** A caller's own defaults, below the environment (the CLI's `status` logs at warn unless LOG_LEVEL or a flag says otherwise). */
    defaults?: Partial<Pick<Config, ValueKey>>;
  } = {},
): Readonly<Config> {
  const where: SettingContext = { cwd: context.cwd ?? process.cwd(), isTTY: context.isTTY ?? false };
  const database = resolveDatabase(options, env, where.cwd);
  const given = options as Readonly<Record<string, unknown>>;
  const sources: Partial<Record<ValueKey, 'option' | 'env' | 'default'>> = {};
  // An option (a flag, for the CLI) wins over the variable, the variable over the default; an empty
  // variable counts as unset.
  const read = <K extends ValueKey>(key: K): Config[K] => {
    const setting = VALUE_SETTINGS[key];
    const fromOption = given[key];
    const fromEnv = nonEmpty(env[setting.env]);
    sources[key] = fromOption != null ? 'option' : fromEnv !== undefined ? 'env' : 'default';
    const fallback = context.defaults?.[key] ?? (typeof setting.default === 'function' ? setting.default(where) : setting.default);
    return setting.parse(fromOption ?? fromEnv ?? fallback, setting.env, where);
  };
  // Each field is typed by VALUE_SETTINGS' mapped type; only the assembled object needs the cast.
  const values = Object.fromEntries((Object.keys(VALUE_SETTINGS) as ValueKey[]).map((key) => [key, read(key)])) as { [K in ValueKey]: Config[K] };
  const config: Config = {
    database,
    ...values,
    extensionsPathSource: sources.extensionsPath === 'option' ? (options.extensionsPathSource ?? 'option') : (sources.extensionsPath ?? 'default'),
    env: {},
  };
  config.env = Object.freeze(extensionEnv(parseEnvValues(env), config, where.cwd));
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
    throw new ConfigError(
      'PORT',
      `${address} is already in use (another hookbridge, or another program); stop it, or set PORT (-p) to a free port (0 picks one)`,
    );
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
      // Several hosts (a primary and standbys): pg's parser takes one, so they are read apart (multi-host.ts).
      if (connectionFromUrl(url).connectionString !== undefined) parseConnectionString(url);
    } catch (error) {
      if (error instanceof HostListError) throw new ConfigError('DATABASE_URL', error.message);
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
  const binDir = options.pgBin ?? nonEmpty(env['HOOKBRIDGE_PG_BIN']);
  return {
    kind: 'embedded',
    dataDir: resolve(cwd, options.dataDir ?? nonEmpty(env['HOOKBRIDGE_DATA_DIR']) ?? DEFAULT_DATA_DIR),
    ...(binDir === undefined ? {} : { binDir: resolve(cwd, binDir) }),
  };
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

/** A connection string fit for logs: the password replaced, nothing else hidden. Never throws. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const key of [...parsed.searchParams.keys()]) if (/^(ssl)?password$/i.test(key)) parsed.searchParams.set(key, '***');
    return parsed.toString();
  } catch {
    // A host list (a,b:5433) is no WHATWG URL.
    try {
      return redactHostList(url) ?? '(unparseable connection string)';
    } catch {
      return '(unparseable connection string)';
    }
  }
}
