/**
 * The rules the new-table event trigger applies (bridge/new-tables.ts): hook event names turned into
 * LIKE patterns over collections, with the filter operations and actions they want.
 */
import { describe, expect, it } from 'vitest';
import { parseEventName, type EventPattern } from '../../hooks/event-name.js';
import { eventTriggerStatement, exactLike, globToLike, managedPatterns } from '../../bridge/new-tables.js';

const registry = (filters: string[], actions: string[]) => ({
  itemPatterns: (kind: 'filter' | 'action'): EventPattern[] => (kind === 'filter' ? filters : actions).map((name) => parseEventName(name, kind)),
});

describe('globToLike', () => {
  it.each([
    ['articles', 'articles'],
    ['blog_*', 'blog\\_%'],
    ['shop.*', 'shop.%'],
    ['100%_off', '100\\%\\_off'],
    ['back\\slash*', 'back\\\\slash%'],
    ['*', '%'],
  ])('%s → %s', (glob, like) => expect(globToLike(glob)).toBe(like));

  it('leaves * alone in an exact name', () => expect(exactLike('odd*name_1')).toBe('odd*name\\_1'));
});

describe('managedPatterns', () => {
  it('merges hooks per collection glob, with the write operations each covers', () => {
    const patterns = managedPatterns(
      registry(['articles.items.create', 'items.create', 'articles.items.update', 'blog_*.items.*', 'items.read'], ['items.*', 'shop.*.items.truncate']),
      [],
    );
    expect(patterns).toEqual([
      { collectionLike: null, filters: ['create'], actions: ['create', 'delete', 'update'], source: 'items.create, items.*' },
      { collectionLike: 'articles', filters: ['create', 'update'], actions: [], source: 'articles.items.create, articles.items.update' },
      { collectionLike: 'blog\\_%', filters: ['create', 'delete', 'update'], actions: [], source: 'blog_*.items.*' },
      { collectionLike: 'shop.%', filters: [], actions: ['truncate'], source: 'shop.*.items.truncate' },
    ]);
  });

  it('keeps what extensions that are not loaded guarded, by exact name', () => {
    const patterns = managedPatterns(registry([], []), [
      { extension: 'guard', reason: 'E_EXTENSION_LOAD: boom', tables: [{ collection: 'odd_name', filters: ['create', 'delete'], actions: ['update'] }] },
    ]);
    expect(patterns).toEqual([{ collectionLike: 'odd\\_name', filters: ['create', 'delete'], actions: ['update'], source: 'extension guard (not loaded)' }]);
  });
});

describe('eventTriggerStatement', () => {
  it('names the schema in the trigger and the function', () => {
    expect(eventTriggerStatement('hookbridge')).toBe(
      `CREATE EVENT TRIGGER "hookbridge_new_tables" ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE') ` +
        'EXECUTE FUNCTION "hookbridge".guard_new_tables();',
    );
  });
});
