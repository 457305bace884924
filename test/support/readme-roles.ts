/**
 * The README's role setup ("Security of the filter path"), for tests that run the bridge as a
 * non-superuser: roles named uniquely per file, what the superuser runs once for the bridge's role,
 * connection URLs per role, and the clean-up.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { withClient } from './helpers.js';

export const ROLE_PASSWORD = 'secret-pw';

export interface TestRoles<Name extends string> {
  /** Each role's unique name. */
  roles: Record<Name, string>;
  /** The database URL, logged in as that role. */
  urlAs(role: string): string;
  /**
   * What the README tells a superuser to run for the bridge's role: CREATE on the database, the
   * hookbridge schema owned by it, dblink in that schema, callable by the bridge only.
   */
  prepareBridge(c: pg.Client, database: string, bridgeRole: string): Promise<void>;
  /** Drops the roles and what they own. */
  drop(): Promise<void>;
}

/** `db.url` is read when needed (a test database exists only once its file's tests run). */
export function testRoles<Name extends string>(db: { readonly url: string }, names: readonly Name[], prefix = 'hb'): TestRoles<Name> {
  const suffix = randomBytes(3).toString('hex');
  const roles = Object.fromEntries(names.map((name) => [name, `${prefix}_${name}_${suffix}`])) as Record<Name, string>;
  return {
    roles,
    urlAs(role) {
      const as = new URL(db.url);
      as.username = role;
      as.password = ROLE_PASSWORD;
      return as.toString();
    },
    async prepareBridge(c, database, bridgeRole) {
      await c.query(`grant create on database ${c.escapeIdentifier(database)} to ${bridgeRole}`);
      await c.query(`create schema hookbridge authorization ${bridgeRole}`);
      await c.query(`create extension dblink schema hookbridge`);
      await c.query(`revoke execute on all functions in schema hookbridge from public`);
      await c.query(`grant execute on all functions in schema hookbridge to ${bridgeRole}`);
    },
    async drop() {
      await withClient(db.url, async (c) => {
        for (const role of Object.values<string>(roles)) {
          await c.query(`reassign owned by ${role} to postgres`).catch(() => undefined);
          await c.query(`drop owned by ${role}`).catch(() => undefined);
          await c.query(`drop role if exists ${role}`);
        }
      });
    },
  };
}
