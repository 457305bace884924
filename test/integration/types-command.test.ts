/**
 * `hookbridge types` on a real database: the file it writes compiles and types a hook project (one
 * that installs hookbridge, resolved through node_modules to the built package), and the types it
 * declares hold the values hooks and kysely really get for every column of the test tables.
 */
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDeclaredTables, type DeclaredTable, type TsType } from '../../bridge/type-declarations.js';
import { TypeCatalog } from '../../bridge/typing/type-catalog.js';
import { fromText } from '../../bridge/typing/values.js';
import { runCli } from '../support/cli.js';
import { compileFixtures } from '../support/compile-types.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir } from '../support/file-tree.js';
import { withClient } from '../support/helpers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const db = useTestDatabase();

const SCHEMA = `
  create type status as enum ('draft', 'published', 'it''s "odd"');
  create type address as (street text, "zip code" text, geo int8[]);
  create domain posint as int4 check (value > 0);
  create domain status_d as status;
  create table articles (
    id serial primary key,
    title text not null,
    body text,
    status status not null default 'draft',
    status2 status_d,
    statuses status[],
    views int8 not null default 0,
    price numeric(10, 2),
    prices numeric[],
    created_at timestamptz not null default now(),
    day date,
    at timestamp,
    clock time,
    clock_tz timetz,
    data jsonb,
    doc json,
    cover bytea,
    tags text[],
    matrix int4[][],
    flags bool,
    ratio float8,
    small int2,
    uid uuid,
    span interval,
    spans interval[],
    place point,
    home address,
    homes address[],
    positive posint,
    positives posint[],
    title_upper text generated always as (upper(title)) stored
  );
  create schema shop;
  create table shop."Orders" (
    region text,
    no int8,
    seq int generated always as identity,
    primary key (region, no)
  );
  create table "my ""weird"" table" ("select" int4 not null, "first name" text, "*/" text, "with
newline" int2);
  create table logs (message text) ;
  alter table logs replica identity full;
  create table measurements (at date not null, value float8) partition by range (at);
  create table measurements_2024 partition of measurements for values from ('2024-01-01') to ('2025-01-01');
  create view article_titles as select title from articles;
  -- hookbridge's own schema is not the user's
  create schema hookbridge;
  create table hookbridge.internal (id int primary key);

  insert into articles (title, body, status, status2, statuses, views, price, prices, created_at, day, at, clock, clock_tz,
                        data, doc, cover, tags, matrix, flags, ratio, small, uid, span, spans, place, home, homes, positive, positives)
  values ('Hello', 'body', 'published', 'it''s "odd"', '{draft,NULL}', 9007199254740993, 1.50, '{1.5,NULL}',
          '2024-02-29 23:59:59.999999+00', '2024-02-29', '2024-02-29 12:00:00.5', '23:59:59.999999', '12:00:00+05:30',
          '{"a": [1, 2.5, null], "b": {"c": true}}', '[1, "x"]', '\\x00ff', '{a,NULL,"b c"}', '{{1,2},{3,NULL}}', true,
          'NaN', -3, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 year 2 days 00:00:01.5', '{"1 day",NULL}', '(1.5,2)',
          row('Main St', '12345', '{1,NULL}'), array[row('A', NULL, NULL)::address, NULL], 7, '{1,NULL}');
  insert into articles (title) values ('Bare');
  insert into shop."Orders" (region, no) values ('eu', 1);
  insert into "my ""weird"" table" values (1, NULL, 'x', 2);
`;

let tables: DeclaredTable[];

beforeAll(async () => {
  await withClient(db.url, (c) => c.query(SCHEMA));
  const pool = new pg.Pool({ connectionString: db.url, max: 1 });
  try {
    tables = await readDeclaredTables(pool, ['hookbridge']);
  } finally {
    await pool.end();
  }
});

