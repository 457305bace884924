/**
 * One declaration per setting (bridge/settings.ts): the README's configuration table is generated from
 * it, the CLI's flags come from it (naming their variables, reading none themselves), and resolveConfig
 * reads every setting through it, an empty variable counting as unset.
 */
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../bridge/cli.js';
import { resolveConfig } from '../../bridge/config.js';
import { SETTINGS, settingsTable, VALUE_SETTINGS } from '../../bridge/settings.js';
import { readmeTable } from '../support/readme.js';

it("the README's configuration table is the table of settings", () => {
  expect(readmeTable('## Configuration', '| variable | flag | default | meaning |')).toBe(settingsTable());
});

it('every field of the config comes from a declared setting', () => {
  const config = resolveConfig({}, {}, { cwd: '/srv/app' });
  expect(Object.keys(config).sort()).toEqual([...Object.keys(VALUE_SETTINGS), 'database', 'extensionsPathSource', 'env'].sort());
});

describe('empty variables mean unset', () => {
  const defaults = resolveConfig({}, {}, { cwd: '/srv/app' });
  const { env: _env, ...defaultSettings } = defaults;

  it.each(Object.values(VALUE_SETTINGS).map((setting) => setting.env))('%s= (and blank) gives the default', (name) => {
    for (const empty of ['', '  ']) {
      const { env: _ignored, ...settings } = resolveConfig({}, { [name]: empty }, { cwd: '/srv/app' });
      expect(settings).toEqual(defaultSettings);
    }
  });

  it('DATABASE_URL= with PGHOST unset: an embedded Postgres; PGHOST= too', () => {
    expect(resolveConfig({}, { DATABASE_URL: '', PGHOST: '' }, { cwd: '/srv/app' }).database).toEqual({ kind: 'embedded', dataDir: '/srv/app/.hookbridge' });
    expect(resolveConfig({}, { DATABASE_URL: '', HOOKBRIDGE_DATA_DIR: '' }, { cwd: '/srv/app' }).database).toEqual({
      kind: 'embedded',
      dataDir: '/srv/app/.hookbridge',
    });
  });

  it('LOG_LEVEL=, PORT= and EXTENSIONS_PATH= at once: the defaults, the path counted as the default', () => {
    const config = resolveConfig({}, { LOG_LEVEL: '', PORT: '', EXTENSIONS_PATH: '' }, { cwd: '/srv/app' });
    expect(config).toMatchObject({ logLevel: 'info', port: 8056, extensionsPath: '/srv/app/extensions', extensionsPathSource: 'default' });
  });
});

describe('precedence', () => {
  it('an option (a flag) beats the variable, which beats the default', () => {
    const env = { PORT: '9000', LOG_LEVEL: 'warn', EXTENSIONS_PATH: '/from/env' };
    expect(resolveConfig({ port: '9001', logLevel: 'debug', extensionsPath: '/from/flag', extensionsPathSource: 'flag' }, env)).toMatchObject({
      port: 9001,
      logLevel: 'debug',
      extensionsPath: '/from/flag',
      extensionsPathSource: 'flag',
    });
    expect(resolveConfig({}, env)).toMatchObject({ port: 9000, logLevel: 'warn', extensionsPath: '/from/env', extensionsPathSource: 'env' });
    expect(resolveConfig({ extensionsPath: '/in/code' }, env).extensionsPathSource).toBe('option');
  });

  it("a caller's own defaults sit below the environment", () => {
    expect(resolveConfig({}, {}, { defaults: { logLevel: 'warn' } }).logLevel).toBe('warn');
    expect(resolveConfig({}, { LOG_LEVEL: 'debug' }, { defaults: { logLevel: 'warn' } }).logLevel).toBe('debug');
    expect(resolveConfig({ logLevel: 'error' }, { LOG_LEVEL: 'debug' }, { defaults: { logLevel: 'warn' } }).logLevel).toBe('error');
  });

  it('a bad variable is named when no option overrides it, and ignored when one does', () => {
    expect(() => resolveConfig({}, { LOG_LEVEL: 'loud' })).toThrow('LOG_LEVEL: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"');
    expect(resolveConfig({ logLevel: 'warn' }, { LOG_LEVEL: 'loud' }).logLevel).toBe('warn');
  });
});

describe('CLI flags', () => {
  function commands(command: Command): Command[] {
    return [command, ...command.commands.flatMap(commands)];
  }
  const program = buildProgram();
  const byName = (name: string) => commands(program).find((command) => command.name() === name)!;
  const flagged = SETTINGS.filter((setting) => setting.flag);

  it('no flag reads the environment itself (resolveConfig alone does)', () => {
    for (const command of commands(program)) {
      for (const option of command.options) expect(option.envVar, `${command.name()} ${option.flags}`).toBeUndefined();
    }
  });

  it('each command takes the flags of the settings it reaches', () => {
    const flagsOf = (name: string) => byName(name).options.map((option) => option.flags);
    const reaching = (...reaches: string[]) => flagged.filter((setting) => reaches.includes(setting.flag!.reach)).map((setting) => setting.flag!.flags);
    expect(flagsOf('start')).toEqual(expect.arrayContaining(reaching('every command', 'database commands', 'start')));
    expect(flagsOf('start')).toEqual(expect.arrayContaining(['-p, --port <port>', '--auto-reload', '-d, --database-url <url>', '-e, --extensions <path>']));
    expect(flagsOf('status')).toEqual(expect.arrayContaining(reaching('every command', 'database commands')));
    expect(flagsOf('status')).not.toContain('-p, --port <port>');
    expect(flagsOf('extensions')).toEqual(expect.arrayContaining(reaching('every command')));
    expect(flagsOf('extensions')).not.toContain('-d, --database-url <url>');
  });

  it('--help lists each flag with its variable', () => {
    for (const command of commands(program)) {
      const help = command.helpInformation().replace(/\s+/g, ' ');
      for (const option of command.options) {
        const setting = flagged.find((s) => s.flag!.flags === option.flags);
        if (setting)
          expect(help, `${command.name()} --help`).toContain(`${option.flags} ${setting.description.replaceAll('`', '')} (env: ${setting.env.join(', ')})`);
      }
    }
    expect(byName('start').helpInformation().replace(/\s+/g, ' ')).toMatch(/-p, --port <port> HTTP port .*\(env: PORT\)/);
  });
});
