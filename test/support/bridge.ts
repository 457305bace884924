/**
 * An in-process bridge on a test database with extensions written from strings. Its slot name is
 * unique (slots are cluster-wide, test files run in parallel); `stop()` drops the slot, so the
 * harness' leak check stays green.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Bridge } from '../../bridge/bridge.js';
import { resolveConfig, type ConfigOptions } from '../../bridge/config.js';
import { dropSlot } from '../../bridge/replication/setup.js';
import { captureLogger, type CapturedLogger } from './capture-logger.js';
import { tempDir, writeTree } from './file-tree.js';

export interface TestBridge {
  bridge: Bridge;
  log: CapturedLogger;
  extensionsPath: string;
  slotName: string;
  /** Stops the bridge; keeps the slot (a restart resumes from it). */
  stop(): Promise<void>;
  /** Starts a new bridge on the same slot and extensions. */
  restart(): Promise<void>;
  /** Stops the bridge and drops its slot and files. */
  dispose(): Promise<void>;
}

export async function startTestBridge(
  url: string,
  extensions: Record<string, string>,
  options: ConfigOptions & { env?: Record<string, string> } = {},
): Promise<TestBridge> {
  const dir = await tempDir('hookbridge-ext-');
  await writeTree(dir.path, extensions);
  const slotName = `hb_test_${randomBytes(4).toString('hex')}`;
  const log = captureLogger(options.logLevel === 'silent' ? 'info' : 'debug');
  const make = () =>
    new Bridge(
      // Filter hooks on the test's own thread (filterWorkers: 0) unless a test asks for workers: tests
      // look at what hooks saw through globalThis.
      resolveConfig({ databaseUrl: url, extensionsPath: dir.path, slotName, logLevel: 'debug', port: 0, filterWorkers: 0, ...options }, { ...options.env }),
      log.logger,
    );
  const handle: TestBridge = {
    bridge: make(),
    log,
    extensionsPath: dir.path,
    slotName,
    stop: () => handle.bridge.stop(),
    async restart() {
      await handle.bridge.stop();
      handle.bridge = make();
      await handle.bridge.start();
    },
    async dispose() {
      await handle.bridge.stop();
      try {
        await dropTestSlot(url, slotName);
      } finally {
        await dir.remove();
      }
    },
  };
  await handle.bridge.start();
  return handle;
}

export async function dropTestSlot(url: string, slotName: string): Promise<void> {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  try {
    await dropSlot(pool, slotName);
  } finally {
    await pool.end();
  }
}
