/**
 * `parseEventName` (event-name.ts) as a type: the same steps in the same order, on template literal
 * types, so that a literal name the runtime would refuse fails to compile, with the runtime's reason.
 * test/unit/hook-types.test.ts holds the two to the same verdict, action and collection on a corpus
 * of names.
 */
import type { InitEvent, ItemAction } from './event-name.js';

/** What `String.prototype.trim` removes. */
type Whitespace =
  | ' '
  | '\t'
  | '\n'
  | '\v'
  | '\f'
  | '\r'
  | '\u00a0'
  | '\u1680'
  | '\u2000'
  | '\u2001'
  | '\u2002'
  | '\u2003'
  | '\u2004'
  | '\u2005'
  | '\u2006'
  | '\u2007'
  | '\u2008'
  | '\u2009'
  | '\u200a'
  | '\u2028'
  | '\u2029'
  | '\u202f'
  | '\u205f'
  | '\u3000'
  | '\ufeff';
type TrimStart<S extends string> = S extends `${Whitespace}${infer R}` ? TrimStart<R> : S;
type TrimEnd<S extends string> = S extends `${infer R}${Whitespace}` ? TrimEnd<R> : S;
export type Trim<S extends string> = TrimEnd<TrimStart<S>>;

type Split<S extends string> = S extends `${infer Head}.${infer Tail}` ? [Head, ...Split<Tail>] : [S];
type Join<T extends readonly string[]> = T extends [infer Only extends string]
  ? Only
  : T extends [infer Head extends string, ...infer Tail extends string[]]
    ? `${Head}.${Join<Tail>}`
    : '';
type HasEmptySegment<T extends readonly string[]> = '' extends Trim<T[number]> ? true : false;

/** `*` matches any run of characters (globToRegExp). */
type GlobMatches<Pattern extends string, Value extends string> = Pattern extends `${infer Head}*${infer Tail}`
  ? Value extends `${Head}${infer Rest}`
    ? StarMatches<Tail, Rest>
    : false
  : Pattern extends Value
    ? true
    : false;
type StarMatches<Tail extends string, Value extends string> =
  GlobMatches<Tail, Value> extends false ? (Value extends `${string}${infer Rest}` ? StarMatches<Tail, Rest> : false) : true;
/** The members of `Values` that `Pattern` matches. */
export type Matching<Pattern extends string, Values extends string> = Values extends unknown
  ? true extends GlobMatches<Pattern, Values>
    ? Values
    : never
  : never;

type IsActionPattern<S extends string> = S extends ItemAction
  ? true
  : S extends `${string}*${string}`
    ? [Matching<S, ItemAction>] extends [never]
      ? false
      : true
    : false;

type ItemWord = 'items' | 'item';
type ActionList = 'create, update, delete, read, query, truncate';

export interface ParsedItems<Kind extends 'filter' | 'action', Action extends string, Collection extends string | null> {
  ok: true;
  scope: 'items';
  kind: Kind;
  action: Action;
  /** `null`: every collection. */
  collection: Collection;
}
export interface ParsedServer<Action extends string> {
  ok: true;
  scope: 'server';
  action: Action;
}
export interface Refused<Reason extends string> {
  ok: false;
  reason: Reason;
}
export type Parsed = ParsedItems<'filter' | 'action', string, string | null> | ParsedServer<string> | Refused<string>;

type Items<Kind extends 'filter' | 'action', Action extends string, Collection extends string | null> = ParsedItems<
  Kind,
  Action,
  Collection extends '*' ? null : Collection
>;
type UnknownAction<Action extends string> = Refused<`unknown action "${Action}"; item actions are ${ActionList}`>;

/** `parseEventName(name, kind)` for `filter()` and `action()`. */
export type ParseEventName<Name extends string, Kind extends 'filter' | 'action'> =
  Trim<Name> extends infer T extends string
    ? T extends ''
      ? Refused<'it is empty'>
      : T extends InitEvent
        ? Refused<'it is an init event; register it with init()'>
        : WithSuffix<T, Kind>
    : never;

type WithSuffix<T extends string, Kind extends 'filter' | 'action'> = T extends `${infer Rest}${'.' | ':'}before`
  ? Rest extends ''
    ? ParseSegments<Split<T>, Kind>
    : Kind extends 'filter'
      ? ParseSegments<Split<Rest>, Kind>
      : Refused<'the "before" suffix makes it a filter, but it was registered with action(); drop the suffix or register it with filter()'>
  : T extends `${infer Rest}${'.' | ':'}after`
    ? Rest extends ''
      ? ParseSegments<Split<T>, Kind>
      : Kind extends 'action'
        ? ParseSegments<Split<Rest>, Kind>
        : Refused<'the "after" suffix makes it an action, but it was registered with filter(); drop the suffix or register it with action()'>
    : ParseSegments<Split<T>, Kind>;

type ParseSegments<S extends string[], Kind extends 'filter' | 'action'> =
  HasEmptySegment<S> extends true
    ? Refused<'it has an empty segment'>
    : S extends ['server', infer Action extends string]
      ? Action extends 'start' | 'stop' | '*'
        ? Kind extends 'action'
          ? ParsedServer<Action>
          : Refused<'server events are actions, not filters'>
        : Refused<'unknown server event; known: server.start, server.stop'>
      : StartsWithItems<S> extends true
        ? ItemsFirst<S, Kind>
        : S extends [...infer Collection extends [string, ...string[]], ItemWord, infer Action extends string]
          ? IsActionPattern<Action> extends true
            ? Items<Kind, Action, Join<Collection>>
            : UnknownAction<Action>
          : Refused<`unknown scope "${S[0]}"; write items.<action> or <collection>.items.<action> (actions: ${ActionList})`>;

/** `first === 'items' || first === 'item' || (first === '*' && segments[1] !== 'items' && segments[1] !== 'item')` */
type StartsWithItems<S extends string[]> = S[0] extends ItemWord ? true : S[0] extends '*' ? (S[1] extends ItemWord ? false : true) : false;

/** items.<action>[.<collection>]  |  item.<collection>.<action>  |  *.<action>  |  * */
type ItemsFirst<S extends string[], Kind extends 'filter' | 'action'> = S extends [infer First extends string]
  ? First extends '*'
    ? Items<Kind, '*', null>
    : Refused<`it names no action; use e.g. ${First}.create`>
  : S extends [string, infer Second extends string, ...infer Rest extends string[]]
    ? IsActionPattern<Second> extends true
      ? Items<Kind, Second, Rest extends [] ? null : Join<Rest>>
      : S extends [string, ...infer Middle extends [string, ...string[]], infer Last extends string]
        ? IsActionPattern<Last> extends true
          ? Items<Kind, Last, Join<Middle>>
          : UnknownAction<Second>
        : UnknownAction<Second>
    : never;

/** A string that is one literal name, not `string` nor a pattern like `${string}.items.create`. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- `{}` is what a literal key set is not assignable from
export type IsLiteral<S extends string> = {} extends Record<S, 1> ? false : true;
