/**
 * Containment: a hook's unhandled rejection or a throw outside its handlers (a timer, an event
 * emitter's listener), in an init hook, an action handler or a filter hook on a worker thread, is
 * logged with the extension's name and counted, and the bridge keeps serving. A real bridge process:
 * Node would end it for any of these.
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dropTestSlot } from '../support/bridge.js';
import { attributeError } from '../../bridge/containment.js';
import { packageInfo } from '../../bridge/package-info.js';
import { CLI, startCli, type RunningCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir, writeTree } from '../support/file-tree.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const SLOT = 'hb_containment';
let cli: RunningCli;
let dir: { path: string; remove(): Promise<void> };
let record: string;
let port: unknown;

const stray = `
  const { EventEmitter } = require('node:events');
  const { appendFileSync } = require('node:fs');
  module.exports = ({ init, action, filter }, { env }) => {
    const bus = new EventEmitter();
    bus.on('ping', () => { throw new Error('listener threw'); });
    init('app.after', () => {
      setTimeout(() => { throw new Error('boom'); }, 10);
      Promise.reject(new Error('nope'));
    });
    action('notes.items.create', (meta) => {
      if (meta.payload.title.startsWith('stray')) {
        setTimeout(() => bus.emit('ping'), 10);
        setTimeout(() => new EventEmitter().emit('error', new Error('nobody listens for error')), 10);
        Promise.reject('a bare string');
      }
      appendFileSync(env.RECORD_FILE, meta.key + '\\n');
    });
    filter('notes.items.create', (payload) => {
      if (payload.title === 'stray') setTimeout(() => { throw new Error('filter timer'); }, 10);
      return { ...payload, title: payload.title + ' (filtered)' };
    });
  };`;

// A neighbour that behaves: nothing of the above may be put on its name.
const quiet = `module.exports = ({ action }) => { action('notes.items.create', () => {}); };`;

beforeAll(async () => {
  await withClient(db.url, (c) => c.query(`create table notes (id serial primary key, title text not null)`));
  dir = await tempDir();
  record = join(dir.path, 'actions.log');
  await writeTree(dir.path, { 'hooks/stray/index.js': stray, 'hooks/quiet/index.js': quiet });
  cli = startCli(['start', '-e', dir.path], { env: { DATABASE_URL: db.url, HOOKBRIDGE_SLOT: SLOT, RECORD_FILE: record, FILTER_WORKERS: '1' } });
  await cli.waitForLog('ready');
  port = (await cli.waitForLog('http listening'))['port'];
});

afterAll(async () => {
  if (cli) expect(await cli.stop('SIGTERM')).toBe(0);
  await dropTestSlot(db.url, SLOT);
  await dir?.remove();
});

const insert = (title: string) =>
  withClient(db.url, async (c) => (await c.query<{ id: number; title: string }>(`insert into notes (title) values ($1) returning id, title`, [title])).rows[0]);

const recorded = async () => (await readFile(record, 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);

/** The contained errors logged so far: what failed, whose it was said to be, at which level, and where. */
const contained = () =>
  cli
    .logLines()
    .filter((l) => l['kind'] === 'unhandled_rejection' || l['kind'] === 'uncaught_exception')
    .map((l) => ({
      kind: l['kind'],
      source: l['source'],
      extension: l['extension'],
      level: l['level'],
      what: (l['err'] as { message?: string } | undefined)?.message ?? l['reason'],
      inWorker: l['worker'] !== undefined,
    }));

it("logs an init hook's stray throw and rejection with the extension's name, and keeps serving", async () => {
  await waitFor(() => contained().length >= 2, { message: () => `the init hook's errors were never logged:\n${cli.output()}` });
  expect(contained()).toEqual(
    expect.arrayContaining([
      { kind: 'uncaught_exception', source: 'extension', extension: 'stray', level: 50, what: 'boom', inWorker: false },
      { kind: 'unhandled_rejection', source: 'extension', extension: 'stray', level: 50, what: 'nope', inWorker: false },
    ]),
  );
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  expect(health.status).toBe(200);
});

it("contains an action handler's timers, emitter listeners and bare rejections, and a filter hook's timer on its worker", async () => {
  const before = contained().length;
  const row = await insert('stray');
  expect(row?.title).toBe('stray (filtered)');
  await waitFor(() => contained().length >= before + 4, { message: () => `the errors were never all logged:\n${cli.output()}` });
  expect(contained().slice(before)).toEqual(
    expect.arrayContaining([
      { kind: 'uncaught_exception', source: 'extension', extension: 'stray', level: 50, what: 'listener threw', inWorker: false },
      { kind: 'uncaught_exception', source: 'extension', extension: 'stray', level: 50, what: 'nobody listens for error', inWorker: false },
      // A string carries no stack: whose it was cannot be told, and it ends nothing either.
      { kind: 'unhandled_rejection', source: 'unknown', extension: undefined, level: 50, what: 'a bare string', inWorker: false },
      { kind: 'uncaught_exception', source: 'extension', extension: 'stray', level: 50, what: 'filter timer', inWorker: true },
    ]),
  );
  expect(contained().some((c) => c.extension === 'quiet')).toBe(false);

  // Still serving: alive, healthy, filtering writes and running action hooks.
  expect(cli.child.exitCode).toBeNull();
  expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
  const after = await insert('after');
  expect(after?.title).toBe('after (filtered)');
  await waitFor(async () => (await recorded()).includes(after!.id), { message: 'the action hook never ran after the errors' });
  expect(await recorded()).toContain(row!.id);

  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  expect(metrics).toMatch(/hookbridge_hook_errors_total\{extension="stray",kind="uncaught_exception"\} [3-9]/);
  expect(metrics).toMatch(/hookbridge_hook_errors_total\{extension="stray",kind="unhandled_rejection"\} [1-9]/);
  expect(metrics).toMatch(/hookbridge_hook_errors_total\{extension="\(unknown\)",kind="unhandled_rejection"\} [1-9]/);
});

it("tells a bundled dependency's code from hookbridge's in the CLI's bundle (the build's line table)", async () => {
  // The first line of code after a source's marker comment, in whichever bundled file holds it.
  const firstLineOf = async (source: string) => {
    const dir = dirname(CLI);
    for (const name of (await readdir(dir)).filter((file) => file.endsWith('.js'))) {
      const lines = (await readFile(join(dir, name), 'utf8')).split('\n');
      const marker = lines.indexOf(`// ${source}`);
      if (marker >= 0) return { file: join(dir, name), line: marker + 2 };
    }
    throw new Error(`${source} is in no file of ${dir}`);
  };
  const attribute = ({ file, line }: { file: string; line: number }) =>
    attributeError(Object.assign(new Error('x'), { stack: `Error: x\n    at f (${file}:${line}:3)` }), {
      extensionOf: () => undefined,
      ownRoot: packageInfo().root,
    });
  expect(attribute(await firstLineOf('node_modules/kysely/dist/esm/kysely.js'))).toEqual({ source: 'unknown' });
  expect(attribute(await firstLineOf('node_modules/rxjs/dist/cjs/internal/Subject.js'))).toEqual({ source: 'unknown' });
  expect(attribute(await firstLineOf('bridge/containment.ts'))).toMatchObject({ source: 'hookbridge' });
});
