/**
 * A hot reload never loses a committed change nor doubles one (bridge/extension-guards.ts, the
 * runtime's onSwap): under a continuous writer, an extension's index file is deleted and restored, then
 * its whole folder is moved away and back. Every committed change of its table is either delivered
 * or held for it — never neither (acknowledged past, lost for good), never both (delivered twice at the
 * next start) — and after a restart each has reached its handler exactly once.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();

const delivered: number[] = [];
(globalThis as Record<string, unknown>)['__reloadDelivered'] = delivered;
const acts = `module.exports = ({ action }) => { action('ledger.items.create', (meta) => globalThis.__reloadDelivered.push(meta.key)); };`;

let tb: TestBridge | undefined;
afterAll(async () => {
  await tb?.dispose();
});

const query = <T extends Record<string, unknown>>(text: string, values: unknown[] = []) =>
  withClient(db.url, async (c) => (await c.query<T>(text, values)).rows);
const heldKeys = async () =>
  (
    await query<{ key: number }>(
      `select (meta->>'key')::int as key from hookbridge.failed_events where extension = 'acts' and reason = 'extension_not_loaded' order by id`,
    )
  ).map((r) => r.key);

/** Inserts rows one by one until stopped; returns the ids of those that committed. */
function startWriter(): { stop(): Promise<number[]>; count(): number } {
  const written: number[] = [];
  let running = true;
  const done = (async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      while (running) {
        const { rows } = await client.query<{ id: number }>(`insert into ledger (n) values (1) returning id`);
        written.push(rows[0]!.id);
      }
    } finally {
      await client.end();
    }
  })();
  return {
    count: () => written.length,
    async stop() {
      running = false;
      await done;
      return written;
    },
  };
}

describe('hot reload and extension guards', () => {
  it('delivers or holds every committed change, never both, never neither', { timeout: 240_000 }, async () => {
    await query(`create table ledger (id serial primary key, n int)`);
    tb = await startTestBridge(db.url, { 'hooks/acts/index.js': acts }, { extensionsAutoReload: true });
    const bridge = tb;
    const runtime = () => bridge.bridge.runtime;
    const entry = join(bridge.extensionsPath, 'hooks/acts/index.js');
    const writer = startWriter();
    let written: number[] = [];
    // Lets the writer and the stream run through the state the reload left.
    const flow = async (rows: number) => {
      const until = writer.count() + rows;
      await waitFor(() => writer.count() >= until, { timeoutMs: 30_000, message: `${rows} more rows written` });
    };
    try {
      await waitFor(() => delivered.length >= 100, { timeoutMs: 30_000, message: 'the first changes delivered' });

      // The index file deleted, the folder kept (an editor's save, a deploy in progress): a folder that
      // is no extension any more keeps its previous version, like an extension that fails to load.
      await rm(entry);
      await waitFor(() => runtime().report?.failed.some((f) => f.path === join(bridge.extensionsPath, 'hooks/acts')), {
        timeoutMs: 30_000,
        message: 'the reload that finds hooks/acts without its index file',
      });
      await flow(300);
      await writeFile(entry, acts);
      await waitFor(() => runtime().report?.failed.length === 0, { timeoutMs: 30_000, message: 'the reload that finds acts again' });
      await flow(300);

      // The whole folder gone: "acts" is not loaded, its changes are held.
      await rename(join(bridge.extensionsPath, 'hooks/acts'), join(bridge.extensionsPath, 'acts-away'));
      await waitFor(() => runtime().report && !runtime().report!.loaded.some((l) => l.name === 'acts'), {
        timeoutMs: 30_000,
        message: 'the reload without acts',
      });
      await waitFor(async () => (await heldKeys()).length >= 100, { timeoutMs: 30_000, message: 'changes held for acts' });
      await rename(join(bridge.extensionsPath, 'acts-away'), join(bridge.extensionsPath, 'hooks/acts'));
      await waitFor(() => runtime().report?.loaded.some((l) => l.name === 'acts'), { timeoutMs: 30_000, message: 'the reload with acts back' });
      await flow(300);
    } finally {
      written = await writer.stop();
    }

    // Every committed change reaches one of the two: a change acknowledged past without either is lost.
    let missing: number[] = [];
    await waitFor(
      async () => {
        const held = new Set(await heldKeys());
        const seen = new Set(delivered);
        missing = written.filter((id) => !held.has(id) && !seen.has(id));
        return missing.length === 0;
      },
      {
        timeoutMs: 60_000,
        message: () => `${missing.length} of ${written.length} committed changes neither delivered nor held (ids ${missing[0]}…${missing.at(-1)})`,
      },
    );
    const held = await heldKeys();
    expect(held.length).toBeGreaterThan(0);
    const both = held.filter((id) => delivered.includes(id));
    expect(both, `${both.length} changes both delivered and held (they would be delivered twice)`).toEqual([]);
    expect(delivered.length, 'no change delivered twice').toBe(new Set(delivered).size);

    // At the next start the held ones are delivered: each committed change reached "acts" exactly once.
    await bridge.restart();
    await waitFor(() => delivered.length >= written.length, {
      timeoutMs: 60_000,
      message: () => `all ${written.length} changes delivered after the restart; ${delivered.length} so far`,
    });
    expect([...delivered].sort((a, b) => a - b)).toEqual([...written].sort((a, b) => a - b));
  });
});
