import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  IDENTITY_PURPOSE,
  parseAccountabilityMessage as parseWith,
  parseIdentityMessage,
  parseSignedMessage,
  unverifiedAccountability,
} from '../../bridge/replication/accountability.js';

const key = randomBytes(32);
/** The transaction (pgoutput's Begin xid) the messages below are read in, and the table they name. */
const XID = 763;
const RELID = 16384;

/**
 * What accountability_trigger() sends since migration 000010: json_build_object's text, a newline,
 * hex sha256(key || "\0hookbridge.accountability\0" || json). `purpose: null` signs as migration
 * 000005 did, and as filter_entry() signs unfiltered-row notices: hex sha256(key || json).
 */
function sign(doc: string | Buffer, secret = key, purpose: Buffer | null = IDENTITY_PURPOSE): Buffer {
  const bytes = typeof doc === 'string' ? Buffer.from(doc, 'utf8') : doc;
  const hash = createHash('sha256').update(secret);
  if (purpose) hash.update(purpose);
  const signature = hash.update(bytes).digest('hex');
  return Buffer.concat([bytes, Buffer.from(`\n${signature}`, 'latin1')]);
}

/** Read in transaction XID, with no documents from before migration 000010 believed unless `legacyBefore`. */
const parseAccountabilityMessage = (content: Buffer, _key = key, xid: number | null = XID, legacyBefore?: bigint) =>
  parseWith(content, _key, xid ?? undefined, legacyBefore);

type DocFields = {
  role?: string | null;
  admin?: boolean;
  app?: string | null;
  addr?: string | null;
  user?: string | null;
  claims?: string | null;
  bypass?: boolean;
};

/** The exact text shape Postgres' json_build_object(...)::text produces, without the xid and relid. */
function bareDoc(fields: DocFields): string {
  const value = (v: unknown) => JSON.stringify(v ?? null);
  return (
    `{"role" : ${value(fields.role ?? 'postgres')}, "admin" : ${fields.admin ?? false}, ` +
    `"application_name" : ${value(fields.app)}, "client_addr" : ${value(fields.addr)}, ` +
    `"user" : ${value(fields.user)}, "claims" : ${value(fields.claims)}, "bypass" : ${fields.bypass ?? false}}`
  );
}

