/**
 * One typing for every value a hook sees, whichever way the row came: as text (pgoutput, for action
 * hooks; a query, for the services) or as JSON (`to_json` of the row, for filter hooks). Both give the
 * same JS value for the same stored value, and none loses anything a hook could need:
 *
 *   int2, int4, oid, float4, float8     number (NaN and ±Infinity included, -0 kept)
 *   int8, numeric                       string, exactly as Postgres prints it
 *   bool                                boolean
 *   json, jsonb                         parsed (JSON.parse semantics inside the document)
 *   bytea                               Buffer
 *   date                                'YYYY-MM-DD'
 *   timestamp                           'YYYY-MM-DDTHH:MM:SS[.ffffff]'
 *   timestamptz                         'YYYY-MM-DDTHH:MM:SS[.ffffff]Z', in UTC
 *   time / timetz                       'HH:MM:SS[.ffffff]' / with its offset as '+HH:MM'
 *   arrays                              arrays of their element's typing (bounds are not kept)
 *   composites                          objects of their fields' typing
 *   everything else                     the text Postgres prints (enum, uuid, interval, inet, ranges, ...)
 *
 * Dates outside years 0000–9999 use ISO 8601's expanded years ('+294276-12-31', '-000043-03-15' for 44
 * BC), which `new Date()` reads where it can; 'infinity' and '-infinity' stay those words.
 */
import { JsonNumber, type LosslessValue, PlainJson, toPlainJson } from './lossless-json.js';
import { parseTextArray, type TextArray } from './text-array.js';

export type ScalarKind = 'number' | 'exact' | 'bool' | 'json' | 'bytea' | 'date' | 'timestamp' | 'timestamptz' | 'time' | 'timetz' | 'text';

export type TypeShape =
  { kind: ScalarKind } | { kind: 'array'; element: TypeShape; delimiter?: string } | { kind: 'composite'; fields: ReadonlyArray<readonly [string, TypeShape]> };

const scalar = (kind: ScalarKind): TypeShape => ({ kind });
export const TEXT: TypeShape = scalar('text');

/** Builtin types by oid (fixed in every Postgres), with their array types. */
const BUILTIN_SCALARS: ReadonlyArray<readonly [number, number, ScalarKind, string]> = [
  // [type oid, array type oid, kind, name]
  [16, 1000, 'bool', 'bool'],
  [17, 1001, 'bytea', 'bytea'],
  [20, 1016, 'exact', 'int8'],
  [21, 1005, 'number', 'int2'],
  [23, 1007, 'number', 'int4'],
  [26, 1028, 'number', 'oid'],
  [114, 199, 'json', 'json'],
  [700, 1021, 'number', 'float4'],
  [701, 1022, 'number', 'float8'],
  [1082, 1182, 'date', 'date'],
  [1083, 1183, 'time', 'time'],
  [1114, 1115, 'timestamp', 'timestamp'],
  [1184, 1185, 'timestamptz', 'timestamptz'],
  [1266, 1270, 'timetz', 'timetz'],
  [1700, 1231, 'exact', 'numeric'],
  [3802, 3807, 'json', 'jsonb'],
  // Text-typed, listed for their arrays: char, name, text, xml, money, bpchar, varchar, interval, uuid,
  // inet, cidr, macaddr, bit, varbit.
  [18, 1002, 'text', 'char'],
  [19, 1003, 'text', 'name'],
  [25, 1009, 'text', 'text'],
  [142, 143, 'text', 'xml'],
  [790, 791, 'text', 'money'],
  [1042, 1014, 'text', 'bpchar'],
  [1043, 1015, 'text', 'varchar'],
  [1186, 1187, 'text', 'interval'],
  [2950, 2951, 'text', 'uuid'],
  [869, 1041, 'text', 'inet'],
  [650, 651, 'text', 'cidr'],
  [829, 1040, 'text', 'macaddr'],
  [1560, 1561, 'text', 'bit'],
  [1562, 1563, 'text', 'varbit'],
];

const BUILTIN = new Map<number, TypeShape>();
const BUILTIN_BY_NAME = new Map<string, TypeShape>();
for (const [oid, arrayOid, kind, name] of BUILTIN_SCALARS) {
  const shape = scalar(kind);
  const array: TypeShape = { kind: 'array', element: shape };
  BUILTIN.set(oid, shape);
  BUILTIN.set(arrayOid, array);
  BUILTIN_BY_NAME.set(name, shape);
  BUILTIN_BY_NAME.set(`_${name}`, array);
}

// int2vector and oidvector print `1 2` (not array_out's braces); to_json makes arrays of them.
const VECTOR: TypeShape = { kind: 'array', element: scalar('number'), delimiter: ' ' };
BUILTIN.set(22, VECTOR);
BUILTIN.set(30, VECTOR);

/** The shape of a builtin type known without asking the catalog, else undefined. */
export function builtinShape(oid: number): TypeShape | undefined {
  return BUILTIN.get(oid);
}