describe('hookbridge types', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir('hookbridge-types-');
  });
  afterAll(async () => {
    await dir.remove();
  });

  it('writes the declarations of the tables the bridge watches, and says where', async () => {
    const out = join(dir.path, 'types', 'hookbridge-env.d.ts');
    const result = await runCli(['types', '--out', out], { env: { DATABASE_URL: db.url } });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(`wrote ${out} (5 collections); include it in your tsconfig\n`);
    const text = await readFile(out, 'utf8');
    // user tables in every schema; not hookbridge's, not partitions, not views
    expect(tables.map((t) => t.collection)).toEqual(['articles', 'logs', 'measurements', 'my "weird" table', 'shop.Orders']);
    expect(text).not.toMatch(/internal|measurements_2024|article_titles/);
    expect(text).toContain(`// Source: database "${db.name}"`);
    const password = decodeURIComponent(new URL(db.url).password);
    if (password) expect(text + result.stdout).not.toContain(password);
    for (const line of [
      '      views: string;',
      '      price: string | null;',
      '      created_at: string;',
      '      status: "draft" | "published" | "it\'s \\"odd\\"";',
      '      data: JsonValue | null;',
      '      cover: Buffer | null;',
      '      matrix: (number | null)[][] | null;',
      '      home: { street: string | null; "zip code": string | null; geo: (string | null)[] | null; } | null;',
      '      title_upper?: string | null;',
      '    "my \\"weird\\" table": {',
      '      "with\\nnewline": number | null;',
      '    "shop.Orders": ["region", "no"];',
      '    "my \\"weird\\" table": [];',
      '      created_at: ColumnType<Date, Date | string | undefined, Date | string>;',
      '      seq: ColumnType<number, never, never>;',
    ]) {
      expect(text.split('\n')).toContain(line);
    }
    // REPLICA IDENTITY FULL without a primary key: no key declared (unknown)
    expect(text).not.toMatch(/^ {4}logs: \[/m);
    // Read-only, like status and doctor: nothing of hookbridge's is installed.
    const installed = await withClient(
      db.url,
      async (c) =>
        (
          await c.query(`select to_regclass('hookbridge.migrations') as migrations, (select count(*)::int from pg_publication) as publications,
                              (select count(*)::int from pg_replication_slots where database = current_database()) as slots`)
        ).rows[0],
    );
    expect(installed).toEqual({ migrations: null, publications: 0, slots: 0 });
    // --out - writes the same to stdout
    const stdout = await runCli(['types', '--out', '-'], { env: { DATABASE_URL: db.url } });
    expect(stdout.code).toBe(0);
    expect(stdout.stdout).toBe(text);
  });

  it('refuses a bad flag as a usage error', async () => {
    const result = await runCli(['types', '--outt', 'x.d.ts'], { env: { DATABASE_URL: db.url } });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/unknown option '--outt'/);
  });

  it("types a hook project's handlers and kysely from the file (tsc, with hookbridge installed)", { timeout: 180_000 }, async () => {
    const project = join(dir.path, 'project');
    await mkdir(join(project, 'node_modules'), { recursive: true });
    // As `npm install hookbridge` would: the package, its built types and its dependencies.
    await symlink(root, join(project, 'node_modules', 'hookbridge'), 'dir');
    const env = join(project, 'hookbridge-env.d.ts');
    const generated = await runCli(['types', '--out', env], { env: { DATABASE_URL: db.url } });
    expect(generated.code).toBe(0);
    const hooks = join(project, 'hooks.ts');
    await writeFile(hooks, PROJECT_HOOKS);
    expect(compileFixtures([hooks], { extra: [env], hookbridge: 'installed' })).toEqual([]);
  });
});

const PROJECT_HOOKS = `
import { defineHook } from 'hookbridge';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T | void {}

export default defineHook(({ filter, action }, { kysely, database }) => {
  filter('articles.items.create', (payload, meta) => {
    expectType<Equal<typeof payload.views, string | undefined>>();
    expectType<Equal<typeof payload.status, 'draft' | 'published' | 'it\\'s "odd"' | undefined>>();
    expectType<Equal<typeof payload.positive, number | null | undefined>>();
    // @ts-expect-error a typo in a column
    void payload.tittle;
    // @ts-expect-error a typo in the meta
    void meta.colection;
    return { ...payload, status: 'draft' };
  });
  filter('my "weird" table.items.update', (payload, meta) => {
    expectType<Equal<typeof payload['first name'], string | null | undefined>>();
    expectType<Equal<typeof meta.keys, null[]>>();
  });
  action('shop.Orders.items.create', ({ key }) => {
    expectType<Equal<typeof key, { region: string; no: string }>>();
  });
  action('articles.items.create', ({ key, payload }) => {
    expectType<Equal<typeof key, number>>();
    expectType<Equal<typeof payload.span, string | null>>();
  });
  // @ts-expect-error no such table
  action('article.items.create', () => undefined);
  // @ts-expect-error partitions are not collections of their own
  action('measurements_2024.items.create', () => undefined);
  // @ts-expect-error the grammar holds too
  filter('articles.items.craete', () => undefined);
  void kysely
    .selectFrom('shop.Orders')
    .select(['region', 'no'])
    .executeTakeFirst()
    .then((row) => expectType<Equal<typeof row, { region: string; no: string } | undefined>>());
  void kysely.selectFrom('articles').select('span').executeTakeFirstOrThrow().then((row) => row.span?.toPostgres());
  // @ts-expect-error an identity ALWAYS column is not inserted
  void kysely.insertInto('shop.Orders').values({ region: 'eu', no: '2', seq: 3 }).execute();
  // @ts-expect-error Knex has no such method
  void database.nonexistent();
});
`;