/** accountability_trigger()'s document (000010): the transaction's xid8 and the table's oid first. */
function pgDoc(fields: DocFields, xid: unknown = String(XID), relid: unknown = RELID): string {
  return bareDoc(fields).replace('{', `{"xid" : ${JSON.stringify(xid)}, "relid" : ${JSON.stringify(relid)}, `);
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
      [
        'an upper-case signature',
        Buffer.concat([
          good.subarray(0, good.lastIndexOf(0x0a) + 1),
          Buffer.from(
            good
              .subarray(good.lastIndexOf(0x0a) + 1)
              .toString()
              .toUpperCase(),
          ),
        ]),
      ],
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
    const inTransaction = (xid: unknown, fields: DocFields = { role: 'postgres', admin: true }) => sign(pgDoc(fields, xid));

    it.each([
      ['the same xid', '763', 763],
      ['an xid8 past wraparound, whose low 32 bits pgoutput sends', String(3n * 2n ** 32n + 763n), 763],
      ['the largest 32-bit xid', String(2 ** 32 - 1), 2 ** 32 - 1],
    ] as const)('accepts %s', (_label, docXid, beginXid) => {
      expect(parseAccountabilityMessage(inTransaction(docXid), key, beginXid)).toMatchObject({ role: 'postgres', admin: true, verified: true });
    });

    it.each([
      ['another transaction', '764', 763],
      ["another epoch's xid that is not this one", String(2n ** 32n + 764n), 763],
      ['an xid as a JSON number', 763, 763],
      ['an empty xid', '', 763],
      ['an xid with a sign', '-763', 763],
      ['an xid with trailing text', '763 ', 763],
      ['a JSON null xid', null, 763],
    ] as const)('refuses %s, even signed', (_label, docXid, beginXid) => {
      expect(parseAccountabilityMessage(inTransaction(docXid), key, beginXid)).toBeUndefined();
    });

    it('refuses every message when no transaction is given to compare', () => {
      expect(parseAccountabilityMessage(inTransaction('x'), key, null)).toBeUndefined();
      expect(parseAccountabilityMessage(inTransaction('763'), key, null)).toBeUndefined();
    });

    it('refuses a document that names no transaction (from before migration 000005), bypass ones too', () => {
      expect(parseAccountabilityMessage(sign(bareDoc({ role: 'alice' })), key, 763)).toBeUndefined();
      expect(parseAccountabilityMessage(sign(bareDoc({ role: 'hb', bypass: true }), key, null), key, 763, 2n ** 63n)).toBeUndefined();
    });
  });

  describe('believes a message only for its purpose and its table', () => {
    it('reads the table the statement wrote', () => {
      expect(parseIdentityMessage(sign(pgDoc({ role: 'alice' })), key, XID)).toMatchObject({ relid: RELID, accountability: { role: 'alice', verified: true } });
    });

    it.each([
      ['no relid', bareDoc({}).replace('{', `{"xid" : "${XID}", `)],
      ['a relid as a string', pgDoc({}, String(XID), String(RELID))],
      ['a relid of 0', pgDoc({}, String(XID), 0)],
      ['a fractional relid', pgDoc({}, String(XID), 1.5)],
    ])('refuses a document with %s', (_label, doc) => {
      expect(parseAccountabilityMessage(sign(doc))).toBeUndefined();
    });

    // What filter_entry() emits (sql/000006.sql, 000007.sql) when it lets a row through in open mode:
    // the same key, the same format, no purpose. Before 000010 it read as an identity (role null, verified).
    const unfiltered = sign('{"schema" : "public", "table" : "items", "op" : "INSERT", "reason" : "unreachable"}', key, null);

    it('refuses an unfiltered-row notice, and any bare-key document naming this transaction (the 000005 way)', () => {
      expect(parseAccountabilityMessage(unfiltered)).toBeUndefined();
      expect(parseAccountabilityMessage(unfiltered, key, XID, 2n ** 63n)).toBeUndefined();
      const old = sign(bareDoc({ role: 'postgres', admin: true }).replace('{', `{"xid" : "${XID}", `), key, null);
      expect(parseAccountabilityMessage(old)).toBeUndefined();
      // Signed with the purpose but otherwise the notice: it names no transaction.
      expect(parseAccountabilityMessage(sign('{"schema" : "public", "table" : "items", "op" : "INSERT", "reason" : "unreachable"}'))).toBeUndefined();
    });

    it('signs identities so that they are not unfiltered-row notices or catch-up rows (bare-key documents)', () => {
      const identity = sign(pgDoc({ role: 'postgres', admin: true }));
      expect(parseSignedMessage(identity, key)).toBeUndefined();
      expect(parseSignedMessage(identity, key, IDENTITY_PURPOSE)).toMatchObject({ role: 'postgres' });
      expect(parseSignedMessage(unfiltered, key)).toMatchObject({ reason: 'unreachable' });
    });

    describe('documents signed the 000005 way, still in the slot after the upgrade', () => {
      const legacy = (xid: string, fields: DocFields = { role: 'hb_bridge', bypass: true }) =>
        sign(bareDoc(fields).replace('{', `{"xid" : "${xid}", `), key, null);
      const before = 5n * 2n ** 32n + 1000n;

      it('are believed for every table, in the transaction they name, below the xid migration 000010 stored', () => {
        expect(parseIdentityMessage(legacy(String(before - 1n)), key, 999, before)).toMatchObject({
          relid: undefined,
          accountability: { role: 'hb_bridge', bypass: true, verified: true },
        });
      });

      it.each([
        ['at the cutoff', String(before), 1000],
        ['after it', String(before + 5n), 1005],
        ['another transaction', String(before - 1n), 998],
      ] as const)('are refused %s', (_label, docXid, beginXid) => {
        expect(parseIdentityMessage(legacy(docXid), key, beginXid, before)).toBeUndefined();
      });

      it('are refused without a stored cutoff, and with a relid (a catch-up row is not an identity)', () => {
        expect(parseIdentityMessage(legacy(String(before - 1n)), key, 999)).toBeUndefined();
        const catchUp = sign(`{"xid" : "${before - 1n}", "relid" : ${RELID}, "schema" : "public", "table" : "t", "row" : "(1)"}`, key, null);
        expect(parseIdentityMessage(catchUp, key, 999, before)).toBeUndefined();
      });
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
