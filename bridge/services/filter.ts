/**
 * Directus filters → kysely expressions, on the columns of one table (the services have no relations).
 *
 *   { status: { _eq: 'draft' } }            the operator form
 *   { status: 'draft' }, { status: null }   shorthand: `_eq`, and `_null` for null (as Directus reads them)
 *   { _and: [...] }, { _or: [...] }         nesting
 *
 * Several operators on one field all apply (Directus reads only the first). Whatever hookbridge cannot
 * honour (relational paths, `_some`/`_none`, functions, geometry, `$CURRENT_USER`) is an
 * InvalidQueryError naming it, never a condition dropped.
 */
import { sql, type Expression, type ExpressionBuilder, type SqlBool } from 'kysely';
import { InvalidQueryError } from '../../hooks/errors.js';
import type { FieldOverview } from '../schema-overview.js';

export type Filter = Record<string, unknown>;
type Eb = ExpressionBuilder<any, any>;
type Condition = Expression<SqlBool>;

/** A column by its exact name: kysely's string references would read a dot as table.column. */
export const column = (name: string) => sql.id(name);

const TEXT = new Set(['string', 'text']);
export const NUMERIC = new Set(['integer', 'bigInteger', 'float', 'decimal']);

interface OperatorContext {
  eb: Eb;
  field: FieldOverview;
  operator: string;
  where: string;
}

type Build = (ctx: OperatorContext, value: unknown) => Condition;

const like =
  (pattern: (v: string) => string, negate: boolean, insensitive: boolean): Build =>
  (ctx, value) => {
    const text = patternOf(ctx, value);
    const target = insensitive ? sql`lower(${textColumn(ctx)})` : textColumn(ctx);
    return ctx.eb(target, negate ? 'not like' : 'like', pattern(escapeLike(insensitive ? text.toLowerCase() : text)));
  };

const OPERATORS: Record<string, Build> = {
  _eq: ({ eb, field }, v) => (v === null ? eb(column(field.field), 'is', null) : eb(column(field.field), '=', operand(v, field))),
  _neq: ({ eb, field }, v) => (v === null ? eb(column(field.field), 'is not', null) : eb(column(field.field), '<>', operand(v, field))),
  _ieq: (ctx, v) => ctx.eb(sql`lower(${textColumn(ctx)})`, '=', patternOf(ctx, v).toLowerCase()),
  _nieq: (ctx, v) => ctx.eb(sql`lower(${textColumn(ctx)})`, '<>', patternOf(ctx, v).toLowerCase()),
  _lt: (ctx, v) => ctx.eb(column(ctx.field.field), '<', scalar(ctx, v)),
  _lte: (ctx, v) => ctx.eb(column(ctx.field.field), '<=', scalar(ctx, v)),
  _gt: (ctx, v) => ctx.eb(column(ctx.field.field), '>', scalar(ctx, v)),
  _gte: (ctx, v) => ctx.eb(column(ctx.field.field), '>=', scalar(ctx, v)),
  _in: (ctx, v) => {
    const list = listOf(ctx, v);
    return list.length ? ctx.eb(column(ctx.field.field), 'in', list) : ctx.eb.lit(false);
  },
  _nin: (ctx, v) => {
    const list = listOf(ctx, v);
    return list.length ? ctx.eb(column(ctx.field.field), 'not in', list) : ctx.eb.lit(true);
  },
  _null: (ctx, v) => ctx.eb(column(ctx.field.field), flag(ctx, v) ? 'is' : 'is not', null),
  _nnull: (ctx, v) => ctx.eb(column(ctx.field.field), flag(ctx, v) ? 'is not' : 'is', null),
  _empty: (ctx, v) => (flag(ctx, v) ? empty(ctx) : ctx.eb.not(empty(ctx))),
  _nempty: (ctx, v) => (flag(ctx, v) ? ctx.eb.not(empty(ctx)) : empty(ctx)),
  _contains: like((v) => `%${v}%`, false, false),
  _ncontains: like((v) => `%${v}%`, true, false),
  _icontains: like((v) => `%${v}%`, false, true),
  _nicontains: like((v) => `%${v}%`, true, true),
  _starts_with: like((v) => `${v}%`, false, false),
  _nstarts_with: like((v) => `${v}%`, true, false),
  _istarts_with: like((v) => `${v}%`, false, true),
  _nistarts_with: like((v) => `${v}%`, true, true),
  _ends_with: like((v) => `%${v}`, false, false),
  _nends_with: like((v) => `%${v}`, true, false),
  _iends_with: like((v) => `%${v}`, false, true),
  _niends_with: like((v) => `%${v}`, true, true),
  _between: (ctx, v) => {
    const [low, high] = pairOf(ctx, v);
    return ctx.eb.between(column(ctx.field.field), low, high);
  },
  _nbetween: (ctx, v) => {
    const [low, high] = pairOf(ctx, v);
    return ctx.eb.not(ctx.eb.between(column(ctx.field.field), low, high));
  },
};

