#!/usr/bin/env node
/**
 * `hookbridge <command>`. Flags override the environment, which overrides the defaults
 * (see `resolveConfig`). Exit codes: 0 done, 1 failed, 2 bad usage or configuration, 70 `start`
 * stopped after an internal error. Only `start` logs to stdout; every other command logs to stderr,
 * so that its stdout (`--json` above all) is all a script reads.
 */
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import type pg from 'pg';
import { describeHookError } from '../hooks/errors.js';
import type { HookRuntime, LoadReport } from '../hooks/runtime.js';
import { checkExtensionsPath, ConfigError, resolveConfig, type Config, type ConfigOptions } from './config.js';
import type { Status } from './inspect.js';
import { createLogger } from './logger.js';
import { packageInfo } from './package-info.js';
import { flagHelp, SETTINGS, type FlagReach } from './settings.js';

// What a command needs beyond parsing its settings is imported when it runs: the bridge's whole module
// graph (knex, kysely, the hook runtime, ...) takes about a second to load, and `--version`, `status`
// or `doctor` need a fraction of it (scripts and the test suite run them often).
interface CommonFlags {
  extensions?: string;
  logLevel?: string;
  logFormat?: string;
}

/**
 * The flags of the settings a command reaches, declared from the one table (bridge/settings.ts):
 * every command's, those of commands that open a database, and `start`'s own. Commander reads no
 * variable (no `.env()`): resolveConfig alone does, so an empty one means unset everywhere, and
 * --help names each flag's variable in its text.
 */
function commonOptions(command: Command, options: { database?: boolean; start?: boolean } = {}): Command {
  const reaches: FlagReach[] = ['every command', ...(options.database ? ['database commands' as const] : []), ...(options.start ? ['start' as const] : [])];
  for (const setting of SETTINGS) {
    if (setting.flag && reaches.includes(setting.flag.reach)) command.addOption(new Option(setting.flag.flags, flagHelp(setting)));
  }
  return command;
}

/** The settings' flags a command was given, as resolveConfig's options (which checks them, naming the variable). */
function toConfigOptions(flags: CommonFlags & Record<string, unknown>): ConfigOptions {
  const options: Record<string, unknown> = {};
  for (const setting of SETTINGS) {
    if (!setting.flag || !setting.option) continue;
    const value = flags[new Option(setting.flag.flags).attributeName()];
    if (value !== undefined) options[setting.option] = value;
  }
  // An error about the path says it came from the flag.
  if (options['extensionsPath'] !== undefined) options['extensionsPathSource'] = 'flag';
  return options as ConfigOptions;
}

