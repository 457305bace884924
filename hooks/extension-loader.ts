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
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { sep } from 'node:path';
import { createJiti } from 'jiti';
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
    const jiti = createJiti(extension.entry, {
      moduleCache: false,
      fsCache: false,
      interopDefault: false,
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
    throw new ExtensionLoadError(extension.entry, describeLoadFailure(error), error);
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

function describeLoadFailure(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const message = error.message.split('\n')[0] ?? error.message;
  return error.name && error.name !== 'Error' ? `${error.name}: ${message}` : message;
}

