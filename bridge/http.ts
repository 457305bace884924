/**
 * The bridge's HTTP side (express, as Directus): `GET /health`, `GET /metrics`, and whatever init
 * hooks add. Init events fire in Directus' order around the app's construction, each with `{ app }`:
 * app.before, middlewares.before/after, routes.before, routes.custom.before/after, routes.after,
 * app.after.
 *
 * `PORT` belongs to a worker thread that answers `/health` itself, so it answers while a hook blocks
 * this thread, and passes every other request to this app on a private socket (health-server.ts).
 */
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import type { Logger } from 'pino';
import type { HookRuntime } from '../hooks/runtime.js';
import { HealthServer, privateSocketPath, type HealthReport } from './health-server.js';
import { processRunning } from './database.js';
import type { BridgeMetrics } from './metrics.js';

export type { HealthReport } from './health-server.js';

export interface HttpOptions {
  host: string;
  port: number;
  runtime: HookRuntime;
  metrics: BridgeMetrics;
  health: () => HealthReport;
  logger: Logger;
}

export interface HttpServer {
  /** The express app's own server (what `server.start` hooks get); it listens on a private socket. */
  server: Server;
  /** Where `PORT` listens. */
  port: number;
  close(): Promise<void>;
}

export async function startHttp(options: HttpOptions): Promise<HttpServer> {
  const { runtime } = options;
  const app = express();
  app.disable('x-powered-by');
  // Every request comes through the HTTP thread, which adds the client's address to X-Forwarded-For:
  // req.ip is the client's (an init hook behind a proxy of its own may say more hops).
  app.set('trust proxy', 1);
  await runtime.runInit('app.before', { app });
  await runtime.runInit('middlewares.before', { app });
  app.use(express.json({ limit: '10mb' }));
  await runtime.runInit('middlewares.after', { app });
  await runtime.runInit('routes.before', { app });

  // `/health` is the HTTP thread's own (health-server.ts): it never reaches this app.
  app.get('/metrics', async (_req, res) => {
    res.set('content-type', options.metrics.registry.contentType);
    res.send(await options.metrics.registry.metrics());
  });

  await runtime.runInit('routes.custom.before', { app });
  await runtime.runInit('routes.custom.after', { app });
  await runtime.runInit('routes.after', { app });
  await runtime.runInit('app.after', { app });

  // A folder only this user may enter (mkdtemp makes it 0700) holds the app's socket, named after this
  // process: those of processes that are gone (a kill -9 leaves its folder) are removed first.
  await removeStaleSocketDirs();
  const dir = await mkdtemp(join(tmpdir(), `hookbridge-http-${process.pid}-`));
  const socket = privateSocketPath(dir);
  const removeDir = () => rm(dir, { recursive: true, force: true });
  let server: Server;
  try {
    server = await new Promise<Server>((resolve, reject) => {
      const listening = app.listen(socket, (error?: Error) => (error ? reject(error) : resolve(listening)));
      listening.once('error', reject);
    });
  } catch (error) {
    await removeDir();
    throw error;
  }
  const closeApp = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  let front: HealthServer;
  try {
    front = await HealthServer.start({ host: options.host, port: options.port, upstream: socket, health: options.health, logger: options.logger });
  } catch (error) {
    await closeApp();
    await removeDir();
    throw error;
  }
  options.logger.info({ host: options.host, port: front.port }, 'http listening');
  let closing: Promise<void> | undefined;
  return {
    server,
    port: front.port,
    close: () =>
      (closing ??= (async () => {
        await front.close();
        await closeApp();
        await removeDir();
      })()),
  };
}

/** Socket folders of bridges that are gone: named hookbridge-http-<pid>-..., owned by this user. */
async function removeStaleSocketDirs(): Promise<void> {
  const names = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(/^hookbridge-http-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid || processRunning(pid)) continue;
    const path = join(tmpdir(), name);
    const info = await stat(path).catch(() => undefined);
    if (info?.isDirectory() && info.uid === process.getuid?.()) await rm(path, { recursive: true, force: true }).catch(() => undefined);
  }
}