const UNSUPPORTED_OPERATORS: Record<string, string> = {
  _some: "it filters related items, and hookbridge's ItemsService reads one table without relations",
  _none: "it filters related items, and hookbridge's ItemsService reads one table without relations",
  _intersects: 'geometry operators are not supported',
  _nintersects: 'geometry operators are not supported',
  _intersects_bbox: 'geometry operators are not supported',
  _nintersects_bbox: 'geometry operators are not supported',
  _regex: 'Directus accepts it in validation rules only, not in queries',
};

/** The kysely condition for a Directus filter on a table with these fields. */
export function filterExpression(eb: Eb, filter: unknown, fields: Record<string, FieldOverview>, where = 'filter'): Condition {
  if (!isPlainObject(filter)) throw new InvalidQueryError({ reason: `${where} must be an object like { "status": { "_eq": "draft" } }` });
  const parts: Condition[] = [];
  for (const [key, value] of Object.entries(filter)) {
    if (value === undefined) continue;
    if (key === '_and' || key === '_or') {
      if (!Array.isArray(value)) throw new InvalidQueryError({ reason: `"${key}" in ${where} needs an array of filters` });
      const inner = value.map((item, i) => filterExpression(eb, item, fields, `${where}.${key}[${i}]`));
      // As Directus: an empty _or constrains nothing (its knex builder drops the empty group).
      parts.push(key === '_and' || inner.length === 0 ? eb.and(inner) : eb.or(inner));
      continue;
    }
    const field = fieldFor(key, fields, where);
    if (!isPlainObject(value)) {
      if (Array.isArray(value)) {
        throw new InvalidQueryError({ reason: `${where}.${key} is an array: to match one of several values, write { "${key}": { "_in": [...] } }` });
      }
      // Shorthand, as Directus reads it: a value means _eq, and null means _null.
      parts.push(OPERATORS['_eq']!({ eb, field, operator: '_eq', where: `${where}.${key}` }, value));
      continue;
    }
    for (const [operator, operand] of Object.entries(value)) {
      if (operand === undefined) continue;
      const build = OPERATORS[operator];
      if (build) {
        parts.push(build({ eb, field, operator, where: `${where}.${key}.${operator}` }, operand));
        continue;
      }
      const why = UNSUPPORTED_OPERATORS[operator];
      if (why) throw new InvalidQueryError({ reason: `filter operator "${operator}" on "${key}" is not supported: ${why}` });
      if (!operator.startsWith('_')) {
        throw new InvalidQueryError({
          reason: `${where}.${key}.${operator} is a relational filter ("${key}.${operator}"): hookbridge's ItemsService reads one table without relations`,
        });
      }
      throw new InvalidQueryError({ reason: `unknown filter operator "${operator}" on "${key}"` });
    }
  }
  return eb.and(parts);
}

/** A column the query names: unknown names, relational paths and functions are the caller's error. */
export function fieldFor(name: string, fields: Record<string, FieldOverview>, where: string): FieldOverview {
  const field = Object.hasOwn(fields, name) ? fields[name] : undefined;
  if (field) return field;
  if (/^\w+\(.*\)$/.test(name)) {
    throw new InvalidQueryError({
      reason: `"${name}" in ${where} is a function: hookbridge's ItemsService does not support functions such as year() or count() on fields`,
    });
  }
  if (name.includes('.')) {
    throw new InvalidQueryError({ reason: `"${name}" in ${where} is a relational path: hookbridge's ItemsService reads one table without relations` });
  }
  throw new InvalidQueryError({ reason: `unknown field ${JSON.stringify(name)} in ${where}` });
}