/** The same by name in pg_catalog (`int8`, `_int8`), as pgoutput's Type message names a domain's base type. */
export function builtinShapeByName(name: string): TypeShape | undefined {
  return BUILTIN_BY_NAME.get(name);
}

// ---------------------------------------------------------------------------------------------------
// From text (pgoutput, queries)

export function fromText(shape: TypeShape, text: string): unknown {
  switch (shape.kind) {
    case 'text':
    case 'exact':
      return text;
    case 'number':
      return Number(text);
    case 'bool':
      return text === 't' || text === 'true';
    case 'json':
      return JSON.parse(text);
    case 'bytea':
      return byteaFromText(text);
    case 'date':
      return isoDate(text);
    case 'timestamp':
      return isoTimestamp(text, false);
    case 'timestamptz':
      return isoTimestamp(text, true);
    case 'time':
      return text;
    case 'timetz':
      return isoOffsetTime(text);
    case 'array':
      if (shape.delimiter === ' ' && !text.startsWith('{')) return text === '' ? [] : text.split(' ').map((item) => fromText(shape.element, item));
      return arrayFromText(parseTextArray(text, shape.delimiter), shape.element);
    case 'composite':
      return compositeFromText(text, shape.fields);
  }
}

function arrayFromText(array: TextArray, element: TypeShape): unknown[] {
  return array.map((item) => (item === null ? null : typeof item === 'string' ? fromText(element, item) : arrayFromText(item, element)));
}

function byteaFromText(text: string): Buffer {
  if (text.startsWith('\\x')) return Buffer.from(text.slice(2), 'hex');
  // bytea_output = 'escape': octal escapes and doubled backslashes.
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x5c) bytes.push(c);
    else if (text.charCodeAt(i + 1) === 0x5c) {
      bytes.push(0x5c);
      i++;
    } else {
      bytes.push(parseInt(text.slice(i + 1, i + 4), 8));
      i += 3;
    }
  }
  return Buffer.from(bytes);
}

