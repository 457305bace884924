/**
 * What hooks see for the write forms whose trigger behaviour surprises people (README: "Filter hooks"):
 * INSERT ... ON CONFLICT runs the create filter for the proposed row even when it conflicts (then the
 * update filter for DO UPDATE), and an UPDATE that moves a row to another partition runs the update,
 * delete and create filters, and reaches action hooks as a delete and a create.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBridge, type TestBridge } from '../support/bridge.js';
import { useTestDatabase } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';

const db = useTestDatabase();
const seen: string[] = [];
(globalThis as Record<string, unknown>)['__writeForms'] = seen;
let tb: TestBridge;

beforeAll(async () => {
  await withClient(db.url, async (c) => {
    await c.query(`create table wf_kv (k text primary key, v int)`);
    await c.query(`create table wf_parts (id int, region text, v int, primary key (id, region)) partition by list (region)`);
    await c.query(`create table wf_parts_eu partition of wf_parts for values in ('eu')`);
    await c.query(`create table wf_parts_us partition of wf_parts for values in ('us')`);
  });
  tb = await startTestBridge(db.url, {
    'hooks/forms/index.js': `
      module.exports = ({ filter, action }) => {
        const seen = globalThis.__writeForms;
        for (const table of ['wf_kv', 'wf_parts']) {
          for (const op of ['create', 'update', 'delete']) {
            filter(table + '.items.' + op, (payload) => { seen.push('filter ' + table + ' ' + op + ' ' + JSON.stringify(payload)); return payload; });
            action(table + '.items.' + op, (meta) => { seen.push('action ' + table + ' ' + op + ' ' + JSON.stringify(meta.payload)); });
          }
        }
      };`,
  });
});

afterAll(async () => {
  await tb?.dispose();
});

const sql = (text: string) => withClient(db.url, (c) => c.query(text));
const since = (mark: number) => seen.slice(mark);

describe('write forms', () => {
  it('INSERT ... ON CONFLICT: the create filter runs for the proposed row, then the update filter; actions see what was written', async () => {
    await sql(`insert into wf_kv values ('a', 1)`);
    await waitFor(() => seen.includes('action wf_kv create {"k":"a","v":1}'), { message: 'no create action' });
    let mark = seen.length;
    await sql(`insert into wf_kv values ('a', 2) on conflict (k) do update set v = excluded.v`);
    await waitFor(() => since(mark).some((s) => s.startsWith('action')), { message: 'no action for the upsert' });
    expect(since(mark)).toEqual(['filter wf_kv create {"k":"a","v":2}', 'filter wf_kv update {"v":2}', 'action wf_kv update {"k":"a","v":2}']);

    mark = seen.length;
    await sql(`insert into wf_kv values ('a', 3) on conflict do nothing`);
    await sql(`insert into wf_kv values ('marker', 0)`);
    await waitFor(() => since(mark).some((s) => s.startsWith('action wf_kv create {"k":"marker"')), { message: 'no marker action' });
    expect(since(mark)).toEqual([
      'filter wf_kv create {"k":"a","v":3}',
      'filter wf_kv create {"k":"marker","v":0}',
      'action wf_kv create {"k":"marker","v":0}',
    ]);
  });

  it('an UPDATE that moves a row to another partition runs the update, delete and create filters, and acts as a delete and a create', async () => {
    await sql(`insert into wf_parts values (1, 'eu', 1)`);
    await waitFor(() => seen.some((s) => s.startsWith('action wf_parts create')), { message: 'no create action' });
    const mark = seen.length;
    await sql(`update wf_parts set region = 'us' where id = 1`);
    await waitFor(() => since(mark).filter((s) => s.startsWith('action')).length === 2, { message: 'the move did not reach the actions' });
    expect(since(mark)).toEqual([
      'filter wf_parts update {"region":"us"}',
      'filter wf_parts delete [{"id":1,"region":"eu"}]',
      'filter wf_parts create {"id":1,"region":"us","v":1}',
      'action wf_parts delete [{"id":1,"region":"eu"}]',
      'action wf_parts create {"id":1,"region":"us","v":1}',
    ]);
  });
});
