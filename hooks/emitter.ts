/**
 * The `emitter` of the register context, as in Directus: extensions can emit item events, server
 * events or names of their own, and listen to them. It runs on the same registry as registered hooks,
 * so `emitter.emitFilter('articles.items.create', ...)` runs the same filters a write would.
 */
import type { Logger } from 'pino';
import { dispatchActions, type ActionPolicy } from './action-dispatch.js';
import { parseEmitterEventName, toEventRef } from './event-name.js';
import { runFilterChain } from './filter-chain.js';
import type { ActionEntry, FilterEntry, HandlerEntry, InitEntry } from './register.js';
import type { HookRegistry } from './registry.js';
import type { ActionHandler, FilterHandler, HookContext, HookEmitter, InitHandler } from './types.js';

const EMITTER = '(emitter)';

/** What a handler gets when its caller says nothing: the runtime's `database` and `kysely`, no schema, no one accountable. */
export type ContextDefaults = () => HookContext;

export class RegistryEmitter implements HookEmitter {
  constructor(
    private readonly registry: HookRegistry,
    private readonly logger: Logger,
    private readonly defaults: ContextDefaults,
    private readonly actionPolicy?: ActionPolicy,
  ) {}

  async emitFilter<T>(event: string | string[], payload: T, meta: Record<string, any> = {}, context?: Partial<HookContext> | null): Promise<T> {
    let current = payload;
    for (const name of ([] as string[]).concat(event)) {
      const ref = toEventRef(name);
      current = await runFilterChain(this.registry.filters(ref), ref, current, meta, { ...this.defaults(), ...context });
    }
    return current;
  }

  emitAction(event: string | string[], meta: Record<string, any> = {}, context?: Partial<HookContext> | null): void {
    for (const name of ([] as string[]).concat(event)) {
      const ref = toEventRef(name);
      void dispatchActions(this.registry.actions(ref), ref, meta, { ...this.defaults(), ...context }, this.logger, this.actionPolicy);
    }
  }

  /** Init handlers run one at a time; a failing one is logged and the next still runs. */
  async emitInit(event: string, meta: Record<string, any> = {}): Promise<void> {
    for (const entry of this.registry.inits(event)) {
      try {
        await entry.handler({ ...meta, event });
      } catch (error) {
        this.logger.error({ extension: entry.extension, event, err: error }, 'init handler failed');
      }
    }
  }

  onFilter(event: string, handler: FilterHandler): void {
    this.#add({ kind: 'filter', extension: EMITTER, pattern: parseEmitterEventName(event, 'filter'), style: 'define-hook', handler } satisfies FilterEntry);
  }

  onAction(event: string, handler: ActionHandler): void {
    this.#add({ kind: 'action', extension: EMITTER, pattern: parseEmitterEventName(event, 'action'), style: 'define-hook', handler } satisfies ActionEntry);
  }

  onInit(event: string, handler: InitHandler): void {
    this.#add({ kind: 'init', extension: EMITTER, pattern: parseEmitterEventName(event, 'init'), style: 'define-hook', handler } satisfies InitEntry);
  }

  offFilter(event: string, handler: FilterHandler): void {
    this.registry.removeEmitterEntry(event, 'filter', handler);
  }

  offAction(event: string, handler: ActionHandler): void {
    this.registry.removeEmitterEntry(event, 'action', handler);
  }

  offInit(event: string, handler: InitHandler): void {
    this.registry.removeEmitterEntry(event, 'init', handler);
  }

  #add(entry: HandlerEntry): void {
    this.registry.addEmitterEntry(entry);
  }
}
