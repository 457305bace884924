import { describe, it, expect } from 'vitest';
import {
  BaseException,
  ContainsNullValuesError,
  ContentTooLargeError,
  createError,
  describeHookError,
  ErrorCode,
  exceptions,
  FailedValidationException,
  ForbiddenError,
  ForbiddenException,
  HitRateLimitError,
  HookbridgeError,
  InternalServerError,
  InvalidCredentialsError,
  InvalidForeignKeyError,
  InvalidPayloadError,
  InvalidPayloadException,
  InvalidQueryError,
  InvalidTokenError,
  isDirectusError,
  isHookbridgeError,
  LimitExceededError,
  MethodNotAllowedError,
  NotNullViolationError,
  RangeNotSatisfiableException,
  RecordNotUniqueError,
  RecordNotUniqueException,
  RouteNotFoundError,
  ServiceUnavailableError,
  ServiceUnavailableException,
  TokenExpiredError,
  UnprocessableContentError,
  UnsupportedMediaTypeError,
  ValueOutOfRangeError,
  ValueTooLongError,
} from '../../hooks/errors.js';
import type { DirectusError } from '../../hooks/errors.js';

describe('HookbridgeError', () => {
  it('carries code, details and cause', () => {
    const cause = new Error('root');
    const err = new HookbridgeError('E_EVENT_NAME', 'bad name', { cause, details: { event: 'x' } });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('HookbridgeError');
    expect(err.code).toBe('E_EVENT_NAME');
    expect(err.details).toEqual({ event: 'x' });
    expect(err.cause).toBe(cause);
    expect(err.stack).toMatch(/^HookbridgeError: bad name/);
  });

  it('leaves cause and details undefined when not given', () => {
    const err = new HookbridgeError('E_X', 'm');
    expect(err.cause).toBeUndefined();
    expect(err.details).toBeUndefined();
  });

  it('lets subclasses rename themselves and is recognised across copies', () => {
    class Sub extends HookbridgeError {
      constructor() {
        super('E_SUB', 'sub');
        this.name = 'Sub';
      }
    }
    expect(isHookbridgeError(new Sub())).toBe(true);
    expect(isHookbridgeError(new Sub(), 'E_SUB')).toBe(true);
    expect(isHookbridgeError(new Sub(), 'E_OTHER')).toBe(false);
    expect(isHookbridgeError({ name: 'HookbridgeError', code: 'E_COPY', message: 'm' })).toBe(true);
    expect(isHookbridgeError(new Error('plain'))).toBe(false);
  });
});

