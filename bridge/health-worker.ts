/**
 * The thread that owns the bridge's HTTP port (health-server.ts says why): answers `GET /health` from
 * the main thread's reports — or, when the main thread has been silent too long, with a 503 of its own
 * — and passes every other request, upgrades included, to the main thread's express app.
 */
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import type { FromHealthWorker, HealthReport, HealthWorkerSetup, ToHealthWorker } from './health-server.js';

const setup = workerData as HealthWorkerSetup;
const main = parentPort!;
const post = (message: FromHealthWorker) => main.postMessage(message);

/** The main thread's last report, and when it last showed it runs (any message counts). */
let latest: HealthReport | undefined;
let heardAt = performance.now();
let nextAsk = 1;
const asks = new Map<number, (report: HealthReport) => void>();

main.on('message', (message: ToHealthWorker) => {
  heardAt = performance.now();
  if (message.type === 'close') return close();
  latest = message.report;
  if (message.id === undefined) return;
  asks.get(message.id)?.(message.report);
  asks.delete(message.id);
});

/** A fresh report when the main thread answers in time; else the last one, or a 503 once it is blocked. */
async function health(): Promise<HealthReport> {
  const askedAt = performance.now();
  if (askedAt - heardAt < setup.blockedMs) {
    const id = nextAsk++;
    const fresh = await new Promise<HealthReport | undefined>((resolve) => {
      const timer = setTimeout(() => {
        asks.delete(id);
        resolve(undefined);
      }, setup.askMs);
      asks.set(id, (report) => {
        clearTimeout(timer);
        resolve(report);
      });
      post({ type: 'ask', id });
    });
    if (fresh) return { ...fresh, eventLoop: { blockedMs: Math.round(performance.now() - askedAt) } };
  }
  const blockedMs = Math.round(performance.now() - heardAt);
  if (latest && blockedMs < setup.blockedMs) return { ...latest, eventLoop: { blockedMs } };
  return {
    ...latest,
    status: 'unavailable',
    reason: `event loop blocked for ${blockedMs} ms (a hook running synchronous code?): no filter call is answered and no action runs meanwhile`,
    eventLoop: { blockedMs },
  };
}

function isHealth(req: http.IncomingMessage): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  // As express matches `/health`: any case, an optional trailing slash, any query.
  const path = (req.url ?? '').split('?', 1)[0]?.toLowerCase();
  return path === '/health' || path === '/health/';
}

async function answerHealth(res: http.ServerResponse): Promise<void> {
  const report = await health();
  const body = JSON.stringify(report);
  res.writeHead(report.status === 'ok' ? 200 : 503, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

/** Headers of one hop only (RFC 9110 7.6.1): each side of the proxy has its own. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

function forwardedHeaders(req: http.IncomingMessage): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name)) headers[name] = value;
  // The express app trusts one proxy hop (http.ts), this one: req.ip is the client's address.
  const client = req.socket.remoteAddress ?? '';
  const before = req.headers['x-forwarded-for'];
  headers['x-forwarded-for'] = before ? `${String(before)}, ${client}` : client;
  // Ours to say, never the client's: express trusts this hop's X-Forwarded-* (req.secure, req.hostname).
  headers['x-forwarded-proto'] = 'http';
  if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
  else delete headers['x-forwarded-host'];
  return headers;
}

const agent = new http.Agent({ keepAlive: true });

function forward(req: http.IncomingMessage, res: http.ServerResponse): void {
  const upstream = http.request({ socketPath: setup.upstream, agent, method: req.method, path: req.url, headers: forwardedHeaders(req) });
  upstream.on('response', (answer) => {
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
    res.writeHead(answer.statusCode ?? 502, answer.statusMessage, headers);
    answer.pipe(res);
    answer.on('error', () => res.destroy());
  });
  upstream.on('error', (error) => {
    if (res.headersSent) return void res.destroy();
    post({ type: 'log', level: 'warn', msg: 'passing an HTTP request on to the main thread failed', detail: { url: req.url, reason: error.message } });
    res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' }).end('hookbridge: the bridge could not answer this request\n');
  });
  // A client that leaves takes its request along.
  res.on('close', () => {
    if (!res.writableFinished) upstream.destroy();
  });
  req.pipe(upstream);
}

/**
 * An upgrade (WebSocket): asked of the app as a request of its own; only once the app switches
 * protocols (101) are the two sockets joined byte for byte. Any other answer is passed back and both
 * connections end, so a client can never talk to the app directly (it would set its own
 * X-Forwarded-For there, and with it req.ip).
 */
function forwardUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
  socket.on('error', () => socket.destroy());
  const upstream = http.request({
    socketPath: setup.upstream,
    method: req.method,
    path: req.url,
    headers: { ...forwardedHeaders(req), connection: 'upgrade', upgrade: String(req.headers.upgrade) },
  });
  upstream.on('upgrade', (answer, upstreamSocket, upstreamHead) => {
    let head101 = `HTTP/1.1 101 ${answer.statusMessage ?? 'Switching Protocols'}\r\n`;
    for (let i = 0; i < answer.rawHeaders.length; i += 2) head101 += `${answer.rawHeaders[i]}: ${answer.rawHeaders[i + 1]}\r\n`;
    socket.write(`${head101}\r\n`);
    if (upstreamHead.length) socket.write(upstreamHead);
    if (head.length) upstreamSocket.write(head);
    upstreamSocket.on('error', () => socket.destroy());
    socket.on('close', () => upstreamSocket.destroy());
    upstreamSocket.on('close', () => socket.destroy());
    socket.pipe(upstreamSocket).pipe(socket);
  });
  upstream.on('response', (answer) => {
    // No switch: the answer goes back as it is, and the connection ends with it.
    let text = `HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n`;
    for (let i = 0; i < answer.rawHeaders.length; i += 2) {
      const name = String(answer.rawHeaders[i]).toLowerCase();
      if (!HOP_BY_HOP.has(name)) text += `${answer.rawHeaders[i]}: ${answer.rawHeaders[i + 1]}\r\n`;
    }
    socket.write(`${text}connection: close\r\n\r\n`);
    answer.pipe(socket);
    answer.on('end', () => socket.end());
    answer.on('error', () => socket.destroy());
  });
  upstream.on('error', () => {
    if (!socket.destroyed) socket.end('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
  });
  upstream.end();
}

const server = http.createServer((req, res) => {
  if (isHealth(req)) {
    answerHealth(res).catch(() => res.destroy());
    // The body of a GET is not read; let it go.
    req.resume();
  } else forward(req, res);
});
server.on('upgrade', forwardUpgrade);
server.once('error', (error: NodeJS.ErrnoException) => {
  post({
    type: 'failed',
    error: { message: error.message, code: error.code, errno: error.errno, syscall: error.syscall, address: setup.host, port: setup.port },
  });
  // Nothing else keeps this thread alive: it ends.
  main.close();
});
server.listen(setup.port, setup.host, () => {
  server.on('error', (error) => post({ type: 'log', level: 'warn', msg: 'HTTP server error', detail: { reason: error.message } }));
  post({ type: 'listening', port: (server.address() as net.AddressInfo).port });
});

function close(): void {
  server.closeAllConnections();
  server.close(() => {
    agent.destroy();
    post({ type: 'closed' });
    main.close();
  });
}
