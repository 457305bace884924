/**
 * Every setting, declared once: its variable, its flag and which commands take it, its default, how its
 * value is checked, and what it means. `resolveConfig` reads the settings through this table, the CLI
 * declares its flags from it, and the README's configuration table is `settingsTable()` (checked by
 * test/unit/settings.test.ts), so the three cannot drift apart.
 */
import { resolve } from 'node:path';
import { HookbridgeError } from '../hooks/errors.js';
import type { Config, ConfigOptions, LogLevel } from './config.js';

export class ConfigError extends HookbridgeError {
  constructor(setting: string, message: string) {
    super('E_CONFIG', `${setting}: ${message}`, { details: { setting } });
    this.name = 'ConfigError';
  }
}

/** Which commands take a setting's flag: every one, those that open a database, or `start` alone. */
export type FlagReach = 'every command' | 'database commands' | 'start';

export interface SettingFlag {
  /** As commander takes it: `-p, --port <port>`; a flag without a `<value>` is a switch (true when given). */
  flags: string;
  reach: FlagReach;
}

/** What a default or a check may depend on: where the bridge runs. */
export interface SettingContext {
  cwd: string;
  /** Whether a person watches the output (a terminal). */
  isTTY: boolean;
}

/** The fields of Config that resolveConfig reads through VALUE_SETTINGS (the database has code of its own). */
export type ValueKey = Exclude<keyof Config, 'database' | 'env' | 'extensionsPathSource'>;

interface ValueSetting<K extends ValueKey> {
  env: string;
  flag?: SettingFlag;
  /** Used when neither an option nor the variable gives a value; checked like them. */
  default: string | number | boolean | ((context: SettingContext) => string);
  /** The default as the README and --help show it, when its value alone would not say it. */
  shown?: string;
  /** Checks a value (a variable's or a flag's text, or a programmatic option) and gives the setting. */
  parse: (value: unknown, name: string, context: SettingContext) => Config[K];
  /** For the README (markdown) and --help (without the backticks). */
  description: string;
}

/** A setting as documented: a row of the README's table, and a flag for the commands it reaches. */
export interface Setting {
  /** Its variables (several only for libpq's `PG*`). */
  env: readonly string[];
  flag?: SettingFlag;
  /** Where a flag's value goes in resolveConfig's options. */
  option?: keyof ConfigOptions;
  /** The default as the README shows it; '' when there is none to show. */
  shown: string;
  description: string;
}

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
export const DEFAULT_DATA_DIR = './.hookbridge';
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

const text = (value: unknown): string => String(value);
const integer = (min: number, max: number) => (value: unknown, name: string) => toInteger(name, value, min, max);
const choice =
  <T extends string>(choices: readonly T[]) =>
  (value: unknown, name: string) =>
    toChoice(name, value, choices);
const identifier = (value: unknown, name: string) => toIdentifier(name, value);

/**
 * The settings resolveConfig reads by themselves, in the README's order. The mapped type makes a Config
 * field without a declaration here a compile error.
 */
