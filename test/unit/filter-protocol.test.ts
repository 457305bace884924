/**
 * The pure pieces of the filter path: what the trigger sends, what the bridge signs, how connection
 * strings are quoted, and the session settings of the bridge's own connections.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { internalConnection, withSessionSettings } from '../../bridge/database.js';
import { parseCall, parseHello, rejectionVerdict } from '../../bridge/filters/filter-requests.js';
import { conninfo, notifyChannel, signVerdict } from '../../bridge/filters/filter-service.js';
import { lockClassFor } from '../../bridge/filters/tickets.js';

describe('parseCall', () => {
  const id = '0f8fad5b-d9cb-469f-a165-70867728950e';

  it('reads the ticket, the call id and the request, which may hold anything', () => {
    expect(parseCall(`HBF2 7 ${id} {"op":"INSERT","new":{"t":"a b\\nc HBF2 1"}}`)).toEqual({
      ticket: 7,
      id,
      body: '{"op":"INSERT","new":{"t":"a b\\nc HBF2 1"}}',
    });
  });

  it('takes nothing else for a call: set-up statements, greetings, malformed tickets', () => {
    expect(parseCall('SET client_encoding TO UTF8')).toBeUndefined();
    expect(parseCall('HBF2 HELLO 0123456789abcdef0123456789abcdef')).toBeUndefined();
    expect(parseCall(`HBF2 -1 ${id} {}`)).toBeUndefined();
    expect(parseCall(`HBF2 1234567890 ${id} {}`)).toBeUndefined();
    expect(parseCall(`HBF2 1 not-a-uuid {}`)).toBeUndefined();
  });

  it('reads a greeting nonce, exactly', () => {
    expect(parseHello('HBF2 HELLO 0123456789abcdef0123456789abcdef')).toBe('0123456789abcdef0123456789abcdef');
    expect(parseHello('HBF2 HELLO 0123456789abcdef0123456789abcdef extra')).toBeUndefined();
    expect(parseHello("HBF2 HELLO ' or 1=1")).toBeUndefined();
  });
});

describe('signVerdict', () => {
  const key = randomBytes(32);

  it('is what filter_call checks: hex sha256(key || call id || verdict), then the verdict', () => {
    const signed = signVerdict(key, 'id-1', 'M{"set":{"t":"é"}}');
    expect(signed.slice(64)).toBe('M{"set":{"t":"é"}}');
    expect(signed.slice(0, 64)).toBe(
      createHash('sha256')
        .update(Buffer.concat([key, Buffer.from('id-1M{"set":{"t":"é"}}', 'utf8')]))
        .digest('hex'),
    );
  });

  it('binds the verdict to its call and to the key', () => {
    expect(signVerdict(key, 'id-1', 'K').slice(0, 64)).not.toBe(signVerdict(key, 'id-2', 'K').slice(0, 64));
    expect(signVerdict(key, 'id-1', 'K').slice(0, 64)).not.toBe(signVerdict(randomBytes(32), 'id-1', 'K').slice(0, 64));
  });

  it('carries rejections as JSON a trigger can raise', () => {
    expect(JSON.parse(rejectionVerdict({ sqlstate: 'HB400', message: 'no "quotes" lost' }).slice(1))).toEqual({
      sqlstate: 'HB400',
      message: 'no "quotes" lost',
    });
  });
});

describe('conninfo', () => {
  it('quotes every value, so spaces, quotes and backslashes in passwords survive', () => {
    expect(conninfo({ host: '127.0.0.1', password: `it's a \\ pass word` })).toBe(`host='127.0.0.1' password='it\\'s a \\\\ pass word'`);
  });
});

describe('notifyChannel and lockClassFor', () => {
  it('name the channel after the key and the instance, as filter_submit does, within an identifier', () => {
    const key = randomBytes(32);
    const channel = notifyChannel(key, 0);
    expect(channel).toMatch(/^hookbridge_[0-9a-f]{40}_0$/);
    expect(channel).toBe(
      `hookbridge_${createHash('sha256')
        .update(Buffer.concat([key, Buffer.from('filter channel')]))
        .digest('hex')
        .slice(0, 40)}_0`,
    );
    expect(notifyChannel(randomBytes(32), 0)).not.toBe(channel);
    expect(notifyChannel(key, 1)).not.toBe(channel);
    // Postgres truncates identifiers past 63 bytes: the last slot's channel still fits.
    expect(Buffer.byteLength(notifyChannel(key, 63))).toBeLessThanOrEqual(63);
  });

  it('give each schema lock classes of its own, clear of int4 overflow', () => {
    for (const schema of ['hookbridge', 'other', 'x']) {
      const base = lockClassFor(schema);
      expect(base % 4).toBe(0);
      expect(base).toBeGreaterThan(0);
      // claim, armed, alive/leader, serving: base .. base + 3
      expect(base + 3).toBeLessThan(2 ** 31);
    }
    expect(lockClassFor('hookbridge')).toBe(lockClassFor('hookbridge'));
    expect(lockClassFor('hookbridge')).not.toBe(lockClassFor('other'));
  });
});

describe('session settings', () => {
  it("keep the bridge's own sessions on pg_catalog alone, even when the URL brings options of its own", () => {
    const config = internalConnection({ connectionString: 'postgres://u:p%20w@db.example:6543/app?options=-c%20statement_timeout%3D5s&application_name=x' });
    expect(config).toMatchObject({ user: 'u', password: 'p w', host: 'db.example', port: '6543', database: 'app' });
    expect(config.options).toBe('-c statement_timeout=5s -c search_path=pg_catalog');
    expect(config).not.toHaveProperty('connectionString');
  });

  it('add to explicit settings', () => {
    expect(withSessionSettings({ host: 'h', options: '-c a=1' }, { b: '2' })).toEqual({ host: 'h', options: '-c a=1 -c b=2' });
  });
});
