/**
 * An extension's stack traces and load errors point at its own lines. jiti's transform moves code to
 * other lines (an import below the code hoists everything onto its line; a comment above the imports
 * shifts a line); the loader hands Node a source map for every file it transforms.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverExtensions } from '../../hooks/extension-discovery.js';
import { loadExtensionModule, shiftFirstLine } from '../../hooks/extension-loader.js';
import { tempDir, writeTree } from '../support/file-tree.js';

/** Each throws on the line its name says, from the register function or from a handler. */
const tree: Record<string, string> = {
  // The import below the code: babel hoists it, and the whole module lands on line 6.
  'hooks/import-last/index.js': [
    `export default ({ action }) => {`,
    `  action('items.create', () => {`,
    `    throw new Error('line 3');`,
    `  });`,
    `};`,
    `import path from 'node:path';`,
  ].join('\n'),
  // A block comment above the imports: the code below it moves down a line.
  'hooks/comment-first/index.js': [
    `/**`,
    ` * A hook.`,
    ` */`,
    `import { defineHook } from 'hookbridge';`,
    `export default defineHook(({ action }) => {`,
    `  action('items.create', () => { throw new Error('line 6'); });`,
    `});`,
  ].join('\n'),
  'hooks/commonjs/index.cjs': [
    `const { defineHook } = require('hookbridge');`,
    `module.exports = defineHook(({ action }) => {`,
    `  action('items.create', () => { throw new Error('line 3'); });`,
    `});`,
  ].join('\n'),
  'hooks/typescript/index.ts': [
    `import { defineHook } from 'hookbridge';`,
    `interface Meta { key: number }`,
    `export default defineHook(({ action }) => {`,
    `  action('items.create', (meta: Meta) => { throw new Error('line 4'); });`,
    `});`,
  ].join('\n'),
  // On the first line, where jiti's module wrapper shifts every column.
  'hooks/one-line/index.js': `export default ({ action }) => { action('items.create', () => { throw new Error('line 1'); }); }; import p from 'node:path';`,
  // Plain CommonJS: not transformed; its own source map undoes "use strict" and jiti's wrapper on line 1.
  'hooks/plain-one-line/index.js': `module.exports = ({ action }) => { action('items.create', () => { throw new Error('line 1'); }); };`,
  // A handler in a file the entry imports (transformed too).
  'hooks/nested/index.mjs': [`import { register } from './register.mjs';`, `export default register;`].join('\n'),
  'hooks/nested/register.mjs': [
    `export function register({ action }) {`,
    `  action('items.create', () => {`,
    `    throw new Error('line 3 of register.mjs');`,
    `  });`,
    `}`,
    `import p from 'node:path';`,
  ].join('\n'),
};

let root: { path: string; remove(): Promise<void> };

beforeAll(async () => {
  root = await tempDir();
  await writeTree(root.path, tree);
});

afterAll(async () => {
  await root.remove();
});

/**
 * The stack as Node writes it. Vitest installs an Error.prepareStackTrace of its own (for the files it
 * transforms), which takes precedence over Node's source maps; the bridge runs without it.
 */
function nodeStack(run: () => unknown): string {
  const errors = Error as { prepareStackTrace?: unknown };
  const vitests = errors.prepareStackTrace;
  errors.prepareStackTrace = undefined;
  try {
    run();
  } catch (error) {
    return String((error as Error).stack);
  } finally {
    errors.prepareStackTrace = vitests;
  }
  throw new Error('it did not throw');
}

/** Loads one extension, registers it and runs its action handler: the stack of the error it throws. */
async function stackOf(name: string): Promise<string> {
  const { extensions } = await discoverExtensions(root.path);
  const extension = extensions.find((e) => e.name === name);
  if (!extension) throw new Error(`no extension ${name}`);
  const [loaded] = await loadExtensionModule(extension, root.path);
  const handlers: Array<() => void> = [];
  const register = loaded?.exported as (register: Record<string, unknown>, context: unknown) => void;
  register({ action: (_event: string, handler: () => void) => handlers.push(handler), filter() {}, init() {}, schedule() {}, embed() {} }, {});
  return nodeStack(() => handlers[0]?.());
}

