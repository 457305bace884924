#!/usr/bin/env node
/**
 * `hookbridge <command>`. Flags override the environment, which overrides the defaults
 * (see `resolveConfig`). Exit codes: 0 done, 1 failed, 2 bad usage or configuration.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { describeHookError } from '../hooks/errors.js';
import { HookRuntime, type LoadReport } from '../hooks/runtime.js';
import { Bridge } from './bridge.js';
import { ConfigError, resolveConfig, type ConfigOptions } from './config.js';
import { createLogger } from './logger.js';
import { packageInfo } from './package-info.js';


interface CommonFlags {
  extensions?: string;
  logLevel?: string;
  logFormat?: string;
}

function commonOptions(command: Command): Command {
  return command
    .addOption(new Option('-e, --extensions <path>', 'extensions folder').env('EXTENSIONS_PATH'))
    .addOption(new Option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent').env('LOG_LEVEL'))
    .addOption(new Option('--log-format <format>', 'pretty|json (pretty when stdout is a terminal)').env('LOG_FORMAT'));
}

function toConfigOptions(flags: CommonFlags & Record<string, unknown>): ConfigOptions {
  const options: ConfigOptions = {};
  if (flags.extensions !== undefined) options.extensionsPath = flags.extensions;
  if (flags.logLevel !== undefined) options.logLevel = flags.logLevel as ConfigOptions['logLevel'];
  if (flags.logFormat !== undefined) options.logFormat = flags.logFormat as ConfigOptions['logFormat'];
  if (typeof flags['databaseUrl'] === 'string') options.databaseUrl = flags['databaseUrl'];
  if (typeof flags['dataDir'] === 'string') options.dataDir = flags['dataDir'];
  if (flags['port'] !== undefined) options.port = Number(flags['port']);
  if (flags['autoReload'] !== undefined) options.extensionsAutoReload = flags['autoReload'] as boolean;
  return options;
}

export function buildProgram(): Command {
  const program = new Command('hookbridge')
    .description('Directus-style hooks (filter, action, init, schedule) for every write that reaches PostgreSQL.')
    .version(packageInfo().version)
    .showHelpAfterError();

  commonOptions(
    program
      .command('start')
      .description('run the bridge; with no DATABASE_URL (or PGHOST), start an embedded Postgres under ./.hookbridge')
      .addOption(new Option('-d, --database-url <url>', 'Postgres connection URL').env('DATABASE_URL'))
      .addOption(new Option('--data-dir <path>', 'embedded Postgres data folder').env('HOOKBRIDGE_DATA_DIR'))
      .addOption(new Option('-p, --port <port>', 'HTTP port').env('PORT'))
      .option('--auto-reload', 'reload extensions when their files change (env: EXTENSIONS_AUTO_RELOAD=true)'),
  ).action(async (flags) => {
    const config = resolveConfig(toConfigOptions(flags), process.env, { isTTY: process.stdout.isTTY });
    const logger = createLogger(config);
    const bridge = new Bridge(config, logger);
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down');
      bridge.stop().then(
        () => process.exit(0),
        (error) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    await bridge.start();
    if (bridge.embeddedUrl) {
      // The embedded server is a local, throwaway one: its URL (with its password) is what a newcomer needs.
      process.stdout.write(`\nEmbedded Postgres is running. Connect with:\n  psql '${bridge.embeddedUrl}'\n\n`);
    }
  });

  commonOptions(
    program
      .command('extensions')
      .description('load the extensions (without a database) and list their events, or why they failed')
      .option('--json', 'print JSON'),
  ).action(async (flags) => {
    const config = resolveConfig({ logLevel: 'silent', ...toConfigOptions(flags) }, process.env);
    const runtime = new HookRuntime({ extensionsPath: config.extensionsPath, logger: createLogger(config), env: config.env });
    const report = await runtime.reload();
    await runtime.stop();
    process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    process.exitCode = report.failed.length > 0 ? 1 : 0;
  });

  return program;
}

export function formatReport(report: LoadReport): string {
  const lines = [`extensions folder: ${report.root}${report.exists ? '' : ' (not found)'}`];
  for (const ext of report.loaded) {
    lines.push(`  ✓ ${ext.name}  (${ext.path})`);
    for (const event of ext.events) lines.push(`      ${event}`);
    for (const cron of ext.schedules) lines.push(`      schedule ${cron}`);
  }
  for (const failure of report.failed) {
    lines.push(`  ✗ ${failure.name ?? failure.path}  (${failure.path})`, `      ${failure.code}: ${failure.reason}`);
  }
  if (report.loaded.length === 0 && report.failed.length === 0) lines.push('  (no extensions)');
  return `${lines.join('\n')}\n`;
}

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    const described = describeHookError(error);
    process.stderr.write(`hookbridge: ${described.message}\n`);
    process.exit(error instanceof ConfigError ? 2 : 1);
  }
}

function isEntryPoint(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) void main(process.argv);