export const VALUE_SETTINGS: { [K in ValueKey]: ValueSetting<K> } = {
  extensionsPath: {
    env: 'EXTENSIONS_PATH',
    flag: { flags: '-e, --extensions <path>', reach: 'every command' },
    default: './extensions',
    parse: (value, _name, context) => resolve(context.cwd, String(value)),
    description: 'where extensions live; a folder you set must exist (exit 2), the default may be missing',
  },
  extensionsAutoReload: {
    env: 'EXTENSIONS_AUTO_RELOAD',
    flag: { flags: '--auto-reload', reach: 'start' },
    default: false,
    parse: (value, name) => toBoolean(name, value),
    description: 'reload extensions when their files change',
  },
  host: { env: 'HOST', default: '127.0.0.1', parse: text, description: 'HTTP listen address' },
  port: {
    env: 'PORT',
    flag: { flags: '-p, --port <port>', reach: 'start' },
    default: 8056,
    parse: integer(0, 65535),
    description: 'HTTP port (health, metrics, routes added by init hooks)',
  },
  logLevel: {
    env: 'LOG_LEVEL',
    flag: { flags: '--log-level <level>', reach: 'every command' },
    default: 'info',
    parse: choice(LOG_LEVELS),
    description: LOG_LEVELS.map((level) => `\`${level}\``).join(', '),
  },
  logFormat: {
    env: 'LOG_FORMAT',
    flag: { flags: '--log-format <format>', reach: 'every command' },
    default: (context) => (context.isTTY ? 'pretty' : 'json'),
    shown: '`pretty` on a terminal, else `json`',
    parse: choice(['pretty', 'json'] as const),
    description: 'pino JSON lines or human-readable',
  },
  schema: { env: 'HOOKBRIDGE_SCHEMA', default: 'hookbridge', parse: identifier, description: "schema of hookbridge's own tables and functions" },
  slotName: { env: 'HOOKBRIDGE_SLOT', default: 'hookbridge', parse: identifier, description: 'replication slot name' },
  slotFailover: {
    env: 'HOOKBRIDGE_SLOT_FAILOVER',
    default: false,
    parse: (value, name) => toBoolean(name, value),
    description: '`true`: a failover slot (PostgreSQL 17+), which a standby that synchronises slots keeps through a promotion (see "Failover")',
  },
  publicationName: { env: 'HOOKBRIDGE_PUBLICATION', default: 'hookbridge', parse: identifier, description: 'publication name' },
  filterTimeoutMs: {
    env: 'FILTER_TIMEOUT_MS',
    default: 5000,
    parse: integer(1, 3_600_000),
    description: 'how long a writer waits for a filter verdict',
  },
  filterFailureMode: {
    env: 'FILTER_FAILURE_MODE',
    default: 'closed',
    parse: choice(['closed', 'open'] as const),
    description: '`closed`: the write fails when the bridge cannot answer; `open`: it passes unfiltered, with a warning (see "Failure modes")',
  },
  filterTransport: {
    env: 'FILTER_TRANSPORT',
    default: 'auto',
    parse: choice(['auto', 'direct', 'notify'] as const),
    description: '`direct`, `notify`, or `auto` (direct when the database server can reach the bridge)',
  },
  filterTickets: {
    env: 'FILTER_TICKETS',
    default: 64,
    parse: integer(1, 10_000),
    description: 'filter calls in flight at once; more concurrent writers wait for a free ticket',
  },
  filterWorkers: {
    env: 'FILTER_WORKERS',
    default: 2,
    parse: integer(0, 64),
    description:
      'worker threads that run filter hooks, started with the first filter on writes (`0`: on the main thread, where one blocking hook stalls every writer)',
  },
  filterListenHost: { env: 'FILTER_LISTEN_HOST', default: '127.0.0.1', parse: text, description: 'where the filter server listens (direct transport)' },
  filterPort: { env: 'FILTER_PORT', default: 0, shown: '`0` (any free port)', parse: integer(0, 65535), description: 'its port' },
  filterCallbackHost: {
    env: 'FILTER_CALLBACK_HOST',
    default: '127.0.0.1',
    parse: text,
    description: 'the address the database server uses to reach the bridge (direct transport)',
  },
  actionAttempts: { env: 'ACTION_ATTEMPTS', default: 5, parse: integer(1, 1000), description: 'tries per action handler before its event is parked' },
  actionTimeoutMs: {
    env: 'ACTION_TIMEOUT_MS',
    default: 30_000,
    parse: integer(1, 86_400_000),
    description: 'longest one try of an action handler may run',
  },
  userMap: {
    env: 'HOOKBRIDGE_USER_MAP',
    default: '',
    shown: '(none)',
    // A programmatic option is a map already; copied, so that freezing it leaves the caller's object alone.
    parse: (value, name) => Object.freeze(typeof value === 'string' ? toUserMap(name, value) : Object.assign(Object.create(null), value)),
    description: '`role=user,…`: the application user (`accountability.user`) of database roles that set none themselves (see "Action hooks")',
  },
};

