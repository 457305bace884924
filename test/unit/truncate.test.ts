/**
 * TRUNCATE through the hooks (issue 12, finding 3), the pure parts: which filters decide a TRUNCATE
 * and what they see (filter-requests.ts), what an extension that is not loaded keeps refused
 * (extension-guards.ts), and the per-table ids of truncate action events (change-events.ts). Also a
 * call answered where no hook may run (the filter workers have not started).
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { guardsOf } from '../../bridge/extension-guards.js';
import { answerBody, type NotLoadedFilter } from '../../bridge/filters/filter-requests.js';
import { TransactionAssembler, truncateMeta, type StreamEvent, type TruncateEvent } from '../../bridge/replication/change-events.js';
import type { PgoutputMessage, RelationInfo } from '../../bridge/replication/pgoutput-decoder.js';
import type { UserTable } from '../../bridge/catalog.js';
import { ForbiddenError } from '../../hooks/errors.js';
import { parseEventName } from '../../hooks/event-name.js';
import type { ExtensionHooks } from '../../hooks/register.js';
import { HookRuntime } from '../../hooks/runtime.js';

const logger = pino({ level: 'silent' });

function runtimeWith(filters: Array<[event: string, handler: (payload: unknown, meta: Record<string, unknown>) => unknown]>): HookRuntime {
  const runtime = new HookRuntime({ extensionsPath: '/nonexistent', logger });
  for (const [event, handler] of filters) runtime.emitter.onFilter(event, handler);
  return runtime;
}

/** What sql/000007.sql's trigger sends through filter_entry() for `TRUNCATE <schema>.<table>`. */
function truncateBody(schema: string, table: string, partition?: { schema: string; table: string }): string {
  return JSON.stringify({
    op: 'TRUNCATE',
    schema,
    table,
    relid: '16400',
    new: null,
    old: null,
    partition: partition ?? null,
    who: { role: 'app', admin: false, application_name: 'psql', client_addr: null, user: null, claims: null },
  });
}

function answer(runtime: HookRuntime, body: string, notLoaded: Record<string, NotLoadedFilter> = {}, withoutHooks = false) {
  return answerBody(body, {
    runtime,
    withoutHooks,
    timeoutMs: 1000,
    failureMode: 'closed',
    primaryKeyOf: () => ['id'],
    notLoadedFilter: (collection, action) => notLoaded[`${collection} ${action}`],
    logger,
  });
}

const refusal = (verdict: string) => (verdict.startsWith('E') ? (JSON.parse(verdict.slice(1)) as Record<string, string>) : undefined);

