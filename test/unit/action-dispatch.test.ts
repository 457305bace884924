/**
 * One action path: every handler of every action event runs under the same policy — each try bounded,
 * a failed try retried alone with backoff, every try observed — whatever the event's origin.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ActionAborted, dispatchActions, runAction, type ActionPolicy, type TryOutcome } from '../../hooks/action-dispatch.js';
import { parseEventName, type EventRef } from '../../hooks/event-name.js';
import type { ActionEntry } from '../../hooks/register.js';
import { HookRuntime } from '../../hooks/runtime.js';
import type { HookContext } from '../../hooks/types.js';

const event: EventRef = { scope: 'items', action: 'create', collection: 'articles' };
const context = {} as HookContext;
const logger = pino({ level: 'silent' });

function entry(extension: string, handler: ActionEntry['handler']): ActionEntry {
  return { kind: 'action', extension, pattern: parseEventName('articles.items.create', 'action'), style: 'define-hook', handler } as ActionEntry;
}

function policy(overrides: Partial<ActionPolicy> = {}): ActionPolicy & { tries: TryOutcome[] } {
  const tries: TryOutcome[] = [];
  return { attempts: 3, timeoutMs: 100, baseDelayMs: 1, maxDelayMs: 2, observe: (_e, _ev, _s, outcome) => tries.push(outcome), tries, ...overrides };
}

describe('runAction', () => {
  it('retries a failing handler alone until a try succeeds, observing every try', async () => {
    let calls = 0;
    const flaky = entry('flaky', () => {
      if (++calls < 3) throw new Error(`try ${calls}`);
    });
    const p = policy();
    expect(await runAction(flaky, event, { key: 1 }, context, p, () => undefined)).toBeUndefined();
    expect(calls).toBe(3);
    expect(p.tries).toEqual(['error', 'error', 'ok']);
  });

  it('gives up after the attempts with the last error, and counts a try that outlives the timeout as failed', async () => {
    const hangs = entry('hangs', () => new Promise(() => undefined));
    const p = policy({ attempts: 2, timeoutMs: 20 });
    const error = await runAction(hangs, event, {}, context, p, () => undefined);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toBe('action handler did not finish within 20 ms');
    expect(p.tries).toEqual(['timeout', 'timeout']);
  });

  it('starts no further try once its signal is aborted', async () => {
    const stop = new AbortController();
    let calls = 0;
    const failing = entry('failing', () => {
      calls++;
      stop.abort();
      throw new Error('boom');
    });
    await expect(runAction(failing, event, {}, context, policy({ signal: stop.signal }), () => undefined)).rejects.toBeInstanceOf(ActionAborted);
    expect(calls).toBe(1);
  });
});

describe('dispatchActions', () => {
  it('runs every handler under the policy and returns only those that failed every try', async () => {
    let flakyCalls = 0;
    const entries = [
      entry('ok', () => undefined),
      entry('flaky', () => {
        if (++flakyCalls === 1) throw new Error('once');
      }),
      entry('broken', () => {
        throw new Error('always');
      }),
    ];
    const failures = await dispatchActions(entries, event, { key: 1 }, context, logger, policy());
    expect(failures.map((f) => [f.entry.extension, f.event, (f.error as Error).message])).toEqual([['broken', 'articles.items.create', 'always']]);
    expect(flakyCalls).toBe(2);
  });
});

describe('HookRuntime', () => {
  it('gives emitted events and server events the policy it was given', async () => {
    const p = policy();
    const runtime = new HookRuntime({ extensionsPath: '/nonexistent', logger, actionPolicy: p });
    let emitted = 0;
    let started = 0;
    runtime.emitter.onAction('custom.ping', () => {
      if (++emitted === 1) throw new Error('first ping fails');
    });
    runtime.emitter.onAction('server.start', () => {
      if (++started < 3) throw new Error('not yet');
    });
    expect(await runtime.dispatchServerEvent('start')).toEqual([]);
    expect(started).toBe(3);
    runtime.emitter.emitAction('custom.ping', {});
    await expect.poll(() => emitted).toBe(2);
  });

  it('bounds a server.start handler that never finishes by the timeout (one try, as the bridge gives it)', async () => {
    const runtime = new HookRuntime({ extensionsPath: '/nonexistent', logger, actionPolicy: { attempts: 1, timeoutMs: 30 } });
    let calls = 0;
    runtime.emitter.onAction('server.start', () => {
      calls++;
      return new Promise(() => undefined);
    });
    const failures = await runtime.dispatchServerEvent('start');
    expect(failures.map((f) => (f.error as Error).message)).toEqual(['action handler did not finish within 30 ms']);
    expect(calls).toBe(1);
  });
});
