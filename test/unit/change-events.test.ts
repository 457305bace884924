import { describe, expect, it } from 'vitest';
import { actionMeta, collectionOf, TransactionAssembler, type ChangeEvent, type StreamEvent } from '../../bridge/replication/change-events.js';
import type { PgoutputMessage, RelationInfo, Row } from '../../bridge/replication/pgoutput-decoder.js';

function relation(name: string, keyColumns: string[], options: Partial<RelationInfo> = {}): RelationInfo {
  return {
    oid: 1,
    schema: 'public',
    name,
    replicaIdentity: 'default',
    keyColumns,
    columns: keyColumns.map((c) => ({ name: c, typeOid: 23, typeMod: -1, isKey: true, parse: (t: string) => t })),
    ...options,
  };
}
const row = (values: Record<string, unknown>): Row => Object.assign(Object.create(null), values);
const begin = (xid = 7, finalLsn = 0x16b3748n): PgoutputMessage => ({ tag: 'begin', finalLsn, xid, commitTime: new Date(0), commitTimeMicros: 0n });

function changes(events: Array<StreamEvent | undefined>): ChangeEvent[] {
  return events.flatMap((e) => (e?.kind === 'change' ? [e.change] : []));
}

describe('TransactionAssembler', () => {
  it('numbers changes per transaction into stable ids and maps meta like Directus', () => {
    const a = new TransactionAssembler(() => undefined);
    const articles = relation('articles', ['id']);
    const out = [
      a.next(begin(), 1n),
      a.next({ tag: 'insert', relation: articles, new: row({ id: 1, title: 't' }) }, 2n),
      a.next({ tag: 'update', relation: articles, key: null, old: null, new: row({ id: 1, title: 'u' }), unchangedToast: ['body'] }, 3n),
      a.next({ tag: 'delete', relation: articles, key: row({ id: 1 }), old: null }, 4n),
    ];
    const [created, updated, deleted] = changes(out).map((c) => ({ c, meta: actionMeta(c) }));
    expect(created?.c.id).toBe('0/16B3748:0');
    expect(updated?.c.id).toBe('0/16B3748:1');
    expect(created?.meta).toMatchObject({ collection: 'articles', key: 1, payload: { id: 1, title: 't' }, lsn: '0/16B3748', xid: 7 });
    expect(updated?.meta).toMatchObject({ keys: [1], payload: { title: 'u' }, unchangedToast: ['body'] });
    expect(deleted?.meta).toMatchObject({ keys: [1], payload: [1] });
  });

  it('uses composite keys as objects and orders a key change after both keys', () => {
    const a = new TransactionAssembler(() => undefined);
    const lines = relation('lines', ['order_id', 'n']);
    a.next(begin(), 1n);
    const [change] = changes([
      a.next({ tag: 'update', relation: lines, key: row({ order_id: 1, n: 1 }), old: null, new: row({ order_id: 1, n: 2, q: 5 }), unchangedToast: [] }, 2n),
    ]);
    expect(change?.key).toEqual({ order_id: 1, n: 2 });
    expect(change?.previousKey).toEqual({ order_id: 1, n: 1 });
    expect(change?.orderKeys).toHaveLength(2);
    expect(actionMeta(change as ChangeEvent)).toMatchObject({ keys: [{ order_id: 1, n: 2 }], previousKeys: [{ order_id: 1, n: 1 }] });
  });

  it('takes the primary key from the catalog under REPLICA IDENTITY FULL', () => {
    const full = relation('docs', ['id', 'body'], { replicaIdentity: 'full' });
    const a = new TransactionAssembler(() => undefined, () => ['id']);
    a.next(begin(), 1n);
    const [change] = changes([
      a.next({ tag: 'update', relation: full, key: null, old: row({ id: 3, body: 'old' }), new: row({ id: 3, body: 'new' }), unchangedToast: [] }, 2n),
    ]);
    expect(change?.key).toBe(3);
    expect(change?.previousKey).toBeUndefined();
    expect(actionMeta(change as ChangeEvent)).toMatchObject({ keys: [3], previous: { id: 3, body: 'old' } });
  });

  it('gives a table without a key null keys', () => {
    const a = new TransactionAssembler(() => undefined);
    a.next(begin(), 1n);
    const [change] = changes([a.next({ tag: 'insert', relation: relation('log', []), new: row({ v: 'x' }) }, 2n)]);
    expect(change?.key).toBeNull();
  });

  it('attaches verified accountability to the changes after it, and turns heartbeats into markers', () => {
    const who = { user: 'alice', role: 'app', admin: false, app: false, ip: null, userAgent: null };
    const a = new TransactionAssembler((content) => (content.toString() === 'signed' ? who : undefined));
    expect(a.next({ tag: 'message', transactional: false, lsn: 9n, prefix: 'hookbridge.heartbeat', content: Buffer.alloc(0) }, 9n)).toEqual({ kind: 'marker', lsn: 9n });
    expect(a.next({ tag: 'message', transactional: false, lsn: 9n, prefix: 'someone.else', content: Buffer.alloc(0) }, 9n)).toBeUndefined();
    a.next(begin(), 10n);
    a.next({ tag: 'message', transactional: true, lsn: 11n, prefix: 'hookbridge.accountability', content: Buffer.from('signed') }, 11n);
    const [first] = changes([a.next({ tag: 'insert', relation: relation('t', ['id']), new: row({ id: 1 }) }, 12n)]);
    expect(first?.accountability).toBe(who);
    a.next({ tag: 'message', transactional: true, lsn: 13n, prefix: 'hookbridge.accountability', content: Buffer.from('forged') }, 13n);
    const [second] = changes([a.next({ tag: 'insert', relation: relation('t', ['id']), new: row({ id: 2 }) }, 14n)]);
    expect(second?.accountability).toBeNull();
    const commit = a.next({ tag: 'commit', flags: 0, commitLsn: 10n, endLsn: 15n, commitTime: new Date(0), commitTimeMicros: 0n }, 15n);
    expect(commit).toMatchObject({ kind: 'commit', endLsn: 15n });
    a.next(begin(8, 20n), 20n);
    const [third] = changes([a.next({ tag: 'insert', relation: relation('t', ['id']), new: row({ id: 3 }) }, 21n)]);
    expect(third?.accountability).toBeNull();
  });

  it('names collections: the table for public, schema.table otherwise', () => {
    expect(collectionOf({ schema: 'public', name: 'Odd Name' })).toBe('Odd Name');
    expect(collectionOf({ schema: 'shop', name: 'orders' })).toBe('shop.orders');
  });

  it('refuses a change outside a transaction', () => {
    const a = new TransactionAssembler(() => undefined);
    expect(() => a.next({ tag: 'insert', relation: relation('t', ['id']), new: row({ id: 1 }) }, 1n)).toThrow(/outside a transaction/);
  });
});
