/**
 * Just enough of the PostgreSQL wire protocol (v3, simple query) for `dblink` to talk to the bridge:
 * the direct filter transport's trigger sends `dblink_send_query('<conn>', '<request>')`, the bridge
 * answers with one text row (the signed verdict).
 *
 * One round trip per row, no NOTIFY, no tables; the request and response sizes are limited only by the
 * protocol (1 GB). Clients must send the password (dblink requires one for non-superusers anyway); it is
 * compared in constant time. The password proves the client; the verdict's signature proves the server.
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';

export interface WireError {
  sqlstate: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** `wake` runs once the answer is written (or the connection is gone): the filter path then wakes the writer. */
export type QueryResult = ({ row: string | null } | { error: WireError } | { command: string }) & { wake?: () => void };

export interface WireServerOptions {
  host: string;
  port: number;
  password: string;
  logger: Logger;
  /** Answers one query; called one at a time per connection, in order. */
  onQuery: (query: string, connection: { id: number; user: string; application: string }) => Promise<QueryResult>;
}

/** The command tag for a statement answered without rows (libpq and dblink send a few set-up statements on connect). */
export function commandTag(query: string): string {
  return query.trim().split(/\s+/)[0]?.toUpperCase() || 'EMPTY';
}

const PROTOCOL_3 = 196608;
const SSL_REQUEST = 80877103;
const GSS_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const MAX_MESSAGE = 1 << 30;

export class WireServer {
  readonly #options: WireServerOptions;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #nextId = 1;

  constructor(options: WireServerOptions) {
    this.#options = options;
    this.#server = createServer((socket) => this.#accept(socket));
    this.#server.on('error', (error) => options.logger.error({ err: error }, 'filter server error'));
  }

