/**
 * The registered hooks, answering "which handlers run for this event, in which order".
 *
 * Order is Directus's. A write emits `items.<action>` and then `<collection>.items.<action>`, so the
 * handlers registered without a collection run first, then those registered with one (`*` included).
 * Within each, as Directus's emitter walks its tree of names: segment by segment, an exact segment
 * before a wildcard (`articles.items.create`, `articles.items.*`, then `*.items.create`). Among equals,
 * registration order: extensions in load order (sorted by name), within an extension the order of its
 * `filter()`/`action()` calls, then handlers added through the emitter. Lookups are cached per
 * concrete event because the write path asks the same question for every row.
 */
import { matchesEvent, type EventPattern, type EventRef, type ItemAction } from './event-name.js';
import type { ActionEntry, ExtensionHooks, FilterEntry, HandlerEntry, InitEntry } from './register.js';

export class HookRegistry {
  #extensions: readonly ExtensionHooks[] = [];
  /** Handlers added at run time through `emitter.onFilter/onAction/onInit`, in the order added. */
  #emitterEntries: HandlerEntry[] = [];
  readonly #cache = new Map<string, readonly HandlerEntry[]>();
  readonly #listeners = new Set<() => void>();

  get extensions(): readonly ExtensionHooks[] {
    return this.#extensions;
  }

  /** Replaces every extension at once, so no event ever sees half of an old and half of a new set. */
  replaceExtensions(extensions: readonly ExtensionHooks[]): void {
    this.#extensions = [...extensions].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.#changed();
  }

  addEmitterEntry(entry: HandlerEntry): void {
    this.#emitterEntries = [...this.#emitterEntries, entry];
    this.#changed();
  }

  removeEmitterEntry(source: string, kind: HandlerEntry['kind'], handler: unknown): void {
    const index = this.#emitterEntries.findIndex((e) => e.kind === kind && e.handler === handler && e.pattern.source === source);
    if (index < 0) return;
    this.#emitterEntries = this.#emitterEntries.filter((_, i) => i !== index);
    this.#changed();
  }

  /** Called after every change (trigger and publication sync listen here). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  filters(event: EventRef): readonly FilterEntry[] {
    return this.lookup('filter', event) as readonly FilterEntry[];
  }

  actions(event: EventRef): readonly ActionEntry[] {
    return this.lookup('action', event) as readonly ActionEntry[];
  }

  inits(name: string): readonly InitEntry[] {
    const key = `init|${name}`;
    let hit = this.#cache.get(key);
    if (!hit) {
      hit = [
        ...this.#extensions.flatMap((ext) => ext.handlers.filter((h) => h.kind === 'init' && h.pattern.action === name)),
        ...this.#emitterEntries.filter((h) => h.kind === 'init' && h.pattern.action === name),
      ];
      this.#cache.set(key, hit);
    }
    return hit as readonly InitEntry[];
  }

  /** Whether a write to `collection` has any handler of `kind` (decides where triggers go). */
  has(kind: 'filter' | 'action', action: ItemAction, collection: string): boolean {
    return this.lookup(kind, { scope: 'items', action, collection }).length > 0;
  }

  /** Every `items` pattern of `kind`, in registration order (what the database is told to watch for new tables). */
  itemPatterns(kind: 'filter' | 'action'): readonly EventPattern[] {
    return [...this.#extensions.flatMap((ext) => ext.handlers), ...this.#emitterEntries]
      .filter((h) => h.kind === kind && h.pattern.scope === 'items')
      .map((h) => h.pattern);
  }

  lookup(kind: 'filter' | 'action', event: EventRef): readonly HandlerEntry[] {
    const key = `${kind}|${event.scope}|${event.action}|${event.collection ?? ''}`;
    let hit = this.#cache.get(key);
    if (!hit) {
      const fromExtensions = this.#extensions.flatMap((ext) => ext.handlers.filter((h) => h.kind === kind && matchesEvent(h.pattern, event)));
      const fromEmitter = this.#emitterEntries.filter((h) => h.kind === kind && matchesEvent(h.pattern, event));
      hit = directusOrder([...fromExtensions, ...fromEmitter]);
      this.#cache.set(key, hit);
    }
    return hit;
  }

  #changed(): void {
    this.#cache.clear();
    for (const listener of this.#listeners) {
      try {
        listener();
      } catch {
        // A listener's failure is its own business; the registry has already changed.
      }
    }
  }
}

/** Sorts (stably) into the order Directus runs handlers of one write in; see the class comment. */
function directusOrder(entries: HandlerEntry[]): HandlerEntry[] {
  const wild = (segment: string | null) => (segment === null || segment.includes('*') ? 1 : 0);
  const rank = (entry: HandlerEntry): [number, number, number] => {
    const { pattern } = entry;
    if (pattern.scope !== 'items') return [0, 0, 0];
    const withCollection = pattern.collection !== null || pattern.anyCollection === true;
    return withCollection ? [1, pattern.anyCollection ? 1 : wild(pattern.collection), wild(pattern.action)] : [0, 0, wild(pattern.action)];
  };
  const ranked = entries.map((entry, index) => ({ entry, index, rank: rank(entry) }));
  ranked.sort((a, b) => a.rank[0] - b.rank[0] || a.rank[1] - b.rank[1] || a.rank[2] - b.rank[2] || a.index - b.index);
  return ranked.map((r) => r.entry);
}
