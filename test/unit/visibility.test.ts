/** Whether a snapshot sees a committed transaction pgoutput names by the low 32 bits of its id. */
import { describe, expect, it } from 'vitest';
import {
  commitMayWaitForBridge,
  fullTransactionId,
  parseSnapshot,
  parseStandbyNames,
  snapshotSees,
  standbyNamesMatch,
} from '../../bridge/replication/visibility.js';

const EPOCH = 2n ** 32n;

describe('parseSnapshot', () => {
  it('reads xmin, xmax and the running transactions as pg_current_snapshot() prints them', () => {
    expect(parseSnapshot('740:745:740,743')).toEqual({ xmin: 740n, xmax: 745n, running: new Set([740n, 743n]) });
    expect(parseSnapshot('745:745:')).toEqual({ xmin: 745n, xmax: 745n, running: new Set() });
    // Past the first epoch: beyond 2^53, so never through a JS number.
    const big = (5n * EPOCH + 12n).toString();
    expect(parseSnapshot(`${big}:${big}:`).xmin).toBe(5n * EPOCH + 12n);
  });

  it('refuses what is not a snapshot, naming it', () => {
    expect(() => parseSnapshot('740:745')).toThrow(/not a snapshot: "740:745"/);
    expect(() => parseSnapshot('')).toThrow(/not a snapshot/);
  });
});

describe('fullTransactionId', () => {
  it('takes the epoch of the snapshot for an id near it', () => {
    expect(fullTransactionId(743, 745n)).toBe(743n);
    expect(fullTransactionId(750, 745n)).toBe(750n);
    expect(fullTransactionId(10, 3n * EPOCH + 20n)).toBe(3n * EPOCH + 10n);
  });

  it('crosses an epoch boundary either way', () => {
    // Committed just before the wrap, the snapshot just after it.
    expect(fullTransactionId(0xffff_fff0, 4n * EPOCH + 5n)).toBe(3n * EPOCH + 0xffff_fff0n);
    // Committed just after the wrap, the snapshot's xmax still just before it (not yet visible).
    expect(fullTransactionId(3, 4n * EPOCH - 2n)).toBe(4n * EPOCH + 3n);
  });
});

describe('snapshotSees', () => {
  const snapshot = parseSnapshot('740:745:740,743');

  it('sees what ended before xmin, and what ended between xmin and xmax', () => {
    expect(snapshotSees(snapshot, 700)).toBe(true);
    expect(snapshotSees(snapshot, 741)).toBe(true);
    expect(snapshotSees(snapshot, 744)).toBe(true);
  });

  it('does not see what was still running, nor what started at or after xmax', () => {
    expect(snapshotSees(snapshot, 740)).toBe(false);
    expect(snapshotSees(snapshot, 743)).toBe(false);
    expect(snapshotSees(snapshot, 745)).toBe(false);
    expect(snapshotSees(snapshot, 900)).toBe(false);
  });

  it('across the wrap: the low bits of an id before it, a snapshot after it', () => {
    const after = parseSnapshot(`${4n * EPOCH + 2n}:${4n * EPOCH + 9n}:${4n * EPOCH + 2n}`);
    expect(snapshotSees(after, 0xffff_fffe)).toBe(true);
    expect(snapshotSees(after, 2)).toBe(false);
    expect(snapshotSees(after, 5)).toBe(true);
    expect(snapshotSees(after, 9)).toBe(false);
  });
});

describe('standbyNamesMatch', () => {
  it("matches '*' and the replication connection's own name, in every form of the setting", () => {
    for (const setting of ['*', 'a, *', 'FIRST 1 (*)', 'any 2 (a, *)', '2 (a,*)', '"hookbridge:replication"', 'FIRST 1 (a, "HookBridge:Replication")']) {
      expect(standbyNamesMatch(setting), setting).toBe(true);
    }
  });

  it('matches neither an empty setting nor other names, quoted ones with commas included', () => {
    for (const setting of ['', '   ', 'standby1', 'FIRST 1 (s1, s2)', 'ANY 1 ("a,*", b)', '"hookbridge:replication2"', 'hookbridge']) {
      expect(standbyNamesMatch(setting), setting).toBe(false);
    }
  });
});

describe('parseStandbyNames', () => {
  it('reads how many standbys a commit waits for', () => {
    expect(parseStandbyNames('')).toEqual({ count: 0, names: [] });
    expect(parseStandbyNames('s1, s2')).toEqual({ count: 1, names: ['s1', 's2'] });
    expect(parseStandbyNames('FIRST 2 (s1, s2, s3)')).toEqual({ count: 2, names: ['s1', 's2', 's3'] });
    expect(parseStandbyNames('any 3(*)')).toEqual({ count: 3, names: ['*'] });
    expect(parseStandbyNames('2 ("a,b", c)')).toEqual({ count: 2, names: ['a,b', 'c'] });
  });
});

describe('commitMayWaitForBridge', () => {
  const BRIDGE = 100;
  const sync = (pid: number) => ({ pid, state: 'sync' });
  const quorum = (pid: number) => ({ pid, state: 'quorum' });
  const cases: Array<[string, string, Array<{ pid: number; state: string }>, boolean]> = [
    ['the bridge is the chosen standby', '*', [sync(BRIDGE)], true],
    // Catching up after a reconnect: not listed as synchronous, yet commits wait for it.
    ['no standby streams, the bridge catches up', '*', [], true],
    ['the bridge is one of two chosen', 'FIRST 2 (s1, *)', [sync(7), sync(BRIDGE)], true],
    ['a quorum of two needs the bridge', 'ANY 2 (s1, *)', [quorum(7), quorum(BRIDGE)], true],
    ['another standby is the chosen one', 'FIRST 1 (s1, *)', [sync(7)], false],
    ['another standby alone makes the quorum', 'ANY 1 (s1, *)', [quorum(7), quorum(BRIDGE)], false],
  ];
  it.each(cases)('%s (%s)', (_, setting, walsenders, expected) => {
    expect(commitMayWaitForBridge(setting, walsenders, BRIDGE)).toBe(expected);
  });
});
