/**
 * Typed hooks: the fixtures under test/types compile with no diagnostic (each `@ts-expect-error` line
 * must fail, each other line must pass), the type-level event-name grammar agrees with
 * parseEventName on a corpus of names, and the declaration file's pieces are right.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { DRIVER_TYPES, propertyName, renderDeclarations, renderType } from '../../bridge/type-declarations.js';
import { INIT_EVENTS, parseEventName, type EventPattern } from '../../hooks/event-name.js';
import { compileFixtures } from '../support/compile-types.js';
import { SAMPLE_TABLES } from '../types/sample-tables.js';

const fixture = (path: string) => fileURLToPath(new URL(`../types/${path}`, import.meta.url));
const eventNameTypes = fileURLToPath(new URL('../../hooks/event-name-types.js', import.meta.url));

// The compiler takes seconds per program on a small machine.
const COMPILE_TIMEOUT_MS = 120_000;

describe('type fixtures', () => {
  it('before any declaration: names checked by the grammar, metas as the runtime passes them', { timeout: COMPILE_TIMEOUT_MS }, () => {
    expect(compileFixtures([fixture('undeclared/hooks.ts')])).toEqual([]);
  });

  it('a declaration file of a database without tables changes nothing', { timeout: COMPILE_TIMEOUT_MS }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hookbridge-empty-'));
    try {
      const env = join(dir, 'hookbridge-env.d.ts');
      await writeFile(env, renderDeclarations([]));
      expect(compileFixtures([fixture('undeclared/hooks.ts')], { extra: [env] })).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('with declared collections: names, payloads, keys and kysely typed from them', { timeout: COMPILE_TIMEOUT_MS }, () => {
    expect(compileFixtures([fixture('declared/hooks.ts')], { extra: [fixture('declared/hookbridge-env.d.ts')] })).toEqual([]);
  });

  it('the declared fixture is what `hookbridge types` renders for the sample tables', async () => {
    const rendered = renderDeclarations(SAMPLE_TABLES);
    if (process.env['HOOKBRIDGE_UPDATE_TYPE_FIXTURES'] === '1') await writeFile(fixture('declared/hookbridge-env.d.ts'), rendered);
    // To regenerate after a deliberate change: HOOKBRIDGE_UPDATE_TYPE_FIXTURES=1 npx vitest run test/unit/hook-types.test.ts
    expect(await readFile(fixture('declared/hookbridge-env.d.ts'), 'utf8')).toBe(rendered);
  });
});

describe('the type-level grammar agrees with parseEventName', () => {
  it('on a corpus of names, for filter() and action()', { timeout: COMPILE_TIMEOUT_MS }, async () => {
    const lines = [
      `import type { RegisterFunctions } from 'hookbridge';`,
      `import type { ParseEventName } from ${JSON.stringify(eventNameTypes)};`,
      'type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;',
      'function same<T extends true>(): T | void {}',
      'declare const r: RegisterFunctions;',
    ];
    let refused = 0;
    for (const name of corpus()) {
      for (const kind of ['filter', 'action'] as const) {
        let pattern: EventPattern | undefined;
        try {
          pattern = parseEventName(name, kind);
        } catch {
          refused++;
        }
        const literal = JSON.stringify(name);
        if (!pattern) lines.push(`// @ts-expect-error refused at run time`);
        lines.push(`r.${kind}(${literal}, () => undefined);`);
        if (pattern?.scope === 'items') {
          // The same action and collection as the runtime reads, not merely "valid".
          const expected = `{ action: ${JSON.stringify(pattern.action)}; collection: ${JSON.stringify(pattern.collection)} }`;
          lines.push(`same<Equal<Pick<ParseEventName<${literal}, '${kind}'>, 'action' | 'collection'>, ${expected}>>();`);
        }
      }
    }
    // Both verdicts are well represented, or the test would prove little.
    expect(refused).toBeGreaterThan(200);
    expect(lines.length - refused).toBeGreaterThan(400);
    const dir = await mkdtemp(join(tmpdir(), 'hookbridge-grammar-'));
    try {
      const file = join(dir, 'corpus.ts');
      await writeFile(file, `${lines.join('\n')}\n`);
      expect(compileFixtures([file])).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** Names from event-name.test.ts, every pair of tokens, and longer ones drawn with a fixed seed. */
