import { describe, expect, it } from 'vitest';
import { replicationProblems, type ReplicationFacts } from '../../bridge/replication/setup.js';

const healthy: ReplicationFacts = {
  serverVersionNum: 170004,
  failoverRequested: false,
  walLevel: 'logical',
  role: 'bridge',
  superuser: false,
  replication: true,
  slotName: 'hookbridge',
  slotExists: false,
  slotActive: false,
  maxReplicationSlots: 10,
  usedReplicationSlots: 2,
  maxWalSenders: 10,
  activeWalSenders: 2,
};

const codes = (changes: Partial<ReplicationFacts>) => replicationProblems({ ...healthy, ...changes }).map((p) => p.code);

describe('replicationProblems', () => {
  it('accepts a server ready for logical replication', () => {
    expect(codes({})).toEqual([]);
  });

  it.each([
    ['wal_level replica', { walLevel: 'replica' }, ['E_WAL_LEVEL']],
    ['wal_level minimal', { walLevel: 'minimal' }, ['E_WAL_LEVEL']],
    ['a role without REPLICATION', { replication: false }, ['E_REPLICATION_PRIVILEGE']],
    ['a superuser without the REPLICATION flag', { replication: false, superuser: true }, []],
    ['all slots used and ours missing', { usedReplicationSlots: 10 }, ['E_SLOTS_EXHAUSTED']],
    ['all slots used but one is ours', { usedReplicationSlots: 10, slotExists: true }, []],
    ['max_replication_slots = 0', { maxReplicationSlots: 0, usedReplicationSlots: 0 }, ['E_SLOTS_EXHAUSTED']],
    ['max_wal_senders = 0', { maxWalSenders: 0, activeWalSenders: 0 }, ['E_WAL_SENDERS']],
    ['every wal sender busy', { activeWalSenders: 10 }, ['E_WAL_SENDERS']],
    ['every wal sender busy, one of them on our slot', { activeWalSenders: 10, slotExists: true, slotActive: true }, []],
    ['one wal sender free', { activeWalSenders: 9 }, []],
    ['PostgreSQL 13, whatever else is wrong', { serverVersionNum: 130016, walLevel: 'replica', replication: false }, ['E_PG_VERSION']],
    ['PostgreSQL 14.0', { serverVersionNum: 140000 }, []],
    ['a failover slot on PostgreSQL 16', { serverVersionNum: 160008, failoverRequested: true }, ['E_SLOT_FAILOVER']],
    ['a failover slot on PostgreSQL 17', { serverVersionNum: 170000, failoverRequested: true }, []],
    [
      'everything wrong at once',
      { walLevel: 'replica', replication: false, usedReplicationSlots: 10, maxWalSenders: 0, activeWalSenders: 0 },
      ['E_WAL_LEVEL', 'E_REPLICATION_PRIVILEGE', 'E_SLOTS_EXHAUSTED', 'E_WAL_SENDERS'],
    ],
  ] as const)('%s', (_label, changes, expected) => {
    expect(codes(changes)).toEqual(expected);
  });

  it('says how to fix each problem', () => {
    const messages = replicationProblems({
      ...healthy,
      role: 'App "Bridge"',
      walLevel: 'replica',
      replication: false,
      usedReplicationSlots: 10,
      activeWalSenders: 10,
    }).map((p) => p.message);
    expect(messages[0]).toContain('ALTER SYSTEM SET wal_level = logical');
    expect(messages[0]).toContain('restart');
    expect(messages[1]).toContain('ALTER ROLE "App ""Bridge""" REPLICATION');
    expect(messages[2]).toMatch(/pg_drop_replication_slot.*max_replication_slots/s);
    expect(messages[3]).toContain('max_wal_senders');
  });

  it('names errors and keeps the facts for logs', () => {
    const [problem] = replicationProblems({ ...healthy, walLevel: 'replica' });
    expect(problem?.name).toBe('ReplicationSetupError');
    expect(problem?.details).toMatchObject({ walLevel: 'replica' });
  });
});
