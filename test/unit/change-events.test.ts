import { describe, expect, it } from 'vitest';
import { unverifiedAccountability } from '../../bridge/replication/accountability.js';
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
    const a = new TransactionAssembler(
      () => undefined,
      () => ['id'],
    );
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
    const a = new TransactionAssembler((content) => (content.toString() === 'signed' ? { relid: 1, accountability: who } : undefined));
    expect(a.next({ tag: 'message', transactional: false, lsn: 9n, prefix: 'hookbridge.heartbeat', content: Buffer.alloc(0) }, 9n)).toEqual({
      kind: 'marker',
      lsn: 9n,
    });
    expect(a.next({ tag: 'message', transactional: false, lsn: 9n, prefix: 'someone.else', content: Buffer.alloc(0) }, 9n)).toBeUndefined();
    a.next(begin(), 10n);
    a.next({ tag: 'message', transactional: true, lsn: 11n, prefix: 'hookbridge.accountability', content: Buffer.from('signed') }, 11n);
    const [first] = changes([a.next({ tag: 'insert', relation: relation('t', ['id']), new: row({ id: 1 }) }, 12n)]);
    expect(first?.accountability).toBe(who);
    const commit = a.next({ tag: 'commit', flags: 0, commitLsn: 10n, endLsn: 15n, commitTime: new Date(0), commitTimeMicros: 0n }, 15n);
    expect(commit).toMatchObject({ kind: 'commit', endLsn: 15n });
  });

  describe('accountability a writer cannot erase or forge', () => {
    const alice = { user: null, role: 'alice', admin: false, app: false, ip: null, userAgent: null, verified: true };
    const boss = { user: null, role: 'boss', admin: true, app: false, ip: null, userAgent: null, verified: true };
    const unverified = unverifiedAccountability();
    const accountability = (prefix: string, content: string, transactional = true): PgoutputMessage => ({
      tag: 'message',
      transactional,
      lsn: 0n,
      prefix,
      content: Buffer.from(content),
    });
    const insert = (id: number, table = 't', oid = 1): PgoutputMessage => ({ tag: 'insert', relation: relation(table, ['id'], { oid }), new: row({ id }) });
    /**
     * What a signed message of transaction 7 says: `<role>` covers table oid 1; `<role>@<oid>` that
     * table; `<role>@legacy` every table (signed before migration 000010).
     */
    const signedIn7 = (content: string, xid: number) => {
      const [name, table] = content.split('@');
      const who = ({ alice, boss } as Record<string, typeof alice | undefined>)[name ?? ''];
      if (!who || xid !== 7) return undefined;
      return { relid: table === 'legacy' ? undefined : Number(table ?? 1), accountability: who };
    };

    /** Runs one transaction (xid 7) of messages; returns each change's accountability, and what was verified for which xid. */
    function run(messages: PgoutputMessage[]): { seen: unknown[]; reads: string[] } {
      const reads: string[] = [];
      const a = new TransactionAssembler((content, xid) => {
        reads.push(`${content.toString()}@${xid}`);
        return signedIn7(content.toString(), xid);
      });
      const events = [begin(7), ...messages].map((m, i) => a.next(m, BigInt(i + 1)));
      const seen = events.flatMap((e) => (e?.kind === 'change' ? [e.change.accountability] : e?.kind === 'truncate' ? [e.truncate.accountability] : []));
      return { seen, reads };
    }

    it.each<[string, PgoutputMessage[], unknown[]]>([
      [
        'a forged message after the signed one',
        [accountability('hookbridge.accountability', 'alice'), insert(1), accountability('hookbridge.accountability', 'forged'), insert(2)],
        [alice, alice],
      ],
      ['an empty message', [accountability('hookbridge.accountability', 'alice'), accountability('hookbridge.accountability', ''), insert(1)], [alice]],
      [
        'a forged message between two statements',
        [
          accountability('hookbridge.accountability', 'alice'),
          insert(1),
          accountability('hookbridge.accountability', 'forged'),
          accountability('hookbridge.accountability', 'alice'),
          insert(2),
        ],
        [alice, alice],
      ],
      [
        'a non-transactional message',
        [accountability('hookbridge.accountability', 'alice'), accountability('hookbridge.accountability', 'forged', false), insert(1)],
        [alice],
      ],
      [
        'a signed identity sent non-transactionally',
        [accountability('hookbridge.accountability', 'boss', false), accountability('hookbridge.accountability', 'alice'), insert(1)],
        [alice],
      ],
    ])('keeps the signed identity through %s', (_label, messages, expected) => {
      expect(run(messages).seen).toEqual(expected);
    });

    it('gives changes before any signed identity an unverified one, never null', () => {
      const { seen } = run([
        accountability('hookbridge.accountability', 'forged'),
        insert(1),
        { tag: 'truncate', relations: [relation('t', ['id'])], cascade: false, restartIdentity: false },
      ]);
      expect(seen).toEqual([unverified, unverified]);
      expect(seen[0]).toBe(seen[1]);
    });

    it('follows the signed identity from statement to statement (SET ROLE), and starts afresh in each transaction', () => {
      const a = new TransactionAssembler((content, xid) => signedIn7(content.toString(), xid));
      const events = [
        begin(7),
        accountability('hookbridge.accountability', 'alice'),
        insert(1),
        accountability('hookbridge.accountability', 'boss'),
        insert(2),
        accountability('hookbridge.accountability', 'alice'),
        insert(3),
        { tag: 'commit', flags: 0, commitLsn: 1n, endLsn: 9n, commitTime: new Date(0), commitTimeMicros: 0n },
        begin(8, 20n),
        // The same content in another transaction names the wrong xid: not believed.
        accountability('hookbridge.accountability', 'alice'),
        insert(4),
      ].map((m, i) => a.next(m as PgoutputMessage, BigInt(i + 1)));
      expect(changes(events).map((c) => c.accountability)).toEqual([alice, boss, alice, unverified]);
    });

    it('verifies a repeated message once (every statement emits one)', () => {
      const { seen, reads } = run([
        accountability('hookbridge.accountability', 'alice'),
        insert(1),
        accountability('hookbridge.accountability', 'alice'),
        insert(2),
        accountability('hookbridge.accountability', 'forged'),
        accountability('hookbridge.accountability', 'alice'),
        insert(3),
      ]);
      expect(seen).toEqual([alice, alice, alice]);
      expect(reads).toEqual(['alice@7', 'forged@7']);
    });

    describe("gives a change only its own table's identity (issue 12 review, M2)", () => {
      const message = (content: string) => accountability('hookbridge.accountability', content);
      const truncate = (...oids: number[]): PgoutputMessage => ({
        tag: 'truncate',
        relations: oids.map((oid) => relation(`t${oid}`, ['id'], { oid })),
        cascade: false,
        restartIdentity: false,
      });

      it("never another table's: a superuser's insert into a, SET ROLE, then b written without its trigger", () => {
        // begin; insert into a (as postgres); set local role low; insert into b (its trigger disabled)
        expect(run([message('boss@1'), insert(1, 'a', 1), insert(2, 'b', 2)]).seen).toEqual([boss, unverified]);
      });

      it('each table its own in a statement writing several (a writable CTE, a trigger or cascade writing another table)', () => {
        // with x as (insert into a ...) insert into b ...: both statement triggers fire, then the rows interleave;
        // rows a trigger of a writes into c come after c's own statement trigger (depth 2).
        expect(
          run([message('alice@2'), message('alice@1'), insert(1, 'a', 1), insert(1, 'b', 2), insert(2, 'a', 1), message('alice@3'), insert(1, 'c', 3)]).seen,
        ).toEqual([alice, alice, alice, alice]);
        expect(run([message('boss@1'), message('alice@2'), insert(1, 'a', 1), insert(1, 'b', 2), message('alice@1'), insert(2, 'a', 1)]).seen).toEqual([
          boss,
          alice,
          alice,
        ]);
      });

      it("keeps a repeated message verified once, and re-applies it after another table's", () => {
        const { seen, reads } = run([
          message('alice@1'),
          insert(1, 'a', 1),
          message('boss@2'),
          insert(1, 'b', 2),
          message('boss@2'),
          insert(2, 'b', 2),
          message('alice@1'),
          insert(2, 'a', 1),
        ]);
        expect(seen).toEqual([alice, boss, boss, alice]);
        expect(reads).toEqual(['alice@1@7', 'boss@2@7', 'alice@1@7']);
      });

      it('takes a document signed before migration 000010 for every table without one of its own', () => {
        expect(run([message('alice@legacy'), insert(1, 'a', 1), message('boss@2'), insert(1, 'b', 2), insert(2, 'c', 3)]).seen).toEqual([alice, boss, alice]);
      });

      it("gives a TRUNCATE its tables' writer when they agree, else an unknown one", () => {
        expect(run([message('alice@1'), message('alice@2'), truncate(1, 2)]).seen).toEqual([alice]);
        expect(run([message('alice@1'), truncate(1, 2)]).seen).toEqual([unverified]);
        expect(run([message('alice@1'), message('boss@2'), truncate(1, 2)]).seen).toEqual([unverified]);
        expect(run([truncate()]).seen).toEqual([unverified]);
      });
    });

    it('ignores an accountability message outside a transaction', () => {
      const a = new TransactionAssembler(() => ({ relid: 1, accountability: alice }));
      expect(a.next(accountability('hookbridge.accountability', 'alice'), 1n)).toBeUndefined();
      a.next(begin(7), 2n);
      expect(changes([a.next(insert(1), 3n)])[0]?.accountability).toEqual(unverified);
    });
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