function textColumn({ field, operator }: OperatorContext): Expression<unknown> {
  if (TEXT.has(field.type)) return column(field.field);
  // Enums and domains: compared as their text.
  if (field.type === 'unknown') return sql`cast(${column(field.field)} as text)`;
  throw new InvalidQueryError({ reason: `"${operator}" needs a text column; "${field.field}" is ${field.dbType}` });
}

function patternOf(ctx: OperatorContext, value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw new InvalidQueryError({ reason: `${ctx.where} needs a string, got ${describe(value)}` });
}

function scalar(ctx: OperatorContext, value: unknown): unknown {
  if (value === null || Array.isArray(value) || (isPlainObject(value) && ctx.field.type !== 'json')) {
    throw new InvalidQueryError({ reason: `${ctx.where} needs a single value, got ${describe(value)}` });
  }
  return operand(value, ctx.field);
}

function listOf(ctx: OperatorContext, value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new InvalidQueryError({ reason: `${ctx.where} needs an array of values, got ${describe(value)}` });
  return value.filter((item) => item !== undefined).map((item) => operand(item, ctx.field));
}

function pairOf(ctx: OperatorContext, value: unknown): [unknown, unknown] {
  if (!Array.isArray(value) || value.length !== 2 || value.some((item) => item === null || item === undefined)) {
    throw new InvalidQueryError({ reason: `${ctx.where} needs an array of two values [low, high], got ${describe(value)}` });
  }
  return [operand(value[0], ctx.field), operand(value[1], ctx.field)];
}

function flag(ctx: OperatorContext, value: unknown): boolean {
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  throw new InvalidQueryError({ reason: `${ctx.where} takes true or false, got ${describe(value)}` });
}

/** Directus' "empty": null or ''; for arrays, null or no elements; for other types, null. */
function empty(ctx: OperatorContext): Condition {
  const { eb, field } = ctx;
  const isNull = eb(column(field.field), 'is', null);
  if (TEXT.has(field.type) || field.type === 'unknown') return eb.or([isNull, eb(textColumn(ctx), '=', '')]);
  if (field.type === 'csv') return eb.or([isNull, eb(sql`cardinality(${column(field.field)})`, '=', 0)]);
  return isNull;
}

/** A compared value: `$NOW` and `$NOW(<adjustment>)` become SQL; json objects are sent as JSON text. */
function operand(value: unknown, field: FieldOverview): unknown {
  if (typeof value === 'string' && value.startsWith('$')) return dynamicVariable(value);
  if (field.type === 'json' && value !== null && typeof value === 'object' && !(value instanceof Date)) return JSON.stringify(value);
  return value;
}

const NOW = /^\$NOW(?:\(\s*([+-]?)\s*(\d+)\s*(years?|months?|weeks?|days?|hours?|minutes?|seconds?)\s*\))?$/i;
const UNSUPPORTED_VARIABLES = /^\$(CURRENT_USER|CURRENT_ROLES?|CURRENT_POLICIES|FOLLOW)\b/;

function dynamicVariable(value: string): unknown {
  const now = NOW.exec(value);
  if (now) {
    const [, sign, amount, unit] = now;
    if (!amount) return sql`now()`;
    return sql`(now() + cast(${`${sign === '-' ? '-' : ''}${amount} ${unit}`} as interval))`;
  }
  // `$NOWHERE` is a value like any other; `$NOW(...)` that does not parse is a mistake worth naming.
  if (/^\$NOW\(/i.test(value)) {
    throw new InvalidQueryError({
      reason: `cannot read the dynamic variable ${JSON.stringify(value)}: write $NOW or $NOW(-1 day) (a number and years, months, weeks, days, hours, minutes or seconds)`,
    });
  }
  const unsupported = UNSUPPORTED_VARIABLES.exec(value);
  if (unsupported) {
    throw new InvalidQueryError({ reason: `the dynamic variable $${unsupported[1]} is not supported: hookbridge has no Directus users, roles or policies` });
  }
  return value;
}

function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  try {
    const text = JSON.stringify(value);
    return text.length > 60 ? `${text.slice(0, 59)}…` : text;
  } catch {
    return typeof value;
  }
}
