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
import { dropTestSlot, startTestBridge, type TestBridge } from '../support/bridge.js';
import { runCli, startCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
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
  (await query<{ n: number }>(`select count(*)::int as n from pg_trigger where tgname = 'hookbridge_filter' and tgrelid = 'notes'::regclass`))[0]?.n === 1;
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
    expect(bridge.log.lines().some((l) => l['msg'] === 'extension not loaded: the tables it guarded stay guarded (writes its filters covered are refused, changes its actions hear are held until it loads)' && l['extension'] === 'guard')).toBe(true);

    const env = { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: bridge.slotName };
    const status = await runCli(['status', '--json', '-e', bridge.extensionsPath], { env });
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).guards).toMatchObject({
      notLoaded: [{ extension: 'guard', reason: expect.stringMatching(/^E_EXTENSION_LOAD/), tables: [{ collection: 'notes', filters: ['create'], actions: ['create', 'update'] }] }],
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
    const cli = startCli(['start'], { cwd, env: { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: slot } });
    try {
      await cli.waitForLog('ready');
      const refused = await writeError(`insert into notes (id, title) values (5, 'fifth')`);
      expect(refused).toMatchObject({ code: 'HB503', detail: 'code: EXTENSION_NOT_LOADED' });
      expect(refused?.message).toContain(`extension "guard" guards notes (create) but is not loaded: the extensions folder ${join(cwd, 'extensions')} does not exist`);
      expect(await filterTrigger()).toBe(true);
      expect(await published()).toBe(true);
    } finally {
      expect(await cli.stop('SIGTERM')).toBe(0);
      await dropTestSlot(db.url, slot);
      await rm(cwd, { recursive: true, force: true });
    }
  });
});