function corpus(): string[] {
  const known = [
    'items.create',
    'articles.items.delete',
    'items.create.articles',
    'items.update.articles.before',
    'items.create.before',
    'items.*',
    'item.*.*',
    'item.recipes.create.before',
    'item.create.articles:before',
    'item.create.articles:after',
    'item.update',
    '*',
    '*.create',
    '*.items.create',
    'articles.items.*',
    'blog_*.items.create',
    'items.create.shop.*',
    'items.*ate',
    'shop.orders.items.create',
    'order-lines.items.update',
    'BlogPosts.items.create',
    'статьи.items.create',
    '記事.items.delete',
    'my table.items.create',
    'items.items.create',
    'users.items.create',
    'create.items.create',
    'foo.items.items.update',
    'items.read',
    'items.query',
    'server.start',
    'server.stop',
    'server.*',
    'server.explode',
    '',
    '   ',
    'items..create',
    'items',
    'items.publish',
    'articles.items.publish',
    'items.x*',
    'users.create',
    'files.upload',
    'auth.login',
    'orders.create',
    'items.create:after',
    '.before',
    ':before',
    'x:before',
    'x.before.before',
    ' items.create ',
    '\titems.create\n',
    'items. .create',
    'items.create.',
    '.items.create',
    'items.create. ',
    ...INIT_EVENTS,
    ...INIT_EVENTS.map((e) => `${e}.before`),
  ];
  const tokens = [
    'items',
    'item',
    '*',
    'create',
    'update',
    'delete',
    'read',
    'query',
    'truncate',
    'craete',
    '*ate',
    'x*',
    'c*e',
    '*e*',
    'articles',
    'shop',
    'server',
    'start',
    'app',
    'before',
    'after',
    'users',
    ' ',
    '',
    'my table',
    'статьи',
  ];
  const suffixes = ['', '', '', '.before', ':before', '.after', ':after', ' '];
  const names = new Set(known);
  for (const a of tokens) for (const b of tokens) names.add(`${a}.${b}`);
  let seed = 13;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  while (names.size < known.length + tokens.length ** 2 + 600) {
    const parts = Array.from({ length: 1 + random(5) }, () => tokens[random(tokens.length)] as string);
    names.add(parts.join('.') + suffixes[random(suffixes.length)]);
  }
  return [...names];
}

describe('the declaration file', () => {
  it('quotes every name that is not an identifier, and keeps reserved words bare (valid property names)', () => {
    expect(propertyName('articles')).toBe('articles');
    expect(propertyName('select')).toBe('select');
    expect(propertyName('$x_1')).toBe('$x_1');
    expect(propertyName('shop.orders')).toBe('"shop.orders"');
    expect(propertyName('my table')).toBe('"my table"');
    expect(propertyName(`it's "quoted"`)).toBe(`"it's \\"quoted\\""`);
    expect(propertyName('1st')).toBe('"1st"');
    expect(propertyName('*/')).toBe('"*/"');
    expect(propertyName('a\nb')).toBe('"a\\nb"');
    expect(propertyName('статьи')).toBe('"статьи"');
  });

  it('renders types: nullable, arrays of nullable elements, enums, composites', () => {
    expect(renderType({ kind: 'string' }, true)).toBe('string | null');
    expect(renderType({ kind: 'array', element: { kind: 'array', element: { kind: 'number' } } })).toBe('(number | null)[][]');
    expect(renderType({ kind: 'literals', values: ['a', `b"'`] })).toBe(`"a" | "b\\"'"`);
    expect(renderType({ kind: 'object', fields: [{ name: 'zip code', type: { kind: 'string' }, nullable: true }] })).toBe('{ "zip code": string | null; }');
  });

  it('never puts a line break of a source into its header', () => {
    const text = renderDeclarations([], { source: 'database app\n// injected' });
    expect(text.split('\n').filter((line) => line.includes('injected'))).toEqual(['// Source: database app // injected']);
  });

  it("DRIVER_TYPES lists exactly the types the pg driver parses (pg-types' text parsers)", () => {
    const noParser = pg.types.getTypeParser(25, 'text');
    const parsed: number[] = [];
    for (let oid = 1; oid < 10_000; oid++) if (pg.types.getTypeParser(oid, 'text') !== noParser) parsed.push(oid);
    expect(parsed).toEqual([...DRIVER_TYPES.keys()].sort((a, b) => a - b));
  });
});