describe('a TRUNCATE reaching the bridge', () => {
  it.each([
    ['notes.items.delete'],
    ['items.delete'],
    ['item.delete.notes:before'],
    // `*` never matches truncate, so these are delete filters and nothing allows the TRUNCATE.
    ['items.*'],
    ['notes.items.*'],
    ['*'],
  ])('is refused, naming the table and the way out, when %s guards deletes and no truncate filter decides', async (event) => {
    const calls: unknown[] = [];
    const outcome = await answer(runtimeWith([[event, (payload) => void calls.push(payload)]]), truncateBody('public', 'notes'));
    expect(refusal(outcome.verdict)).toEqual({
      sqlstate: 'HB403',
      message:
        'hookbridge: TRUNCATE of notes refused: it has delete filters, which a TRUNCATE would bypass; register an items.truncate filter (e.g. "notes.items.truncate") to allow it',
      detail: 'code: TRUNCATE_REFUSED',
      hint: expect.stringContaining('DELETE'),
    });
    expect(outcome).toMatchObject({ collection: 'notes', op: 'TRUNCATE' });
    // Delete filters expect keys: they are never run for a TRUNCATE.
    expect(calls).toEqual([]);
  });

  it.each([['items.truncate'], ['notes.items.truncate'], ['items.truncate.notes'], ['item.truncate.notes.before'], ['n*.items.truncate']])(
    'runs a filter registered as %s with payload null and { event, collection }, and passes when it returns',
    async (event) => {
      const seen: Array<{ payload: unknown; meta: Record<string, unknown> }> = [];
      const deletes: unknown[] = [];
      const runtime = runtimeWith([
        ['notes.items.delete', (payload) => void deletes.push(payload)],
        [event, (payload, meta) => void seen.push({ payload, meta })],
      ]);
      expect(parseEventName(event, 'filter')).toMatchObject({ kind: 'filter', action: 'truncate' });
      const outcome = await answer(runtime, truncateBody('public', 'notes'));
      expect(outcome.verdict).toBe('K');
      expect(seen).toHaveLength(1);
      expect(seen[0]?.payload).toBeNull();
      expect(seen[0]?.meta).toMatchObject({ collection: 'notes', event: event === 'items.truncate' ? 'items.truncate' : 'notes.items.truncate' });
      expect(seen[0]?.meta).not.toHaveProperty('partition');
      expect(deletes).toEqual([]);
    },
  );

  it('is refused with the error a truncate filter throws, its code kept', async () => {
    const runtime = runtimeWith([
      [
        'items.truncate',
        () => {
          throw new ForbiddenError();
        },
      ],
    ]);
    expect(refusal((await answer(runtime, truncateBody('shop', 'orders'))).verdict)).toMatchObject({ sqlstate: 'HB403', detail: 'code: FORBIDDEN' });
  });

  it('names the partition a partition trigger fired on, as a collection', async () => {
    const seen: Array<Record<string, unknown>> = [];
    const runtime = runtimeWith([['shop.readings.items.truncate', (_payload, meta) => void seen.push(meta)]]);
    await answer(runtime, truncateBody('shop', 'readings', { schema: 'shop', table: 'readings_2026' }));
    await answer(runtime, truncateBody('shop', 'readings', { schema: 'archive', table: 'readings_2019' }));
    expect(seen.map((meta) => meta['partition'])).toEqual(['shop.readings_2026', 'archive.readings_2019']);
    expect(seen[0]).toMatchObject({ collection: 'shop.readings', event: 'shop.readings.items.truncate' });
  });

  it('is refused naming an extension that guarded the table and is not loaded, unless a loaded truncate filter decides', async () => {
    const down = { extension: 'guard', reason: 'E_EXTENSION_LOAD: boom' };
    const noFilters = runtimeWith([]);
    // Its delete filters would have refused the TRUNCATE: still refused, naming it.
    const deleteGuard = await answer(noFilters, truncateBody('public', 'notes'), { 'notes delete': down });
    expect(refusal(deleteGuard.verdict)).toMatchObject({
      sqlstate: 'HB503',
      detail: 'code: EXTENSION_NOT_LOADED',
      message: expect.stringContaining('extension "guard" guards notes (truncate)'),
    });
    // Its own truncate filter decided: refused even though another extension's truncate filter would pass it.
    const allowing = runtimeWith([['notes.items.truncate', () => undefined]]);
    expect(refusal((await answer(allowing, truncateBody('public', 'notes'), { 'notes truncate': down })).verdict)).toMatchObject({
      detail: 'code: EXTENSION_NOT_LOADED',
    });
    // A loaded truncate filter decides a TRUNCATE, whatever became of the delete filters.
    expect((await answer(allowing, truncateBody('public', 'notes'), { 'notes delete': down })).verdict).toBe('K');
    // No filter and no guard (a trigger the sync has not removed yet): refused, never let through.
    expect(refusal((await answer(noFilters, truncateBody('public', 'notes'))).verdict)).toMatchObject({
      sqlstate: 'HB503',
      detail: 'code: SERVICE_UNAVAILABLE',
    });
  });
});

describe('extension guards', () => {
  it('remember a truncate filter (named, not through `*`), so a TRUNCATE stays refused while its extension does not load', () => {
    const table: UserTable = {
      oid: 1,
      schema: 'public',
      name: 'notes',
      collection: 'notes',
      replicaIdentity: 'default',
      hasIdentityKey: true,
      primaryKey: ['id'],
    };
    const hooks = (name: string, events: string[]): ExtensionHooks => ({
      name,
      path: `hooks/${name}/index.js`,
      handlers: events.map((event) => ({
        kind: 'filter',
        extension: name,
        pattern: parseEventName(event, 'filter'),
        style: 'define-hook',
        handler: () => undefined,
      })),
      schedules: [],
      embeds: 0,
    });
    const rows = guardsOf([hooks('named', ['notes.items.truncate']), hooks('wild', ['items.*'])], [table], '/ext');
    expect(rows.map((r) => [r.extension, r.filters])).toEqual([
      ['named', ['truncate']],
      ['wild', ['create', 'update', 'delete']],
    ]);
  });
});

