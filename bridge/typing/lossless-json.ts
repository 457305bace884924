/**
 * JSON as Postgres prints it (`to_json` of a row), read without losing a digit: numbers stay the text
 * Postgres wrote (`JsonNumber`), so an int8 above 2^53 or a numeric with 30 digits reaches the typing
 * step intact, which then decides, per column type, what each becomes. `JSON.parse` would have
 * rounded them before anyone could ask. Strings, objects and arrays come out as `JSON.parse` makes them
 * (objects without a prototype, so a column named `__proto__` is a plain key).
 */

/** A number token exactly as written. */
export class JsonNumber {
  constructor(readonly text: string) {}
}

/**
 * A value nested deeper than the parser descends (only a json document can be), parsed by JSON.parse:
 * numbers inside it follow plain JSON semantics, which is the json typing anyway.
 */
export class PlainJson {
  constructor(
    readonly value: unknown,
    readonly raw: string,
  ) {}
}

export type LosslessValue = null | boolean | string | JsonNumber | PlainJson | LosslessValue[] | { [key: string]: LosslessValue };

/** How deep the parser descends itself; deeper values go to JSON.parse (its own limit is far higher than Postgres'). */
const MAX_DEPTH = 200;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

export function parseLosslessJson(text: string): LosslessValue {
  let i = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at position ${i} of the JSON text (${JSON.stringify(text.slice(Math.max(0, i - 20), i + 20))})`);
  };
  const skipSpace = () => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else return;
    }
  };
  const readString = (): string => {
    const start = ++i;
    let escaped = false;
    for (;;) {
      const end = text.indexOf('"', i);
      if (end < 0) fail('unterminated string');
      // A quote preceded by an odd number of backslashes is part of the string.
      let slashes = 0;
      for (let k = end - 1; k >= start && text.charCodeAt(k) === BACKSLASH; k--) slashes++;
      if (slashes % 2 === 1) {
        escaped = true;
        i = end + 1;
        continue;
      }
      i = end + 1;
      const body = text.slice(start, end);
      return escaped || body.includes('\\') ? (JSON.parse(`"${body}"`) as string) : body;
    }
  };
  /** The end of the object or array starting at i (strings skipped), without recursion. */
  const endOfNested = (): number => {
    let depth = 0;
    for (let k = i; k < text.length; k++) {
      const c = text.charCodeAt(k);
      if (c === QUOTE) {
        for (k++; k < text.length; k++) {
          const q = text.charCodeAt(k);
          if (q === BACKSLASH) k++;
          else if (q === QUOTE) break;
        }
      } else if (c === 0x7b || c === 0x5b) depth++;
      else if (c === 0x7d || c === 0x5d) {
        depth--;
        if (depth === 0) return k + 1;
      }
    }
    return fail('unterminated object or array');
  };
  const value = (depth: number): LosslessValue => {
    skipSpace();
    const c = text.charCodeAt(i);
    if (c === QUOTE) return readString();
    if ((c === 0x7b || c === 0x5b) && depth > MAX_DEPTH) {
      const end = endOfNested();
      const raw = text.slice(i, end);
      i = end;
      return new PlainJson(JSON.parse(raw), raw);
    }
    if (c === 0x7b) {
      i++;
      const object = Object.create(null) as { [key: string]: LosslessValue };
      skipSpace();
      if (text.charCodeAt(i) === 0x7d) {
        i++;
        return object;
      }
      for (;;) {
        skipSpace();
        if (text.charCodeAt(i) !== QUOTE) fail('expected a key');
        const key = readString();
        skipSpace();
        if (text.charCodeAt(i) !== 0x3a) fail('expected ":"');
        i++;
        object[key] = value(depth + 1);
        skipSpace();
        const next = text.charCodeAt(i++);
        if (next === 0x7d) return object;
        if (next !== 0x2c) fail('expected "," or "}"');
      }
    }
    if (c === 0x5b) {
      i++;
      const array: LosslessValue[] = [];
      skipSpace();
      if (text.charCodeAt(i) === 0x5d) {
        i++;
        return array;
      }
      for (;;) {
        array.push(value(depth + 1));
        skipSpace();
        const next = text.charCodeAt(i++);
        if (next === 0x5d) return array;
        if (next !== 0x2c) fail('expected "," or "]"');
      }
    }
    if (text.startsWith('true', i)) {
      i += 4;
      return true;
    }
    if (text.startsWith('false', i)) {
      i += 5;
      return false;
    }
    if (text.startsWith('null', i)) {
      i += 4;
      return null;
    }
    const match = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
    match.lastIndex = i;
    const found = match.exec(text);
    if (!found) return fail('unexpected character');
    i += found[0].length;
    return new JsonNumber(found[0]);
  };
  const result = value(0);
  skipSpace();
  if (i !== text.length) fail('unexpected text after the value');
  return result;
}

/** Plain JSON semantics for a value read losslessly: what `JSON.parse` would have made of it. */
export function toPlainJson(value: LosslessValue): unknown {
  if (value instanceof JsonNumber) return Number(value.text);
  if (value instanceof PlainJson) return value.value;
  if (Array.isArray(value)) return value.map(toPlainJson);
  if (value !== null && typeof value === 'object') {
    const object: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      const item = toPlainJson(value[key] as LosslessValue);
      // As JSON.parse does: an own property, never the prototype.
      if (key === '__proto__') Object.defineProperty(object, key, { value: item, enumerable: true, writable: true, configurable: true });
      else object[key] = item;
    }
    return object;
  }
  return value;
}