/** A record as record_out prints it: `(1,"a b",,"x""y")`; an empty unquoted field is NULL. */
export function parseRecordText(text: string): Array<string | null> {
  if (text.charCodeAt(0) !== 0x28 || text.charCodeAt(text.length - 1) !== 0x29) {
    throw new SyntaxError(`not a record literal: ${JSON.stringify(text.slice(0, 60))}`);
  }
  const fields: Array<string | null> = [];
  let i = 1;
  const end = text.length - 1;
  for (;;) {
    let value = '';
    let quotedOrText = false;
    while (i < end && text.charCodeAt(i) !== 0x2c) {
      const c = text[i] as string;
      if (c === '"') {
        quotedOrText = true;
        i++;
        while (i < end) {
          const q = text[i] as string;
          if (q === '"') {
            if (text[i + 1] === '"') {
              value += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (q === '\\') {
            value += text[i + 1] ?? '';
            i += 2;
            continue;
          }
          value += q;
          i++;
        }
      } else if (c === '\\') {
        quotedOrText = true;
        value += text[i + 1] ?? '';
        i += 2;
      } else {
        quotedOrText = true;
        value += c;
        i++;
      }
    }
    fields.push(quotedOrText ? value : null);
    if (i >= end) return fields;
    i++;
  }
}

function compositeFromText(text: string, fields: ReadonlyArray<readonly [string, TypeShape]>): Record<string, unknown> {
  const values = parseRecordText(text);
  const object = Object.create(null) as Record<string, unknown>;
  fields.forEach(([name, shape], index) => {
    const value = values[index];
    object[name] = value === null || value === undefined ? null : fromText(shape, value);
  });
  return object;
}

// ---------------------------------------------------------------------------------------------------
// From JSON (to_json of a row)

export function fromJson(shape: TypeShape, value: LosslessValue): unknown {
  if (value === null) return null;
  if (value instanceof PlainJson) return value.value;
  switch (shape.kind) {
    case 'json':
      return toPlainJson(value);
    case 'number':
      // NaN and ±Infinity arrive as strings. An integer a double cannot hold means the column's type
      // changed since the catalog was read (int4 → int8): its exact text, never a neighbour's value.
      if (value instanceof JsonNumber) {
        const number = Number(value.text);
        return Number.isSafeInteger(number) || !/^-?\d+$/.test(value.text) ? number : value.text;
      }
      return Number(value);
    case 'exact':
      return value instanceof JsonNumber ? value.text : String(value);
    case 'bool':
      return value === true;
    case 'array':
      // A multidimensional array is arrays of arrays of the same element type.
      return Array.isArray(value) ? value.map((item) => fromJson(Array.isArray(item) ? shape : shape.element, item)) : fromJsonScalarText(shape, value);
    case 'composite': {
      if (typeof value !== 'object' || Array.isArray(value) || value instanceof JsonNumber) return fromJsonScalarText(shape, value);
      const object = Object.create(null) as Record<string, unknown>;
      for (const [name, field] of shape.fields) object[name] = fromJson(field, value[name] ?? null);
      return object;
    }
    default:
      return fromJsonScalarText(shape, value);
  }
}

function fromJsonScalarText(shape: TypeShape, value: LosslessValue): unknown {
  if (typeof value === 'string') return fromText(shape, value);
  if (value instanceof JsonNumber) return shape.kind === 'text' ? value.text : fromText(shape, value.text);
  return toPlainJson(value);
}

/** A value a column type does not describe (a column added since): numbers a double cannot hold stay text. */
export function untypedFromJson(value: LosslessValue): unknown {
  if (value instanceof PlainJson) return value.value;
  if (value instanceof JsonNumber) {
    const number = Number(value.text);
    return String(number) === value.text ? number : value.text;
  }
  if (Array.isArray(value)) return value.map(untypedFromJson);
  if (value !== null && typeof value === 'object') return toPlainJson(value);
  return value;
}

// ---------------------------------------------------------------------------------------------------
// Dates and times

const DATE = /^(\d{4,})-(\d\d)-(\d\d)( BC)?$/;
// ISO DateStyle ('2024-01-02 03:04:05.678901+05:30') and to_json's form ('2024-01-02T03:04:05.678901+05:30').
const TIMESTAMP = /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(\.\d+)?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$/;

function isoYear(digits: string, bc: boolean): string {
  // 1 BC is year 0, 44 BC is -43 (ISO 8601, astronomical numbering).
  const year = bc ? 1 - Number(digits) : Number(digits);
  return formatYear(year);
}

function formatYear(year: number): string {
  if (year >= 0 && year <= 9999) return String(year).padStart(4, '0');
  return `${year < 0 ? '-' : '+'}${String(Math.abs(year)).padStart(6, '0')}`;
}

function isoDate(text: string): string {
  const m = DATE.exec(text);
  if (!m) return text;
  return `${isoYear(m[1] as string, m[4] !== undefined)}-${m[2]}-${m[3]}`;
}

function isoTimestamp(text: string, utc: boolean): string {
  const m = TIMESTAMP.exec(text);
  if (!m) return text;
  const [, y, mo, d, h, mi, s, fraction = '', sign, oh, om, os, bc] = m;
  const year = bc ? 1 - Number(y) : Number(y);
  if (!utc || sign === undefined) {
    return `${formatYear(year)}-${mo}-${d}T${h}:${mi}:${s}${fraction}${utc ? 'Z' : ''}`;
  }
  const offset = (sign === '-' ? -1 : 1) * (Number(oh) * 3600 + Number(om ?? 0) * 60 + Number(os ?? 0));
  let seconds = daysFromCivil(year, Number(mo), Number(d)) * 86400 + Number(h) * 3600 + Number(mi) * 60 + Number(s) - offset;
  const days = Math.floor(seconds / 86400);
  seconds -= days * 86400;
  const [cy, cm, cd] = civilFromDays(days);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${formatYear(cy)}-${two(cm)}-${two(cd)}T${two(Math.floor(seconds / 3600))}:${two(Math.floor(seconds / 60) % 60)}:${two(seconds % 60)}${fraction}Z`;
}

function isoOffsetTime(text: string): string {
  const m = /^(\d\d:\d\d:\d\d(?:\.\d+)?)([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?$/.exec(text);
  if (!m) return text;
  return `${m[1]}${m[2]}${m[3]}:${m[4] ?? '00'}${m[5] ? `:${m[5]}` : ''}`;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; any year). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(days: number): [number, number, number] {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (month <= 2 ? 1 : 0), month, day];
}

// ---------------------------------------------------------------------------------------------------
// Back to Postgres (values a filter returns)

/** A value a hook returned, as JSON that json_populate_record reads into the column (bytea as hex). */
export function toPostgresJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) => {
    // JSON has no NaN, Infinity or -0: Postgres reads these strings into float and numeric columns.
    if (typeof item === 'number' && (!Number.isFinite(item) || Object.is(item, -0))) return Object.is(item, -0) ? '-0' : String(item);
    if (item !== null && typeof item === 'object' && (item as { type?: unknown }).type === 'Buffer' && Array.isArray((item as { data?: unknown }).data)) {
      return `\\x${Buffer.from((item as { data: number[] }).data).toString('hex')}`;
    }
    if (item instanceof Uint8Array) return `\\x${Buffer.from(item).toString('hex')}`;
    if (typeof item === 'bigint') return item.toString();
    return item;
  });
}

// ---------------------------------------------------------------------------------------------------
// For the pg driver: query results typed the same way (the services' reads)

type DriverParser = (text: string) => unknown;

/**
 * A `types` object for a pg Pool whose results follow this typing: builtins by oid; other types as
 * the driver would (user-defined ones stay text). The hooks' own `database` keeps the driver's typing.
 */
export function driverTypes(fallback: { getTypeParser: (oid: number, format?: 'text' | 'binary') => unknown }): {
  getTypeParser: (oid: number, format?: 'text' | 'binary') => unknown;
} {
  return {
    getTypeParser: (oid, format = 'text') => {
      const shape = format === 'text' ? builtinShape(oid) : undefined;
      return shape ? (((text: string) => fromText(shape, text)) satisfies DriverParser) : fallback.getTypeParser(oid, format);
    },
  };
}
