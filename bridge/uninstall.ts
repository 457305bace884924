import pg from 'pg';
import { qualified } from './catalog.js';
import { inTransaction } from './database.js';
import { ACCOUNTABILITY_TRIGGER, insertsPublicationName } from './replication/publication.js';
import { dropSlot } from './replication/setup.js';

/**
 * Removes everything hookbridge installed in this database: its triggers on user tables, both
 * publications, the slot and its schema. User tables and their rows stay as they are.
 */
export async function uninstall(pool: pg.Pool, options: { schema: string; slotName: string; publication: string }): Promise<void> {
  const { schema, publication } = options;
  await inTransaction(pool, async (client) => {
    // Clones on partitions (tgparentid <> 0) go with their parent's trigger and cannot be dropped alone.
    const { rows } = await client.query<{ schema: string; table: string; trigger: string }>(
      `select n.nspname as schema, c.relname as table, t.tgname as trigger
         from pg_trigger t
         join pg_class c on c.oid = t.tgrelid
         join pg_namespace n on n.oid = c.relnamespace
         join pg_proc p on p.oid = t.tgfoid
         join pg_namespace pn on pn.oid = p.pronamespace
        where not t.tgisinternal and t.tgparentid = 0 and n.nspname <> $1
          and (pn.nspname = $1 or t.tgname = $2)`,
      [schema, ACCOUNTABILITY_TRIGGER],
    );
    for (const r of rows) {
      await client.query(`drop trigger if exists ${pg.escapeIdentifier(r.trigger)} on ${qualified(r.schema, r.table)}`);
    }
    await client.query(`drop publication if exists ${pg.escapeIdentifier(publication)}, ${pg.escapeIdentifier(insertsPublicationName(publication))}`);
    await client.query(`drop schema if exists ${pg.escapeIdentifier(schema)} cascade`);
  });
  // Last, and outside the transaction: ending a walsender is not transactional anyway.
  await dropSlot(pool, options.slotName);
}
