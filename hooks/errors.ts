/**
 * Errors in three dialects: hookbridge's own (`HookbridgeError`), the Directus 10 `createError`
 * family, and the Directus 9 `exceptions` classes. Hooks written for either Directus version throw
 * these; `describeHookError` is the one place that turns whatever was thrown into what the writer sees.
 */

export class HookbridgeError extends Error {
  // Not readonly: subclasses rename themselves (`this.name = 'FilterRejection'`).
  override name = 'HookbridgeError';
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;
  // `declare` so the class field does not overwrite the cause that Error's constructor stored.
  declare readonly cause: unknown;

  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
  }
}

/** Recognises errors from other copies of this module too, where `instanceof` fails. */
export function isHookbridgeError(value: unknown, code?: string): value is HookbridgeError {
  const matches = value instanceof HookbridgeError || (isObject(value) && value['name'] === 'HookbridgeError' && typeof value['code'] === 'string');
  return matches && (code === undefined || (value as HookbridgeError).code === code);
}

// Directus 10: @directus/errors

export interface DirectusError<Extensions = unknown> extends Error {
  name: 'DirectusError';
  code: string;
  status: number;
  extensions: Extensions;
}

/** Errors whose extensions carry a `reason` also take the reason alone, as a string or an Error. */
export type ExtensionsInput<Extensions> = Extensions extends { reason: string } ? Extensions | string | Error : Extensions;

export interface DirectusErrorConstructor<Extensions = void> {
  new (extensions: ExtensionsInput<Extensions>, options?: ErrorOptions): DirectusError<Extensions>;
  readonly prototype: DirectusError<Extensions>;
}

export function createError<Extensions = void>(
  code: string,
  message: string | ((extensions: Extensions) => string),
  status = 500,
): DirectusErrorConstructor<Extensions> {
  const upperCode = code.toUpperCase();
  return class extends Error implements DirectusError<Extensions> {
    override name = 'DirectusError' as const;
    code = upperCode;
    status = status;
    extensions: Extensions;

    constructor(input: ExtensionsInput<Extensions>, options?: ErrorOptions) {
      let extensions = input as unknown;
      let errorOptions = options;
      if (typeof input === 'string') {
        extensions = { reason: input };
      } else if (input instanceof Error) {
        extensions = { reason: input.message };
        if (errorOptions?.cause === undefined) errorOptions = { ...errorOptions, cause: input };
      }
      super(buildMessage(upperCode, message, extensions as Extensions), errorOptions);
      this.extensions = extensions as Extensions;
    }

    override toString(): string {
      return `${this.name} [${this.code}]: ${this.message}`;
    }
  };
}

function buildMessage<E>(code: string, message: string | ((extensions: E) => string), extensions: E): string {
  if (typeof message === 'string') return message;
  // A hook author who forgets an extension should get their error, not a TypeError from its message.
  try {
    return message(extensions);
  } catch {
    return `Error ${code}.`;
  }
}

/** Duck-typed, so errors from a real `@directus/errors` or another copy of this module count. */
export function isDirectusError<Extensions = unknown>(value: unknown, code?: string): value is DirectusError<Extensions> {
  if (!isObject(value) || value['name'] !== 'DirectusError' || typeof value['code'] !== 'string') return false;
  return code === undefined || value['code'] === code.toUpperCase();
}

