/**
 * What the CLI says about bad settings (named, never echoing a secret) and how errors reach a log line
 * (without pg's client internals).
 */
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { checkPortFree, ConfigError, resolveConfig } from '../../bridge/config.js';
import { serializeError } from '../../bridge/logger.js';

function configError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('no ConfigError');
}

describe('PORT', () => {
  it.each([
    ['the environment', {}, { PORT: 'abc' }, '"abc"'],
    ['a flag', { port: 'abc' }, {}, '"abc"'],
    ['a flag out of range', { port: '70000' }, {}, '"70000"'],
    ['a number that is none', { port: Number.NaN }, {}, 'NaN'],
  ])('from %s: says what it got', (_from, options, env, got) => {
    const error = configError(() => resolveConfig(options, env));
    expect(error.message).toBe(`PORT: expected an integer from 0 to 65535, got ${got}`);
  });

  it('takes a flag as written', () => {
    expect(resolveConfig({ port: '8057' }, {}).port).toBe(8057);
  });

  it('a busy port is refused, naming it; a free one and 0 pass', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as { port: number }).port;
      await expect(checkPortFree({ host: '127.0.0.1', port })).rejects.toThrow(
        new RegExp(`^PORT: 127\\.0\\.0\\.1:${port} is already in use \\(another hookbridge, or another program\\)`),
      );
      await expect(checkPortFree({ host: '127.0.0.1', port: 0 })).resolves.toBeUndefined();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    const port = (server.address() as { port: number } | null)?.port;
    if (port) await expect(checkPortFree({ host: '127.0.0.1', port })).resolves.toBeUndefined();
  });
});

describe('DATABASE_URL', () => {
  it.each([
    ['a port that is no number', 'postgres://app:s3cret-pass@db:port/app'],
    ['a bracket left open', 'postgres://app:s3cret-pass@[db/app'],
  ])('%s: exit 2 naming the setting, never the value', (_what, url) => {
    const error = configError(() => resolveConfig({}, { DATABASE_URL: url }));
    expect(error.code).toBe('E_CONFIG');
    expect(error.message).toMatch(/^DATABASE_URL: is not a valid URL \(the form is postgres:\/\/user:password@host:port\/database/);
    expect(error.message).not.toContain('s3cret');
  });

  it('an ssl file it names that cannot be read is named, not taken for a bad URL (and the password stays out)', () => {
    const error = configError(() => resolveConfig({}, { DATABASE_URL: 'postgres://app:s3cret@db/app?sslrootcert=/nonexistent/root.crt' }));
    expect(error.message).toBe('DATABASE_URL: names a file that could not be read (ENOENT: /nonexistent/root.crt); check its ssl* parameters');
  });

  it('another scheme is refused', () => {
    expect(configError(() => resolveConfig({}, { DATABASE_URL: 'mysql://root:s3cret@db/app' })).message).toBe(
      'DATABASE_URL: must be a postgres:// or postgresql:// URL',
    );
  });

  it.each([
    'postgres://app:p%40ss@db:5432/app',
    'postgresql://db/app',
    'postgresql:///app?host=/var/run/postgresql',
    'postgres://app@db/app?sslmode=require&application_name=x',
    'postgres://app:pw@[::1]:5432/app',
  ])('accepts %s', (url) => {
    expect(resolveConfig({}, { DATABASE_URL: url }).database).toEqual({ kind: 'url', url });
  });
});

describe('errors in log lines', () => {
  /** What pg's pool emits when the server ends an idle connection: a DatabaseError carrying its client. */
  function poolError(): Error {
    const error = Object.assign(new Error('terminating connection due to administrator command'), {
      severity: 'FATAL',
      code: '57P01',
      client: { connectionParameters: { host: '127.0.0.1' }, _types: { builtins: {} } },
    });
    error.name = 'error';
    return error;
  }

  it('a lost connection: type, message and code, no stack, no client', () => {
    expect(serializeError(poolError())).toEqual({ type: 'error', message: 'terminating connection due to administrator command', code: '57P01' });
    expect(serializeError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }))).toEqual({
      type: 'Error',
      message: 'connect ECONNREFUSED 127.0.0.1:1',
      code: 'ECONNREFUSED',
    });
    expect(serializeError(new Error('Connection terminated unexpectedly'))).toEqual({ type: 'Error', message: 'Connection terminated unexpectedly' });
  });

  it('any other error keeps its stack and fields, but never a client', () => {
    const error = Object.assign(new Error('duplicate key'), { code: '23505', client: { huge: true } });
    const serialized = serializeError(error) as Record<string, unknown>;
    expect(serialized).toMatchObject({ type: 'Error', message: 'duplicate key', code: '23505', stack: expect.stringContaining('duplicate key') });
    expect(serialized).not.toHaveProperty('client');
  });

  it('an error serialized in a worker thread (a plain object) is cut down the same way', () => {
    const fromWorker = {
      type: 'error',
      message: 'terminating connection due to administrator command',
      stack: 'error: ...',
      code: '57P01',
      client: { huge: true },
    };
    expect(serializeError(fromWorker)).toEqual({ type: 'error', message: 'terminating connection due to administrator command', code: '57P01' });
    expect(serializeError({ type: 'Error', message: 'boom', stack: 'Error: boom', client: {} })).toEqual({
      type: 'Error',
      message: 'boom',
      stack: 'Error: boom',
    });
    expect(serializeError('just text')).toBe('just text');
  });
});

describe('HOOKBRIDGE_USER_MAP', () => {
  it('maps roles to application users', () => {
    expect(resolveConfig({}, { HOOKBRIDGE_USER_MAP: 'reporting=7f1c, etl = etl-service' }).userMap).toEqual({ reporting: '7f1c', etl: 'etl-service' });
    expect(resolveConfig({}, {}).userMap).toEqual({});
  });

  it('refuses a pair without both halves, or a role named twice, naming the setting', () => {
    expect(() => resolveConfig({}, { HOOKBRIDGE_USER_MAP: 'reporting=a,etl' })).toThrow(/HOOKBRIDGE_USER_MAP: pair 2 \("etl"\) is not role=user/);
    expect(() => resolveConfig({}, { HOOKBRIDGE_USER_MAP: 'a=1,=2' })).toThrow(ConfigError);
    expect(() => resolveConfig({}, { HOOKBRIDGE_USER_MAP: 'a=1,a=2' })).toThrow(/the role "a" is mapped twice/);
  });
});

describe("extensions' env", () => {
  it("has Directus's defaults, the environment over them, and the resolved settings over both", () => {
    const config = resolveConfig({ port: 9100 }, { PUBLIC_URL: 'https://example.test', PORT: '9000', CUSTOM: '42' }, { cwd: '/srv/app' });
    expect(config.env).toMatchObject({
      PUBLIC_URL: 'https://example.test',
      CONFIG_PATH: '/srv/app/.env',
      DB_CLIENT: 'pg',
      QUERY_LIMIT_DEFAULT: 100,
      PORT: 9100,
      CUSTOM: 42,
    });
    expect(config.env['LOG_LEVEL']).toBe('info');
  });
});
