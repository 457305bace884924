/**
 * Mistakes fail loudly, never open (issue 12, finding 9): a configured extensions folder that does not
 * exist stops the bridge (exit 2); an extension that fails to load keeps the tables it guarded guarded —
 * writes its filters covered are refused naming it, the table stays published and its committed
 * changes are held until a start where it loads, which delivers them. A missing *default* folder
 * (a fresh checkout) still starts, and unguards nothing either.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { replayFailedEvents } from '../../bridge/failed-events.js';
import { dropTestSlot, startTestBridge, type TestBridge } from '../support/bridge.js';
import { runCli, startCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();

type Seen = { event: string; id: string; key: unknown; title: unknown };
const seen: Seen[] = [];
(globalThis as Record<string, unknown>)['__guardSeen'] = seen;

const guard = `
  module.exports = ({ filter, action }) => {
    filter('notes.items.create', (payload) => {
      if (payload.title === 'bad') throw new Error('a note needs a better title');
      return { ...payload, stamped: true };
    });
    action('notes.items.create', (meta) => globalThis.__guardSeen.push({ event: meta.event, id: meta.id, key: meta.key, title: meta.payload.title }));
    action('notes.items.update', (meta) => globalThis.__guardSeen.push({ event: meta.event, id: meta.id, key: meta.keys[0], title: meta.payload.title }));
  };`;
// Another extension's filter on the same table: it must not let writes through that "guard" covered.
const other = `module.exports = ({ filter }) => { filter('notes.items.create', (payload) => payload); };`;
const broken = `module.exports = ({ filter, action }) => { filter('notes.items.create', (payload) => payload ;`;

let tb: TestBridge | undefined;

afterAll(async () => {
  await tb?.dispose();
});

const query = <T extends Record<string, unknown>>(text: string, values: unknown[] = []) =>
  withClient(db.url, async (c) => (await c.query<T>(text, values)).rows);

async function writeError(text: string): Promise<{ code?: string; message: string; detail?: string } | undefined> {
  try {
    await query(text);
    return undefined;
  } catch (error) {
    const e = error as { code?: string; message: string; detail?: string };
    return { code: e.code, message: e.message, detail: e.detail };
  }
}

const published = async () =>
  (await query<{ tablename: string }>(`select tablename from pg_publication_tables where pubname = 'hookbridge' and tablename = 'notes'`)).length > 0;
const filterTrigger = async () =>
  (await query<{ n: number }>(`select count(*)::int as n from pg_trigger where tgname = '~hookbridge_filter' and tgrelid = 'notes'::regclass`))[0]?.n === 1;
const held = () =>
  query<{ event_id: string; replayed_at: Date | null }>(
    `select event_id, replayed_at from hookbridge.failed_events where extension = 'guard' and reason = 'extension_not_loaded' order by commit_lsn, id`,
  );

describe('mistakes fail loudly, never open', () => {
  it('refuses a configured extensions folder that does not exist, with exit code 2, naming it and where it came from', async () => {
    const missing = join(tmpdir(), `hookbridge-missing-${randomBytes(4).toString('hex')}`);
    // An unreachable database: the check comes before any connection (which would exit 1).
    const env = { DATABASE_URL: 'postgres://app:s3cret-pass@127.0.0.1:1/app' };
    const flag = await runCli(['start', '-e', missing], { env });
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain(`hookbridge: EXTENSIONS_PATH: no such folder: ${missing} (set by the -e/--extensions flag)`);
    const fromEnv = await runCli(['start'], { env: { ...env, EXTENSIONS_PATH: missing } });
    expect(fromEnv.code).toBe(2);
    expect(fromEnv.stderr).toContain(`hookbridge: EXTENSIONS_PATH: no such folder: ${missing} (set by the EXTENSIONS_PATH environment variable)`);
    for (const run of [flag, fromEnv]) expect(run.stderr + run.stdout).not.toContain('s3cret-pass');
    const listed = await runCli(['extensions', '-e', missing]);
    expect(listed.code).toBe(2);
    expect(listed.stderr).toContain(`no such folder: ${missing}`);
  });

  it('keeps the tables of an extension that fails to load guarded, and delivers their changes once it loads again', { timeout: 240_000 }, async () => {
    await query(`create table notes (id int primary key, title text, stamped boolean not null default false)`);
    tb = await startTestBridge(db.url, { 'hooks/guard/index.js': guard, 'hooks/other/index.js': other });
    const bridge = tb;
    await query(`insert into notes (id, title) values (1, 'first')`);
    expect(await query(`select stamped from notes where id = 1`)).toEqual([{ stamped: true }]);
    await waitFor(() => seen.some((s) => s.key === 1 && s.event === 'notes.items.create'), { timeoutMs: 30_000, message: 'the create of row 1' });

    // Committed while no bridge runs (update filters are none, so no trigger stands in the way).
    await bridge.stop();
    await query(`update notes set title = 'while stopped' where id = 1`);
    await writeFile(join(bridge.extensionsPath, 'hooks/guard/index.js'), broken);

    await bridge.restart();
    // The write its filter covered fails closed, naming it, although "other" has a filter there too.
    const refused = await writeError(`insert into notes (id, title) values (2, 'second')`);
    expect(refused).toMatchObject({ code: 'HB503', detail: 'code: EXTENSION_NOT_LOADED' });
    expect(refused?.message).toMatch(/extension "guard" guards notes \(create\) but is not loaded: E_EXTENSION_LOAD/);
    expect(await query(`select id from notes order by id`)).toEqual([{ id: 1 }]);
    expect(await filterTrigger()).toBe(true);
    expect(await published()).toBe(true);
    // Committed while it is broken: held for it, not acknowledged past.
    await query(`update notes set title = 'while broken' where id = 1`);
    const heldRows = await waitFor(async () => ((await held()).length === 2 ? held() : undefined), {
      timeoutMs: 30_000,
      message: 'two changes held for "guard"',
    });
    expect(seen.filter((s) => s.event === 'notes.items.update')).toEqual([]);
    expect(bridge.bridge.health().extensions).toMatchObject({ notLoaded: [{ extension: 'guard', tables: ['notes'] }] });
    expect(
      bridge.log
        .lines()
        .some(
          (l) =>
            l['msg'] ===
              'extension not loaded: the tables it guarded stay guarded (writes its filters covered are refused, changes its actions hear are held until it loads)' &&
            l['extension'] === 'guard',
        ),
    ).toBe(true);

    const env = { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: bridge.slotName };
    const status = await runCli(['status', '--json', '-e', bridge.extensionsPath], { env });
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).guards).toMatchObject({
      notLoaded: [
        {
          extension: 'guard',
          reason: expect.stringMatching(/^E_EXTENSION_LOAD/),
          tables: [{ collection: 'notes', filters: ['create'], actions: ['create', 'update'] }],
        },
      ],
      heldEvents: 2,
    });
    const doctor = await runCli(['doctor'], { env });
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toMatch(/✗ extensions guarding tables: extension "guard" does not load .*it guarded notes/);

    // Fixed: the held changes reach its action hooks, in commit order, with their ids.
    await writeFile(join(bridge.extensionsPath, 'hooks/guard/index.js'), guard);
    await bridge.restart();
    const updates = await waitFor(
      () => {
        const list = seen.filter((s) => s.event === 'notes.items.update');
        return list.length >= 2 ? list : undefined;
      },
      { timeoutMs: 30_000, message: () => `the two held updates; seen ${JSON.stringify(seen)}` },
    );
    expect(updates.map((u) => [u.id, u.key, u.title])).toEqual([
      [heldRows[0]?.event_id, 1, 'while stopped'],
      [heldRows[1]?.event_id, 1, 'while broken'],
    ]);
    expect((await held()).every((r) => r.replayed_at !== null)).toBe(true);
    expect(bridge.bridge.health().extensions).toMatchObject({ notLoaded: [] });
    await query(`insert into notes (id, title) values (3, 'third')`);
    expect(await query(`select stamped from notes where id = 3`)).toEqual([{ stamped: true }]);
    expect(await writeError(`insert into notes (id, title) values (4, 'bad')`)).toMatchObject({ message: 'a note needs a better title' });
  });

  it('starts with a missing default extensions folder (a fresh checkout), and keeps remembered tables guarded', { timeout: 120_000 }, async () => {
    // The bridge of the test before, stopped: one bridge per database.
    await tb?.dispose();
    tb = undefined;
    const cwd = await mkdtemp(join(tmpdir(), 'hookbridge-fresh-'));
    const slot = `hb_test_${randomBytes(4).toString('hex')}`;
    // Two filter workers, the default (the test helper's is one): each must hear which extensions are not loaded.
    const cli = startCli(['start'], { cwd, env: { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: slot, FILTER_WORKERS: '2' } });
    try {
      await cli.waitForLog('ready');
      const refused = await writeError(`insert into notes (id, title) values (5, 'fifth')`);
      expect(refused).toMatchObject({ code: 'HB503', detail: 'code: EXTENSION_NOT_LOADED' });
      expect(refused?.message).toContain(
        `extension "guard" guards notes (create) but is not loaded: the extensions folder ${join(cwd, 'extensions')} does not exist`,
      );
      expect(await filterTrigger()).toBe(true);
      expect(await published()).toBe(true);
    } finally {
      expect(await cli.stop('SIGTERM')).toBe(0);
      await dropTestSlot(db.url, slot);
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

describe('a guard is never forgotten implicitly', () => {
  const memoSeen: Array<[string, unknown, unknown]> = [];
  (globalThis as Record<string, unknown>)['__memoSeen'] = memoSeen;
  const keeper = `
    module.exports = ({ filter, action }) => {
      filter('memos.items.create', (payload) => {
        if (payload.title === 'bad') throw new Error('a memo needs a better title');
        return payload;
      });
      action('memos.items.create', (meta) => globalThis.__memoSeen.push(['keeper', meta.key, meta.payload.title]));
    };`;
  const helper = `module.exports = ({ action }) => { action('memos.items.update', (meta) => globalThis.__memoSeen.push(['helper', meta.keys[0], meta.payload.title])); };`;
  const guardRows = async () =>
    (
      await query<{ extension: string; table_name: string }>(
        `select extension, table_name from hookbridge.extension_guards where table_name = 'memos' order by extension`,
      )
    ).map((r) => [r.extension, r.table_name]);
  const memoTrigger = async () =>
    (await query<{ n: number }>(`select count(*)::int as n from pg_trigger where tgname like '%hookbridge_filter' and tgrelid = 'memos'::regclass`))[0]?.n ===
    1;
  const memosPublished = async () => (await query(`select 1 from pg_publication_tables where pubname = 'hookbridge' and tablename = 'memos'`)).length > 0;
  const notLoaded = () => ((tb as TestBridge).bridge.health().extensions as { notLoaded: Array<{ extension: string }> }).notLoaded.map((g) => g.extension);
  const heldFor = (extension: string) =>
    query(`select event_id from hookbridge.failed_events where extension = $1 and reason = 'extension_not_loaded' and replayed_at is null`, [extension]);

  it('keeps every table guarded when the folder is emptied or one extension of several is gone, until `hookbridge forget`', { timeout: 240_000 }, async () => {
    await tb?.dispose();
    tb = undefined;
    await query(`create table memos (id int primary key, title text)`);
    const bridge = await startTestBridge(db.url, { 'hooks/keeper/index.js': keeper, 'hooks/helper/index.js': helper });
    tb = bridge;
    await query(`insert into memos (id, title) values (1, 'first')`);
    expect(await writeError(`insert into memos (id, title) values (2, 'bad')`)).toMatchObject({ message: 'a memo needs a better title' });
    await waitFor(() => memoSeen.some(([e, key]) => e === 'keeper' && key === 1), { timeoutMs: 30_000, message: 'the create of memo 1' });

    // Emptied (or the empty folder Docker makes for a bind mount whose host path is wrong): nothing is
    // forgotten, everything stays guarded, and the log says why and how to forget on purpose.
    await bridge.stop();
    await rm(join(bridge.extensionsPath, 'hooks'), { recursive: true });
    await bridge.restart();
    const refused = await writeError(`insert into memos (id, title) values (2, 'bad')`);
    expect(refused).toMatchObject({ code: 'HB503', detail: 'code: EXTENSION_NOT_LOADED' });
    expect(refused?.message).toContain(
      `extension "keeper" guards memos (create) but is not loaded: the extensions folder ${bridge.extensionsPath} holds no extension at all (emptied, or the wrong folder mounted?); if it was removed on purpose: npx hookbridge forget keeper`,
    );
    expect(await query(`select id from memos order by id`)).toEqual([{ id: 1 }]);
    expect(await guardRows()).toEqual([
      ['helper', 'memos'],
      ['keeper', 'memos'],
    ]);
    expect(await memoTrigger()).toBe(true);
    expect(await memosPublished()).toBe(true);
    expect(
      bridge.log
        .lines()
        .some((l) => l['level'] === 50 && String(l['msg']).startsWith('none of the extensions that guard tables was found in the extensions folder')),
    ).toBe(true);
    await query(`update memos set title = 'while empty' where id = 1`);
    await waitFor(async () => (await heldFor('helper')).length === 1, { timeoutMs: 30_000, message: 'the update held for "helper"' });

    // One of several back: it loads and gets its held change; the one still gone keeps guarding.
    await bridge.stop();
    await writeTree(bridge.extensionsPath, { 'hooks/helper/index.js': helper });
    await bridge.restart();
    await waitFor(() => memoSeen.some(([e, , title]) => e === 'helper' && title === 'while empty'), {
      timeoutMs: 30_000,
      message: 'the held update delivered to "helper"',
    });
    const still = await writeError(`insert into memos (id, title) values (2, 'bad')`);
    expect(still).toMatchObject({ code: 'HB503', detail: 'code: EXTENSION_NOT_LOADED' });
    expect(still?.message).toContain(
      `extension "keeper" guards memos (create) but is not loaded: gone from the extensions folder ${bridge.extensionsPath}; if it was removed on purpose: npx hookbridge forget keeper`,
    );
    // ("guard" and "other" are remembered from the tests before, on another table.)
    expect(notLoaded()).toEqual(['guard', 'keeper', 'other']);

    // Forgotten on purpose, while the bridge runs: it stops guarding with it within its next check.
    const env = { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: bridge.slotName };
    const unknown = await runCli(['forget', 'nobody'], { env });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no guards remembered for extension "nobody" (remembered: guard, helper, keeper, other)');
    const forgot = await runCli(['forget', 'keeper'], { env });
    expect(forgot.stderr).toBe('');
    expect(forgot.code).toBe(0);
    expect(forgot.stdout).toContain('forgot extension "keeper": it no longer guards memos');
    expect(await guardRows()).toEqual([['helper', 'memos']]);
    await waitFor(async () => !(await memoTrigger()), { timeoutMs: 30_000, message: 'the filter trigger of memos dropped' });
    expect(notLoaded()).toEqual(['guard', 'other']);
    await query(`insert into memos (id, title) values (2, 'bad')`);
  });
});

describe('held and parked events replay exactly', () => {
  const blobSeen: Array<Record<string, unknown>> = [];
  const global = globalThis as Record<string, unknown>;
  global['__blobSeen'] = blobSeen;
  const exact = `
    module.exports = ({ action }) => {
      action('blobs.items.create', (meta) => {
        if (meta.payload.id === 3 && !globalThis.__blobFixed) throw new Error('not yet');
        globalThis.__blobSeen.push(meta.payload);
      });
    };`;
  const values = String.raw`'\x00ff10'::bytea, 'NaN', 'Infinity', '-Infinity', '-0', '{"b": 1, "a": "x\u0000y"}'::json`;

  it('hands the handler the meta the change made: Buffers, NaN, ±Infinity, -0, U+0000 and json key order', { timeout: 240_000 }, async () => {
    await tb?.dispose();
    tb = undefined;
    await query(`create table blobs (id int primary key, data bytea, f1 float8, f2 float8, f3 float8, f4 float8, doc json)`);
    const bridge = await startTestBridge(db.url, { 'hooks/exact/index.js': exact }, { actionAttempts: 1 });
    tb = bridge;
    const entry = join(bridge.extensionsPath, 'hooks/exact/index.js');
    await query(`insert into blobs values (1, ${values})`);
    const live = await waitFor(() => blobSeen.find((p) => p['id'] === 1), { timeoutMs: 30_000, message: 'blob 1 delivered' });
    // What the lossless typing hands a live handler: the reference.
    expect(Buffer.isBuffer(live['data'])).toBe(true);
    expect([live['f1'], live['f2'], live['f3'], Object.is(live['f4'], -0)]).toEqual([NaN, Infinity, -Infinity, true]);
    expect(Object.keys(live['doc'] as object)).toEqual(['b', 'a']);

    // Held while the extension does not load, delivered at the start where it loads again.
    await bridge.stop();
    await writeFile(entry, `module.exports = ({ action }) => { action(`);
    await bridge.restart();
    await query(`insert into blobs values (2, ${values})`);
    await waitFor(
      async () => (await query(`select 1 from hookbridge.failed_events where extension = 'exact' and reason = 'extension_not_loaded'`)).length === 1,
      {
        timeoutMs: 30_000,
        message: 'blob 2 held',
      },
    );
    await writeFile(entry, exact);
    await bridge.restart();
    const held = await waitFor(() => blobSeen.find((p) => p['id'] === 2), { timeoutMs: 30_000, message: 'blob 2 delivered after the restart' });

    // Parked after its handler failed, replayed as `hookbridge failed replay` does.
    await query(`insert into blobs values (3, ${values})`);
    const [row] = await waitFor(
      async () => {
        const rows = await query<{ id: string }>(`select id::text from hookbridge.failed_events where extension = 'exact' and reason = 'handler_failed'`);
        return rows.length === 1 ? rows : undefined;
      },
      { timeoutMs: 30_000, message: 'blob 3 parked' },
    );
    global['__blobFixed'] = true;
    expect(await replayFailedEvents(bridge.bridge.pool, 'hookbridge', bridge.bridge.runtime, { ids: [row!.id] })).toMatchObject([{ ok: true }]);
    const parked = blobSeen.find((p) => p['id'] === 3);

    for (const [what, payload] of [
      ['held', held],
      ['parked', parked],
    ] as const) {
      expect(payload, what).toBeDefined();
      // toEqual tells -0 from 0, NaN from null, a Buffer from a "\x…" string.
      expect({ ...payload, id: 1 }, what).toEqual(live);
      expect(Buffer.isBuffer(payload?.['data']), what).toBe(true);
      expect(Object.is(payload?.['f4'], -0), what).toBe(true);
      expect(Object.keys(payload?.['doc'] as object), what).toEqual(['b', 'a']);
      expect((payload?.['doc'] as { a: string }).a, what).toBe('x\u0000y');
    }
  });
});
