/**
 * Postgres errors from the services' writes, as Directus' ItemsService throws them: a filter hook's
 * rejection (SQLSTATE `HB<status>`, `DETAIL: code: <CODE>`) becomes a Directus error with that code
 * and status again, and constraint violations become RECORD_NOT_UNIQUE, NOT_NULL_VIOLATION, ... as
 * Directus' translateDatabaseError makes them. The Postgres error stays as `cause`; anything else
 * passes through unchanged.
 */
import {
  createError,
  InvalidForeignKeyError,
  NotNullViolationError,
  RecordNotUniqueError,
  ValueOutOfRangeError,
  ValueTooLongError,
} from '../../hooks/errors.js';

interface PgError {
  code: string;
  message: string;
  detail?: string;
  column?: string;
}

export function translateDatabaseError(error: unknown, collection: string, primary: string | null): unknown {
  if (!isPgError(error)) return error;
  const options = { cause: error };
  const hook = /^HB(\d{3})$/.exec(error.code);
  if (hook) {
    const code = /^code: (\S+)$/.exec(error.detail ?? '')?.[1] ?? 'INTERNAL';
    const HookError = createError<Record<string, unknown>>(code, error.message, Number(hook[1]));
    return new HookError({}, options);
  }
  const key = /^Key \((.+?)\)=\((.*)\)/.exec(error.detail ?? '');
  switch (error.code) {
    case '23505':
      return new RecordNotUniqueError(
        { collection, field: key?.[1] ?? null, value: key?.[2] ?? null, ...(key?.[1] === primary ? { primaryKey: true } : {}) },
        options,
      );
    case '23502':
      return new NotNullViolationError({ collection, field: error.column ?? null }, options);
    case '23503':
      return new InvalidForeignKeyError({ collection, field: key?.[1] ?? null, key: key?.[2] }, options);
    case '22001':
      return new ValueTooLongError({ collection, field: error.column ?? null }, options);
    case '22003':
      return new ValueOutOfRangeError({ collection, field: error.column ?? null }, options);
    default:
      return error;
  }
}

function isPgError(value: unknown): value is PgError {
  const code = value instanceof Error ? (value as Error & { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
}