export const ErrorCode = {
  ContainsNullValues: 'CONTAINS_NULL_VALUES',
  ContentTooLarge: 'CONTENT_TOO_LARGE',
  Forbidden: 'FORBIDDEN',
  Internal: 'INTERNAL',
  InvalidCredentials: 'INVALID_CREDENTIALS',
  InvalidForeignKey: 'INVALID_FOREIGN_KEY',
  InvalidPayload: 'INVALID_PAYLOAD',
  InvalidQuery: 'INVALID_QUERY',
  InvalidToken: 'INVALID_TOKEN',
  LimitExceeded: 'LIMIT_EXCEEDED',
  MethodNotAllowed: 'METHOD_NOT_ALLOWED',
  NotNullViolation: 'NOT_NULL_VIOLATION',
  RecordNotUnique: 'RECORD_NOT_UNIQUE',
  RequestsExceeded: 'REQUESTS_EXCEEDED',
  RouteNotFound: 'ROUTE_NOT_FOUND',
  ServiceUnavailable: 'SERVICE_UNAVAILABLE',
  TokenExpired: 'TOKEN_EXPIRED',
  UnprocessableContent: 'UNPROCESSABLE_CONTENT',
  UnsupportedMediaType: 'UNSUPPORTED_MEDIA_TYPE',
  ValueOutOfRange: 'VALUE_OUT_OF_RANGE',
  ValueTooLong: 'VALUE_TOO_LONG',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** "Prefix. Reason." without doubling the reason's own final punctuation, or "Prefix." alone. */
function withReason(prefix: string, reason: unknown): string {
  const text = reason === undefined || reason === null ? '' : String(reason).trim();
  if (text === '') return prefix;
  return `${prefix} ${/[.!?…]$/u.test(text) ? text : `${text}.`}`;
}

/** Directus's "Value for field "f" in collection "c" …" sentences, skipping the parts that are missing. */
function fieldSentence(start: string, end: string, ext: Partial<RecordNotUniqueErrorExtensions> | undefined): string {
  const e = ext ?? {};
  let message = start;
  if (e.value !== undefined && e.value !== null && e.value !== '') message += ` "${String(e.value)}"`;
  if (e.field) message += ` for field "${e.field}"`;
  if (e.collection) message += ` in collection "${e.collection}"`;
  return `${message} ${end}`;
}

export interface ReasonExtensions {
  reason: string;
}
export interface ServiceUnavailableErrorExtensions {
  service: string;
  reason: string;
}
export interface FieldErrorExtensions {
  collection: string | null;
  field: string | null;
  /** The offending value; Directus fills it for some of these errors. */
  value?: string | null;
}
export interface RecordNotUniqueErrorExtensions extends FieldErrorExtensions {
  primaryKey?: boolean;
}

const reasonError = (code: string, prefix: string, status: number) => createError<ReasonExtensions>(code, (e) => withReason(prefix, e?.reason), status);
export const InvalidPayloadError = reasonError(ErrorCode.InvalidPayload, 'Invalid payload.', 400);
export const ForbiddenError = createError(ErrorCode.Forbidden, "You don't have permission to access this.", 403);
export const ServiceUnavailableError = createError<ServiceUnavailableErrorExtensions>(
  ErrorCode.ServiceUnavailable,
  (e) => withReason(e?.service ? `Service "${e.service}" is unavailable.` : 'Service is unavailable.', e?.reason),
  503,
);
export const InvalidQueryError = reasonError(ErrorCode.InvalidQuery, 'Invalid query.', 400);
export const UnprocessableContentError = reasonError(ErrorCode.UnprocessableContent, "Can't process content.", 422);
export const RecordNotUniqueError = createError<RecordNotUniqueErrorExtensions>(
  ErrorCode.RecordNotUnique,
  (e) => fieldSentence('Value', 'has to be unique.', e),
  400,
);
const fieldError = (code: string, start: string, end: string) => createError<FieldErrorExtensions>(code, (e) => fieldSentence(start, end, e), 400);
export const NotNullViolationError = fieldError(ErrorCode.NotNullViolation, 'Value', "can't be null.");
export const ValueTooLongError = fieldError(ErrorCode.ValueTooLong, 'Value', 'is too long.');
export const ValueOutOfRangeError = fieldError(ErrorCode.ValueOutOfRange, 'Numeric value', 'is out of range.');
export const InvalidForeignKeyError = createError<FieldErrorExtensions & { key?: string }>(
  ErrorCode.InvalidForeignKey,
  (e) => `${fieldSentence('Invalid foreign key', '', { ...e, value: e?.key }).trimEnd()}.`,
  400,
);
export const ContainsNullValuesError = createError<{ collection: string; field: string }>(
  ErrorCode.ContainsNullValues,
  (e) => `Field "${e.field}" in collection "${e.collection}" contains null values.`,
  400,
);
export const RouteNotFoundError = createError<{ path: string }>(ErrorCode.RouteNotFound, (e) => `Route ${e.path} doesn't exist.`, 404);
export const InternalServerError = createError(ErrorCode.Internal, 'An unexpected error occurred.', 500);
export const InvalidCredentialsError = createError(ErrorCode.InvalidCredentials, 'Invalid user credentials.', 401);
export const InvalidTokenError = createError(ErrorCode.InvalidToken, 'Invalid token.', 403);
export const TokenExpiredError = createError(ErrorCode.TokenExpired, 'Token expired.', 401);
export const MethodNotAllowedError = createError<{ allowed: string[]; current: string }>(
  ErrorCode.MethodNotAllowed,
  (e) => {
    const allowed = Array.isArray(e.allowed) ? e.allowed.map((m) => `"${m}"`).join(', ') : '';
    return `Invalid method "${e.current}" used.${allowed ? ` Should be one of ${allowed}.` : ''}`;
  },
  405,
);
export const UnsupportedMediaTypeError = createError<{ mediaType: string; where: string }>(
  ErrorCode.UnsupportedMediaType,
  (e) => `Unsupported media type "${e.mediaType}" in ${e.where}.`,
  415,
);
export const HitRateLimitError = createError<{ limit: number; reset: Date }>(
  ErrorCode.RequestsExceeded,
  (e) => {
    const wait = new Date(e.reset).getTime() - Date.now();
    return Number.isFinite(wait) ? `Too many requests, retry after ${shortDuration(wait)}.` : 'Too many requests.';
  },
  429,
);
// Directus answers 403 here (its own source), not 400.
export const LimitExceededError = createError<{ category: string }>(ErrorCode.LimitExceeded, (e) => `${e.category} limit exceeded.`, 403);
export const ContentTooLargeError = createError(ErrorCode.ContentTooLarge, 'Uploaded content is too large.', 413);

/** The `ms` package's short form ("750ms", "3s", "2m", "5h", "1d"), which Directus uses here. */
function shortDuration(ms: number): string {
  const abs = Math.abs(ms);
  const units: [number, string][] = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'm'],
    [1000, 's'],
  ];
  for (const [size, unit] of units) if (abs >= size) return `${Math.round(ms / size)}${unit}`;
  return `${Math.round(ms)}ms`;
}