describe('the declared types hold the values', () => {
  it('hooks get (the typing of the action path, bridge/typing)', async () => {
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      const catalog = new TypeCatalog(pool);
      const { rows: relations } = await pool.query<{ relid: number; collection: string }>(
        `select c.oid::int4 as relid, case when n.nspname = 'public' then c.relname else n.nspname || '.' || c.relname end as collection
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where c.relkind in ('r', 'p') and not c.relispartition and n.nspname in ('public', 'shop')`,
      );
      for (const { relid } of relations) await catalog.columns(relid);
      // Rows read as text and typed by the catalog, as pgoutput's are.
      const typed = new pg.Pool({
        connectionString: db.url,
        max: 1,
        types: { getTypeParser: ((oid: number) => catalog.textParser(oid, fromText)) as typeof pg.types.getTypeParser },
      });
      try {
        await checkTables(typed, (column) => ({ type: column.hook, optional: column.generated }));
      } finally {
        await typed.end();
      }
    } finally {
      await pool.end();
    }
  });

  it("kysely gets (the pg driver's typing)", async () => {
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    const kysely = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
    try {
      const querier = { query: (text: string) => sql.raw<Record<string, unknown>>(text).execute(kysely) };
      await checkTables(querier, (column) => ({ type: column.driver, optional: false }));
    } finally {
      await kysely.destroy();
    }
  });
});

type Querier = { query: (text: string) => Promise<{ rows: Array<Record<string, unknown>> }> };

async function checkTables(pool: Querier, declared: (column: DeclaredTable['columns'][number]) => { type: TsType; optional: boolean }): Promise<void> {
  let checked = 0;
  for (const table of tables) {
    const name = table.collection.includes('.')
      ? table.collection
          .split('.')
          .map((part) => `"${part.replaceAll('"', '""')}"`)
          .join('.')
      : `"${table.collection.replaceAll('"', '""')}"`;
    const { rows } = await pool.query(`select * from ${name}`);
    for (const row of rows) {
      for (const column of table.columns) {
        const { type, optional } = declared(column);
        const value = row[column.name];
        const problem = value === undefined && optional ? undefined : mismatch(value, type, column.nullable);
        expect(problem, `${table.collection}.${column.name} = ${show(value)}`).toBeUndefined();
        checked++;
      }
    }
  }
  // Every column of the test tables with a value, and again with NULLs.
  expect(checked).toBeGreaterThan(60);
}

/** Why `value` is not of `type`, or undefined when it is. */
function mismatch(value: unknown, type: TsType, nullable: boolean): string | undefined {
  if (value === null) return nullable ? undefined : 'null where the type has no null';
  switch (type.kind) {
    case 'number':
    case 'string':
    case 'boolean':
      return typeof value === type.kind ? undefined : `not a ${type.kind}`;
    case 'json':
      return isJson(value) ? undefined : 'not a JSON value';
    case 'buffer':
      return Buffer.isBuffer(value) ? undefined : 'not a Buffer';
    case 'date':
      return value instanceof Date ? undefined : 'not a Date';
    case 'interval':
      return typeof value === 'object' && typeof (value as { toPostgres?: unknown }).toPostgres === 'function' ? undefined : 'not an interval';
    case 'literals':
      return type.values.includes(value as string) ? undefined : `not one of ${type.values.join(', ')}`;
    case 'array':
      if (!Array.isArray(value)) return 'not an array';
      for (const item of value) {
        const problem = mismatch(item, type.element, type.element.kind !== 'array');
        if (problem) return `an element: ${problem}`;
      }
      return undefined;
    case 'object': {
      if (typeof value !== 'object' || Array.isArray(value)) return 'not an object';
      const keys = Object.keys(value as object);
      const names = type.fields.map((f) => f.name);
      if (keys.join() !== names.join()) return `fields ${keys.join()} instead of ${names.join()}`;
      for (const field of type.fields) {
        const problem = mismatch((value as Record<string, unknown>)[field.name], field.type, field.nullable);
        if (problem) return `${field.name}: ${problem}`;
      }
      return undefined;
    }
  }
}

function isJson(value: unknown): boolean {
  if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) return true;
  if (Array.isArray(value)) return value.every(isJson);
  if (typeof value !== 'object' || Buffer.isBuffer(value) || value instanceof Date) return false;
  return Object.values(value as object).every(isJson);
}

function show(value: unknown): string {
  if (Buffer.isBuffer(value)) return `Buffer ${value.toString('hex')}`;
  return typeof value === 'object' && value !== null
    ? `${value.constructor?.name ?? 'object'} ${JSON.stringify(value)}`
    : (JSON.stringify(value) ?? String(value));
}
