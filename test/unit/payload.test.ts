import { describe, it, expect } from 'vitest';
import { Payload } from '../../hooks/payload.js';

const sample = () => ({
  title: 'Hello',
  empty: null,
  gone: undefined,
  zero: 0,
  blank: '',
  flag: false,
  data: { email: 'a@b.c', profile: { name: 'Ada' } },
  items: [{ id: 1 }, { id: 2 }, { id: 3 }],
  'a.b': 'literal',
  a: { b: 'nested' },
  ключ: { 값: '🙂' },
});

describe('Payload reads', () => {
  const cases: [string, unknown, boolean][] = [
    ['title', 'Hello', true],
    ['empty', null, true],
    ['gone', undefined, false],
    ['zero', 0, true],
    ['blank', '', true],
    ['flag', false, true],
    ['data.email', 'a@b.c', true],
    ['data.profile.name', 'Ada', true],
    ['data.profile.age', undefined, false],
    ['data.email.length', undefined, false],
    ['items.1.id', 2, true],
    ['items.9.id', undefined, false],
    ['a.b', 'literal', true],
    ['ключ.값', '🙂', true],
    ['missing', undefined, false],
    ['missing.deeper', undefined, false],
    ['constructor', undefined, false],
    ['toString', undefined, false],
    ['__proto__', undefined, false],
    ['data.constructor', undefined, false],
    ['', undefined, false],
  ];

  it.each(cases)('get/has(%j)', (key, value, present) => {
    const payload = new Payload(sample());
    expect(payload.get(key)).toBe(value);
    expect(payload.has(key)).toBe(present);
  });

  it('uses the default for missing keys and undefined values, never for null', () => {
    const payload = new Payload(sample());
    expect(payload.get('missing', 'dflt')).toBe('dflt');
    expect(payload.get('gone', 'dflt')).toBe('dflt');
    expect(payload.get('data.nope', 7)).toBe(7);
    expect(payload.get('empty', 'dflt')).toBeNull();
    expect(payload.get('zero', 5)).toBe(0);
  });

  it('reads nested keys through a nested path when no literal top-level key exists', () => {
    const payload = new Payload({ x: { 'y.z': 1, y: { z: 2 } } });
    // Only the top level is checked for a literal dotted key.
    expect(payload.get('x.y.z')).toBe(2);
  });

  it('exposes attributes', () => {
    const payload = new Payload({}, { collection_name: 'articles', keys: [1] });
    expect(payload.attribute('collection_name')).toBe('articles');
    expect(payload.attribute('keys')).toEqual([1]);
    expect(payload.attribute('missing')).toBeUndefined();
    expect(payload.attribute('constructor')).toBeUndefined();
    expect(new Payload({}).attribute('collection_name')).toBeUndefined();
  });

  it('getData and toJSON return the current data', () => {
    const payload = new Payload({ a: 1 });
    payload.set('b', 2);
    expect(payload.getData()).toEqual({ a: 1, b: 2 });
    expect(payload.toJSON()).toBe(payload.getData());
    expect(JSON.stringify({ row: payload })).toBe('{"row":{"a":1,"b":2}}');
  });
});

