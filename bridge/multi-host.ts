/**
 * A DATABASE_URL naming several servers (a primary and its standbys), as libpq takes them:
 * `postgres://u:pw@a:5432,b:5432/db`, `postgres://u:pw@a,b/db?port=5432,5433` or
 * `postgres://u:pw@/db?host=a,b`. Every session the bridge opens, replication included, goes to the one
 * that accepts writes (libpq's `target_session_attrs=read-write`): node-postgres takes one host, so each
 * connection's socket is pointed at the writable server found by asking each in turn
 * `pg_is_in_recovery()`. The answer is kept until a connection to that server fails; then the next
 * session asks again, which is how the bridge follows a promoted standby.
 */
import { Socket } from 'node:net';
import pg from 'pg';
import { parse as parseConnectionString } from 'pg-connection-string';

export interface HostPort {
  host: string;
  port: number;
}

const DEFAULT_PORT = 5432;

/** A host list that cannot be read; its message never quotes the URL. */
export class HostListError extends Error {
  override name = 'HostListError';
}
const PROBE_TIMEOUT_MS = 5_000;

/**
 * The servers a URL names, or undefined for one (pg reads that itself). Throws a message that never
 * quotes the URL (it may hold a password).
 */
export function urlHosts(url: string): HostPort[] | undefined {
  const match = /^postgres(?:ql)?:\/\/(?:[^@/?#]*@)?([^/?#]*)/.exec(url);
  if (!match) return undefined;
  const query = new URLSearchParams(url.includes('?') ? url.slice(url.indexOf('?') + 1).split('#')[0] : '');
  const authority = match[1] ?? '';
  const fromAuthority = authority === '' ? [] : splitList(decodeURIComponent(authority));
  const hostList = fromAuthority.length > 0 ? fromAuthority : splitList(query.get('host') ?? '');
  if (hostList.length < 2) return undefined;
  const ports = splitList(query.get('port') ?? '');
  if (ports.length > 1 && ports.length !== hostList.length) {
    throw new HostListError(`names ${hostList.length} hosts and ${ports.length} ports; give one port for all, or one per host`);
  }
  return hostList.map((entry, index) => {
    const { host, port } = splitHostPort(entry);
    const text = port ?? ports[ports.length > 1 ? index : 0];
    const number = text === undefined || text === '' ? DEFAULT_PORT : Number(text);
    if (!host) throw new HostListError(`host ${index + 1} of ${hostList.length} is empty`);
    if (!Number.isInteger(number) || number < 1 || number > 65535) throw new HostListError(`the port of host ${index + 1} is not a number from 1 to 65535`);
    return { host, port: number };
  });
}

function splitList(text: string): string[] {
  return text === '' ? [] : text.split(',').map((part) => part.trim());
}

/** `a`, `a:5432`, `[::1]:5432`. */
function splitHostPort(entry: string): { host: string; port?: string } {
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(entry);
  if (bracketed) return { host: bracketed[1] ?? '', port: bracketed[2] };
  const colon = entry.lastIndexOf(':');
  return colon < 0 ? { host: entry } : { host: entry.slice(0, colon), port: entry.slice(colon + 1) };
}

/**
 * The URL as a pg config. With several hosts: the first as `host`/`port`, and a socket factory that
 * connects every session to the writable one.
 */
export function connectionFromUrl(url: string): pg.ClientConfig {
  const hosts = urlHosts(url);
  if (!hosts) return { connectionString: url };
  // What pg-connection-string cannot read (a host list) replaced by one host; the hosts are ours.
  const single = url.replace(/^(postgres(?:ql)?:\/\/(?:[^@/?#]*@)?)[^/?#]*/, '$1placeholder');
  const parsed = parseConnectionString(single) as Record<string, unknown>;
  delete parsed['host'];
  delete parsed['port'];
  delete parsed['target_session_attrs'];
  const base = { ...parsed, host: hosts[0]?.host, port: hosts[0]?.port } as pg.ClientConfig;
  return { ...base, stream: writableStream(hosts, base) } as pg.ClientConfig;
}

type HostsStream = (() => Socket) & { hosts?: readonly HostPort[] };

/** A connection for a worker thread: functions do not cross threads, so the socket factory goes as its host list. */
export function transferable(config: pg.ClientConfig): pg.ClientConfig & { hosts?: readonly HostPort[] } {
  const hosts = (config.stream as HostsStream | undefined)?.hosts;
  if (!hosts) return config;
  const { stream: _stream, ...rest } = config;
  return { ...rest, hosts };
}

/** The other end of transferable(): the socket factory again, with a writable host of this thread's own. */
export function fromTransferable(config: pg.ClientConfig & { hosts?: readonly HostPort[] }): pg.ClientConfig {
  const { hosts, ...rest } = config;
  return hosts ? ({ ...rest, stream: writableStream(hosts, rest) } as pg.ClientConfig) : rest;
}

/** Which of several servers takes writes, remembered until a connection to it fails. */
export class WritableHost {
  #current: HostPort | undefined;
  #finding: Promise<HostPort> | undefined;

  constructor(
    readonly hosts: readonly HostPort[],
    private readonly probeConfig: pg.ClientConfig,
  ) {}

  get current(): HostPort | undefined {
    return this.#current;
  }

  find(): Promise<HostPort> {
    if (this.#current) return Promise.resolve(this.#current);
    this.#finding ??= this.#probeAll().finally(() => {
      this.#finding = undefined;
    });
    return this.#finding;
  }

  /** A connection to `target` failed: ask again next time (unless another server was found meanwhile). */
  forget(target: HostPort): void {
    if (this.#current === target) this.#current = undefined;
  }

  async #probeAll(): Promise<HostPort> {
    const answers: string[] = [];
    for (const target of this.hosts) {
      const client = new pg.Client({ ...this.probeConfig, ...target, connectionTimeoutMillis: PROBE_TIMEOUT_MS, application_name: 'hookbridge:probe' });
      client.on('error', () => undefined);
      try {
        await client.connect();
        const { rows } = await client.query<{ standby: boolean; readonly: string }>(
          `select pg_catalog.pg_is_in_recovery() as standby, pg_catalog.current_setting('default_transaction_read_only') as readonly`,
        );
        const standby = rows[0]?.standby !== false;
        const readOnly = rows[0]?.readonly === 'on';
        if (!standby && !readOnly) {
          this.#current = target;
          return target;
        }
        answers.push(`${target.host}:${target.port} ${standby ? 'is a standby' : 'is read-only'}`);
      } catch (error) {
        answers.push(`${target.host}:${target.port} ${(error as Error).message}`);
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    throw new Error(`none of the ${this.hosts.length} database hosts accepts writes (${answers.join('; ')})`);
  }
}

/** pg calls `stream.connect(port, host)` with the config's first host: the socket goes to the writable one instead. */
function writableStream(hosts: readonly HostPort[], base: pg.ClientConfig): HostsStream {
  const { stream: _stream, replication: _replication, ...probeConfig } = base as pg.ClientConfig & { replication?: unknown };
  const writable = new WritableHost(hosts, probeConfig);
  const factory: HostsStream = () => {
    const socket = new Socket();
    const connect = socket.connect.bind(socket) as (port: number, host: string) => Socket;
    (socket as unknown as { connect: () => Socket }).connect = () => {
      writable.find().then(
        (target) => {
          socket.once('close', (hadError) => {
            if (hadError) writable.forget(target);
          });
          socket.once('error', () => writable.forget(target));
          connect(target.port, target.host);
        },
        (error: unknown) => socket.destroy(error as Error),
      );
      return socket;
    };
    return socket;
  };
  factory.hosts = hosts;
  return factory;
}
