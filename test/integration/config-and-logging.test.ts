/**
 * The built CLI reads its settings the way the README says: a flag beats its variable, and an empty
 * variable (`LOG_LEVEL=`, `DATABASE_URL=`) means unset, as if it were not there. (The table of settings
 * itself is checked in test/unit/settings.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { useTestDatabase } from '../support/database.js';
import { tempDir } from '../support/file-tree.js';

const db = useTestDatabase();

describe('empty variables mean unset', () => {
  it('LOG_LEVEL=, LOG_FORMAT=, EXTENSIONS_PATH= and HOOKBRIDGE_DATA_DIR=: status runs on the defaults', async () => {
    const result = await runCli(['status', '--json'], {
      env: { DATABASE_URL: db.url, LOG_LEVEL: '', LOG_FORMAT: '', EXTENSIONS_PATH: '', HOOKBRIDGE_DATA_DIR: '', HOOKBRIDGE_USER_MAP: '' },
    });
    expect(result.stderr).not.toMatch(/E_CONFIG|LOG_LEVEL|LOG_FORMAT|EXTENSIONS_PATH|HOOKBRIDGE_/);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toHaveProperty('extensions');
  });

  it('DATABASE_URL= (PGHOST unset) is no bad URL: the next setting is checked, and the flag wins over PORT', async () => {
    // -p abc stops the start before an embedded Postgres would be set up.
    const result = await runCli(['start', '-p', 'abc'], { env: { DATABASE_URL: '', LOG_LEVEL: '', PORT: '8057' } });
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('hookbridge: PORT: expected an integer from 0 to 65535, got "abc"\n');
  });

  it('PORT= and EXTENSIONS_AUTO_RELOAD=: not taken for bad values', async () => {
    const result = await runCli(['start', '-p', 'abc'], { env: { PORT: '', EXTENSIONS_AUTO_RELOAD: '', FILTER_TIMEOUT_MS: ' ' } });
    expect(result.stderr).toMatch(/^hookbridge: PORT: expected an integer from 0 to 65535, got "abc"/);
  });
});

describe('flags beat variables', () => {
  it('-e beats EXTENSIONS_PATH, and a missing folder names where it came from', async () => {
    const dir = await tempDir();
    try {
      const flag = await runCli(['extensions', '--json', '-e', dir.path], { env: { EXTENSIONS_PATH: '/nonexistent/from-env' } });
      expect(flag.code).toBe(0);
      expect(JSON.parse(flag.stdout).root).toBe(dir.path);
      const env = await runCli(['extensions', '--json'], { env: { EXTENSIONS_PATH: '/nonexistent/from-env' } });
      expect(env.code).toBe(2);
      expect(env.stderr).toContain('(set by the EXTENSIONS_PATH environment variable)');
      const missing = await runCli(['extensions', '--json', '-e', '/nonexistent/from-flag'], { env: { EXTENSIONS_PATH: dir.path } });
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain('/nonexistent/from-flag (set by the -e/--extensions flag)');
    } finally {
      await dir.remove();
    }
  });

  it('--log-level beats a bad LOG_LEVEL', async () => {
    const dir = await tempDir();
    try {
      const result = await runCli(['extensions', '--json', '-e', dir.path, '--log-level', 'warn'], { env: { LOG_LEVEL: 'loud' } });
      expect(result.code).toBe(0);
      const bad = await runCli(['extensions', '--json', '-e', dir.path], { env: { LOG_LEVEL: 'loud' } });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"/);
    } finally {
      await dir.remove();
    }
  });
});

it('start --help lists each flag with its variable', async () => {
  const help = (await runCli(['start', '--help'])).stdout.replace(/\s+/g, ' ');
  const flags: [flag: string, variable: string][] = [
    ['-d, --database-url <url>', 'DATABASE_URL'],
    ['--data-dir <path>', 'HOOKBRIDGE_DATA_DIR'],
    ['-e, --extensions <path>', 'EXTENSIONS_PATH'],
    ['--auto-reload', 'EXTENSIONS_AUTO_RELOAD'],
    ['-p, --port <port>', 'PORT'],
    ['--log-level <level>', 'LOG_LEVEL'],
    ['--log-format <format>', 'LOG_FORMAT'],
  ];
  for (const [flag, variable] of flags) {
    // The flag, its description (which may hold parentheses of its own), then its variable.
    expect(help).toMatch(new RegExp(`${flag.replace(/[-<>]/g, '\\$&')} (?:(?!\\(env:).)*\\(env: ${variable}\\)`));
  }
});