function frameOf(stack: string, file: string): string | undefined {
  return stack.split('\n').find((line) => line.includes(file));
}

describe('stack traces of extensions', () => {
  it.each([
    ['import-last', 'hooks/import-last/index.js:3:'],
    ['comment-first', 'hooks/comment-first/index.js:6:'],
    ['commonjs', 'hooks/commonjs/index.cjs:3:'],
    ['typescript', 'hooks/typescript/index.ts:4:'],
    ['nested', 'hooks/nested/register.mjs:3:'],
  ])('%s: the frame names the line of the throw', async (name, where) => {
    const stack = await stackOf(name);
    expect(frameOf(stack, where), stack).toBeDefined();
  });

  it.each(['one-line', 'plain-one-line'])("keeps the column on the first line, under jiti's wrapper (%s: transformed, or not)", async (name) => {
    const stack = await stackOf(name);
    const column = (tree[`hooks/${name}/index.js`] ?? '').indexOf('new Error') + 1;
    expect(frameOf(stack, `hooks/${name}/index.js:1:${column}`), stack).toBeDefined();
  });

  it('names where a plain CommonJS module threw while loading', async () => {
    const dir = await tempDir();
    try {
      await writeTree(dir.path, { 'hooks/throws/index.js': [`const a = 1;`, ``, `throw new Error('at load, line 3');`].join('\n') });
      const { extensions } = await discoverExtensions(dir.path);
      const failure = await loadExtensionModule(extensions[0]!, dir.path).catch((error: unknown) => error as Error);
      expect((failure as Error).message).toMatch(/at load, line 3 \(.*hooks\/throws\/index\.js:3:7\)$/);
    } finally {
      await dir.remove();
    }
  });

  it('reports a parse error with file, line and column', async () => {
    const dir = await tempDir();
    try {
      await writeTree(dir.path, {
        'hooks/broken/index.js': [`module.exports = ({ action }) => {`, `  action('items.create', () => {`, `    const x = ;`, `  });`, `};`].join('\n'),
      });
      const { extensions } = await discoverExtensions(dir.path);
      const failure = await loadExtensionModule(extensions[0]!, dir.path).catch((error: unknown) => error as Error);
      expect(failure).toMatchObject({ code: 'E_EXTENSION_LOAD' });
      expect((failure as Error).message).toMatch(/cannot load .*hooks\/broken\/index\.js: .*Unexpected token.*\(.*hooks\/broken\/index\.js:3:\d+\)$/);
    } finally {
      await dir.remove();
    }
  });

  it('names where a module threw while loading', async () => {
    const dir = await tempDir();
    try {
      await writeTree(dir.path, { 'hooks/throws/index.js': [`const a = 1;`, `import p from 'node:path';`, `throw new Error('at load, line 3');`].join('\n') });
      const { extensions } = await discoverExtensions(dir.path);
      const failure = await loadExtensionModule(extensions[0]!, dir.path).catch((error: unknown) => error as Error);
      expect((failure as Error).message).toMatch(/at load, line 3 \(.*hooks\/throws\/index\.js:3:\d+\)$/);
    } finally {
      await dir.remove();
    }
  });
});

describe('shiftFirstLine', () => {
  it.each([
    // [mappings, by, expected]: "AAAA" is column 0; "UAAA" column 10; "gBAAA" column 16; "DAAA" column -1.
    ['AAAA,CAAC;AACA', 10, 'UAAA,CAAC;AACA'],
    ['AAAA', 16, 'gBAAA'],
    ['UAAA;AACA', -10, 'AAAA;AACA'],
    ['DAAA', 1, 'AAAA'],
    [';AACA', 10, ';AACA'],
    ['', 10, ''],
  ])('%s shifted by %d is %s', (mappings, by, expected) => {
    expect(shiftFirstLine(mappings, by)).toBe(expected);
  });
});