describe('Directus 10 errors', () => {
  const cases: [string, DirectusError, string, number, string][] = [
    ['InvalidPayloadError', new InvalidPayloadError({ reason: 'Title is required' }), 'INVALID_PAYLOAD', 400, 'Invalid payload. Title is required.'],
    ['ForbiddenError', new ForbiddenError(), 'FORBIDDEN', 403, "You don't have permission to access this."],
    [
      'ServiceUnavailableError',
      new ServiceUnavailableError({ service: 'smtp', reason: 'Timed out' }),
      'SERVICE_UNAVAILABLE',
      503,
      'Service "smtp" is unavailable. Timed out.',
    ],
    ['InvalidQueryError', new InvalidQueryError({ reason: 'Bad filter' }), 'INVALID_QUERY', 400, 'Invalid query. Bad filter.'],
    ['UnprocessableContentError', new UnprocessableContentError({ reason: 'Nope' }), 'UNPROCESSABLE_CONTENT', 422, "Can't process content. Nope."],
    [
      'RecordNotUniqueError',
      new RecordNotUniqueError({ collection: 'users', field: 'email' }),
      'RECORD_NOT_UNIQUE',
      400,
      'Value for field "email" in collection "users" has to be unique.',
    ],
    [
      'RecordNotUniqueError (value)',
      new RecordNotUniqueError({ collection: 'users', field: 'email', value: 'a@b.c' }),
      'RECORD_NOT_UNIQUE',
      400,
      'Value "a@b.c" for field "email" in collection "users" has to be unique.',
    ],
    [
      'NotNullViolationError',
      new NotNullViolationError({ collection: 'posts', field: 'title' }),
      'NOT_NULL_VIOLATION',
      400,
      'Value for field "title" in collection "posts" can\'t be null.',
    ],
    ['ValueTooLongError', new ValueTooLongError({ collection: null, field: 'title' }), 'VALUE_TOO_LONG', 400, 'Value for field "title" is too long.'],
    [
      'ValueOutOfRangeError',
      new ValueOutOfRangeError({ collection: 'p', field: 'n' }),
      'VALUE_OUT_OF_RANGE',
      400,
      'Numeric value for field "n" in collection "p" is out of range.',
    ],
    [
      'InvalidForeignKeyError',
      new InvalidForeignKeyError({ collection: 'p', field: 'author', key: '7' }),
      'INVALID_FOREIGN_KEY',
      400,
      'Invalid foreign key "7" for field "author" in collection "p".',
    ],
    ['InvalidForeignKeyError (bare)', new InvalidForeignKeyError({ collection: null, field: null }), 'INVALID_FOREIGN_KEY', 400, 'Invalid foreign key.'],
    [
      'ContainsNullValuesError',
      new ContainsNullValuesError({ collection: 'p', field: 'f' }),
      'CONTAINS_NULL_VALUES',
      400,
      'Field "f" in collection "p" contains null values.',
    ],
    ['RouteNotFoundError', new RouteNotFoundError({ path: '/x' }), 'ROUTE_NOT_FOUND', 404, "Route /x doesn't exist."],
    ['InternalServerError', new InternalServerError(), 'INTERNAL', 500, 'An unexpected error occurred.'],
    ['InvalidCredentialsError', new InvalidCredentialsError(), 'INVALID_CREDENTIALS', 401, 'Invalid user credentials.'],
    ['InvalidTokenError', new InvalidTokenError(), 'INVALID_TOKEN', 403, 'Invalid token.'],
    ['TokenExpiredError', new TokenExpiredError(), 'TOKEN_EXPIRED', 401, 'Token expired.'],
    [
      'MethodNotAllowedError',
      new MethodNotAllowedError({ allowed: ['GET', 'POST'], current: 'PUT' }),
      'METHOD_NOT_ALLOWED',
      405,
      'Invalid method "PUT" used. Should be one of "GET", "POST".',
    ],
    [
      'UnsupportedMediaTypeError',
      new UnsupportedMediaTypeError({ mediaType: 'text/x', where: 'Content-Type header' }),
      'UNSUPPORTED_MEDIA_TYPE',
      415,
      'Unsupported media type "text/x" in Content-Type header.',
    ],
    ['LimitExceededError', new LimitExceededError({ category: 'Storage' }), 'LIMIT_EXCEEDED', 403, 'Storage limit exceeded.'],
    ['ContentTooLargeError', new ContentTooLargeError(), 'CONTENT_TOO_LARGE', 413, 'Uploaded content is too large.'],
  ];

  it.each(cases)('%s has the Directus code, status and message', (_label, err, code, status, message) => {
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('DirectusError');
    expect(err.code).toBe(code);
    expect(err.status).toBe(status);
    expect(err.message).toBe(message);
    expect(err.stack).toContain('DirectusError');
    expect(err.stack).toContain(message);
    expect(isDirectusError(err)).toBe(true);
    expect(isDirectusError(err, code)).toBe(true);
    expect(Object.values(ErrorCode)).toContain(code);
  });

  it('keeps the extensions it was given', () => {
    const ext = { collection: 'users', field: 'email' };
    expect(new RecordNotUniqueError(ext).extensions).toBe(ext);
    expect(new ForbiddenError().extensions).toBeUndefined();
  });

  it('formats the rate-limit wait like Directus', () => {
    const err = new HitRateLimitError({ limit: 50, reset: new Date(Date.now() + 3000) });
    expect(err.status).toBe(429);
    expect(err.code).toBe('REQUESTS_EXCEEDED');
    expect(err.message).toMatch(/^Too many requests, retry after [23]s\.$/);
  });

  const reasons: [string, string, string][] = [
    ['no final period', 'Title is too short', 'Invalid payload. Title is too short.'],
    ['a final period', 'Title is too short.', 'Invalid payload. Title is too short.'],
    ['a question mark', 'Really?', 'Invalid payload. Really?'],
    ['trailing spaces', 'Spaced out.  ', 'Invalid payload. Spaced out.'],
    ['unicode', 'Titel ist zu kurz – bitte ≥ 3 Zeichen 🙂', 'Invalid payload. Titel ist zu kurz – bitte ≥ 3 Zeichen 🙂.'],
    ['an empty string', '', 'Invalid payload.'],
  ];

  it.each(reasons)('accepts a string reason with %s', (_label, reason, message) => {
    const err = new InvalidPayloadError(reason);
    expect(err.message).toBe(message);
    expect(err.extensions).toEqual({ reason });
  });

  it('does not double the period in an extensions reason either', () => {
    expect(new InvalidPayloadError({ reason: 'Bad.' }).message).toBe('Invalid payload. Bad.');
  });

  it('accepts a string reason for ServiceUnavailableError even without a service', () => {
    expect(new ServiceUnavailableError('Mail server down').message).toBe('Service is unavailable. Mail server down.');
  });

  it('accepts an Error as the reason and keeps it as cause', () => {
    const root = new Error('connect ECONNREFUSED');
    const err = new UnprocessableContentError(root);
    expect(err.message).toBe("Can't process content. connect ECONNREFUSED.");
    expect(err.cause).toBe(root);
    const explicit = new Error('explicit');
    expect(new InvalidQueryError(root, { cause: explicit }).cause).toBe(explicit);
  });

  it('does not throw when a JS caller leaves out required extensions', () => {
    const Ctor = MethodNotAllowedError as unknown as new () => Error;
    expect(() => new Ctor()).not.toThrow();
    const Route = RouteNotFoundError as unknown as new () => Error;
    expect(new Route().message).toBe('Error ROUTE_NOT_FOUND.');
  });

  it('createError builds custom errors with a default status of 500', () => {
    const Custom = createError<{ n: number }>('my_code', ({ n }) => `n is ${n}`);
    const err = new Custom({ n: 2 }, { cause: 'why' });
    expect(err.code).toBe('MY_CODE');
    expect(err.status).toBe(500);
    expect(err.message).toBe('n is 2');
    expect(err.cause).toBe('why');
    expect(err.toString()).toBe('DirectusError [MY_CODE]: n is 2');
  });

  it('isDirectusError is duck-typed and checks the code', () => {
    const foreign = Object.assign(new Error('x'), { name: 'DirectusError', code: 'FORBIDDEN', status: 403 });
    expect(isDirectusError(foreign)).toBe(true);
    expect(isDirectusError(foreign, 'FORBIDDEN')).toBe(true);
    expect(isDirectusError(foreign, 'forbidden')).toBe(true);
    expect(isDirectusError(foreign, 'INTERNAL')).toBe(false);
    expect(isDirectusError({ name: 'DirectusError' })).toBe(false);
    expect(isDirectusError(new Error('x'))).toBe(false);
    expect(isDirectusError(null)).toBe(false);
    expect(isDirectusError('DirectusError')).toBe(false);
  });
});

