/**
 * The hook runtime the bridge drives: discovers and loads extensions, keeps the registry, runs
 * schedules, reloads on change, and answers the bridge's two questions: "filter this payload" and
 * "dispatch this committed change".
 */
import { basename, dirname, sep } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Knex } from 'knex';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { dispatchActions, type ActionFailure, type ActionPolicy } from './action-dispatch.js';
import { RegistryEmitter } from './emitter.js';
import { describeHookError, exceptions } from './errors.js';
import { formatPattern, type ItemAction } from './event-name.js';
import { discoverExtensions } from './extension-discovery.js';
import { loadExtensionModule } from './extension-loader.js';
import { runFilterChain } from './filter-chain.js';
import { collectHooks, type ExtensionHooks } from './register.js';
import { HookRegistry } from './registry.js';
import { ScheduleRunner } from './schedule.js';
import type { HookContext, RegisterContext } from './types.js';

export interface HookRuntimeOptions {
  extensionsPath: string;
  logger: Logger;
  /** What extensions see as `env` (Directus passes its parsed environment). */
  env?: Readonly<Record<string, unknown>>;
  /**
   * Register-context members the bridge provides once it has a database. Read once per load (each
   * start and reload), not per event: handlers' contexts are built for every row.
   */
  provide?: () => { services?: Record<string, unknown>; database?: Knex; kysely?: Kysely<any>; getSchema?: () => Promise<unknown> };
  /** Watch the extensions folder and reload on change (EXTENSIONS_AUTO_RELOAD). */
  autoReload?: boolean;
  reloadDebounceMs?: number;
  /**
   * How action handlers of events that are no committed change run (emitted events, server events,
   * reads): the bridge gives one try bounded by ACTION_TIMEOUT_MS. Default: one try, no limit.
   */
  actionPolicy?: ActionPolicy;
  /** Whether schedules tick in this process now (a bridge that is not its cluster's leader says no). */
  runSchedules?: () => boolean;
}

export interface LoadedExtension {
  name: string;
  path: string;
  events: string[];
  schedules: string[];
}

export interface FailedExtension {
  name?: string;
  path: string;
  code: string;
  reason: string;
}

export interface LoadReport {
  root: string;
  /** False when the extensions folder does not exist. */
  exists: boolean;
  loaded: LoadedExtension[];
  failed: FailedExtension[];
}

export class HookRuntime {
  readonly registry = new HookRegistry();
  readonly emitter: RegistryEmitter;
  readonly #options: HookRuntimeOptions;
  readonly #logger: Logger;
  #schedules: ScheduleRunner | undefined;
  #watcher: FSWatcher | undefined;
  #reloadTimer: NodeJS.Timeout | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #report: LoadReport | undefined;
  #started = false;
  /** What `provide` gave at the last load. */
  #provided: ReturnType<NonNullable<HookRuntimeOptions['provide']>> = {};
  readonly #swapListeners = new Set<(report: LoadReport, extensions: readonly ExtensionHooks[]) => void>();