  get connections(): number {
    return this.#sockets.size;
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#options.port, this.#options.host, () => {
        this.#server.off('error', reject);
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(socket: Socket): void {
    socket.setNoDelay(true);
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const session = new Session(socket, this.#nextId++, this.#options);
    socket.on('data', (chunk) => session.receive(chunk));
  }
}

/** Before a client has authenticated it may send only small messages (startup, password). */
const MAX_UNAUTHENTICATED = 10_000;
/** A connection that has not authenticated by then is closed. */
const AUTHENTICATION_DEADLINE_MS = 10_000;

class Session {
  /** Received bytes not yet consumed: chunks are joined once a whole message is there, not per chunk. */
  #chunks: Buffer[] = [];
  #buffered = 0;
  #buffer: Buffer = Buffer.alloc(0);
  #started = false;
  #authenticated = false;
  #user = '';
  #application = '';
  #queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly socket: Socket,
    private readonly id: number,
    private readonly options: WireServerOptions,
  ) {
    const deadline = setTimeout(() => {
      if (!this.#authenticated) socket.destroy();
    }, AUTHENTICATION_DEADLINE_MS);
    deadline.unref();
    socket.once('close', () => clearTimeout(deadline));
  }

  receive(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (!this.#authenticated && this.#buffer.length + this.#buffered > MAX_UNAUTHENTICATED) return void this.socket.destroy();
    // Join only when the message we wait for is complete (or its header is): large rows arrive in many
    // chunks, and joining per chunk would cost the square of their size.
    const needed = this.#needed();
    if (needed !== undefined && this.#buffer.length + this.#buffered < needed) return;
    this.#buffer = Buffer.concat([this.#buffer, ...this.#chunks]);
    this.#chunks = [];
    this.#buffered = 0;
    for (;;) {
      if (!this.#started) {
        if (this.#buffer.length < 8) return;
        const length = this.#buffer.readInt32BE(0);
        if (length < 8 || length > 10_000) return void this.socket.destroy();
        if (this.#buffer.length < length) return;
        const body = this.#buffer.subarray(4, length);
        this.#buffer = this.#buffer.subarray(length);
        this.#startup(body);
        continue;
      }
      if (this.#buffer.length < 5) return;
      const type = this.#buffer[0] as number;
      const length = this.#buffer.readInt32BE(1);
      const limit = this.#authenticated ? MAX_MESSAGE : MAX_UNAUTHENTICATED;
      if (length < 4 || length > limit) return void this.socket.destroy();
      if (this.#buffer.length < length + 1) return;
      const body = this.#buffer.subarray(5, length + 1);
      this.#buffer = this.#buffer.subarray(length + 1);
      this.#message(type, Buffer.from(body));
    }
  }

  /** Bytes needed for the message at the head of the buffer, when its header has arrived. */
  #needed(): number | undefined {
    const head = this.#buffer;
    if (!this.#started) return head.length >= 4 ? head.readInt32BE(0) : undefined;
    return head.length >= 5 ? head.readInt32BE(1) + 1 : undefined;
  }

  #startup(body: Buffer): void {
    const code = body.readInt32BE(0);
    if (code === SSL_REQUEST || code === GSS_REQUEST) {
      this.socket.write('N');
      return;
    }
    if (code === CANCEL_REQUEST) return void this.socket.end();
    if (code !== PROTOCOL_3) {
      this.#fatal('08P01', `unsupported protocol version ${code >> 16}.${code & 0xffff}`);
      return;
    }
    const parameters = body.subarray(4).toString('utf8').split('\0');
    for (let i = 0; i + 1 < parameters.length; i += 2) {
      if (parameters[i] === 'user') this.#user = parameters[i + 1] ?? '';
      if (parameters[i] === 'application_name') this.#application = parameters[i + 1] ?? '';
    }
    this.#started = true;
    // AuthenticationCleartextPassword: the connection is loopback (or a private network) and the
    // password is per bridge run.
    this.socket.write(message('R', int32(3)));
  }

  #message(type: number, body: Buffer): void {
    if (!this.#authenticated) {
      if (type !== 0x70 /* p */) return this.#fatal('08P01', 'expected a password message');
      const given = Buffer.from(cstring(body, 0).value);
      const expected = Buffer.from(this.options.password);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        return this.#fatal('28P01', 'password authentication failed for the hookbridge filter server');
      }
      this.#authenticated = true;
      const parameters: Array<[string, string]> = [
        ['server_version', '16.0 (hookbridge)'],
        ['server_encoding', 'UTF8'],
        ['client_encoding', 'UTF8'],
        ['DateStyle', 'ISO, MDY'],
        ['integer_datetimes', 'on'],
        ['standard_conforming_strings', 'on'],
        ['TimeZone', 'UTC'],
      ];
      const out = [message('R', int32(0))];
      for (const [key, value] of parameters) out.push(message('S', Buffer.concat([cstr(key), cstr(value)])));
      out.push(message('K', Buffer.concat([int32(this.id), int32(0)])), ready());
      this.socket.write(Buffer.concat(out));
      return;
    }
    if (type === 0x58 /* X */) return void this.socket.end();
    if (type !== 0x51 /* Q */) {
      this.socket.write(Buffer.concat([errorMessage({ sqlstate: '0A000', message: 'only simple queries are supported' }), ready()]));
      return;
    }
    const query = cstring(body, 0).value;
    this.#queue = this.#queue.then(() => this.#answer(query));
  }

  async #answer(query: string): Promise<void> {
    let result: QueryResult;
    try {
      result = await this.options.onQuery(query, { id: this.id, user: this.#user, application: this.#application });
    } catch (error) {
      this.options.logger.error({ err: error }, 'filter request failed inside the bridge');
      result = { error: { sqlstate: 'HB500', message: 'hookbridge: internal error while filtering' } };
    }
    if (!this.socket.destroyed) {
      if ('error' in result) {
        this.socket.write(Buffer.concat([errorMessage(result.error), ready()]));
      } else if ('command' in result) {
        this.socket.write(Buffer.concat([message('C', cstr(result.command)), ready()]));
      } else {
        this.socket.write(Buffer.concat([rowDescription(), dataRow(result.row), message('C', cstr('SELECT 1')), ready()]));
      }
    }
    result.wake?.();
  }

  #fatal(sqlstate: string, text: string): void {
    this.socket.end(errorMessage({ sqlstate, message: text }, 'FATAL'));
  }
}

function int32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeInt32BE(value);
  return buffer;
}

function int16(value: number): Buffer {
  const buffer = Buffer.alloc(2);
  buffer.writeInt16BE(value);
  return buffer;
}

function cstr(text: string): Buffer {
  return Buffer.from(`${text}\0`, 'utf8');
}

function cstring(buffer: Buffer, offset: number): { value: string; next: number } {
  const end = buffer.indexOf(0, offset);
  const stop = end < 0 ? buffer.length : end;
  return { value: buffer.toString('utf8', offset, stop), next: stop + 1 };
}

function message(type: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(type), int32(body.length + 4), body]);
}

function ready(): Buffer {
  return message('Z', Buffer.from('I'));
}

function rowDescription(): Buffer {
  // One column "verdict" of type text (oid 25), text format.
  return message('T', Buffer.concat([int16(1), cstr('verdict'), int32(0), int16(0), int32(25), int16(-1), int32(-1), int16(0)]));
}

function dataRow(value: string | null): Buffer {
  if (value === null) return message('D', Buffer.concat([int16(1), int32(-1)]));
  const bytes = Buffer.from(value, 'utf8');
  return message('D', Buffer.concat([int16(1), int32(bytes.length), bytes]));
}

function errorMessage(error: WireError, severity = 'ERROR'): Buffer {
  const fields = [
    Buffer.from('S'),
    cstr(severity),
    Buffer.from('V'),
    cstr(severity),
    Buffer.from('C'),
    cstr(error.sqlstate),
    Buffer.from('M'),
    cstr(error.message),
  ];
  if (error.detail) fields.push(Buffer.from('D'), cstr(error.detail));
  if (error.hint) fields.push(Buffer.from('H'), cstr(error.hint));
  fields.push(Buffer.from([0]));
  return message('E', Buffer.concat(fields));
}