describe('Payload writes', () => {
  const cases: [string, Record<string, unknown>, string, unknown, Record<string, unknown>][] = [
    ['a top-level key', { a: 1 }, 'b', 2, { a: 1, b: 2 }],
    ['an overwrite', { a: 1 }, 'a', 'x', { a: 'x' }],
    ['a null value', { a: 1 }, 'a', null, { a: null }],
    ['a nested key', { data: { email: 'old' } }, 'data.email', 'new', { data: { email: 'new' } }],
    ['a missing parent chain', {}, 'a.b.c', 1, { a: { b: { c: 1 } } }],
    ['a parent that is a string', { a: 'text' }, 'a.b', 1, { a: { b: 1 } }],
    ['a parent that is null', { a: null }, 'a.b', 1, { a: { b: 1 } }],
    ['an array element', { items: [{ id: 1 }, { id: 2 }] }, 'items.1.id', 9, { items: [{ id: 1 }, { id: 9 }] }],
    ['a numeric segment on a missing parent', {}, 'list.0', 'x', { list: { 0: 'x' } }],
    ['a literal dotted key that exists', { 'a.b': 1 }, 'a.b', 2, { 'a.b': 2 }],
    ['unicode keys', {}, 'ключ.값', '🙂', { ключ: { 값: '🙂' } }],
  ];

  it.each(cases)('set %s', (_label, data, key, value, expected) => {
    const payload = new Payload(data);
    expect(payload.set(key, value)).toBe(payload);
    expect(payload.getData()).toEqual(expected);
    expect(payload.get(key)).toBe(value === undefined ? undefined : value);
  });

  it('replaces a Date on the path rather than writing into it', () => {
    const payload = new Payload<Record<string, unknown>>({ at: new Date(0) });
    payload.set('at.year', 1970);
    expect(payload.getData()).toEqual({ at: { year: 1970 } });
  });

  it('setting undefined makes the key absent for has/get', () => {
    const payload = new Payload({ a: 1 });
    payload.set('a', undefined);
    expect(payload.has('a')).toBe(false);
    expect(payload.get('a', 'd')).toBe('d');
  });

  it('stores __proto__ as a plain field without touching any prototype', () => {
    const payload = new Payload<Record<string, unknown>>({});
    payload.set('__proto__.polluted', 'yes');
    payload.set('x.__proto__', { polluted: 'yes' });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(Object.getPrototypeOf(payload.getData())).toBe(Object.prototype);
    expect(payload.get('__proto__.polluted')).toBe('yes');
    expect(payload.has('x.__proto__')).toBe(true);
  });

  // The last column: whether `has(key)` is still true afterwards.
  const removals: [string, Record<string, unknown>, string, Record<string, unknown>, boolean][] = [
    ['a top-level key', { a: 1, b: 2 }, 'a', { b: 2 }, false],
    ['a null-valued key', { a: null, b: 2 }, 'a', { b: 2 }, false],
    ['a nested key', { data: { email: 'x', name: 'y' } }, 'data.email', { data: { name: 'y' } }, false],
    ['a missing key', { a: 1 }, 'nope', { a: 1 }, false],
    ['a missing nested key', { a: { b: 1 } }, 'a.c.d', { a: { b: 1 } }, false],
    ['a key under a primitive', { a: 'text' }, 'a.length', { a: 'text' }, false],
    // Later elements shift down, so index 1 now holds what was index 2.
    ['an array element', { items: ['x', 'y', 'z'] }, 'items.1', { items: ['x', 'z'] }, true],
    ['the last array element', { items: ['x', 'y'] }, 'items.1', { items: ['x'] }, false],
    ['a literal dotted key', { 'a.b': 1, a: { b: 2 } }, 'a.b', { a: { b: 2 } }, true],
    ['an inherited name', { a: 1 }, 'toString', { a: 1 }, false],
  ];

  it.each(removals)('remove %s', (_label, data, key, expected, stillHas) => {
    const payload = new Payload(data);
    expect(payload.remove(key)).toBe(payload);
    expect(payload.getData()).toEqual(expected);
    expect(payload.has(key)).toBe(stillHas);
  });

  it('replace, clear and isEmpty', () => {
    const payload = new Payload<Record<string, unknown>>({ a: 1 });
    expect(payload.isEmpty()).toBe(false);
    const next = { b: 2 };
    expect(payload.replace(next)).toBe(payload);
    expect(payload.getData()).toEqual({ b: 2 });
    payload.set('c', 3);
    expect(next).toEqual({ b: 2 });
    expect(payload.clear()).toBe(payload);
    expect(payload.isEmpty()).toBe(true);
    expect(payload.getData()).toEqual({});
    expect(new Payload({}).isEmpty()).toBe(true);
    expect(new Payload({ x: undefined }).isEmpty()).toBe(false);
  });

  it('chains', () => {
    const data = new Payload<Record<string, unknown>>({ a: 1 }).set('b.c', 2).remove('a').set('d', null).getData();
    expect(data).toEqual({ b: { c: 2 }, d: null });
  });
});

describe('Payload leaves the caller’s object alone', () => {
  it('copies the top level at construction', () => {
    const original = { title: 'x', data: { email: 'a' } };
    const payload = new Payload(original);
    payload.set('title', 'y').set('extra', 1).remove('data');
    expect(original).toEqual({ title: 'x', data: { email: 'a' } });
  });

  it('copies nested objects and arrays on write, once', () => {
    const nested = { email: 'a', deep: { n: 1 } };
    const items = [{ id: 1 }, { id: 2 }];
    const original = { data: nested, items };
    const payload = new Payload<Record<string, unknown>>(original);
    payload.set('data.email', 'b').set('data.deep.n', 2).set('items.0.id', 10).remove('items.1');
    payload.set('data.other', true);
    expect(nested).toEqual({ email: 'a', deep: { n: 1 } });
    expect(items).toEqual([{ id: 1 }, { id: 2 }]);
    expect(payload.getData()).toEqual({ data: { email: 'b', deep: { n: 2 }, other: true }, items: [{ id: 10 }] });
  });

  it('leaves the original untouched when a filter throws half-way', () => {
    const original = { data: { email: 'a' } };
    const filter = (p: Payload) => {
      p.set('data.email', 'changed');
      throw new Error('rejected');
    };
    expect(() => filter(new Payload(original))).toThrow('rejected');
    expect(original.data.email).toBe('a');
  });

  it('works with frozen input', () => {
    const original = Object.freeze({ data: Object.freeze({ email: 'a' }) });
    const payload = new Payload<Record<string, unknown>>(original);
    payload.set('data.email', 'b').remove('data.email').set('n', 1);
    expect(payload.getData()).toEqual({ data: {}, n: 1 });
  });

  it('does not copy attributes by reference at the top level', () => {
    const attributes = { collection_name: 'a' };
    const payload = new Payload({}, attributes);
    attributes.collection_name = 'b';
    expect(payload.attribute('collection_name')).toBe('a');
  });
});

describe('Payload.isPayload', () => {
  const foreign = { getData: () => ({}), attribute: () => undefined };
  const cases: [string, unknown, boolean][] = [
    ['a Payload', new Payload({}), true],
    ['a Payload from another copy of the module', foreign, true],
    ['plain data', { a: 1 }, false],
    ['an object with only getData', { getData: () => ({}) }, false],
    ['an object with non-function members', { getData: 1, attribute: 2 }, false],
    ['null', null, false],
    ['undefined', undefined, false],
    ['a string', 'payload', false],
  ];

  it.each(cases)('%s', (_label, value, expected) => {
    expect(Payload.isPayload(value)).toBe(expected);
  });
});
