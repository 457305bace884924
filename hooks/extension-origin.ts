/**
 * Which extension a source file belongs to, from where the extensions were loaded. An error thrown
 * outside every handler (a timer, an event listener, a promise nobody awaited) carries nothing but its
 * stack, a list of file paths: this is how the bridge names the extension behind it.
 *
 * An extension owns its folder under the extensions root (`hooks/<name>/`, `<name>/`,
 * `bundles/<name>/`), its nested `node_modules` included, or only its file when it is one
 * (`hooks/<name>.js`). In a bundle, a hook's own entry file (or a folder that holds only its entry)
 * names that hook; the bundle's other files, and a built bundle's single file, name the bundle.
 *
 * Extensions are remembered after a reload drops them: a timer of theirs may outlive them.
 */
import { realpathSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, sep } from 'node:path';
import type { LoadReport } from './runtime.js';

export interface ExtensionHome {
  /** Absolute path of the folder or file. */
  path: string;
  file: boolean;
  /** The extension's name, or its bundle's. */
  name: string;
}

interface Placed {
  name: string;
  /** Its entry file (a built bundle's hooks share one). */
  path: string;
}

export class ExtensionOrigins {
  readonly #homes = new Map<string, ExtensionHome>();

  /** Takes in the extensions of a load report: those loaded and those that failed but have a name. */
  remember(report: Pick<LoadReport, 'root' | 'loaded' | 'failed'>): void {
    const placed: Placed[] = report.loaded.map((ext) => ({ name: ext.name, path: ext.path }));
    for (const failure of report.failed) if (failure.name !== undefined) placed.push({ name: failure.name, path: failure.path });
    for (const home of extensionHomes(report.root, placed)) {
      this.#homes.set(home.path, home);
      // Node resolves symlinks for the files an entry requires: a linked extensions folder appears in
      // stacks under its real path.
      const real = realPath(home.path);
      if (real !== home.path) this.#homes.set(real, { ...home, path: real });
    }
  }

  /** The extension that `file` (an absolute path) belongs to: the closest home that holds it. */
  extensionOf(file: string): string | undefined {
    let best: ExtensionHome | undefined;
    for (const home of this.#homes.values()) {
      const holds = home.file ? file === home.path : file.startsWith(home.path + sep);
      if (holds && (best === undefined || home.path.length > best.path.length)) best = home;
    }
    return best?.name;
  }
}

/** The folders and files that name each extension (see the comment at the top). */
export function extensionHomes(root: string, extensions: readonly Placed[]): ExtensionHome[] {
  const units = new Map<string, { file: boolean; members: Placed[] }>();
  const homes: ExtensionHome[] = [];
  for (const ext of extensions) {
    const unit = unitOf(root, ext.path);
    if (unit === undefined) {
      homes.push({ path: ext.path, file: true, name: ext.name });
      continue;
    }
    const members = units.get(unit.path)?.members ?? [];
    if (!members.some((m) => m.name === ext.name && m.path === ext.path)) members.push(ext);
    units.set(unit.path, { file: unit.file, members });
  }
  for (const [path, { file, members }] of units) {
    const names = new Set(members.map((m) => m.name));
    if (names.size === 1) {
      homes.push({ path, file, name: members[0]!.name });
      continue;
    }
    homes.push({ path, file, name: bundleName(members, path) });
    for (const member of members) {
      if (members.some((m) => m !== member && m.path === member.path)) continue; // a built bundle's shared file
      homes.push({ path: member.path, file: true, name: member.name });
      const own = dirname(member.path);
      const alone = !members.some((m) => m !== member && m.path.startsWith(own + sep));
      if (own !== path && own.startsWith(path + sep) && alone) homes.push({ path: own, file: false, name: member.name });
    }
  }
  return homes;
}

/** The folder (or file) under the root that one extension, or one bundle, occupies. */
function unitOf(root: string, entry: string): { path: string; file: boolean } | undefined {
  const rel = relative(root, entry);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) return undefined;
  const parts = rel.split(sep);
  const [first, second] = parts as [string, string | undefined];
  if (parts.length === 1 || second === undefined) return { path: entry, file: true };
  if (first === 'hooks' || first === 'bundles') {
    return parts.length === 2 ? { path: entry, file: true } : { path: join(root, first, second), file: false };
  }
  return { path: join(root, first), file: false };
}

/** Bundle hooks are named `<bundle>/<hook>` (a scoped package keeps its slash: `@scope/pkg/hook`). */
function bundleName(members: readonly Placed[], unit: string): string {
  const prefixes = new Set(members.map((m) => m.name.slice(0, Math.max(0, m.name.lastIndexOf('/')))));
  const [only] = prefixes;
  return prefixes.size === 1 && only ? only : basename(unit);
}

function realPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}