describe('truncate action events', () => {
  const relation = (oid: number, schema: string, name: string): RelationInfo => ({
    oid,
    schema,
    name,
    replicaIdentity: 'default',
    keyColumns: ['id'],
    columns: [{ name: 'id', typeOid: 23, typeMod: -1, isKey: true, parse: (t: string) => t }],
  });
  const a = relation(1, 'public', 'a');
  const b = relation(2, 'shop', 'b');
  const transaction: PgoutputMessage[] = [
    { tag: 'begin', finalLsn: 0x16b3748n, xid: 7, commitTime: new Date(0), commitTimeMicros: 0n },
    { tag: 'insert', relation: a, new: Object.assign(Object.create(null), { id: 1 }) },
    { tag: 'truncate', relations: [a, b], cascade: true, restartIdentity: false },
    { tag: 'insert', relation: b, new: Object.assign(Object.create(null), { id: 2 }) },
    { tag: 'truncate', relations: [b], cascade: false, restartIdentity: true },
    { tag: 'commit', flags: 0, commitLsn: 0x16b3748n, endLsn: 0x16b3800n, commitTime: new Date(0), commitTimeMicros: 0n },
  ];
  /** Every event id of the transaction, in order, as one assembler (one run of the bridge) numbers them. */
  const ids = (events: Array<StreamEvent | undefined>) =>
    events.flatMap((e) => (e?.kind === 'change' ? [e.change.id] : e?.kind === 'truncate' ? e.truncate.tables.map((t) => `${t.collection} ${t.id}`) : []));

  it('give each truncated table an id of its own, numbered with the changes around it', () => {
    const assembler = new TransactionAssembler(() => undefined);
    const events = transaction.map((m, i) => assembler.next(m, BigInt(i + 1)));
    expect(ids(events)).toEqual(['0/16B3748:0', 'a 0/16B3748:1', 'shop.b 0/16B3748:2', '0/16B3748:3', 'shop.b 0/16B3748:4']);
    const truncate = events.find((e): e is { kind: 'truncate'; truncate: TruncateEvent } => e?.kind === 'truncate')?.truncate as TruncateEvent;
    expect(truncate.tables.map((t) => truncateMeta(truncate, t))).toEqual([
      expect.objectContaining({ collection: 'a', id: '0/16B3748:1', cascade: true, restartIdentity: false, keys: null, payload: null }),
      expect.objectContaining({ collection: 'shop.b', id: '0/16B3748:2' }),
    ]);
  });

  it('give the same ids when the transaction is sent again (a restart, a reconnect)', () => {
    const first = new TransactionAssembler(() => undefined);
    const once = ids(transaction.map((m, i) => first.next(m, BigInt(i + 1))));
    // The same assembler after other transactions, and a new one (a restarted bridge).
    const again = ids(transaction.map((m, i) => first.next(m, BigInt(i + 1))));
    const fresh = new TransactionAssembler(() => undefined);
    expect(again).toEqual(once);
    expect(ids(transaction.map((m, i) => fresh.next(m, BigInt(i + 1))))).toEqual(once);
  });
});

describe('a call answered without hooks (FILTER_WORKERS > 0, the workers not started)', () => {
  const insertBody = JSON.stringify({
    op: 'INSERT',
    schema: 'public',
    table: 'notes',
    relid: '16400',
    new: { id: 1 },
    old: null,
    who: { role: 'app', admin: false, application_name: 'psql', client_addr: null, user: null, claims: null },
  });

  it('runs no filter and refuses the write, saying the workers are not running', async () => {
    const ran: string[] = [];
    const runtime = runtimeWith([
      ['notes.items.create', (payload) => (ran.push('create'), payload)],
      ['notes.items.truncate', (payload) => (ran.push('truncate'), payload)],
    ]);
    for (const body of [insertBody, truncateBody('public', 'notes')]) {
      const { verdict } = await answer(runtime, body, {}, true);
      expect(refusal(verdict)).toMatchObject({ sqlstate: 'HB503', message: expect.stringMatching(/the filter workers .* are not running/) });
    }
    expect(ran).toEqual([]);
    // The same runtime, with hooks: they run.
    expect((await answer(runtime, insertBody)).verdict).toBe('K');
    expect(ran).toEqual(['create']);
  });

  it('still names the not-loaded extension that guarded the write', async () => {
    const { verdict } = await answer(runtimeWith([]), insertBody, { 'notes create': { extension: 'audit', reason: 'it threw' } }, true);
    expect(refusal(verdict)).toMatchObject({ sqlstate: 'HB503', message: expect.stringMatching(/extension "audit" guards notes/) });
  });
});
