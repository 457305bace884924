/**
 * The pure parts of issue 14's replication faults: when the pipeline owes nothing (so the stream may
 * confirm what the server sent), where a WAL segment begins, and what is said of a lost or healthy slot.
 */
import { Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { describeSlotWal, formatSlotStatus, type SlotStatus } from '../../bridge/inspect.js';
import type { ChangeEvent, StreamEvent } from '../../bridge/replication/change-events.js';
import { walSegmentStart } from '../../bridge/replication/lsn.js';
import { ChangePipeline } from '../../bridge/replication/pipeline.js';
import { describeLostChanges, slotIsLost, slotLostError, slotProblem, type SlotState } from '../../bridge/replication/setup.js';
import { captureLogger } from '../support/capture-logger.js';

const transaction = { xid: 1, commitLsn: 0n, lsn: '0/0', commitTime: new Date(0) };
const change = (id: string): StreamEvent => ({
  kind: 'change',
  change: {
    id,
    action: 'create',
    collection: 't',
    table: { schema: 'public', name: 't' },
    key: id,
    row: {},
    previous: null,
    unchangedToast: [],
    orderKeys: [`t\u0000${id}`],
    transaction,
    accountability: null,
  } as ChangeEvent,
});
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('ChangePipeline.settled', () => {
  function pipeline(handle: () => Promise<void>) {
    const changes = new Subject<StreamEvent>();
    const fed = new ChangePipeline({ changes, handleChange: handle, handleTruncate: async () => undefined, logger: captureLogger().logger });
    // What these tests look at, and the one way in: the stream of changes.
    return {
      push: (event: StreamEvent) => changes.next(event),
      get settled() {
        return fed.settled;
      },
      get confirmable() {
        return fed.confirmable;
      },
      get failure() {
        return fed.failure;
      },
    };
  }

  it('is true when empty, false while a transaction is open, then true once its changes finished and it committed', async () => {
    let finish!: () => void;
    const p = pipeline(() => new Promise<void>((resolve) => (finish = resolve)));
    expect(p.settled).toBe(true);
    p.push({ kind: 'begin', transaction });
    expect(p.settled).toBe(false);
    p.push(change('a'));
    p.push({ kind: 'commit', transaction, endLsn: 100n });
    expect(p.settled).toBe(false); // committed, handler running
    finish();
    await tick();
    expect(p.settled).toBe(true);
    expect(p.confirmable).toBe(100n);
  });

  it('is false while an empty transaction is open (a Begin, no change yet)', () => {
    const p = pipeline(async () => undefined);
    p.push({ kind: 'begin', transaction });
    expect(p.settled).toBe(false);
    p.push({ kind: 'commit', transaction, endLsn: 5n });
    expect(p.settled).toBe(true);
  });

  it('stays false for good after a change could be neither handled nor parked', async () => {
    const p = pipeline(() => Promise.reject(new Error('no')));
    p.push({ kind: 'begin', transaction });
    p.push(change('a'));
    p.push({ kind: 'commit', transaction, endLsn: 7n });
    await tick();
    expect(p.failure).toBeDefined();
    expect(p.settled).toBe(false);
    p.push({ kind: 'marker', lsn: 9n });
    expect(p.settled).toBe(false);
  });

  it('a marker outside transactions leaves it settled', () => {
    const p = pipeline(async () => undefined);
    p.push({ kind: 'marker', lsn: 3n });
    expect(p.settled).toBe(true);
    expect(p.confirmable).toBe(3n);
  });
});

describe('walSegmentStart', () => {
  it.each([
    ['000000010000000000000001', 16 * 1024 * 1024, 0x1000000n],
    ['000000010000000000000000', 16 * 1024 * 1024, 0n],
    ['0000000100000000000000FF', 16 * 1024 * 1024, 0xff000000n],
    ['000000010000000A0000003F', 16 * 1024 * 1024, 0xa3f000000n],
    ['000000020000000100000000', 16 * 1024 * 1024, 0x100000000n],
    ['000000010000000000000003', 1024 * 1024 * 1024, 0xc0000000n],
    ['000000010000000200000001', 1024 * 1024 * 1024, 0x240000000n],
  ])('%s with %d-byte segments begins at %s', (name, size, lsn) => {
    expect(walSegmentStart(name, size)).toBe(lsn);
  });

  it.each([
    '00000001.history',
    '000000010000000000000001.partial',
    '000000010000000000000001.00000028.backup',
    'archive_status',
    '00000001000000000000001',
    'g00000010000000000000001',
  ])('is undefined for %s', (name) => expect(walSegmentStart(name, 16 * 1024 * 1024)).toBeUndefined());

  it('is undefined for a segment number a segment size cannot have', () => {
    expect(walSegmentStart('000000010000000000000100', 16 * 1024 * 1024)).toBeUndefined();
  });

  it('refuses a segment size that is no power of two', () => {
    expect(() => walSegmentStart('000000010000000000000001', 3_000_000)).toThrow(RangeError);
  });
});

const slot = (overrides: Partial<SlotState> = {}): SlotState => ({
  name: 'hookbridge',
  database: 'app',
  currentDatabase: 'app',
  slotType: 'logical',
  plugin: 'pgoutput',
  active: true,
  activePid: 42,
  restartLsn: '0/1500000',
  confirmedFlushLsn: '0/1600000',
  walStatus: 'reserved',
  invalidationReason: null,
  failover: false,
  synced: false,
  currentLsn: '0/1700000',
  retainedWalBytes: 0x200000,
  safeWalBytes: 1024 * 1024 * 1024,
  maxSlotWalKeepSize: '2GB',
  oldestWalLsn: null,
  ...overrides,
});

describe('a lost slot', () => {
  it.each([
    [{ walStatus: 'lost' }, true],
    [{ walStatus: 'reserved', invalidationReason: 'idle_timeout' }, true],
    [{ walStatus: 'unreserved' }, false],
    [{ walStatus: null }, false],
  ] as Array<[Partial<SlotState>, boolean]>)('%j is lost: %s', (overrides, lost) => expect(slotIsLost(slot(overrides))).toBe(lost));

  it('says from which position changes are gone, and where the kept WAL starts', () => {
    const state = slot({ walStatus: 'lost', invalidationReason: 'wal_removed', restartLsn: null, oldestWalLsn: '0/4000000', currentLsn: '0/40000F8' });
    expect(describeLostChanges(state)).toBe(
      'changes committed after 0/1600000 were never delivered to action hooks and cannot be: WAL before 0/4000000 is removed (the server is at 0/40000F8)',
    );
  });

  it('names no start for the removed WAL while older segments are still there, nor one it could not read', () => {
    expect(describeLostChanges(slot({ walStatus: 'lost', oldestWalLsn: '0/1000000' }))).toContain('the WAL they were in is being removed');
    expect(describeLostChanges(slot({ walStatus: 'lost', oldestWalLsn: null }))).toContain('the WAL they were in is being removed');
  });

  it('gives E_SLOT_LOST with the reason in words, the range and the way out', () => {
    const error = slotLostError(slot({ walStatus: 'lost', invalidationReason: 'idle_timeout', oldestWalLsn: '0/5000000' }));
    expect(error.code).toBe('E_SLOT_LOST');
    expect(error.message).toContain('was invalidated (it stayed unused longer than idle_replication_slot_timeout)');
    expect(error.message).toContain('changes committed after 0/1600000');
    expect(error.message).toContain("SELECT pg_drop_replication_slot('hookbridge');");
    expect(error.details).toMatchObject({ confirmedFlushLsn: '0/1600000', oldestWalLsn: '0/5000000', invalidationReason: 'idle_timeout' });
  });

  it('without a reason (PostgreSQL before 17) names both causes', () => {
    expect(slotLostError(slot({ walStatus: 'lost' })).message).toContain('(max_slot_wal_keep_size exceeded, or an idle timeout)');
  });
});

describe('slotProblem', () => {
  it.each([
    [{}, undefined],
    [{ slotType: 'physical', plugin: null, database: null }, 'E_SLOT_PHYSICAL'],
    [{ database: 'other' }, 'E_SLOT_OTHER_DATABASE'],
    [{ plugin: 'wal2json' }, 'E_SLOT_PLUGIN'],
    [{ walStatus: 'lost' }, 'E_SLOT_LOST'],
    [{ walStatus: 'unreserved' }, undefined],
  ] as Array<[Partial<SlotState>, string | undefined]>)('%j → %s', (overrides, code) => expect(slotProblem(slot(overrides))?.code).toBe(code));
});

describe('what status says of the slot', () => {
  const status = (overrides: Partial<SlotStatus> = {}): SlotStatus => ({
    name: 'hookbridge',
    exists: true,
    active: true,
    confirmedFlushLsn: '0/1600000',
    lagBytes: 1024,
    restartLsn: '0/1500000',
    walStatus: 'reserved',
    invalidationReason: null,
    retainedWalBytes: 0x200000,
    safeWalBytes: 1536 * 1024 * 1024,
    maxSlotWalKeepSize: '2GB',
    lost: null,
    ...overrides,
  });

  it('a healthy slot: retained WAL and the distance to invalidation', () => {
    expect(formatSlotStatus(status())).toBe(
      'slot hookbridge: streaming, confirmed 0/1600000, lag 1024 bytes, retains 2.0 MB of WAL; 1.5 GB more before max_slot_wal_keep_size (2GB) invalidates it',
    );
  });

  it('without max_slot_wal_keep_size: no limit', () => {
    expect(describeSlotWal({ retainedWalBytes: 500, safeWalBytes: null, maxSlotWalKeepSize: '-1' })).toBe(
      'retains 500 bytes of WAL; no max_slot_wal_keep_size: WAL piles up without limit while no bridge confirms it',
    );
  });

  it('an unreserved slot is at risk', () => {
    expect(formatSlotStatus(status({ walStatus: 'unreserved', safeWalBytes: -10 }))).toContain(
      'past max_slot_wal_keep_size (2GB) ✗ WAL it needs is removed at the next checkpoint',
    );
  });

  it('a lost slot: what is gone and the fix', () => {
    const line = formatSlotStatus(
      status({ walStatus: 'lost', invalidationReason: 'wal_removed', lost: 'changes committed after 0/1600000 were never delivered' }),
    );
    expect(line).toBe(
      "slot hookbridge: ✗ lost (invalidated: wal_removed): changes committed after 0/1600000 were never delivered\n    fix: SELECT pg_drop_replication_slot('hookbridge'); then start the bridge (action hooks resume with the changes made from then on)",
    );
  });

  it('a missing slot', () => {
    expect(formatSlotStatus(status({ exists: false }))).toBe('slot hookbridge: missing');
  });
});