export function buildProgram(): Command {
  const program = new Command('hookbridge')
    .description('Directus-style hooks (filter, action, init, schedule) for every write that reaches PostgreSQL.')
    .version(packageInfo().version)
    .showHelpAfterError()
    // Usage errors end in main() (exit code 2), not in commander's process.exit(1); subcommands inherit this.
    .exitOverride();

  commonOptions(
    program
      .command('start')
      .description('run the bridge; with no DATABASE_URL (or PGHOST), start an embedded Postgres under ./.hookbridge')
      .option('--demo', 'create demo tables (articles, recipes) for the examples, if missing'),
    { database: true, start: true },
  ).action(async (flags) => {
    const config = resolveConfig(toConfigOptions(flags), process.env, { isTTY: process.stdout.isTTY });
    const logger = createLogger(config);
    const [{ Bridge }, { ExtensionOrigins }, { installContainment }] = await Promise.all([
      import('./bridge.js'),
      import('../hooks/extension-origin.js'),
      import('./containment.js'),
    ]);
    const bridge = new Bridge(config, logger);
    // A hook's stray rejection or throw (a timer, an event listener) is logged with its extension's name
    // and never ends the process (filter hooks on worker threads: filter-worker.ts does the same there).
    const origins = new ExtensionOrigins();
    bridge.runtime.onSwap((report) => origins.remember(report));
    let stopping = false;
    let exitCode = 0;
    installContainment({
      logger,
      extensionOf: (file) => origins.extensionOf(file),
      errors: bridge.metrics.hookErrors,
      // A bug of hookbridge's own may have broken the bridge while it keeps its locks: drain and go.
      onOwnBug: () => {
        exitCode = 70;
        shutdown('internal error');
      },
    });
    bridge.onFatal = (error) => {
      logger.fatal({ err: error }, error.message);
      exitCode = 1;
      shutdown((error as { code?: string }).code ?? 'fatal error');
    };
    const shutdown = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now; unfinished action events are delivered again after the next start');
        process.exit(1);
      }
      stopping = true;
      logger.info({ signal }, 'shutting down');
      // Handlers get a grace period inside stop(); past this deadline the process goes anyway (nothing is
      // lost: what was not confirmed is sent again).
      setTimeout(() => {
        logger.error('shutdown took longer than 30 s; exiting');
        process.exit(1);
      }, 30_000).unref();
      bridge.stop().then(
        () => process.exit(exitCode),
        (error) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => shutdown('SIGINT'));
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    if (flags.demo) bridge.beforeHooks = (pool) => createDemoTables(pool);
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
    const config = resolveConfig(toConfigOptions(flags), process.env, { isTTY: process.stderr.isTTY, defaults: { logLevel: 'silent' } });
    checkExtensionsPath(config);
    const { HookRuntime } = await import('../hooks/runtime.js');
    const runtime = new HookRuntime({ extensionsPath: config.extensionsPath, logger: createLogger(config, 'stderr'), env: config.env });
    const report = await runtime.reload();
    await runtime.stop();
    process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    process.exitCode = report.failed.length > 0 ? 1 : 0;
  });

  commonOptions(program.command('init <name>').description('scaffold a TypeScript hook at <extensions>/hooks/<name>/index.ts')).action(
    async (name: string, flags) => {
      const config = resolveConfig(toConfigOptions(flags), process.env, { defaults: { logLevel: 'silent' } });
      if (!/^[a-z0-9][a-z0-9._-]*$/i.test(name)) {
        throw new ConfigError('name', `"${name}" is not a usable folder name (letters, digits, . _ -)`);
      }
      const file = join(config.extensionsPath, 'hooks', name, 'index.ts');
      if (existsSync(file)) throw new ConfigError('name', `${file} already exists`);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, HOOK_TEMPLATE);
      process.stdout.write(`created ${file}\n`);
    },
  );

  commonOptions(
    program
      .command('status')
      .description('the bridges running (role, transport, address), slot and lag, publications, filter triggers, extensions and their events, failed events')
      .option('--json', 'print JSON'),
    { database: true },
  ).action(async (flags) => {
    await withDatabase(flags, async ({ pool, config, logger }) => {
      const [{ HookRuntime }, { formatSlotStatus, guardStatus, status }] = await Promise.all([import('../hooks/runtime.js'), import('./inspect.js')]);
      // Load failures are part of the report: logged too, they would break --json on stdout.
      const runtime = new HookRuntime({ extensionsPath: config.extensionsPath, logger: logger.child({}, { level: 'silent' }), env: config.env });
      const extensions = await runtime.reload();
      await runtime.stop();
      const guards = await guardStatus(pool, config);
      const report = { ...(await status(pool, config)), extensions, guards };
      if (flags.json) return void process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      const lines = [
        `hookbridge schema: ${report.installed ? 'installed' : 'not installed'}`,
        formatSlotStatus(report.slot),
        ...Object.entries(report.publications).map(([name, tables]) => `publication ${name}: ${tables.join(', ') || '(none)'}`),
        `filter triggers: ${report.filterTriggers.map((t) => `${t.table} (${t.operations.join(', ')})`).join(', ') || '(none)'}`,
        ...formatInstances(report),
        `new tables: ${report.newTables.state === 'installed' || report.newTables.atNextStart ? report.newTables.detail : `✗ ${report.newTables.detail}\n    fix: ${report.newTables.fix ?? ''}`}`,
        `failed events waiting for replay: ${report.failedEvents}`,
        `guarded tables: ${guards.guarded.map((g) => `${g.table} (${g.extensions.join(', ')})`).join(', ') || '(none)'}`,
        ...guards.notLoaded.map(
          (g) =>
            `✗ extension ${g.extension} is not loaded (${g.reason}); its tables stay guarded: ` +
            `${g.tables.map((t) => t.collection).join(', ')} (writes its filters covered are refused, its changes held: ${guards.heldEvents} waiting)`,
        ),
      ];
      process.stdout.write(`${lines.join('\n')}\n${formatReport(extensions)}`);
    });
  });

  commonOptions(
    program
      .command('doctor')
      .description('check what the bridge needs from the server (wal_level, privileges, slots, dblink) and say how to fix it')
      .option('--json', 'print JSON'),
    { database: true },
  ).action(async (flags) => {
    await withDatabase(flags, async ({ pool, config }) => {
      const { doctor, guardCheck, guardStatus } = await import('./inspect.js');
      const checks = await doctor(pool, config);
      // Extensions that guard tables and did not load when the bridge last looked (their tables stay guarded).
      checks.push(guardCheck(await guardStatus(pool, config)));
      if (flags.json) process.stdout.write(`${JSON.stringify(checks, null, 2)}\n`);
      else for (const c of checks) process.stdout.write(`${c.ok ? '✓' : '✗'} ${c.name}: ${c.detail}${c.fix ? `\n    fix: ${c.fix}` : ''}\n`);
      process.exitCode = checks.every((c) => c.ok) ? 0 : 1;
    });
  });

  commonOptions(
    program
      .command('types')
      .description('write a TypeScript declaration file of your tables, which types hooks (event names, payloads, metas, kysely)')
      .option('-o, --out <file>', 'the file to write, or - for stdout', 'hookbridge-env.d.ts'),
    { database: true },
  ).action(async (flags) => {
    await withDatabase(flags, async ({ pool, config }) => {
      const { generateDeclarations } = await import('./type-declarations.js');
      // Every table the bridge would watch: all schemas but its own (and the system's).
      const { text, collections } = await generateDeclarations(pool, [config.schema]);
      if (collections.length === 0) process.stderr.write('hookbridge: this database has no tables yet; every collection name stays accepted\n');
      if (flags.out === '-') return void process.stdout.write(text);
      await mkdir(dirname(flags.out), { recursive: true });
      await writeFile(flags.out, text);
      process.stdout.write(`wrote ${flags.out} (${collections.length} collection${collections.length === 1 ? '' : 's'}); include it in your tsconfig\n`);
    });
  });

  commonOptions(
    program
      .command('uninstall')
      .description('remove everything hookbridge installed (triggers, publications, the slot, the hookbridge schema); user data is untouched')
      .option('--yes', 'really do it'),
    { database: true },
  ).action(async (flags) => {
    const config = resolveConfig(toConfigOptions(flags), process.env, { isTTY: process.stderr.isTTY, defaults: { logLevel: 'warn' } });
    const what = `schema "${config.schema}", publications "${config.publicationName}" and "${config.publicationName}_inserts", slot "${config.slotName}", and hookbridge's triggers`;
    if (!flags.yes) {
      // A usage error (exit 2): nothing was touched, nor even connected to.
      process.stderr.write(`hookbridge: uninstall needs --yes: it would remove ${what}\n`);
      process.exitCode = 2;
      return;
    }
    await withDatabase(flags, async ({ pool }) => {
      const [{ readCluster }, { uninstall }] = await Promise.all([import('./inspect.js'), import('./uninstall.js')]);
      // A bridge still running would fail on every step after this and put its objects back at its next sync.
      const { instances } = await readCluster(pool, config.schema);
      if (instances.length > 0) {
        const which = instances.map((i) => `slot ${i.slot}${i.process ? ` (${i.process})` : ''}`).join(', ');
        process.stderr.write(`hookbridge: ${instances.length} bridge(s) still run on this database: ${which}; stop them first (SIGTERM), then uninstall\n`);
        process.exitCode = 1;
        return;
      }
      await uninstall(pool, { schema: config.schema, slotName: config.slotName, publication: config.publicationName });
      process.stdout.write(`removed ${what}\n`);
    });
  });

  commonOptions(
    program.command('forget <extension>').description('stop guarding the tables of an extension removed on purpose (its held changes are closed undelivered)'),
    { database: true },
  ).action(async (extension: string, flags) => {
    await withDatabase(flags, async ({ pool, config, installed }) => {
      if (!installed) {
        process.stderr.write(`hookbridge: ${NOT_INSTALLED}: no guards to forget\n`);
        process.exitCode = 1;
        return;
      }
      const [{ forgetGuards }, { guardStatus }] = await Promise.all([import('./extension-guards.js'), import('./inspect.js')]);
      const forgotten = await forgetGuards(pool, config.schema, extension);
      if (forgotten.tables.length === 0) {
        const remembered = (await guardStatus(pool, config)).guarded.flatMap((g) => g.extensions);
        process.stderr.write(
          `hookbridge: no guards remembered for extension "${extension}" (remembered: ${[...new Set(remembered)].sort().join(', ') || 'none'})\n`,
        );
        process.exitCode = 1;
        return;
      }
      process.stdout.write(
        `forgot extension "${extension}": it no longer guards ${forgotten.tables.join(', ')} (a running bridge follows within seconds); ` +
          `${forgotten.held} change(s) held for it closed undelivered (hookbridge failed list --all)\n`,
      );
    });
  });

  const failed = program.command('failed').description('action events parked after their handler kept failing');
  commonOptions(
    failed
      .command('list')
      .description('list parked events (not yet replayed)')
      .option('--all', 'include events already replayed')
      .option('--json', 'print JSON'),
    { database: true },
  ).action(async (flags) => {
    await withDatabase(flags, async ({ pool, config, installed }) => {
      const { listFailedEvents } = await import('./failed-events.js');
      const events = installed ? await listFailedEvents(pool, config.schema, { includeReplayed: Boolean(flags.all) }) : [];
      if (flags.json) return void process.stdout.write(`${JSON.stringify(events, null, 2)}\n`);
      if (!installed) return void process.stdout.write(`no failed events: ${NOT_INSTALLED}\n`);
      if (events.length === 0) return void process.stdout.write('no failed events\n');
      for (const e of events) {
        process.stdout.write(
          `#${e.id}  ${e.event}  extension=${e.extension}  event-id=${e.eventId}  attempts=${e.attempts}  failed ${e.failedAt.toISOString()}\n` +
            `      ${e.error.code ?? ''} ${e.error.message ?? ''}${e.replayError ? `\n      last replay: ${e.replayError.message}` : ''}${e.replayedAt ? `\n      replayed ${e.replayedAt.toISOString()}` : ''}\n`,
        );
      }
    });
  });
  commonOptions(
    failed.command('replay [ids...]').description('run the handlers of parked events again (all of them, or the given ids); loads the extensions'),
    { database: true },
  ).action(async (ids: string[], flags) => {
    await withDatabase(
      flags,
      async ({ pool, connection, config, logger, installed }) => {
        if (!installed) return void process.stdout.write(`nothing to replay: ${NOT_INSTALLED}\n`);
        const [{ openHookDatabase }, { SchemaReader }, { HookRuntime }, { createServices }, { replayFailedEvents }] = await Promise.all([
          import('./hook-database.js'),
          import('./schema-overview.js'),
          import('../hooks/runtime.js'),
          import('./services/items-service.js'),
          import('./failed-events.js'),
        ]);
        // Handlers get what they get in a bridge: `database`, `kysely`, services and getSchema on the user's settings.
        const hooks = openHookDatabase(connection, { applicationName: 'hookbridge:cli', max: 2, servicesMax: 2, logger });
        const schemaReader = new SchemaReader(pool, [config.schema]);
        const getSchema = () => schemaReader.getSchema();
        const runtime: HookRuntime = new HookRuntime({
          extensionsPath: config.extensionsPath,
          logger,
          env: config.env,
          provide: () => ({
            database: hooks.knex,
            kysely: hooks.kysely,
            getSchema,
            services: createServices({ database: hooks.services, runtime, getSchema }),
          }),
        });
        try {
          await runtime.reload();
          // As a live change: the schema overview in the context, the bridge's timeout (one try: a replay is the retry).
          const results = await replayFailedEvents(pool, config.schema, runtime, {
            ids: ids.length ? ids : undefined,
            context: { schema: await getSchema() },
            policy: { attempts: 1, timeoutMs: config.actionTimeoutMs },
            logger,
          });
          for (const r of results) process.stdout.write(r.ok ? `#${r.id} replayed\n` : `#${r.id} failed again: ${r.error}\n`);
          if (results.length === 0) process.stdout.write('nothing to replay\n');
          process.exitCode = results.every((r) => r.ok) ? 0 : 1;
        } finally {
          await runtime.stop();
          await hooks.close();
        }
      },
      { upgrade: true },
    );
  });

  return program;
}

