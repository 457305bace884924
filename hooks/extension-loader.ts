/**
 * Loads extension modules: JavaScript (ESM or CommonJS) and TypeScript without a build step, through
 * jiti. Every load is fresh, so a reload sees edited files: jiti's synchronous loader transpiles ESM
 * (which Node's own loader would cache for the life of the process), and CommonJS files that Node
 * loads natively are dropped from `require.cache` first. Only a module with top-level await needs
 * Node's native `import()`, and such a module keeps its first version until restart.
 *
 * `hookbridge` always resolves to this running copy; `@directus/extensions-sdk` and `@directus/errors`
 * resolve to hookbridge's own `defineHook` and errors unless the extension's folder has the real
 * packages installed, in which case those are used.
 */
import { createRequire } from 'node:module';
import { dirname, extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createJiti } from 'jiti';
import { HookbridgeError } from './errors.js';
import type { DiscoveredExtension } from './extension-discovery.js';

const here = fileURLToPath(import.meta.url);
/** `hooks/sdk.ts` when running from source (tests), `dist/hooks/sdk.js` when built. */
const sdkPath = join(dirname(here), `sdk${extname(here)}`);

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
      alias: aliasesFor(extension.entry),
    });
    try {
      namespace = jiti(extension.entry);
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

function aliasesFor(entry: string): Record<string, string> {
  const aliases: Record<string, string> = { hookbridge: sdkPath };
  const require = createRequire(entry);
  for (const name of PROVIDED_PACKAGES) {
    try {
      require.resolve(name);
    } catch {
      aliases[name] = sdkPath;
    }
  }
  return aliases;
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