describe('Directus 9 exceptions', () => {
  const E = exceptions;
  const cases: [string, BaseException, string, number, string][] = [
    ['InvalidPayloadException', new E.InvalidPayloadException('Bad'), 'INVALID_PAYLOAD', 400, 'Bad'],
    ['ForbiddenException', new E.ForbiddenException(), 'FORBIDDEN', 403, "You don't have permission to access this."],
    ['ServiceUnavailableException', new E.ServiceUnavailableException('Down', { service: 'smtp' }), 'SERVICE_UNAVAILABLE', 503, 'Down'],
    ['InvalidQueryException', new E.InvalidQueryException('q'), 'INVALID_QUERY', 400, 'q'],
    ['UnprocessableEntityException', new E.UnprocessableEntityException('u'), 'UNPROCESSABLE_ENTITY', 422, 'u'],
    ['FailedValidationException', new E.FailedValidationException('f'), 'FAILED_VALIDATION', 400, 'f'],
    ['RecordNotUniqueException', new E.RecordNotUniqueException('email'), 'RECORD_NOT_UNIQUE', 400, 'Field "email" has to be unique.'],
    ['RouteNotFoundException', new E.RouteNotFoundException('/nope'), 'ROUTE_NOT_FOUND', 404, "Route /nope doesn't exist."],
    ['InvalidCredentialsException', new E.InvalidCredentialsException(), 'INVALID_CREDENTIALS', 401, 'Invalid user credentials.'],
    ['InvalidTokenException', new E.InvalidTokenException(), 'INVALID_TOKEN', 401, 'Invalid token'],
    ['TokenExpiredException', new E.TokenExpiredException(), 'TOKEN_EXPIRED', 401, 'Token expired.'],
    ['MethodNotAllowedException', new E.MethodNotAllowedException(), 'METHOD_NOT_ALLOWED', 405, 'Method not allowed.'],
    ['UnsupportedMediaTypeException', new E.UnsupportedMediaTypeException('m'), 'UNSUPPORTED_MEDIA_TYPE', 415, 'm'],
    ['HitRateLimitException', new E.HitRateLimitException('slow down'), 'REQUESTS_EXCEEDED', 429, 'slow down'],
    ['InvalidConfigException', new E.InvalidConfigException(), 'INVALID_CONFIG', 500, 'Invalid config'],
    ['IllegalAssetTransformation', new E.IllegalAssetTransformation('i'), 'ILLEGAL_ASSET_TRANSFORMATION', 400, 'i'],
    [
      'RangeNotSatisfiableException',
      new E.RangeNotSatisfiableException({ start: 5, end: 2 }),
      'RANGE_NOT_SATISFIABLE',
      416,
      'Range "5-2" is invalid or the file\'s size doesn\'t match the requested range.',
    ],
    ['ValueTooLongException', new E.ValueTooLongException('title'), 'VALUE_TOO_LONG', 400, 'Value for field "title" is too long.'],
    ['ValueOutOfRangeException', new E.ValueOutOfRangeException(null), 'VALUE_OUT_OF_RANGE', 400, 'Numeric value is out of range.'],
    ['NotNullViolationException', new E.NotNullViolationException('t'), 'NOT_NULL_VIOLATION', 400, 'Value for field "t" can\'t be null.'],
    ['ContainsNullValuesException', new E.ContainsNullValuesException('t'), 'CONTAINS_NULL_VALUES', 400, 'Field "t" contains null values.'],
    ['InvalidForeignKeyException', new E.InvalidForeignKeyException('a'), 'INVALID_FOREIGN_KEY', 400, 'Invalid foreign key in field "a".'],
  ];

  it.each(cases)('%s has the Directus 9 code, status and message', (name, err, code, status, message) => {
    expect(err).toBeInstanceOf(BaseException);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe(name);
    expect(err.code).toBe(code);
    expect(err.status).toBe(status);
    expect(err.message).toBe(message);
    expect(err.extensions).toBeTypeOf('object');
  });

  it('is a frozen object that also matches the named exports', () => {
    expect(Object.isFrozen(exceptions)).toBe(true);
    expect(exceptions.InvalidPayloadException).toBe(InvalidPayloadException);
    expect(exceptions.BaseException).toBe(BaseException);
    for (const [name, cls] of Object.entries(exceptions)) {
      expect(cls.name).toBe(name);
      expect(cls.prototype).toBeInstanceOf(Error);
    }
  });

  it('takes an Error as the message and keeps it as cause', () => {
    const root = new Error('SMTP timeout');
    const err = new ServiceUnavailableException(root, { service: 'mail' });
    expect(err.message).toBe('SMTP timeout');
    expect(err.cause).toBe(root);
    expect(err.extensions).toEqual({ service: 'mail' });
  });

  it('turns a non-string message from JS callers into readable text', () => {
    const Ctor = InvalidPayloadException as unknown as new (m: unknown) => BaseException;
    expect(new Ctor(42).message).toBe('42');
    expect(new Ctor({ field: 'x' }).message).toBe('{"field":"x"}');
    expect(new Ctor(undefined).message).toBe('');
  });

  it('builds FailedValidationException from a Joi-style item', () => {
    const err = new FailedValidationException({ message: '"title" is required', path: ['title'], type: 'any.required' });
    expect(err.message).toBe('"title" is required');
    // Joi's own type is kept; Directus 9's mapping to filter operators is not reproduced.
    expect(err.extensions).toEqual({ field: 'title', type: 'any.required' });
  });

  it('RecordNotUniqueException without a field and RangeNotSatisfiable without a range', () => {
    expect(new RecordNotUniqueException(null, { collection: 'c', field: null }).message).toBe('Field has to be unique.');
    expect(new RangeNotSatisfiableException().message).toBe("Range is invalid or the file's size doesn't match the requested range.");
  });

  it('ForbiddenException has empty extensions', () => {
    expect(new ForbiddenException().extensions).toEqual({});
  });
});

