/**
 * A DATABASE_URL naming several servers (a primary and its standbys), as libpq takes them:
 * `postgres://u:pw@a:5432,b:5432/db`, `postgres://u:pw@a,b/db?port=5432,5433` or
 * `postgres://u:pw@/db?host=a,b`. Every session the bridge opens, replication included, goes to the one
 * that accepts writes (libpq's `target_session_attrs=read-write`): node-postgres takes one host, so each
 * connection's socket is pointed at the writable server, found by asking each in turn
 * (`pg_is_in_recovery()`, `default_transaction_read_only`). The answer is trusted for RECHECK_MS; a new
 * session after that asks again (the old primary may be back as a standby), and a failed connection
 * forgets it at once. That is how the bridge follows a promoted standby.
 */
import { Socket } from 'node:net';
import pg from 'pg';
import { parse as parseConnectionString } from 'pg-connection-string';

export interface HostPort {
  host: string;
  port: number;
}

const DEFAULT_PORT = 5432;
/** Each server gets this long to log in and answer, so one that never answers holds up no session for longer. */
const PROBE_TIMEOUT_MS = 5_000;
/** How long a server found writable is trusted without asking again. */
const RECHECK_MS = 2_000;

/** A host list that cannot be read; its message never quotes the URL. */
export class HostListError extends Error {
  override name = 'HostListError';
}

interface UrlParts {
  /** Everything up to and including the user info's `@` (or `scheme://`). */
  head: string;
  /** The host list as written (may be empty). */
  hosts: string;
  /** The path, query and fragment. */
  tail: string;
}

/** The authority ends at the first `/`, `?` or `#`; a raw `@` in the password ends at the last `@` of it. */
function splitUrl(url: string): UrlParts | undefined {
  const scheme = /^postgres(?:ql)?:\/\//.exec(url);
  if (!scheme) return undefined;
  const rest = url.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  const at = authority.lastIndexOf('@');
  return {
    head: scheme[0] + authority.slice(0, at + 1),
    hosts: authority.slice(at + 1),
    tail: end < 0 ? '' : rest.slice(end),
  };
}

/** A URL with a host list (no WHATWG URL) fit for logs: its password and password parameters masked. */
export function redactHostList(url: string): string | undefined {
  const parts = splitUrl(url);
  if (!parts) return undefined;
  const scheme = /^postgres(?:ql)?:\/\//.exec(parts.head)?.[0] ?? '';
  const userInfo = parts.head.slice(scheme.length, -1);
  const colon = userInfo.indexOf(':');
  const head = colon < 0 ? parts.head : `${scheme}${userInfo.slice(0, colon)}:***@`;
  const query = parts.tail.indexOf('?');
  if (query < 0) return head + parts.hosts + parts.tail;
  const hash = parts.tail.indexOf('#', query);
  // By the decoded name, as the parser reads it (pass%77ord is a password too).
  const params = new URLSearchParams(parts.tail.slice(query + 1, hash < 0 ? undefined : hash));
  for (const key of [...params.keys()]) if (/^(ssl)?password$/i.test(key)) params.set(key, '***');
  return `${head}${parts.hosts}${parts.tail.slice(0, query)}?${params.toString()}${hash < 0 ? '' : parts.tail.slice(hash)}`;
}

/**
 * The servers a URL names, or undefined for one (pg reads that itself). Throws a message that never
 * quotes the URL (it may hold a password).
 */
export function urlHosts(url: string): HostPort[] | undefined {
  const parts = splitUrl(url);
  if (!parts) return undefined;
  const queryText = parts.tail.includes('?') ? parts.tail.slice(parts.tail.indexOf('?') + 1).split('#')[0] : '';
  const query = new URLSearchParams(queryText);
  // In the authority, an entry is host[:port]; in ?host= (libpq's rule) a bare host, so IPv6 needs no brackets.
  const fromAuthority = parts.hosts === '' ? [] : parts.hosts.split(',').map((entry) => splitHostPort(decode(entry)));
  const fromQuery = splitList(query.get('host') ?? '').map((host) => ({ host, port: undefined as string | undefined }));
  const entries = fromAuthority.length > 0 ? fromAuthority : fromQuery;
  if (entries.length < 2) return undefined;
  const ports = splitList(query.get('port') ?? '');
  if (ports.length > 1 && ports.length !== entries.length) {
    throw new HostListError(`names ${entries.length} hosts and ${ports.length} ports; give one port for all, or one per host`);
  }
  return entries.map(({ host, port }, index) => {
    const where = `host ${index + 1} of ${entries.length}`;
    if (!host) throw new HostListError(`${where} is empty`);
    if (host.startsWith('/')) throw new HostListError(`${where} is a socket folder; several hosts must be TCP hosts`);
    const text = port ?? ports[ports.length > 1 ? index : 0];
    const number = text === undefined || text === '' ? DEFAULT_PORT : Number(text);
    if (!Number.isInteger(number) || number < 1 || number > 65535) throw new HostListError(`the port of ${where} is not a number from 1 to 65535`);
    return { host, port: number };
  });
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new HostListError('a host has a malformed %-escape');
  }
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
export function connectionFromUrl(url: string, options: WritableHostOptions = {}): pg.ClientConfig {
  const hosts = urlHosts(url);
  const parts = splitUrl(url);
  if (!hosts || !parts) return { connectionString: url };
  // What pg-connection-string cannot read (a host list) replaced by one host; the hosts are ours.
  const parsed = parseConnectionString(`${parts.head}placeholder${parts.tail}`) as Record<string, unknown>;
  for (const key of ['host', 'port', 'target_session_attrs']) delete parsed[key];
  const base = { ...parsed, host: hosts[0]?.host, port: hosts[0]?.port } as pg.ClientConfig;
  return { ...base, stream: writableStream(hosts, base, options) } as pg.ClientConfig;
}