interface DatabaseContext {
  pool: pg.Pool;
  /** The user's connection settings (their search_path), for what hooks get; `pool` is hookbridge's own. */
  connection: pg.ClientConfig;
  config: Readonly<Config>;
  logger: ReturnType<typeof createLogger>;
  /** Whether hookbridge's schema exists in this database (no command but `start` creates it). */
  installed: boolean;
}

/**
 * Runs a command against the database. Commands only read, and never install hookbridge's schema:
 * a database where no bridge started stays as it is. `upgrade`: a schema that exists is brought up
 * to date first (for commands that write to it, as `start` would).
 */
async function withDatabase(
  flags: CommonFlags & Record<string, unknown>,
  fn: (ctx: DatabaseContext) => Promise<void>,
  options: { upgrade?: boolean } = {},
): Promise<void> {
  const config = resolveConfig(toConfigOptions(flags), process.env, { isTTY: process.stderr.isTTY, defaults: { logLevel: 'warn' } });
  const logger = createLogger(config, 'stderr');
  const [{ default: pg }, { closePool, internalConnection, openDatabase, watchPool }, { migrate }] = await Promise.all([
    import('pg'),
    import('./database.js'),
    import('./migrate.js'),
  ]);
  const opened = await openDatabase(config.database, { owner: false, logger });
  const pool = watchPool(new pg.Pool({ ...internalConnection(opened.connection), max: 2, application_name: 'hookbridge:cli' }), logger);
  try {
    const installed = await isInstalled(pool, config.schema);
    if (installed && options.upgrade) await migrate(pool, { schema: config.schema, logger });
    await fn({ pool, connection: opened.connection, config, logger, installed });
  } finally {
    // Every connection closed before an embedded server this command started stops (see closePool).
    await closePool(pool);
    await opened.release();
  }
}

