/**
 * Finds hook extensions under EXTENSIONS_PATH, in every layout the seeds and Directus 9/10 use:
 *
 *   hooks/<name>/index.{js,mjs,cjs,ts,mts,cts}      Directus 9+
 *   hooks/<name>.{js,mjs,cjs,ts,mts,cts}            Directus 9 RC (seed 001)
 *   <name>/package.json, hooks/<name>/package.json  "directus:extension" of type "hook" or "bundle"
 *   bundles/<name>/package.json                     the same, in a bundles folder
 *   bundles/<bundle>/hooks/<name>[/index].js        a bundle without package.json (seeds 000/001)
 *
 * Discovery only reads the file system; it reports what it could not understand instead of throwing,
 * so one broken folder never hides the others.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, extname, join, relative, resolve } from 'node:path';

export const ENTRY_EXTENSIONS = ['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts'] as const;

export interface DiscoveredExtension {
  /** Unique name: the folder or file name, the package name, or `<bundle>/<entry>`. */
  name: string;
  /** Absolute path of the module to load. */
  entry: string;
  layout: 'hooks-folder' | 'hooks-file' | 'package' | 'bundle' | 'bundle-folder';
  /**
   * For a built bundle (`path.api`), the module exports `{ hooks: [{ name, config }] }`: the names of
   * the hook entries to take from it, or `'*'` for all of them.
   */
  bundleHooks?: '*' | string[];
}

export interface DiscoveryProblem {
  path: string;
  reason: string;
}

export interface Discovery {
  root: string;
  /** False when the extensions folder does not exist (not an error: there is nothing to load). */
  exists: boolean;
  extensions: DiscoveredExtension[];
  problems: DiscoveryProblem[];
}

const TYPE_FOLDERS = new Set([
  'hooks',
  'endpoints',
  'interfaces',
  'displays',
  'layouts',
  'modules',
  'panels',
  'operations',
  'bundles',
  'migrations',
  'themes',
  'node_modules',
]);

export async function discoverExtensions(root: string): Promise<Discovery> {
  const absoluteRoot = resolve(root);
  const discovery: Discovery = { root: absoluteRoot, exists: true, extensions: [], problems: [] };
  if (!(await isDirectory(absoluteRoot))) {
    discovery.exists = false;
    return discovery;
  }

  await discoverHooksFolder(join(absoluteRoot, 'hooks'), '', discovery);

  for (const name of await listDirectories(absoluteRoot)) {
    if (TYPE_FOLDERS.has(name)) continue;
    const dir = join(absoluteRoot, name);
    if (await exists(join(dir, 'package.json'))) await discoverPackage(dir, discovery);
  }

  const bundles = join(absoluteRoot, 'bundles');
  for (const name of await listDirectories(bundles)) {
    const dir = join(bundles, name);
    if (await exists(join(dir, 'package.json'))) await discoverPackage(dir, discovery);
    else await discoverHooksFolder(join(dir, 'hooks'), `${name}/`, discovery, 'bundle-folder');
  }

  const seen = new Map<string, string>();
  discovery.extensions = discovery.extensions.filter((ext) => {
    const first = seen.get(ext.name);
    if (first === undefined) {
      seen.set(ext.name, ext.entry);
      return true;
    }
    discovery.problems.push({
      path: ext.entry,
      reason: `another extension is also named "${ext.name}" (${relative(absoluteRoot, first)}); this one is skipped`,
    });
    return false;
  });
  discovery.extensions.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return discovery;
}

async function discoverHooksFolder(
  hooksDir: string,
  prefix: string,
  discovery: Discovery,
  folderLayout: DiscoveredExtension['layout'] = 'hooks-folder',
): Promise<void> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(hooksDir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const dirent of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (dirent.name.startsWith('.')) continue;
    const path = join(hooksDir, dirent.name);
    const isDir = dirent.isDirectory() || (dirent.isSymbolicLink() && (await isDirectory(path)));
    if (isDir) {
      if (await exists(join(path, 'package.json'))) {
        await discoverPackage(path, discovery);
        continue;
      }
      const entry = await findIndex(path);
      if (entry) discovery.extensions.push({ name: prefix + dirent.name, entry, layout: folderLayout });
      else discovery.problems.push({ path, reason: `no index file (${ENTRY_EXTENSIONS.map((e) => `index${e}`).join(', ')}) and no package.json` });
    } else if ((ENTRY_EXTENSIONS as readonly string[]).includes(extname(dirent.name)) && !dirent.name.endsWith('.d.ts')) {
      const name = prefix + basename(dirent.name, extname(dirent.name));
      discovery.extensions.push({ name, entry: path, layout: folderLayout === 'hooks-folder' ? 'hooks-file' : folderLayout });
    }
  }
}