/**
 * Every setting as the README and the CLI show it: first the database's, which resolveConfig's database
 * code reads (`DATABASE_URL`, else libpq's `PG*` when `PGHOST` is set, else an embedded Postgres).
 */
export const SETTINGS: readonly Setting[] = [
  {
    env: ['DATABASE_URL'],
    flag: { flags: '-d, --database-url <url>', reach: 'database commands' },
    option: 'databaseUrl',
    shown: '—',
    description:
      'Postgres to bridge; several hosts (`postgres://…@db1,db2/app`): the writable one (see "Failover"). Unset: libpq `PG*` variables if `PGHOST` is set, else an embedded Postgres',
  },
  {
    env: ['PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE'],
    shown: '',
    description: 'used when `DATABASE_URL` is unset and `PGHOST` is set',
  },
  {
    env: ['HOOKBRIDGE_DATA_DIR'],
    flag: { flags: '--data-dir <path>', reach: 'database commands' },
    option: 'dataDir',
    shown: `\`${DEFAULT_DATA_DIR}\``,
    description: 'embedded Postgres data folder',
  },
  {
    env: ['HOOKBRIDGE_PG_BIN'],
    flag: { flags: '--pg-bin <path>', reach: 'database commands' },
    option: 'pgBin',
    shown: 'the installed PostgreSQL 18',
    description: 'embedded Postgres binaries: a folder with `initdb`, `pg_ctl` and `postgres`, PostgreSQL 14 or newer (e.g. `/usr/lib/postgresql/16/bin`)',
  },
  ...Object.entries(VALUE_SETTINGS).map(([key, setting]: [string, ValueSetting<ValueKey>]) => ({
    env: [setting.env],
    flag: setting.flag,
    option: key as ValueKey,
    shown: setting.shown ?? `\`${String(setting.default)}\``,
    description: setting.description,
  })),
];

/** The README's configuration table ("## Configuration"), as it must read. */
export function settingsTable(): string {
  const rows = SETTINGS.map((setting) => {
    const variables = setting.env.map((name) => `\`${name}\``).join(', ');
    const flag = setting.flag ? `\`${setting.flag.flags.replace(/ <.*>$/, '')}\`` : '';
    return `|${[variables, flag, setting.shown, setting.description].map((cell) => (cell ? ` ${cell} ` : ' ')).join('|')}|`;
  });
  return ['| variable | flag | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

/**
 * A flag's --help text. Commander reads no variable (resolveConfig alone does, so that an empty one means
 * unset everywhere), so the text names the variable itself. No default: some commands log at another
 * level than `start` (the README's table has the bridge's defaults).
 */
export function flagHelp(setting: Setting): string {
  return `${setting.description.replaceAll('`', '')} (env: ${setting.env.join(', ')})`;
}

/** An empty (or blank) variable means unset, as if it were not there. */
export function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

/** `role=user,role2=user2`; a role named twice, or a pair without both halves, is an error. */
export function toUserMap(name: string, value: string | undefined): Record<string, string> {
  const map: Record<string, string> = Object.create(null);
  if (value === undefined || value === '') return map;
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

export function toBoolean(name: string, value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  const text = String(value).toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(text)) return true;
  if (['false', '0', 'no', 'off'].includes(text)) return false;
  throw new ConfigError(name, `expected true or false, got ${JSON.stringify(value)}`);
}

export function toInteger(name: string, value: unknown, min: number, max: number): number {
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

export function toChoice<T extends string>(name: string, value: unknown, choices: readonly T[]): T {
  if (typeof value === 'string' && (choices as readonly string[]).includes(value.toLowerCase())) return value.toLowerCase() as T;
  throw new ConfigError(name, `expected one of ${choices.join(', ')}, got ${JSON.stringify(value)}`);
}

export function toIdentifier(name: string, value: unknown): string {
  if (typeof value === 'string' && IDENTIFIER.test(value)) return value;
  throw new ConfigError(name, `expected a lower-case SQL identifier (letters, digits, _; at most 63), got ${JSON.stringify(value)}`);
}