export interface WritableHostOptions {
  probeTimeoutMs?: number;
  recheckMs?: number;
}

/** Which of several servers takes writes. */
export class WritableHost {
  #current: HostPort | undefined;
  #verifiedAt = 0;
  #finding: Promise<HostPort> | undefined;
  readonly #probeTimeoutMs: number;
  readonly #recheckMs: number;

  constructor(
    readonly hosts: readonly HostPort[],
    private readonly probeConfig: pg.ClientConfig,
    options: WritableHostOptions = {},
  ) {
    this.#probeTimeoutMs = options.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
    this.#recheckMs = options.recheckMs ?? RECHECK_MS;
  }

  /** The writable server: the one found less than RECHECK_MS ago, else asked (that one first). */
  find(): Promise<HostPort> {
    if (this.#current && Date.now() - this.#verifiedAt < this.#recheckMs) return Promise.resolve(this.#current);
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
    const previous = this.#current;
    const order = previous ? [previous, ...this.hosts.filter((h) => h !== previous)] : [...this.hosts];
    const answers: string[] = [];
    for (const target of order) {
      const answer = await this.#probe(target);
      if (answer === 'writable') {
        this.#current = target;
        this.#verifiedAt = Date.now();
        return target;
      }
      answers.push(`${target.host}:${target.port} ${answer}`);
    }
    this.#current = undefined;
    throw new Error(`none of the ${this.hosts.length} database hosts accepts writes (${answers.join('; ')})`);
  }

  /** 'writable', or why not; within probeTimeoutMs whatever the server does. */
  async #probe(target: HostPort): Promise<string> {
    const client = new pg.Client({
      ...this.probeConfig,
      ...target,
      connectionTimeoutMillis: this.#probeTimeoutMs,
      query_timeout: this.#probeTimeoutMs,
      application_name: 'hookbridge:probe',
    });
    client.on('error', () => undefined);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`did not answer within ${this.#probeTimeoutMs} ms`), this.#probeTimeoutMs);
    });
    const asked = (async () => {
      await client.connect();
      const { rows } = await client.query<{ standby: boolean; readonly: string }>(
        `select pg_catalog.pg_is_in_recovery() as standby, pg_catalog.current_setting('default_transaction_read_only') as readonly`,
      );
      if (rows[0]?.standby !== false) return 'is a standby';
      return rows[0]?.readonly === 'on' ? 'is read-only' : 'writable';
    })().catch((error: unknown) => (error as Error).message);
    try {
      return await Promise.race([asked, deadline]);
    } finally {
      clearTimeout(timer);
      // A server that never answers: its socket is cut, not ended politely.
      (client as unknown as { connection?: { stream?: Socket } }).connection?.stream?.destroy();
      void client.end().catch(() => undefined);
    }
  }
}

type HostsStream = ((config?: unknown) => Socket) & { hosts?: readonly HostPort[] };

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

/**
 * pg calls `stream.connect(port, host)` with the config's first host: the socket goes to the writable one
 * instead, once it is known. A socket pg gave up on meanwhile (its connection timeout, or `end()`) is
 * never connected.
 */
function writableStream(hosts: readonly HostPort[], base: pg.ClientConfig, options: WritableHostOptions = {}): HostsStream {
  const { stream: _stream, replication: _replication, ...probeConfig } = base as pg.ClientConfig & { replication?: unknown };
  const writable = new WritableHost(hosts, probeConfig, options);
  const factory: HostsStream = () => {
    const socket = new Socket();
    const connect = socket.connect.bind(socket) as (port: number, host: string) => Socket;
    (socket as unknown as { connect: () => Socket }).connect = () => {
      writable.find().then(
        (target) => {
          if (socket.destroyed || socket.writableEnded) {
            socket.destroy();
            return;
          }
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