interface ExtensionManifest {
  type?: unknown;
  path?: unknown;
  source?: unknown;
  entries?: unknown;
}

async function discoverPackage(dir: string, discovery: Discovery): Promise<void> {
  const manifestPath = join(dir, 'package.json');
  let pkg: { name?: unknown; 'directus:extension'?: ExtensionManifest };
  try {
    pkg = JSON.parse(await readFile(manifestPath, 'utf8'));
  } catch (error) {
    discovery.problems.push({ path: manifestPath, reason: `unreadable package.json: ${(error as Error).message}` });
    return;
  }
  const manifest = pkg['directus:extension'];
  if (!manifest || typeof manifest !== 'object') {
    discovery.problems.push({ path: manifestPath, reason: 'package.json has no "directus:extension" field' });
    return;
  }
  const name = typeof pkg.name === 'string' && pkg.name !== '' ? pkg.name : basename(dir);
  if (manifest.type === 'hook') {
    const entry = await pickEntry(dir, manifest.path, manifest.source);
    if (entry) discovery.extensions.push({ name, entry, layout: 'package' });
    else discovery.problems.push({ path: manifestPath, reason: missingEntryReason(manifest.path, manifest.source) });
    return;
  }
  if (manifest.type !== 'bundle') return; // other extension types (interfaces, endpoints, ...) are not hooks

  const entries = Array.isArray(manifest.entries) ? (manifest.entries as Array<Record<string, unknown>>) : [];
  const hookEntries = entries.filter((e) => e && e['type'] === 'hook' && typeof e['name'] === 'string');
  if (hookEntries.length === 0) return;
  const apiPath = manifest.path && typeof manifest.path === 'object' ? (manifest.path as Record<string, unknown>)['api'] : undefined;
  const built = typeof apiPath === 'string' ? resolve(dir, apiPath) : undefined;
  if (built && (await exists(built))) {
    discovery.extensions.push({ name, entry: built, layout: 'bundle', bundleHooks: hookEntries.map((e) => e['name'] as string) });
    return;
  }
  // Not built yet: load each hook entry's source (TypeScript needs no build step here).
  for (const hook of hookEntries) {
    const entry = await pickEntry(dir, undefined, hook['source']);
    const hookName = `${name}/${hook['name'] as string}`;
    if (entry) discovery.extensions.push({ name: hookName, entry, layout: 'bundle' });
    else discovery.problems.push({ path: manifestPath, reason: `bundle entry "${hook['name'] as string}": ${missingEntryReason(apiPath, hook['source'])}` });
  }
}

async function pickEntry(dir: string, built: unknown, source: unknown): Promise<string | undefined> {
  for (const candidate of [built, source]) {
    if (typeof candidate !== 'string') continue;
    const path = resolve(dir, candidate);
    if (await exists(path)) return path;
  }
  return findIndex(dir);
}

function missingEntryReason(built: unknown, source: unknown): string {
  const named = [built, source].filter((v): v is string => typeof v === 'string');
  return named.length
    ? `none of its entry files exist (${named.join(', ')}); build the extension or point "path"/"source" at its code`
    : 'it names no entry file ("path" or "source") and has no index file';
}

async function findIndex(dir: string): Promise<string | undefined> {
  for (const ext of ENTRY_EXTENSIONS) {
    const candidate = join(dir, `index${ext}`);
    if (await exists(candidate)) return candidate;
  }
  return undefined;
}

async function listDirectories(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    const names: string[] = [];
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      if (e.isDirectory() || (e.isSymbolicLink() && (await isDirectory(join(dir, e.name))))) names.push(e.name);
    }
    return names.sort();
  } catch {
    return [];
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
