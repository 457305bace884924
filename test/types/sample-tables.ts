/**
 * The tables behind test/types/declared/hookbridge-env.d.ts: what readDeclaredTables would return for
 * them (test/integration/types-command.test.ts reads real ones). The unit test renders these and
 * checks the fixture is exactly that output.
 */
import type { DeclaredColumn, DeclaredTable, TsType } from '../../bridge/type-declarations.js';

const number: TsType = { kind: 'number' };
const string: TsType = { kind: 'string' };
const date: TsType = { kind: 'date' };

function column(name: string, hook: TsType, more: Partial<DeclaredColumn> = {}): DeclaredColumn {
  return { name, hook, driver: hook, nullable: false, hasDefault: false, generatedAlways: false, generated: false, ...more };
}

export const SAMPLE_TABLES: DeclaredTable[] = [
  {
    collection: 'articles',
    key: ['id'],
    columns: [
      column('id', number, { hasDefault: true }),
      column('title', string),
      column('body', string, { nullable: true }),
      column('status', { kind: 'literals', values: ['draft', 'published'] }, { hasDefault: true }),
      column('views', string, { hasDefault: true }),
      column('price', string, { nullable: true }),
      column('created_at', string, { driver: date, hasDefault: true }),
      column('data', { kind: 'json' }, { nullable: true }),
      column('cover', { kind: 'buffer' }, { nullable: true }),
      column('tags', { kind: 'array', element: string }, { nullable: true }),
      column('slug', string, { nullable: true, generated: true, generatedAlways: true }),
    ],
  },
  { collection: 'blog_comments', key: ['id'], columns: [column('id', number), column('text', string)] },
  { collection: 'blog_posts', key: ['id'], columns: [column('id', number), column('title', string)] },
  // No primary key and the default replica identity: events carry a null key.
  {
    collection: 'my table',
    key: [],
    columns: [
      column('select', number),
      column('first name', string, { nullable: true }),
      column(`it's "quoted"`, string, { nullable: true }),
      column('*/', string, { nullable: true }),
    ],
  },
  // No primary key, REPLICA IDENTITY FULL: the key differs between filters and actions.
  { collection: 'events_log', key: null, columns: [column('message', string)] },
  {
    collection: 'order_lines',
    key: ['order_id', 'line'],
    columns: [column('order_id', string), column('line', number), column('qty', number)],
  },
  {
    collection: 'shop.orders',
    key: ['id'],
    columns: [
      column('id', string, { hasDefault: true }),
      column('total', string),
      column(
        'address',
        { kind: 'object', fields: [{ name: 'street', type: string, nullable: true }, { name: 'zip code', type: string, nullable: true }] },
        { nullable: true, driver: string },
      ),
    ],
  },
];
