/**
 * One filter worker thread: loads the extensions (their filters are what it runs; register functions
 * run here too, init hooks and schedules do not), with a `database` and `getSchema` of its own, and
 * turns request bodies into verdicts. JSON parsing of large rows and hooks that block happen here, off
 * the bridge's main thread, which keeps answering everyone else (see filter-workers.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import pino from 'pino';
import { ExtensionOrigins } from '../../hooks/extension-origin.js';
import { HookRuntime } from '../../hooks/runtime.js';
import { installContainment } from '../containment.js';
import { SchemaReader, type SchemaOverview } from '../schema-overview.js';
import { TypeCatalog } from '../typing/type-catalog.js';
import { openHookDatabase } from '../hook-database.js';
import { fromTransferable } from '../multi-host.js';
import { createServices } from '../services/items-service.js';
import { answerBody, type NotLoadedFilter } from './filter-requests.js';
import type { WorkerReply, WorkerRequest, WorkerSetup } from './filter-workers.js';

const setup = workerData as WorkerSetup;
const port = parentPort;
if (!port) throw new Error('filter-worker.ts runs as a worker thread only');

const post = (message: WorkerReply) => port.postMessage(message);
// Log lines go to the main thread, which writes them with its own logger (and format).
const logger = pino({ level: setup.logLevel, base: { worker: setup.index } }, { write: (line: string) => post({ type: 'log', line }) });

const internalPool = new pg.Pool({ ...fromTransferable(setup.internalConnection), max: 1, application_name: 'hookbridge:filters' });
internalPool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed'));
const hookDatabase = openHookDatabase(fromTransferable(setup.hooksConnection), { applicationName: 'hookbridge:filters', max: 4, servicesMax: 2, logger });
const schemaReader = new SchemaReader(internalPool, [setup.schema]);
let latestSchema: SchemaOverview | undefined;
let primaryKeys = new Map<string, string[]>();
/** `<collection>\0<action>` → the extension that guarded it and is not loaded (decided by the main thread). */
let notLoaded = new Map<string, NotLoadedFilter>();
const catalog = new TypeCatalog(internalPool);

const runtime: HookRuntime = new HookRuntime({
  extensionsPath: setup.extensionsPath,
  logger: logger.child({ component: 'hooks' }),
  env: setup.env,
  // As on the main thread: events that are no committed change get one try, bounded.
  actionPolicy: { attempts: 1, timeoutMs: setup.actionTimeoutMs },
  provide: () => ({
    database: hookDatabase.knex,
    kysely: hookDatabase.kysely,
    getSchema: () => schemaReader.getSchema(),
    services: createServices({ database: hookDatabase.services, runtime, getSchema: () => schemaReader.getSchema() }),
  }),
});

// A hook's stray rejection or throw (a timer, an emitter) is logged with its extension's name, never
// the end of the worker (the same containment as the main thread's: bridge/containment.ts).
const origins = new ExtensionOrigins();
runtime.onSwap((report) => origins.remember(report));
installContainment({ logger, extensionOf: (file) => origins.extensionOf(file) });

let loaded = false;
/** Calls that came before the extensions were loaded: answered once they are. */
const early: Array<{ id: number; body: string }> = [];

async function answer(id: number, body: string): Promise<void> {
  const outcome = await answerBody(body, {
    runtime,
    timeoutMs: setup.timeoutMs,
    failureMode: setup.failureMode,
    primaryKeyOf: (name) => primaryKeys.get(name),
    notLoadedFilter: (collection, action) => notLoaded.get(`${collection}\0${action}`),
    catalog,
    userMap: setup.userMap,
    database: hookDatabase.knex,
    kysely: hookDatabase.kysely,
    schema: latestSchema,
    logger,
  });
  post({ type: 'verdict', id, ...outcome });
}

port.on('message', (message: WorkerRequest) => {
  switch (message.type) {
    case 'call':
      if (loaded) void answer(message.id, message.body);
      else early.push({ id: message.id, body: message.body });
      break;
    case 'keys':
      primaryKeys = new Map(message.primaryKeys);
      // Sent after every catalog sync: column types may have changed.
      catalog.forget();
      void schemaReader.getSchema().then(
        (schema) => (latestSchema = schema),
        (error: unknown) => logger.warn({ err: error }, 'reading the schema failed'),
      );
      break;
    case 'not-loaded':
      notLoaded = new Map(message.filters.map(([collection, action, why]) => [`${collection}\0${action}`, why]));
      break;
    case 'reload':
      runtime.reload().then(
        () => post({ type: 'reloaded' }),
        (error: unknown) => logger.error({ err: error }, 'reloading the extensions failed'),
      );
      break;
  }
});

// The main thread tells a live worker from one whose event loop a hook blocks by these.
setInterval(() => post({ type: 'beat' }), 200).unref();

try {
  latestSchema = await schemaReader.getSchema().catch(() => undefined);
  await runtime.reload();
  loaded = true;
  post({ type: 'ready' });
  for (const call of early.splice(0)) void answer(call.id, call.body);
} catch (error) {
  post({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}
