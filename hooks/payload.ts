/**
 * The `Payload` helper that Directus 8 filter hooks receive and return: the row being written plus
 * read-only attributes (`collection_name`, …), with dot-notation access into nested objects.
 *
 * The caller's object is never changed. The top level is copied at construction, and writes below
 * it copy each object on the path the first time they touch it, so a filter that throws half-way
 * leaves the row the writer sent exactly as it was. Values read with `get` are still the caller's
 * own nested objects: mutating those directly bypasses this protection.
 */

type Container = Record<string, unknown> | unknown[];

export class Payload<T extends Record<string, unknown> = Record<string, unknown>> {
  #data: T;
  readonly #attributes: Readonly<Record<string, unknown>>;
  // Objects this payload created or copied, which it may therefore change in place.
  #owned = new WeakSet<object>();

  constructor(data: T, attributes: Record<string, unknown> = {}) {
    this.#data = this.#adopt(data);
    this.#attributes = { ...attributes };
  }

  /** A Payload from any copy of this module: checked by shape, since `instanceof` fails across copies. */
  static isPayload(value: unknown): value is Payload {
    if (typeof value !== 'object' || value === null) return false;
    const candidate = value as { getData?: unknown; attribute?: unknown };
    return typeof candidate.getData === 'function' && typeof candidate.attribute === 'function';
  }

  /** The current data, not a copy: what the filter hands on to the write. */
  getData(): T {
    return this.#data;
  }

  attribute(key: string): unknown {
    return hasOwn(this.#attributes, key) ? this.#attributes[key] : undefined;
  }

  /** `defaultValue` stands in for missing keys and `undefined` values, never for `null`. */
  get(key: string, defaultValue?: unknown): unknown {
    const found = this.#lookup(key);
    return found.exists ? found.value : defaultValue;
  }

  /** `null` counts as present; `undefined` does not. */
  has(key: string): boolean {
    return this.#lookup(key).exists;
  }

  /**
   * Dot notation creates missing objects on the way (always plain objects, even for numeric
   * segments) and replaces anything on the path that cannot hold a key, such as a string or a Date.
   */
  set(key: string, value: unknown): this {
    const path = this.#pathOf(key);
    const last = path.at(-1) as string;
    let node: Container = this.#data;
    for (const segment of path.slice(0, -1)) {
      const current = readOwn(node, segment);
      const next: Container = isContainer(current) ? this.#adopt(current) : this.#adopt({});
      if (next !== current) write(node, segment, next);
      node = next;
    }
    write(node, last, value);
    return this;
  }

  /** Missing paths are a no-op. An array element is spliced out, so later indexes shift down. */
  remove(key: string): this {
    const path = this.#pathOf(key);
    const last = path.at(-1) as string;
    const parents: Container[] = [this.#data];
    for (const segment of path.slice(0, -1)) {
      const next = readOwn(parents.at(-1) as Container, segment);
      if (!isContainer(next)) return this;
      parents.push(next);
    }
    if (!hasOwn(parents.at(-1) as Container, last)) return this;

    // Only now that the key is known to exist, copy the objects on the way down to it.
    let node: Container = this.#data;
    for (const segment of path.slice(0, -1)) {
      const current = readOwn(node, segment) as Container;
      const next = this.#adopt(current);
      if (next !== current) write(node, segment, next);
      node = next;
    }
    if (Array.isArray(node) && isIndex(last)) node.splice(Number(last), 1);
    else delete (node as Record<string, unknown>)[last];
    return this;
  }

  isEmpty(): boolean {
    return Object.keys(this.#data).length === 0;
  }

  /** Takes a shallow copy of `newData`, as the constructor does. */
  replace(newData: T): this {
    this.#owned = new WeakSet();
    this.#data = this.#adopt(newData);
    return this;
  }

  clear(): this {
    return this.replace({} as T);
  }

  toJSON(): T {
    return this.#data;
  }

  /**
   * The segments of `key`. A top-level key that itself contains dots wins over the nested path, so
   * `{ 'a.b': 1 }` answers to `'a.b'`; deeper levels are always split on every dot.
   */
  #pathOf(key: string): string[] {
    return hasOwn(this.#data, key) ? [key] : key.split('.');
  }

  #lookup(key: string): { exists: boolean; value?: unknown } {
    let node: unknown = this.#data;
    for (const segment of this.#pathOf(key)) {
      if (!isObjectLike(node) || !hasOwn(node, segment)) return { exists: false };
      node = (node as Record<string, unknown>)[segment];
    }
    return node === undefined ? { exists: false } : { exists: true, value: node };
  }

  /** Returns `value` itself if this payload already owns it, otherwise an owned shallow copy. */
  #adopt<C extends Container>(value: C): C {
    if (this.#owned.has(value)) return value;
    const copy = (Array.isArray(value) ? [...value] : copyObject(value)) as C;
    this.#owned.add(copy);
    return copy;
  }
}

/** Own keys only, so `constructor` or `__proto__` never resolve to something inherited. */
function hasOwn(target: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(target, key);
}

function readOwn(node: Container, key: string): unknown {
  return hasOwn(node, key) ? (node as Record<string, unknown>)[key] : undefined;
}

function write(node: Container, key: string, value: unknown): void {
  // A plain assignment to `__proto__` would swap the prototype instead of storing a field.
  if (key === '__proto__') {
    Object.defineProperty(node, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    (node as Record<string, unknown>)[key] = value;
  }
}

function copyObject(value: Record<string, unknown>): Record<string, unknown> {
  const copy: Record<string, unknown> = Object.create(Object.getPrototypeOf(value) as object | null);
  for (const key of Object.keys(value)) write(copy, key, value[key]);
  return copy;
}

function isObjectLike(value: unknown): value is object {
  return typeof value === 'object' && value !== null;
}

/** Plain objects and arrays: the only values dot-notation writes descend into. */
function isContainer(value: unknown): value is Container {
  if (Array.isArray(value)) return true;
  if (!isObjectLike(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function isIndex(key: string): boolean {
  return /^(?:0|[1-9]\d*)$/.test(key);
}
