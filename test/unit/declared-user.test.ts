/**
 * One write has one application user, in its filters and in its actions: both paths read the
 * writer's `hookbridge.user`, its claims' `sub`, and HOOKBRIDGE_USER_MAP alike.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { accountabilityOf } from '../../bridge/filters/filter-requests.js';
import { IDENTITY_PURPOSE, parseIdentityMessage, withMappedUser } from '../../bridge/replication/accountability.js';

const key = randomBytes(32);
const XID = 700;

function signed(doc: Record<string, unknown>): Buffer {
  const json = Buffer.from(JSON.stringify({ xid: String(XID), relid: 16384, ...doc }), 'utf8');
  const signature = createHash('sha256').update(key).update(IDENTITY_PURPOSE).update(json).digest('hex');
  return Buffer.concat([json, Buffer.from(`\n${signature}`, 'latin1')]);
}

describe('the declared user, with HOOKBRIDGE_USER_MAP', () => {
  const map = { reporting: 'reporting-user' };
  it.each([
    ['nothing declared', null, null, 'reporting-user'],
    ['hookbridge.user', 'alice', null, 'alice'],
    ['an empty hookbridge.user', '', null, 'reporting-user'],
    ['a string sub', null, JSON.stringify({ sub: 'bob' }), 'bob'],
    ['a numeric sub', null, JSON.stringify({ sub: 42 }), '42'],
    ['an empty sub', null, JSON.stringify({ sub: '' }), 'reporting-user'],
    ['claims that are no object', null, JSON.stringify(['sub']), 'reporting-user'],
    ['hookbridge.user over the sub', 'alice', JSON.stringify({ sub: 'bob' }), 'alice'],
  ])('%s: the same in filters and actions', (_case, user, claims, expected) => {
    const who = { role: 'reporting', admin: false, application_name: null, client_addr: null, user, claims };
    const inFilter = withMappedUser(accountabilityOf(who), map);
    const message = parseIdentityMessage(signed({ ...who, bypass: false }), key, XID);
    const inAction = withMappedUser(message!.accountability, map);
    expect(inFilter.user).toBe(expected);
    expect(inAction.user).toBe(expected);
  });

  it('a role the map does not name, and a writer nothing is known of, keep no user', () => {
    const who = { role: 'other', admin: false, application_name: null, client_addr: null, user: null, claims: null };
    expect(withMappedUser(accountabilityOf(who), map).user).toBeNull();
    expect(withMappedUser(null, map)).toBeNull();
    expect(withMappedUser({ ...accountabilityOf(who), role: null }, { '': 'x' }).user).toBeNull();
  });
});
