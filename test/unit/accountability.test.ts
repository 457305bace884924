import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseAccountabilityMessage, unverifiedAccountability } from '../../bridge/replication/accountability.js';

const key = randomBytes(32);

/** What accountability_trigger() sends: json_build_object's text, a newline, hex sha256(key || json). */
function sign(doc: string | Buffer, secret = key): Buffer {
  const bytes = typeof doc === 'string' ? Buffer.from(doc, 'utf8') : doc;
  const signature = createHash('sha256').update(secret).update(bytes).digest('hex');
  return Buffer.concat([bytes, Buffer.from(`\n${signature}`, 'latin1')]);
}

/** The exact text shape Postgres' json_build_object(...)::text produces. */
function pgDoc(fields: { role?: string | null; admin?: boolean; app?: string | null; addr?: string | null; user?: string | null; claims?: string | null }): string {
  const value = (v: unknown) => JSON.stringify(v ?? null);
  return (
    `{"role" : ${value(fields.role ?? 'postgres')}, "admin" : ${fields.admin ?? false}, ` +
    `"application_name" : ${value(fields.app)}, "client_addr" : ${value(fields.addr)}, ` +
    `"user" : ${value(fields.user)}, "claims" : ${value(fields.claims)}}`
  );
}

describe('parseAccountabilityMessage', () => {
  it('reads a superuser writer over a Unix socket', () => {
    const result = parseAccountabilityMessage(sign(pgDoc({ role: 'postgres', admin: true, app: 'psql' })), key);
    expect(result).toEqual({
      user: null,
      role: 'postgres',
      admin: true,
      app: false,
      ip: null,
      userAgent: 'psql',
      claims: null,
      database: { role: 'postgres', applicationName: 'psql', clientAddress: null },
      verified: true,
    });
  });

  it.each([
    ['hookbridge.user only', { user: 'alice' }, 'alice', null],
    ['claims sub only', { claims: '{"sub":"bob","role":"web"}' }, 'bob', { sub: 'bob', role: 'web' }],
    ['hookbridge.user wins over the claims', { user: 'alice', claims: '{"sub":"bob"}' }, 'alice', { sub: 'bob' }],
    ['numeric sub', { claims: '{"sub":42}' }, '42', { sub: 42 }],
    ['claims without sub', { claims: '{"role":"anon"}' }, null, { role: 'anon' }],
    ['malformed claims', { claims: '{"sub":' }, null, null],
    ['claims that are an array', { claims: '["bob"]' }, null, null],
    ['claims that are JSON null', { claims: 'null' }, null, null],
    ['empty sub', { claims: '{"sub":""}' }, null, { sub: '' }],
  ] as const)('application user from %s', (_label, fields, user, claims) => {
    const result = parseAccountabilityMessage(sign(pgDoc(fields)), key);
    expect(result?.user).toBe(user);
    expect(result?.claims).toEqual(claims);
  });

  it('keeps the client address, application name and odd role names', () => {
    const role = 'Ünïcode "role" ✓';
    const result = parseAccountabilityMessage(sign(pgDoc({ role, app: 'my app', addr: '::1' })), key);
    expect(result).toMatchObject({ role, ip: '::1', userAgent: 'my app', admin: false, database: { role, clientAddress: '::1', applicationName: 'my app' } });
  });

  describe('refuses', () => {
    const good = sign(pgDoc({ role: 'postgres', admin: true }));
    const forgedDoc = pgDoc({ role: 'postgres', admin: true, user: 'mallory' });
    const cases: [string, Buffer][] = [
      ['a message signed with another key', sign(forgedDoc, randomBytes(32))],
      ['a message signed without a key', sign(forgedDoc, Buffer.alloc(0))],
      ['a changed document under the original signature', Buffer.concat([Buffer.from(forgedDoc), good.subarray(good.lastIndexOf(0x0a))])],
      ['a signature cut short', good.subarray(0, good.length - 1)],
      ['a message cut inside the document', good.subarray(0, 20)],
      ['the document without its signature', good.subarray(0, good.lastIndexOf(0x0a))],
      ['an empty message', Buffer.alloc(0)],
      ['a trailing newline', Buffer.concat([good, Buffer.from('\n')])],
      ['an upper-case signature', Buffer.concat([good.subarray(0, good.lastIndexOf(0x0a) + 1), Buffer.from(good.subarray(good.lastIndexOf(0x0a) + 1).toString().toUpperCase())])],
      ['a signature that is not hex', Buffer.concat([good.subarray(0, good.lastIndexOf(0x0a) + 1), Buffer.from('z'.repeat(64))])],
      ['a signed document that is not JSON', sign('role=postgres')],
      ['a signed JSON array', sign('["postgres"]')],
      ['a signed document that is not UTF-8', sign(Buffer.from([0x7b, 0xff, 0x7d]))],
    ];
    it.each(cases)('%s', (_label, content) => {
      expect(parseAccountabilityMessage(content, key)).toBeUndefined();
    });
  });

  describe('believes a message only in the transaction that emitted it', () => {
    /** Since migration 000005 the document starts with the xid8 of its transaction. */
    const inTransaction = (xid: unknown, fields: Parameters<typeof pgDoc>[0] = { role: 'postgres', admin: true }) =>
      sign(pgDoc(fields).replace('{', `{"xid" : ${JSON.stringify(xid)}, `));

    it.each([
      ['the same xid', '763', 763],
      ['an xid8 past wraparound, whose low 32 bits pgoutput sends', String(3n * 2n ** 32n + 763n), 763],
      ['the largest 32-bit xid', String(2 ** 32 - 1), 2 ** 32 - 1],
    ] as const)('accepts %s', (_label, docXid, beginXid) => {
      expect(parseAccountabilityMessage(inTransaction(docXid), key, beginXid)).toMatchObject({ role: 'postgres', admin: true, verified: true });
    });

    it.each([
      ['another transaction', '764', 763],
      ['another epoch\'s xid that is not this one', String(2n ** 32n + 764n), 763],
      ['an xid as a JSON number', 763, 763],
      ['an empty xid', '', 763],
      ['an xid with a sign', '-763', 763],
      ['an xid with trailing text', '763 ', 763],
      ['a JSON null xid', null, 763],
    ] as const)('refuses %s, even signed', (_label, docXid, beginXid) => {
      expect(parseAccountabilityMessage(inTransaction(docXid), key, beginXid)).toBeUndefined();
    });

    it('refuses a malformed xid even when no transaction is given to compare', () => {
      expect(parseAccountabilityMessage(inTransaction('x'), key)).toBeUndefined();
      expect(parseAccountabilityMessage(inTransaction('763'), key)?.role).toBe('postgres');
    });

    it('takes a document from before migration 000005 (no xid) as it is', () => {
      expect(parseAccountabilityMessage(sign(pgDoc({ role: 'alice' })), key, 763)).toMatchObject({ role: 'alice', verified: true });
    });
  });

  it('describes an unknown writer with no rights, distinct from the system (null)', () => {
    const unknown = unverifiedAccountability();
    expect(unknown).toEqual({
      user: null,
      role: null,
      admin: false,
      app: false,
      ip: null,
      userAgent: null,
      claims: null,
      database: { role: null, applicationName: null, clientAddress: null },
      verified: false,
    });
    expect(unverifiedAccountability()).not.toBe(unknown);
  });

  it('does not take `admin` from anything but a JSON true', () => {
    const doc = pgDoc({ role: 'x' }).replace('"admin" : false', '"admin" : "true"');
    expect(parseAccountabilityMessage(sign(doc), key)?.admin).toBe(false);
  });
});