// Directus 9: context.exceptions

/** A message, or an Error whose message is used (and kept as `cause`), as hook authors do pass. */
export type ExceptionMessage = string | Error;
type Ext = Record<string, unknown>;
type JoiErrorItem = { message: string; path?: (string | number)[]; type?: string };

export class BaseException extends Error {
  status: number;
  code: string;
  extensions: Ext;

  constructor(message: ExceptionMessage, status: number, code: string, extensions?: Ext) {
    const cause = message instanceof Error ? message : undefined;
    super(cause ? cause.message : readable(message), cause ? { cause } : undefined);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.extensions = extensions ?? {};
  }
}

export class InvalidPayloadException extends BaseException {
  constructor(message: ExceptionMessage, extensions?: Ext) {
    super(message, 400, 'INVALID_PAYLOAD', extensions);
  }
}
export class ForbiddenException extends BaseException {
  constructor() {
    super("You don't have permission to access this.", 403, 'FORBIDDEN');
  }
}
export class ServiceUnavailableException extends BaseException {
  constructor(message: ExceptionMessage, extensions?: Ext) {
    super(message, 503, 'SERVICE_UNAVAILABLE', extensions);
  }
}
export class InvalidQueryException extends BaseException {
  constructor(message: ExceptionMessage) {
    super(message, 400, 'INVALID_QUERY');
  }
}
export class UnprocessableEntityException extends BaseException {
  constructor(message: ExceptionMessage) {
    super(message, 422, 'UNPROCESSABLE_ENTITY');
  }
}
/**
 * Directus 9 builds this from a Joi error item: `path[0]` becomes `field`, and Joi's own `type` is kept
 * as is (Directus 9 translated it to a filter operator). A plain message works too.
 */