describe('describeHookError', () => {
  const circular: Record<string, unknown> = { a: 1 };
  circular['self'] = circular;
  const hostile = new Proxy(
    {},
    {
      get() {
        throw new Error('trap');
      },
    },
  );

  const cases: [string, unknown, { message: string | RegExp; code: string; status: number; extensions?: unknown }][] = [
    [
      'a Directus 10 error',
      new InvalidPayloadError('Too short'),
      { message: 'Invalid payload. Too short.', code: 'INVALID_PAYLOAD', status: 400, extensions: { reason: 'Too short' } },
    ],
    ['a void Directus 10 error', new ForbiddenError(), { message: "You don't have permission to access this.", code: 'FORBIDDEN', status: 403 }],
    [
      'a foreign Directus 10 error',
      { name: 'DirectusError', code: 'CUSTOM', status: 418, message: 'teapot', extensions: { x: 1 } },
      { message: 'teapot', code: 'CUSTOM', status: 418, extensions: { x: 1 } },
    ],
    ['a Directus error with a bogus status', { name: 'DirectusError', code: 'C', status: 'nope', message: 'm' }, { message: 'm', code: 'C', status: 500 }],
    [
      'a Directus 9 exception',
      new InvalidPayloadException('Bad', { field: 'title' }),
      { message: 'Bad', code: 'INVALID_PAYLOAD', status: 400, extensions: { field: 'title' } },
    ],
    [
      'a Directus 9 exception without extensions',
      new ForbiddenException(),
      { message: "You don't have permission to access this.", code: 'FORBIDDEN', status: 403 },
    ],
    [
      'a HookbridgeError',
      new HookbridgeError('E_EVENT_NAME', 'bad event', { details: { secret: 1 } }),
      { message: 'bad event', code: 'E_EVENT_NAME', status: 500 },
    ],
    ['a plain Error', new Error('boom'), { message: 'boom', code: 'INTERNAL', status: 500 }],
    ['a TypeError', new TypeError('x is not a function'), { message: 'x is not a function', code: 'INTERNAL', status: 500 }],
    ['an Error without a message', new RangeError(), { message: 'A hook threw RangeError without a message.', code: 'INTERNAL', status: 500 }],
    [
      'a pg-style error with a SQLSTATE code',
      Object.assign(new Error('duplicate key'), { code: '23505' }),
      { message: 'duplicate key', code: 'INTERNAL', status: 500 },
    ],
    [
      'an axios-style error with status and code',
      Object.assign(new Error('Request failed'), { code: 'ERR_BAD_REQUEST', status: 404 }),
      { message: 'Request failed', code: 'INTERNAL', status: 500 },
    ],
    ['a string', 'Title is required', { message: 'Title is required', code: 'INTERNAL', status: 500 }],
    ['an empty string', '', { message: 'A hook threw an empty string.', code: 'INTERNAL', status: 500 }],
    ['undefined', undefined, { message: 'A hook threw undefined instead of an Error.', code: 'INTERNAL', status: 500 }],
    ['null', null, { message: 'A hook threw null instead of an Error.', code: 'INTERNAL', status: 500 }],
    ['a number', 42, { message: 'A hook threw a non-Error value: 42', code: 'INTERNAL', status: 500 }],
    ['a symbol', Symbol('s'), { message: 'A hook threw a non-Error value: Symbol(s)', code: 'INTERNAL', status: 500 }],
    ['a bigint', 10n, { message: 'A hook threw a non-Error value: 10', code: 'INTERNAL', status: 500 }],
    ['an object with a message', { message: 'from object' }, { message: 'from object', code: 'INTERNAL', status: 500 }],
    ['a plain object', { reason: 'x' }, { message: 'A hook threw a non-Error value: {"reason":"x"}', code: 'INTERNAL', status: 500 }],
    ['an empty object', {}, { message: 'A hook threw a non-Error value: [object Object]', code: 'INTERNAL', status: 500 }],
    ['a circular object', circular, { message: 'A hook threw a non-Error value: [object Object]', code: 'INTERNAL', status: 500 }],
    ['a huge object', { s: 'x'.repeat(1000) }, { message: /^A hook threw a non-Error value: \{"s":"x+…$/, code: 'INTERNAL', status: 500 }],
    ['a hostile proxy', hostile, { message: 'A hook threw a value that could not be described.', code: 'INTERNAL', status: 500 }],
  ];

  it.each(cases)('describes %s', (_label, thrown, expected) => {
    const described = describeHookError(thrown);
    const { message, ...rest } = expected;
    if (message instanceof RegExp) expect(described.message).toMatch(message);
    else expect(described.message).toBe(message);
    expect(described.code).toBe(rest.code);
    expect(described.status).toBe(rest.status);
    if ('extensions' in rest) expect(described.extensions).toEqual(rest.extensions);
    else expect(described).not.toHaveProperty('extensions');
  });

  it('keeps a status that a HookbridgeError subclass carries from the error it wraps', () => {
    class Rejection extends HookbridgeError {
      readonly status = 422;
      readonly extensions = { field: 'x' };
      constructor() {
        super('UNPROCESSABLE_CONTENT', 'nope');
        this.name = 'Rejection';
      }
    }
    expect(describeHookError(new Rejection())).toEqual({ message: 'nope', code: 'UNPROCESSABLE_CONTENT', status: 422, extensions: { field: 'x' } });
  });

  it('never throws, whatever it is given', () => {
    const revocable = Proxy.revocable({}, {});
    revocable.revoke();
    const values: unknown[] = [revocable.proxy, Object.create(null), () => 1, [1, 2], new Date(0), true];
    for (const value of values) {
      const described = describeHookError(value);
      expect(described.code).toBe('INTERNAL');
      expect(described.status).toBe(500);
      expect(typeof described.message).toBe('string');
      expect(described.message.length).toBeGreaterThan(0);
    }
  });
});
