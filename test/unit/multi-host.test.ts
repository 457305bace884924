import { describe, expect, it } from 'vitest';
import { redactUrl, resolveConfig } from '../../bridge/config.js';
import { connectionFromUrl, urlHosts } from '../../bridge/multi-host.js';

describe('urlHosts', () => {
  it.each([
    [
      'postgres://u:pw@a:5432,b:5433/db',
      [
        { host: 'a', port: 5432 },
        { host: 'b', port: 5433 },
      ],
    ],
    [
      'postgres://u:pw@a,b/db',
      [
        { host: 'a', port: 5432 },
        { host: 'b', port: 5432 },
      ],
    ],
    [
      'postgresql://a,b/db?port=6000',
      [
        { host: 'a', port: 6000 },
        { host: 'b', port: 6000 },
      ],
    ],
    [
      'postgres://a,b/db?port=6000,6001',
      [
        { host: 'a', port: 6000 },
        { host: 'b', port: 6001 },
      ],
    ],
    [
      'postgres://u@/db?host=a,b&port=1,2',
      [
        { host: 'a', port: 1 },
        { host: 'b', port: 2 },
      ],
    ],
    [
      'postgres://[::1]:5432,[fe80::2]/db',
      [
        { host: '::1', port: 5432 },
        { host: 'fe80::2', port: 5432 },
      ],
    ],
  ])('reads %s', (url, hosts) => {
    expect(urlHosts(url)).toEqual(hosts);
  });

  it.each(['postgres://u:pw@a:5432/db', 'postgres://u@/db?host=a', 'postgres:///db'])('leaves one host to pg: %s', (url) => {
    expect(urlHosts(url)).toBeUndefined();
    expect(connectionFromUrl(url)).toEqual({ connectionString: url });
  });

  it.each([
    ['postgres://a,b,c/db?port=1,2', /3 hosts and 2 ports/],
    ['postgres://a:99999,b/db', /port of host 1/],
    ['postgres://a,,b/db', /host 2 of 3 is empty/],
    ['postgres:///db?host=/var/run/postgresql,/tmp', /host 1 of 2 is a socket folder/],
  ])('refuses %s, without quoting it', (url, message) => {
    expect(() => urlHosts(url)).toThrow(message);
  });
});

describe('connectionFromUrl with several hosts', () => {
  it('keeps everything but the hosts, which go to the socket factory', () => {
    const config = connectionFromUrl('postgres://me:s%40cret@a:5432,b:5433/app?application_name=x&target_session_attrs=read-write&sslmode=disable');
    expect(config).toMatchObject({ user: 'me', password: 's@cret', database: 'app', host: 'a', port: 5432, application_name: 'x' });
    expect(config).not.toHaveProperty('connectionString');
    expect(config).not.toHaveProperty('target_session_attrs');
    expect(typeof config.stream).toBe('function');
  });

  it('keeps a raw @ of the password in the password', () => {
    expect(connectionFromUrl('postgres://app:s3cr@tPart@h1:1,h2:2/db')).toMatchObject({ user: 'app', password: 's3cr@tPart', host: 'h1', port: 1 });
  });
});

describe('DATABASE_URL with several hosts', () => {
  const resolveUrl = (url: string) => resolveConfig({}, { DATABASE_URL: url }).database;

  it('is accepted in each of libpq forms', () => {
    for (const url of ['postgres://u:p@a:5432,b:5433/db', 'postgres://u:p@a,b/db?port=5432,5433', 'postgres://u:p@/db?host=a,b']) {
      expect(resolveUrl(url)).toEqual({ kind: 'url', url });
    }
  });

  it('is refused with the reason and without the password', () => {
    expect(() => resolveUrl('postgres://u:hunter2@a,b,c/db?port=1,2')).toThrow(/DATABASE_URL: names 3 hosts and 2 ports/);
    expect(() => resolveUrl('postgres://u:hunter2@a,b,c/db?port=1,2')).not.toThrow(/hunter2/);
  });

  it('is redacted for logs: the password, a raw @ in it, and every password parameter', () => {
    expect(redactUrl('postgres://u:hunter2@a:5432,b:5433/db?password=again&x=1')).toBe('postgres://u:***@a:5432,b:5433/db?password=***&x=1');
    expect(redactUrl('postgres://u:hun@ter2@a,b/db?sslpassword=k&password=p2')).toBe('postgres://u:***@a,b/db?sslpassword=***&password=***');
    expect(redactUrl('postgres://u:pw@one/db?sslpassword=k')).toBe('postgres://u:***@one/db?sslpassword=***');
    expect(() => redactUrl('postgres://u:pw@a,b,c/db?port=1,2')).not.toThrow();
    expect(redactUrl('postgres://u@h1:5432,h2:5433/db?pass%77ord=secret')).not.toContain('secret');
  });
});
