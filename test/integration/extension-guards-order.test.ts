/**
 * A reload that brings back an extension whose changes were held in this process keeps each row's
 * changes in commit order: its new changes are held too (not run live) until the next start replays
 * the older ones first. Without that, a row's newest version reached the handler before the held ones.
 */
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const versions: number[] = [];
(globalThis as Record<string, unknown>)['__orderVersions'] = versions;
const acts = `module.exports = ({ action }) => { action('kv.items.update', (meta) => globalThis.__orderVersions.push(Number(meta.payload.v))); };`;

let tb: TestBridge | undefined;
afterAll(async () => {
  await tb?.dispose();
});

const query = (text: string) => withClient(db.url, (c) => c.query(text));
const held = async () =>
  Number((await query(`select count(*) as n from hookbridge.failed_events where extension = 'kv-mirror' and replayed_at is null`)).rows[0].n);

describe('an extension a reload brings back', () => {
  it("gets a row's changes in commit order: held ones at the next start, new ones after them", { timeout: 120_000 }, async () => {
    await query(`create table kv (id int primary key, v int)`);
    await query(`insert into kv values (1, 0)`);
    tb = await startTestBridge(
      db.url,
      { 'hooks/kv-mirror/index.js': acts, 'hooks/other/index.js': 'module.exports = () => {};' },
      { extensionsAutoReload: true },
    );
    const folder = join(tb.extensionsPath, 'hooks/kv-mirror');
    const runtime = () => tb!.bridge.runtime;
    await query(`update kv set v = 1 where id = 1`);
    await waitFor(() => versions.includes(1), { message: 'v1 never delivered' });
    // Remembered: the guards are written at the first sync after the start.
    await waitFor(async () => Number((await query(`select count(*) as n from hookbridge.extension_guards where extension = 'kv-mirror'`)).rows[0].n) > 0, {
      message: 'the guard was never remembered',
    });

    // Out of the extensions folder (a folder left in hooks/ under another name would load as another extension).
    await rename(folder, `${tb.extensionsPath}-kv-away`);
    await waitFor(() => !runtime().registry.extensions.some((e) => e.name === 'kv-mirror'), { message: 'the extension never left' });
    await query(`update kv set v = 2 where id = 1`);
    await query(`update kv set v = 3 where id = 1`);
    await waitFor(async () => (await held()) === 2, { message: 'v2 and v3 were not held' });

    await rename(`${tb.extensionsPath}-kv-away`, folder);
    await waitFor(() => runtime().registry.extensions.some((e) => e.name === 'kv-mirror'), { message: 'the extension never came back' });
    await query(`update kv set v = 4 where id = 1`);
    await waitFor(async () => (await held()) === 3, { message: 'v4 was not held behind v2 and v3' });
    expect(versions).toEqual([1]);

    await tb.restart();
    await waitFor(() => versions.length >= 4, { message: () => `after the restart: ${JSON.stringify(versions)}` });
    expect(versions).toEqual([1, 2, 3, 4]);
    await query(`update kv set v = 5 where id = 1`);
    await waitFor(() => versions.includes(5), { message: 'live delivery never resumed' });
  });
});
