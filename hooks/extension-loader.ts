/**
 * Loads extension modules: JavaScript (ESM or CommonJS) and TypeScript without a build step, through
 * jiti. The entry file is always transpiled and evaluated by jiti (even plain CommonJS, which jiti
 * would otherwise hand to Node), so that its `require`/`import` of `hookbridge` goes through jiti too,
 * and every load is fresh, so a reload sees edited files. CommonJS files it requires that Node loads
 * natively are dropped from `require.cache` first. Only a module with top-level await needs Node's
 * native `import()`, and such a module keeps its first version until restart.
 *
 * `hookbridge` is this running copy's hook API (the very module objects the bridge uses, so error
 * classes and `Payload` are the same); so are `@directus/extensions-sdk` and `@directus/errors`
 * unless the extension's folder has the real packages installed, in which case those are used.
 *
 * Stack traces point at the extension's own lines: jiti's transform keeps lines only roughly (an
 * import below other code, or a comment above the imports, moves code to other lines), so every
 * file it transforms gets a source map that Node applies to stack traces (see registerSourceMap).
 * A plain CommonJS file skips babel (see plainCommonJs).
 */
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname, sep } from 'node:path';
import { compileFunction, Script } from 'node:vm';
import { createJiti, type JitiOptions } from 'jiti';
import { HookbridgeError } from './errors.js';
import type { DiscoveredExtension } from './extension-discovery.js';
import * as sdk from './sdk.js';

const PROVIDED_PACKAGES = ['@directus/extensions-sdk', '@directus/errors'] as const;

export class ExtensionLoadError extends HookbridgeError {
  constructor(path: string, reason: string, cause?: unknown) {
    super('E_EXTENSION_LOAD', `cannot load ${path}: ${reason}`, { cause, details: { path } });
    this.name = 'ExtensionLoadError';
  }
}

export interface LoadedModule {
  name: string;
  path: string;
  /** The default export (or `module.exports`) to hand to `collectHooks`. */
  exported: unknown;
}

/**
 * Imports an extension's module; a built bundle yields one module per hook entry. `root` is the
 * extensions folder: cached CommonJS modules under it are forgotten before loading.
 */
export async function loadExtensionModule(extension: DiscoveredExtension, root: string): Promise<LoadedModule[]> {
  let namespace: unknown;
  try {
    forgetCachedModules(root);
    // Node maps a stack frame through a file's source map only when source maps are on (per thread).
    process.setSourceMapsEnabled(true);
    const jiti = createJiti(extension.entry, {
      moduleCache: false,
      fsCache: false,
      interopDefault: true,
      sourceMaps: true,
      transform: transformWithSourceMap,
      virtualModules: virtualModulesFor(extension.entry),
    });
    try {
      namespace = jiti.evalModule(readFileSync(extension.entry, 'utf8'), {
        id: extension.entry,
        filename: extension.entry,
        async: false,
        forceTranspile: true,
      });
    } catch (error) {
      if (!isTopLevelAwait(error)) throw error;
      namespace = await jiti.import(extension.entry);
    }
  } catch (error) {
    throw new ExtensionLoadError(extension.entry, describeLoadFailure(error, dirname(extension.entry)), error);
  }
  const exported = defaultExport(namespace);

  if (!extension.bundleHooks) return [{ name: extension.name, path: extension.entry, exported }];

  const hooks = (exported as { hooks?: unknown } | undefined)?.hooks ?? (namespace as { hooks?: unknown } | undefined)?.hooks;
  if (!Array.isArray(hooks)) {
    throw new ExtensionLoadError(extension.entry, 'a built bundle must export `hooks: [{ name, config }]`');
  }
  const wanted = extension.bundleHooks;
  return hooks
    .filter((hook: { name?: unknown }) => wanted === '*' || wanted.includes(String(hook?.name)))
    .map((hook: { name?: unknown; config?: unknown }) => ({
      name: `${extension.name}/${String(hook.name)}`,
      path: extension.entry,
      exported: hook.config,
    }));
}

const nativeRequire = createRequire(import.meta.url);

function forgetCachedModules(root: string): void {
  const prefix = root.endsWith(sep) ? root : root + sep;
  for (const id of Object.keys(nativeRequire.cache)) {
    if (id.startsWith(prefix)) delete nativeRequire.cache[id];
  }
}

function isTopLevelAwait(error: unknown): boolean {
  return error instanceof SyntaxError && /await is only valid/.test(error.message);
}