  constructor(options: HookRuntimeOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.emitter = new RegistryEmitter(this.registry, this.#logger, () => this.#defaultContext(), options.actionPolicy);
  }

  get report(): LoadReport | undefined {
    return this.#report;
  }

  /** Loads the extensions, starts their schedules and, if asked, the watcher. Safe to call twice. */
  async start(): Promise<LoadReport> {
    if (this.#started) return this.#report as LoadReport;
    this.#started = true;
    const report = await this.reload();
    if (this.#options.autoReload) await this.#watch();
    return report;
  }

  async stop(): Promise<void> {
    this.#started = false;
    clearTimeout(this.#reloadTimer);
    const watcher = this.#watcher;
    this.#watcher = undefined;
    await watcher?.close();
    await this.#queue.catch(() => undefined);
    await this.#schedules?.stop();
    this.#schedules = undefined;
  }

  /**
   * Loads every extension afresh and swaps them in at once; the old handlers and schedules are
   * dropped. Reloads never overlap.
   */
  reload(): Promise<LoadReport> {
    const next = this.#queue.then(() => this.#reloadNow());
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #reloadNow(): Promise<LoadReport> {
    this.#provided = this.#options.provide?.() ?? {};
    const discovery = await discoverExtensions(this.#options.extensionsPath);
    const report: LoadReport = { root: discovery.root, exists: discovery.exists, loaded: [], failed: [] };
    if (!discovery.exists) {
      this.#logger.warn({ path: discovery.root }, 'extensions folder not found; no hooks loaded');
    }

    const collected: ExtensionHooks[] = [];
    for (const extension of discovery.extensions) {
      try {
        for (const module of await loadExtensionModule(extension, discovery.root)) {
          collected.push(await collectHooks(module.exported, module, this.#registerContext(module.name)));
        }
      } catch (error) {
        const described = describeHookError(error);
        // A reload that breaks an extension keeps its last good version: dropping it would take its
        // filter triggers away (writes would pass unfiltered) until someone notices.
        const previous = this.registry.extensions.filter((ext) => ext.name === extension.name || ext.name.startsWith(`${extension.name}/`));
        collected.push(...previous);
        const kept = previous.length ? ' (its previous version stays active)' : '';
        report.failed.push({ name: extension.name, path: extension.entry, code: described.code, reason: described.message + kept });
      }
    }
    // A folder that is still there but no longer discovered as an extension (its index file deleted or
    // being rewritten, a broken package.json) is broken like a load failure, and handled the same way.
    // An extension whose folder is gone is not loaded (its remembered guards hold its tables).
    for (const problem of discovery.problems) {
      const folder = basename(problem.path) === 'package.json' ? dirname(problem.path) : problem.path;
      const previous = this.registry.extensions.filter(
        (ext) => (ext.path === folder || ext.path.startsWith(`${folder}${sep}`)) && !collected.some((c) => c.name === ext.name),
      );
      collected.push(...previous);
      const kept = previous.length ? ` (its previous version stays active: ${previous.map((ext) => ext.name).join(', ')})` : '';
      report.failed.push({ path: problem.path, code: 'E_EXTENSION_DISCOVERY', reason: problem.reason + kept });
    }
    report.loaded = [...collected]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((ext) => ({
        name: ext.name,
        path: ext.path,
        events: ext.handlers.map((h) => `${h.kind} ${formatPattern(h.pattern)}`),
        schedules: ext.schedules.map((s) => s.expression),
      }));

    // What the bridge derives from the loaded set (which tables' changes are held for extensions that
    // are not loaded) changes in the same synchronous step as the registry: a change is never looked
    // up between the two, so it is never both delivered and held, nor neither.
    this.#report = report;
    for (const listener of this.#swapListeners) {
      try {
        listener(report, collected);
      } catch (error) {
        this.#logger.error({ err: error }, 'a listener of the extension swap failed');
      }
    }
    const previousSchedules = this.#schedules;
    this.registry.replaceExtensions(collected);
    await previousSchedules?.stop();
    const schedules = collected.flatMap((ext) => ext.schedules);
    this.#schedules = new ScheduleRunner(schedules, this.#logger, () => this.#options.runSchedules?.() ?? true);
    if (this.#started) this.#schedules.start();

    for (const failure of report.failed) {
      this.#logger.error({ extension: failure.name, path: failure.path, code: failure.code }, `extension not loaded: ${failure.reason}`);
    }
    for (const ext of report.loaded) {
      this.#logger.info({ extension: ext.name, events: ext.events, schedules: ext.schedules }, 'extension loaded');
    }
    return report;
  }

  /**
   * Called synchronously with each new load report and extension set, just before the registry swaps
   * them in (nothing else runs in between). A listener must not throw.
   */
  onSwap(listener: (report: LoadReport, extensions: readonly ExtensionHooks[]) => void): () => void {
    this.#swapListeners.add(listener);
    return () => this.#swapListeners.delete(listener);
  }

  /** Runs the filters for a write; throws `FilterRejection` when one refuses it. */
  runFilters<T>(action: ItemAction, collection: string, payload: T, meta: Record<string, unknown>, context?: Partial<HookContext>): Promise<T> {
    const event = { scope: 'items' as const, action, collection };
    return runFilterChain(this.registry.filters(event), event, payload, { ...meta, collection }, this.context(context));
  }

  /** Runs every action handler of an item event (a service's read, say); returns the failures (already logged). */
  dispatchActions(action: ItemAction, collection: string, meta: Record<string, unknown>, context?: Partial<HookContext>): Promise<ActionFailure[]> {
    const event = { scope: 'items' as const, action, collection };
    return dispatchActions(this.registry.actions(event), event, { ...meta, collection }, this.context(context), this.#logger, this.#options.actionPolicy);
  }

  /** `server.start` / `server.stop` actions; `meta.server` is the HTTP server when there is one. */
  dispatchServerEvent(action: 'start' | 'stop', meta: Record<string, unknown> = {}): Promise<ActionFailure[]> {
    const event = { scope: 'server' as const, action };
    return dispatchActions(
      this.registry.actions(event),
      event,
      { server: undefined, ...meta },
      this.#defaultContext(),
      this.#logger,
      this.#options.actionPolicy,
    );
  }

  runInit(event: string, meta: Record<string, unknown> = {}): Promise<void> {
    return this.emitter.emitInit(event, meta);
  }

  /** A handler's context: what the caller gives, over this runtime's `database` and `kysely`. */
  context(context?: Partial<HookContext> | null): HookContext {
    return { ...this.#defaultContext(), ...context };
  }

  /** A handler's context when its caller gives none: Directus hands every event the default `database`. */
  #defaultContext(): HookContext {
    const provided = this.#provided;
    return {
      database: provided.database ?? withoutDatabase('database'),
      kysely: provided.kysely ?? withoutDatabase('kysely'),
      schema: undefined,
      accountability: null,
    };
  }

  #registerContext(extension: string): RegisterContext {
    const provided = this.#provided;
    return {
      services: provided.services ?? {},
      database: provided.database ?? withoutDatabase('database'),
      kysely: provided.kysely ?? withoutDatabase('kysely'),
      getSchema: (provided.getSchema ?? withoutDatabase('getSchema()')) as () => Promise<unknown>,
      env: this.#options.env ?? {},
      logger: this.#logger.child({ extension }),
      exceptions,
      emitter: this.emitter,
    };
  }

  async #watch(): Promise<void> {
    const root = this.#report?.root ?? this.#options.extensionsPath;
    if (!this.#report?.exists) {
      this.#logger.warn({ path: root }, 'auto reload is on, but the extensions folder does not exist; not watching');
      return;
    }
    const watcher = watch(root, {
      ignoreInitial: true,
      ignored: (path) => /(^|[\\/])(node_modules|\.git)([\\/]|$)/.test(path),
    });
    watcher.on('all', (_event, path) => {
      clearTimeout(this.#reloadTimer);
      this.#reloadTimer = setTimeout(() => {
        this.#logger.info({ path }, 'extensions changed; reloading');
        this.reload().catch((error) => this.#logger.error({ err: error }, 'reload failed'));
      }, this.#options.reloadDebounceMs ?? 200);
    });
    watcher.on('error', (error) => this.#logger.error({ err: error }, 'extension watcher failed'));
    await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
    this.#watcher = watcher;
  }
}

/**
 * Stands in for what a runtime started without a database cannot offer (unit tests, `hookbridge
 * check`): using it in any way says so, while merely reading it off the context, as extensions do at
 * registration, still works.
 */
function withoutDatabase<T>(what: string): T {
  const fail = (): never => {
    throw new Error(`${what} is not available: this hook runtime was started without a database`);
  };
  // Symbols and `then` answer undefined, so that logging or awaiting the stand-in does not throw.
  const get = (_target: unknown, key: string | symbol) => (typeof key === 'symbol' || key === 'then' ? undefined : fail());
  return new Proxy(fail, { get, apply: fail, construct: fail }) as T;
}