async function isInstalled(pool: pg.Pool, schema: string): Promise<boolean> {
  const { rows } = await pool.query<{ installed: boolean }>(`select to_regclass(format('%I.migrations', $1::text)) is not null as installed`, [schema]);
  return rows[0]?.installed === true;
}

const NOT_INSTALLED = 'hookbridge is not installed in this database (no bridge has started here)';

const HOOK_TEMPLATE = `import { defineHook } from 'hookbridge';
import { InvalidPayloadError } from 'hookbridge';

export default defineHook(({ filter, action }, { logger }) => {
  // Replace "articles" with your table (a table outside public is "schema.table"). Name the table in
  // the event: a filter puts a trigger on every table it matches, and each write to those tables waits
  // for the bridge. A bare 'items.create' would put one on every table in the database.
  //
  // Runs inside the writer's transaction, before the row is written: return the row to write, or throw.
  filter('articles.items.create', (payload) => {
    if (!payload.title) {
      throw new InvalidPayloadError({ reason: 'An article needs a title' });
    }
    return payload;
  });

  // Runs after commit, at least once per change: make it idempotent (meta.id is stable).
  action('articles.items.create', ({ collection, key, id }) => {
    logger.info({ collection, key, id }, 'created');
  });
});
`;

/** The tables examples/extensions act on, so that a newcomer can psql in and watch hooks fire. */
async function createDemoTables(pool: pg.Pool): Promise<void> {
  await pool.query(`
    create table if not exists articles (
      id serial primary key,
      title text not null,
      body text,
      uuid uuid,
      created_at timestamptz not null default now()
    );
    create table if not exists recipes (
      id serial primary key,
      name text not null,
      synced_with_example boolean not null default false
    );`);
}