function virtualModulesFor(entry: string): Record<string, unknown> {
  const modules: Record<string, unknown> = { hookbridge: sdk };
  const require = createRequire(entry);
  for (const name of PROVIDED_PACKAGES) {
    try {
      require.resolve(name);
    } catch {
      modules[name] = sdk;
    }
  }
  return modules;
}

function defaultExport(namespace: unknown): unknown {
  if (namespace && (typeof namespace === 'object' || typeof namespace === 'function') && 'default' in namespace) {
    const inner = (namespace as { default: unknown }).default;
    // TypeScript compiled to CommonJS wraps once more: `exports.default = fn`.
    if (inner && typeof inner === 'object' && 'default' in inner && Object.keys(inner).length === 1) {
      return (inner as { default: unknown }).default;
    }
    if (inner !== undefined) return inner;
  }
  return namespace;
}

/**
 * The reason, and where: a parse error names file:line:column (jiti puts it on the message's second
 * line, Node on the stack's first), any other error the first frame in the extension's folder.
 */
function describeLoadFailure(error: unknown, folder: string): string {
  if (!(error instanceof Error)) return String(error);
  const [first = error.message, ...rest] = error.message.split('\n');
  const message = first.trim();
  const described = error.name && error.name !== 'Error' ? `${error.name}: ${message}` : message;
  const where = locationIn(rest) ?? nodeSyntaxErrorLocation(error) ?? firstFrameIn(error, folder);
  return where ? `${described} (${where})` : described;
}

/** jiti's parse errors: "ParseError: Unexpected token \n /path/to/index.js:3:14". */
function locationIn(lines: string[]): string | undefined {
  for (const line of lines) {
    const match = /^\s*(\S.*:\d+:\d+)\s*$/.exec(line);
    if (match?.[1]) return match[1];
  }
  return undefined;
}

/** Node's own SyntaxError (a module it compiled) starts its stack with "/path/to/file.js:3". */
function nodeSyntaxErrorLocation(error: Error): string | undefined {
  if (!(error instanceof SyntaxError)) return undefined;
  const first = error.stack?.split('\n')[0] ?? '';
  return /^(?:file:\/\/|\/|[A-Za-z]:\\).*:\d+$/.test(first) ? first : undefined;
}

