/**
 * One filter worker thread: loads the extensions (their filters are what it runs; register functions
 * run here too, init hooks and schedules do not), with a `database` and `getSchema` of its own, and
 * turns request bodies into verdicts. JSON parsing of large rows and hooks that block happen here, off
 * the bridge's main thread, which keeps answering everyone else (see filter-workers.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { HookRuntime } from '../../hooks/runtime.js';
import { SchemaReader, type SchemaOverview } from '../schema-overview.js';
import { createServices } from '../services/items-service.js';
import { answerFilterCall, parseRequest, rejectionVerdict } from './filter-requests.js';
import type { WorkerReply, WorkerRequest, WorkerSetup } from './filter-workers.js';

const setup = workerData as WorkerSetup;
const port = parentPort;
if (!port) throw new Error('filter-worker.ts runs as a worker thread only');

const post = (message: WorkerReply) => port.postMessage(message);
// Log lines go to the main thread, which writes them with its own logger (and format).
const logger = pino({ level: setup.logLevel, base: { worker: setup.index } }, { write: (line: string) => post({ type: 'log', line }) });

// A hook's stray rejection or throw (a timer, an emitter) is logged, never the end of the worker.
process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection in a filter hook'));
process.on('uncaughtException', (error) => logger.error({ err: error }, 'uncaught exception in a filter hook'));

const hooksPool = new pg.Pool({ ...setup.hooksConnection, max: 4, application_name: 'hookbridge:filters' });
hooksPool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed'));
const internalPool = new pg.Pool({ ...setup.internalConnection, max: 1, application_name: 'hookbridge:filters' });
internalPool.on('error', (error) => logger.warn({ err: error }, 'idle database connection failed'));
const database = new Kysely<any>({ dialect: new PostgresDialect({ pool: hooksPool }) });
const schemaReader = new SchemaReader(internalPool, [setup.schema]);
let latestSchema: SchemaOverview | undefined;
let primaryKeys = new Map<string, string[]>();

const runtime: HookRuntime = new HookRuntime({
  extensionsPath: setup.extensionsPath,
  logger: logger.child({ component: 'hooks' }),
  env: setup.env,
  provide: () => ({
    database,
    getSchema: () => schemaReader.getSchema(),
    services: createServices({ database, runtime, getSchema: () => schemaReader.getSchema() }),
  }),
});

async function answer(id: number, body: string): Promise<void> {
  let request;
  try {
    request = parseRequest(body);
  } catch (error) {
    logger.error({ err: error }, 'unreadable filter request');
    return post({ type: 'verdict', id, verdict: rejectionVerdict({ sqlstate: 'HB500', message: 'hookbridge: the bridge could not read the filter request' }) });
  }
  const collection = request.schema === 'public' ? request.table : `${request.schema}.${request.table}`;
  let timedOut = false;
  try {
    const verdict = await answerFilterCall(request, {
      runtime,
      timeoutMs: setup.timeoutMs,
      failureMode: setup.failureMode,
      primaryKeyOf: (name) => primaryKeys.get(name),
      database,
      schema: latestSchema,
      onTimeout: (name, op) => {
        timedOut = true;
        logger.warn({ collection: name, op, timeoutMs: setup.timeoutMs }, 'filter hooks timed out');
      },
    });
    post({ type: 'verdict', id, verdict, collection, op: request.op, timedOut });
  } catch (error) {
    logger.error({ err: error }, 'filter request failed inside the bridge');
    post({ type: 'verdict', id, verdict: rejectionVerdict({ sqlstate: 'HB500', message: 'hookbridge: internal error while filtering' }), collection, op: request.op });
  }
}

port.on('message', (message: WorkerRequest) => {
  switch (message.type) {
    case 'call':
      void answer(message.id, message.body);
      break;
    case 'keys':
      primaryKeys = new Map(message.primaryKeys);
      void schemaReader.getSchema().then(
        (schema) => (latestSchema = schema),
        (error: unknown) => logger.warn({ err: error }, 'reading the schema failed'),
      );
      break;
    case 'reload':
      void runtime.reload().then(() => post({ type: 'reloaded' }));
      break;
  }
});

try {
  latestSchema = await schemaReader.getSchema().catch(() => undefined);
  await runtime.reload();
  post({ type: 'ready' });
} catch (error) {
  logger.error({ err: error }, 'the filter worker could not start');
  throw error;
}
