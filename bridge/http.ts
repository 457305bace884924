/**
 * The bridge's HTTP side (express, as Directus): `GET /health`, `GET /metrics`, and whatever init
 * hooks add. Init events fire in Directus' order around the app's construction, each with `{ app }`:
 * app.before, middlewares.before/after, routes.before, routes.custom.before/after, routes.after,
 * app.after.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Logger } from 'pino';
import type { HookRuntime } from '../hooks/runtime.js';
import type { BridgeMetrics } from './metrics.js';

export interface HealthReport {
  status: 'ok' | 'unavailable';
  [key: string]: unknown;
}

export interface HttpOptions {
  host: string;
  port: number;
  runtime: HookRuntime;
  metrics: BridgeMetrics;
  health: () => HealthReport;
  logger: Logger;
}

export interface HttpServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export async function startHttp(options: HttpOptions): Promise<HttpServer> {
  const { runtime } = options;
  const app = express();
  app.disable('x-powered-by');
  await runtime.runInit('app.before', { app });
  await runtime.runInit('middlewares.before', { app });
  app.use(express.json({ limit: '10mb' }));
  await runtime.runInit('middlewares.after', { app });
  await runtime.runInit('routes.before', { app });

  app.get('/health', (_req, res) => {
    const report = options.health();
    res.status(report.status === 'ok' ? 200 : 503).json(report);
  });
  app.get('/metrics', async (_req, res) => {
    res.set('content-type', options.metrics.registry.contentType);
    res.send(await options.metrics.registry.metrics());
  });

  await runtime.runInit('routes.custom.before', { app });
  await runtime.runInit('routes.custom.after', { app });
  await runtime.runInit('routes.after', { app });
  await runtime.runInit('app.after', { app });

  const server = await new Promise<Server>((resolve, reject) => {
    const listening = app.listen(options.port, options.host, (error?: Error) => (error ? reject(error) : resolve(listening)));
    listening.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  options.logger.info({ host: options.host, port }, 'http listening');
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