function firstFrameIn(error: Error, folder: string): string | undefined {
  for (const line of error.stack?.split('\n').slice(1) ?? []) {
    const match = /\(?((?:file:\/\/)?[^\s()]+:\d+:\d+)\)?\s*$/.exec(line.trim());
    if (match?.[1] && match[1].replace(/^file:\/\//, '').startsWith(folder + sep)) return match[1];
  }
  return undefined;
}

type Transform = NonNullable<JitiOptions['transform']>;

/** jiti's own transform (babel), found once. */
let jitiTransform: Transform | undefined;

/**
 * jiti's transform, or none for plain CommonJS (see plainCommonJs); the source map that comes with the
 * code is handed to Node for the file.
 */
const transformWithSourceMap: Transform = (options) => {
  const result = plainCommonJs(options) ?? babel(options);
  if (options.filename && result.code) registerSourceMap(options.filename, result.code, options.async === true);
  return result;
};

function babel(options: Parameters<Transform>[0]): ReturnType<Transform> {
  jitiTransform ??= createJiti(import.meta.url, { fsCache: false, moduleCache: false }).options.transform as Transform;
  return jitiTransform(options);
}

const COMMONJS_PARAMETERS = ['exports', 'require', 'module', '__filename', '__dirname'];
const INLINE_MAP = /\/\/[#@] sourceMappingURL=data:/;
/** What babel's output of a plain CommonJS file differs in: strict mode. */
const STRICT = '"use strict";';

/**
 * A plain CommonJS file (.js or .cjs that compiles as a strict CommonJS function body, with no
 * `import` in it: no ESM syntax, no `import()` for jiti to rewrite) needs nothing of babel but strict
 * mode: it gets that, and a source map for the one line it moves. jiti still runs it (its `require`,
 * module cache and interop, as for any other file); loading babel costs ~0.3 s of CPU on the first
 * transform in each thread, and the main thread and every filter worker load the extensions.
 * Anything else, a syntax error included, goes to babel, which words the error with its location.
 */
function plainCommonJs(options: Parameters<Transform>[0]): ReturnType<Transform> | undefined {
  const { filename, source } = options;
  // A map of its own (a built file) is babel's to merge.
  if (!filename || !/\.c?js$/.test(filename) || options.ts || options.async || source.includes('import') || INLINE_MAP.test(source)) return undefined;
  try {
    compileFunction(STRICT + source, COMMONJS_PARAMETERS, { filename });
    // In a function body `await (x)` calls a function named await; at the top of a module it is
    // top-level await, which the loader hands to Node's import. A static block reserves the word.
    if (/\bawait\b/.test(source)) new Script(`(class { static {\n${source}\n} })`, { filename });
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
  const map = { version: 3, sources: [filename], names: [], mappings: identityMappings(source, STRICT.length) };
  return { code: `${STRICT}${source}\n//# sourceMappingURL=data:application/json;base64,${Buffer.from(JSON.stringify(map)).toString('base64')}` };
}

/**
 * Mappings of a file onto itself, its first line moved `shift` columns right: a segment at each word
 * and each other character that is not a space (Node maps a frame to the segment at or before it, and
 * takes that segment's column as it is).
 */
function identityMappings(source: string, shift: number): string {
  let previousColumn = 0;
  let previousLine = 0;
  return source
    .split(/\r\n|[\n\r\u2028\u2029]/)
    .map((text, line) => {
      const segments: string[] = [];
      let generatedColumn = 0;
      for (const token of text.matchAll(/[\w$]+|\S/g)) {
        const column = token.index;
        const generated = column + (line === 0 ? shift : 0);
        segments.push(encodeVlq(generated - generatedColumn) + encodeVlq(0) + encodeVlq(line - previousLine) + encodeVlq(column - previousColumn));
        generatedColumn = generated;
        previousLine = line;
        previousColumn = column;
      }
      return segments.join(',');
    })
    .join(';');
}

/**
 * The first line of what jiti runs: its module wrapper, then the transformed code (see jiti's
 * eval_evalModule; checked by test/unit/extension-loading.test.ts). Columns on that line are off by
 * its length, which the map is shifted by.
 */
const JITI_WRAPPER = '(function (exports, require, module, __filename, __dirname, jitiImport, jitiESMResolve) { ';
const SOURCE_MAP_COMMENT = /\/\/# sourceMappingURL=data:application\/json;(?:charset=utf-8;)?base64,([A-Za-z0-9+/=]+)\s*$/;

/**
 * Node applies a source map to the frames of a file once it has compiled a module of that name with
 * the map's comment: jiti runs the code through `vm`, which Node does not look at. So a module that
 * holds nothing but the comment is compiled under the file's name, and kept: the map lives as long as
 * its module, and the newest one of a name wins (a reload's).
 */
const sourceMapHolders = new Map<string, unknown>();

function registerSourceMap(filename: string, code: string, async: boolean): void {
  const encoded = SOURCE_MAP_COMMENT.exec(code)?.[1];
  if (!encoded) return;
  try {
    const map = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as { mappings?: unknown };
    if (typeof map.mappings !== 'string') return;
    // jiti comments out a shebang ("// #!...") after the transform.
    const prefix = (async ? 'async ' : '').length + JITI_WRAPPER.length + (code.startsWith('#!') ? 3 : 0);
    map.mappings = shiftFirstLine(map.mappings, prefix);
    const holder = new Module(filename) as Module & { filename: string; _compile(content: string, filename: string): unknown };
    holder.filename = filename;
    holder._compile(`//# sourceMappingURL=data:application/json;base64,${Buffer.from(JSON.stringify(map)).toString('base64')}`, filename);
    sourceMapHolders.set(filename, holder);
  } catch {
    // Without a map, stack traces show the transformed code's lines: worse, never wrong enough to fail a load.
  }
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/**
 * Moves every segment of the first generated line `by` columns right. Only the line's first segment
 * holds an absolute column (the others are relative to it): one VLQ number changes.
 */
export function shiftFirstLine(mappings: string, by: number): string {
  if (mappings === '' || mappings.startsWith(';') || mappings.startsWith(',')) return mappings;
  let value = 0;
  let shift = 0;
  let index = 0;
  for (;;) {
    const digit = BASE64.indexOf(mappings[index++] ?? '');
    if (digit < 0) return mappings;
    value += (digit & 31) * 2 ** shift;
    shift += 5;
    if ((digit & 32) === 0) break;
  }
  const column = value % 2 === 1 ? -Math.floor(value / 2) : value / 2;
  return encodeVlq(column + by) + mappings.slice(index);
}

function encodeVlq(number: number): string {
  let value = number < 0 ? -number * 2 + 1 : number * 2;
  let out = '';
  do {
    let digit = value % 32;
    value = Math.floor(value / 32);
    if (value > 0) digit |= 32;
    out += BASE64[digit];
  } while (value > 0);
  return out;
}