export class FailedValidationException extends BaseException {
  constructor(error: ExceptionMessage | JoiErrorItem, extensions?: Ext) {
    const item = typeof error === 'object' && !(error instanceof Error) ? error : undefined;
    const ext = item ? { field: item.path?.[0], type: item.type, ...extensions } : extensions;
    super(item ? item.message : (error as ExceptionMessage), 400, 'FAILED_VALIDATION', ext);
  }
}
export class RouteNotFoundException extends BaseException {
  constructor(path: string) {
    super(`Route ${path} doesn't exist.`, 404, 'ROUTE_NOT_FOUND');
  }
}
export class InvalidCredentialsException extends BaseException {
  constructor(message: ExceptionMessage = 'Invalid user credentials.') {
    super(message, 401, 'INVALID_CREDENTIALS');
  }
}
export class InvalidTokenException extends BaseException {
  constructor(message: ExceptionMessage = 'Invalid token') {
    super(message, 401, 'INVALID_TOKEN');
  }
}
export class TokenExpiredException extends BaseException {
  constructor(message: ExceptionMessage = 'Token expired.') {
    super(message, 401, 'TOKEN_EXPIRED');
  }
}
export class MethodNotAllowedException extends BaseException {
  constructor(message: ExceptionMessage = 'Method not allowed.', extensions?: Ext) {
    super(message, 405, 'METHOD_NOT_ALLOWED', extensions);
  }
}
export class UnsupportedMediaTypeException extends BaseException {
  constructor(message: ExceptionMessage, extensions?: Ext) {
    super(message, 415, 'UNSUPPORTED_MEDIA_TYPE', extensions);
  }
}
export class HitRateLimitException extends BaseException {
  constructor(message: ExceptionMessage, extensions?: Ext) {
    super(message, 429, 'REQUESTS_EXCEEDED', extensions);
  }
}
export class InvalidConfigException extends BaseException {
  constructor(message: ExceptionMessage = 'Invalid config', extensions?: Ext) {
    super(message, 500, 'INVALID_CONFIG', extensions);
  }
}
export class IllegalAssetTransformation extends BaseException {
  constructor(message: ExceptionMessage) {
    super(message, 400, 'ILLEGAL_ASSET_TRANSFORMATION');
  }
}
export class RangeNotSatisfiableException extends BaseException {
  constructor(range?: { start?: number; end?: number }) {
    const known = range !== undefined && (range.start !== undefined || range.end !== undefined);
    const text = known ? `"${range.start ?? ''}-${range.end ?? ''}" ` : '';
    const message = `Range ${text}is invalid or the file's size doesn't match the requested range.`;
    super(message, 416, 'RANGE_NOT_SATISFIABLE');
  }
}

// The database exceptions take the offending field first, as Directus 9's own did, and name it when known.
type FieldExt = { collection?: string; field?: string | null } & Ext;
const about = (field: string | null, head: string, link: string, tail: string) => `${head}${field ? ` ${link}"${field}"` : ''}${tail}`;
export class RecordNotUniqueException extends BaseException {
  constructor(field: string | null, extensions?: FieldExt) {
    super(about(field, 'Field', '', ' has to be unique.'), 400, 'RECORD_NOT_UNIQUE', extensions);
  }
}
export class ValueTooLongException extends BaseException {
  constructor(field: string | null, extensions?: FieldExt) {
    super(about(field, 'Value', 'for field ', ' is too long.'), 400, 'VALUE_TOO_LONG', extensions);
  }
}
export class ValueOutOfRangeException extends BaseException {
  constructor(field: string | null, extensions?: FieldExt) {
    super(about(field, 'Numeric value', 'in field ', ' is out of range.'), 400, 'VALUE_OUT_OF_RANGE', extensions);
  }
}
export class NotNullViolationException extends BaseException {
  constructor(field: string | null, extensions?: FieldExt) {
    super(about(field, 'Value', 'for field ', " can't be null."), 400, 'NOT_NULL_VIOLATION', extensions);
  }
}
export class ContainsNullValuesException extends BaseException {
  constructor(field: string | null, extensions?: FieldExt) {
    super(about(field, 'Field', '', ' contains null values.'), 400, 'CONTAINS_NULL_VALUES', extensions);
  }
}
export class InvalidForeignKeyException extends BaseException {
  constructor(field: string | null, extensions?: FieldExt) {
    super(about(field, 'Invalid foreign key', 'in field ', '.'), 400, 'INVALID_FOREIGN_KEY', extensions);
  }
}

