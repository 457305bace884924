import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseAccountabilityMessage } from '../../bridge/replication/accountability.js';

const key = randomBytes(32);

/** What emit_accountability() sends: json_build_object's text, a newline, hex sha256(key || json). */
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

  it('does not take `admin` from anything but a JSON true', () => {
    const doc = pgDoc({ role: 'x' }).replace('"admin" : false', '"admin" : "true"');
    expect(parseAccountabilityMessage(sign(doc), key)?.admin).toBe(false);
  });
});
