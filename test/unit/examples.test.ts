import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HookRuntime } from '../../hooks/runtime.js';
import { captureLogger } from '../support/capture-logger.js';

const examples = fileURLToPath(new URL('../../examples/extensions', import.meta.url));
const log = captureLogger();
const runtime = new HookRuntime({ extensionsPath: examples, logger: log.logger, env: {} });

beforeAll(() => runtime.start());
afterAll(() => runtime.stop());

describe('examples/extensions', () => {
  it('all load', () => {
    expect(runtime.report?.failed).toEqual([]);
    expect(runtime.report?.loaded.map((e) => e.name)).toEqual(['article-titles', 'articles-validation', 'heartbeat', 'log-creations', 'sync-with-external']);
  });

  it('articles-validation (Directus 8) stamps a uuid on a good article and rejects bad ones', async () => {
    const out = await runtime.runFilters<Record<string, unknown>>('create', 'articles', { title: 'HelloWorld42' }, {});
    expect(out['uuid']).toMatch(/^[0-9a-f-]{36}$/);
    await expect(runtime.runFilters('create', 'articles', { title: 'short' }, {})).rejects.toMatchObject({
      code: 'UNPROCESSABLE_ENTITY',
      message: 'Article title is too short. Expecting at least 10 characters.',
    });
    await expect(runtime.runFilters('create', 'articles', { title: 'Hello, World!' }, {})).rejects.toMatchObject({
      message: 'Article title has invalid characters. Only alphanumeric characters are allowed',
    });
    await expect(runtime.runFilters('create', 'articles', { title: 'HelloWorld42', uuid: 'x' }, {})).rejects.toMatchObject({
      message: 'User are not allowed to set UUID',
    });
  });

  it('article-titles (Directus 10, TypeScript) refuses to empty a title', async () => {
    await expect(runtime.runFilters('update', 'articles', { title: ' ' }, { keys: [3] })).rejects.toMatchObject({
      code: 'INVALID_PAYLOAD',
      message: 'Invalid payload. Article title cannot be empty (keys 3).',
    });
    expect(await runtime.runFilters('update', 'articles', { body: 'x' }, { keys: [3] })).toEqual({ body: 'x' });
  });

  it('log-creations (Directus 9) logs each created item with its collection', async () => {
    await runtime.dispatchActions('create', 'articles', { key: 1, payload: { title: 'x' } });
    expect(log.lines().find((l) => l['msg'] === 'item created')).toMatchObject({ extension: 'log-creations', collection: 'articles', key: 1 });
  });

  it('sync-with-external (Directus 9 RC) passes recipes through when no service is configured', async () => {
    expect(await runtime.runFilters('create', 'recipes', { name: 'soup' }, {})).toEqual({ name: 'soup' });
  });

  it('sync-with-external posts to the service, marks the recipe, and cancels the insert when the service fails', async () => {
    const received: unknown[] = [];
    let status = 200;
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        received.push(JSON.parse(body));
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/recipes`;
    const withService = new HookRuntime({ extensionsPath: examples, logger: log.logger, env: { RECIPES_SYNC_URL: url } });
    try {
      await withService.start();
      expect(await withService.runFilters('create', 'recipes', { name: 'soup' }, {})).toEqual({ name: 'soup', synced_with_example: true });
      expect(received).toEqual([[{ name: 'soup' }]]);
      status = 500;
      await expect(withService.runFilters('create', 'recipes', { name: 'stew' }, {})).rejects.toMatchObject({
        code: 'SERVICE_UNAVAILABLE',
        status: 503,
        message: 'recipes service answered 500',
      });
    } finally {
      await withService.stop();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