/** What Directus 9 hands hooks as `context.exceptions`. */
export const exceptions = Object.freeze({
  BaseException,
  ContainsNullValuesException,
  FailedValidationException,
  ForbiddenException,
  HitRateLimitException,
  IllegalAssetTransformation,
  InvalidConfigException,
  InvalidCredentialsException,
  InvalidForeignKeyException,
  InvalidPayloadException,
  InvalidQueryException,
  InvalidTokenException,
  MethodNotAllowedException,
  NotNullViolationException,
  RangeNotSatisfiableException,
  RecordNotUniqueException,
  RouteNotFoundException,
  ServiceUnavailableException,
  TokenExpiredException,
  UnprocessableEntityException,
  UnsupportedMediaTypeException,
  ValueOutOfRangeException,
  ValueTooLongException,
});

// What the writer sees

export interface DescribedHookError {
  message: string;
  code: string;
  status: number;
  extensions?: Record<string, unknown>;
}

/**
 * Turns anything a hook throws into the message/code/status the writer sees. Never throws: a
 * hostile value (throwing getters, revoked proxies) still yields a description.
 */
export function describeHookError(err: unknown): DescribedHookError {
  try {
    return describe(err);
  } catch {
    return { message: 'A hook threw a value that could not be described.', code: ErrorCode.Internal, status: 500 };
  }
}

function describe(err: unknown): DescribedHookError {
  if (typeof err === 'string') return internal(err === '' ? 'A hook threw an empty string.' : err);
  if (isObject(err)) {
    const message = typeof err['message'] === 'string' ? err['message'] : undefined;
    const code = typeof err['code'] === 'string' ? err['code'] : undefined;
    // Subclasses such as the filter chain's rejection carry the status of the error they wrap.
    if (isHookbridgeError(err)) {
      return withExtensions({ message: message ?? '', code: err.code, status: httpStatus(err['status']) }, err['extensions']);
    }
    const isV10 = isDirectusError(err);
    const isV9 = code !== undefined && typeof err['status'] === 'number' && isObject(err['extensions']);
    if ((isV10 || isV9) && code !== undefined) {
      return withExtensions({ message: message || code, code, status: httpStatus(err['status']) }, err['extensions']);
    }
    if (message !== undefined) {
      if (message !== '') return internal(message);
      const name = typeof err['name'] === 'string' && err['name'] ? err['name'] : 'an error';
      return internal(`A hook threw ${name} without a message.`);
    }
    return internal(`A hook threw a non-Error value: ${preview(err)}`);
  }
  if (err === undefined || err === null) return internal(`A hook threw ${String(err)} instead of an Error.`);
  return internal(`A hook threw a non-Error value: ${typeof err === 'symbol' ? err.toString() : String(err)}`);
}

function internal(message: string): DescribedHookError {
  return { message, code: ErrorCode.Internal, status: 500 };
}

function withExtensions(described: DescribedHookError, extensions: unknown): DescribedHookError {
  if (isObject(extensions) && !Array.isArray(extensions) && Object.keys(extensions).length > 0) {
    described.extensions = extensions;
  }
  return described;
}

function httpStatus(value: unknown): number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 100 && value <= 599 ? value : 500;
}

function preview(value: object): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    // Circular or BigInt-holding values: fall through to the tag.
  }
  if (text === undefined || text === '{}') text = Object.prototype.toString.call(value);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return (typeof value === 'object' && value !== null) || typeof value === 'function';
}

/** Directus 9 callers sometimes pass non-strings (numbers, objects) where a message belongs. */
function readable(message: unknown): string {
  if (typeof message === 'string') return message;
  if (message === undefined || message === null) return '';
  return isObject(message) ? preview(message) : String(message);
}