/** `status`'s lines about the bridges on the database (never their conninfo: the status has none). */
function formatInstances(report: Pick<Status, 'instances' | 'staleInstances' | 'leaderLockHeldBy'>): string[] {
  const { instances, staleInstances, leaderLockHeldBy } = report;
  const leader = instances.find((i) => i.role === 'leader');
  const lines = [
    instances.length === 0
      ? `bridges: none running${staleInstances.length === 0 ? ' (no bridge has started)' : ''}`
      : `bridges: ${instances.length} running, ${instances.filter((i) => i.serving).length} serving filter calls, ${leader ? `leader: slot ${leader.slot}` : 'no leader (a takeover is under way)'}`,
  ];
  if (leaderLockHeldBy !== null) {
    lines.push(
      `✗ backend pid ${leaderLockHeldBy} holds the leader lock and is no bridge: no bridge can stream actions or run schedules until it lets go` +
        `\n    fix: as a superuser, select pg_terminate_backend(${leaderLockHeldBy})`,
    );
  }
  for (const i of instances) {
    const what = i.starting
      ? 'starting'
      : `${i.transport ?? '?'}, ${i.process ?? '?'}, http ${i.http ?? '(not listening yet)'}, since ${i.since?.toISOString() ?? '?'}`;
    lines.push(`  slot ${i.slot}: ${i.role}, ${i.serving ? 'serving' : 'not serving'}, ${what} (backend pid ${i.backendPid})`);
  }
  for (const s of staleInstances) {
    lines.push(`  slot ${s.slot}: gone (stale row), ${s.transport}, ${s.process ?? '?'}, last published ${s.updatedAt.toISOString()}`);
  }
  return lines;
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
    // Commander has printed its message (and the help) already; --help and --version end here too.
    if (error instanceof CommanderError) process.exit(error.exitCode === 0 ? 0 : 2);
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
