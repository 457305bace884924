/**
 * Containment: an error that no handler caught — a promise nobody awaited, a throw in a timer or an
 * event listener — is logged with the extension it came from, counted, and the process goes on. Node
 * would end the process for either, and with it every filtered write in the database.
 *
 * Attribution is by stack: the first frame in a file an extension owns names it (its nested
 * node_modules count: see hooks/extension-origin.ts), through `cause` chains and AggregateErrors too.
 * A rejection with no stack (a string, `undefined`) or whose frames are all in dependencies and
 * Node's own code comes from an unknown source. AsyncLocalStorage would name those too (on Node 20 its
 * store does reach both process handlers), but it needs every handler call wrapped, made a trivial
 * awaited hook call ~2.5 times slower in a micro-benchmark, and misnames: a resource first created
 * inside one extension's call (a pooled connection) keeps that store for all its later callbacks.
 *
 * An uncaught exception with no extension frame but hookbridge's own code on the stack is a bug of
 * ours, and the callback it broke may have left state half changed (a ticket never released, a
 * listener gone) while the process keeps its locks: writers would keep choosing it and no standby
 * could take its place. It is logged at `fatal` and `onOwnBug` is called: the CLI drains the bridge
 * and exits, so that other instances (or a restart) take over. The CLI runs from a bundle (dist/cli/,
 * scripts/build.mjs), where hookbridge's code and the dependencies bundled with it share files: the
 * build writes which lines of each file are a dependency's (BUNDLE_SOURCES), and a frame on those
 * lines counts as a dependency's, as it did under node_modules.
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { packageInfo } from './package-info.js';

export type ErrorSource = 'extension' | 'hookbridge' | 'unknown';

export interface Attribution {
  source: ErrorSource;
  /** Set when `source` is `extension`. */
  extension?: string;
  /** The stack frame's file that decided it. */
  file?: string;
}

export type ErrorKind = 'unhandled_rejection' | 'uncaught_exception';

export interface ContainmentOptions {
  logger: Logger;
  /** The extension that owns an absolute file path (`ExtensionOrigins.extensionOf`). */
  extensionOf: (file: string) => string | undefined;
  /** `hookbridge_hook_errors_total`; `extension` is the name, `(unknown)` or `(hookbridge)`. */
  errors?: Counter<'extension' | 'kind'>;
  /** hookbridge's own package folder (default: the running copy's). */
  ownRoot?: string;
  /** Called after an uncaught exception of hookbridge's own code was logged. */
  onOwnBug?: () => void;
}

/** Installs the process handlers; returns their removal. */
export function installContainment(options: ContainmentOptions): () => void {
  const ownRoot = options.ownRoot ?? packageInfo().root;
  const contain = (kind: ErrorKind, reason: unknown) => {
    // A throw from an 'uncaughtException' handler ends the process: nothing here may throw.
    let found: Attribution = { source: 'unknown' };
    try {
      found = attributeError(reason, { extensionOf: options.extensionOf, ownRoot });
    } catch {
      // keep the unknown source
    }
    try {
      options.errors?.inc({ extension: found.extension ?? `(${found.source})`, kind });
    } catch {
      // a metric is not worth more than the log line below
    }
    const level = kind === 'uncaught_exception' && found.source === 'hookbridge' ? 'fatal' : 'error';
    const fields = { extension: found.extension, source: found.source, kind };
    const message = MESSAGES[kind][found.source];
    try {
      options.logger[level]({ ...fields, ...describeReason(reason) }, message);
    } catch {
      try {
        // The reason defeated the serializer (a throwing getter, a hostile proxy): log without it.
        options.logger[level]({ ...fields, reason: printable(reason) }, message);
      } catch {
        try {
          process.stderr.write(`hookbridge: ${message} (${found.extension ?? found.source})\n`);
        } catch {
          // nowhere left to say it
        }
      }
    }
    if (kind === 'uncaught_exception' && found.source === 'hookbridge') {
      try {
        options.onOwnBug?.();
      } catch {
        // the log line above is what is left
      }
    }
  };
  const onRejection = (reason: unknown) => contain('unhandled_rejection', reason);
  const onException = (error: unknown) => contain('uncaught_exception', error);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}

const MESSAGES: Record<ErrorKind, Record<ErrorSource, string>> = {
  unhandled_rejection: {
    extension: 'unhandled promise rejection in an extension; the bridge goes on',
    unknown: 'unhandled promise rejection from an unknown source; the bridge goes on',
    hookbridge: 'unhandled promise rejection in hookbridge itself (please report it); the bridge goes on',
  },
  uncaught_exception: {
    extension: 'uncaught exception in an extension (outside its handlers); the bridge goes on',
    unknown: 'uncaught exception from an unknown source; the bridge goes on',
    hookbridge: 'uncaught exception in hookbridge itself (please report it); the bridge stops (other instances, or a restart, take over)',
  },
};

/**
 * Where an error came from: the first stack frame an extension owns, in the error or its causes;
 * else hookbridge if its own code is on a stack; else unknown.
 */
export function attributeError(reason: unknown, options: { extensionOf: (file: string) => string | undefined; ownRoot: string }): Attribution {
  const frames = errorFrames(reason);
  for (const { file } of frames) {
    const extension = options.extensionOf(file);
    if (extension !== undefined) return { source: 'extension', extension, file };
  }
  const own = frames.find((frame) => isOwnFrame(frame, options.ownRoot));
  return own === undefined ? { source: 'unknown' } : { source: 'hookbridge', file: own.file };
}

interface Frame {
  file: string;
  line: number;
}

/** The frames on the stacks of an error, its `cause` chain and an AggregateError's errors, in order. */
function errorFrames(reason: unknown): Frame[] {
  const files: Frame[] = [];
  const seen = new Set<unknown>();
  const visit = (value: unknown, depth: number) => {
    if (value === null || typeof value !== 'object' || seen.has(value) || depth > 5) return;
    seen.add(value);
    try {
      const { stack, cause } = value as { stack?: unknown; cause?: unknown };
      if (typeof stack === 'string') files.push(...stackFrames(stack));
      visit(cause, depth + 1);
      if (value instanceof AggregateError && Array.isArray(value.errors)) for (const inner of value.errors.slice(0, 10)) visit(inner, depth + 1);
    } catch {
      // a getter that throws: what was read so far is all there is
    }
  };
  visit(reason, 0);
  return files;
}

// `    at fn (/abs/file.js:1:2)`, `    at /abs/file.js:1:2`, `    at async fn (file:///abs/file.mjs:1:2)`.
const FRAME = /^\s*at (?:.*? \()?(.+?):(\d+):\d+\)?$/;

/** The absolute file paths of a V8 stack's frames, top first (Node's own `node:` frames and evals left out). */
export function stackFiles(stack: string): string[] {
  return stackFrames(stack).map((frame) => frame.file);
}

function stackFrames(stack: string): Frame[] {
  const frames: Frame[] = [];
  for (const text of stack.split('\n')) {
    const match = FRAME.exec(text);
    if (!match) continue;
    let file = match[1] as string;
    if (file.startsWith('file://')) {
      try {
        file = fileURLToPath(file);
      } catch {
        continue;
      }
    }
    if (isAbsolute(file)) frames.push({ file, line: Number(match[2]) });
  }
  return frames;
}

/**
 * Written by scripts/build.mjs beside the CLI's bundle: for each bundled file, the lines where code of
 * another source begins, and whether that source is a dependency (1) or hookbridge's own (0).
 */
const BUNDLE_SOURCES = 'bundle-sources.json';
type BundleSources = Record<string, Array<[line: number, dependency: 0 | 1]>>;
const bundleSources = new Map<string, BundleSources | undefined>();

function isOwnFrame({ file, line }: Frame, ownRoot: string): boolean {
  const rel = relative(ownRoot, file);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || rel.split(sep).includes('node_modules')) return false;
  const dir = dirname(file);
  if (!bundleSources.has(dir)) {
    let sources: BundleSources | undefined;
    try {
      sources = JSON.parse(readFileSync(join(dir, BUNDLE_SOURCES), 'utf8')) as BundleSources;
    } catch {
      // not a bundle: every line is hookbridge's
    }
    bundleSources.set(dir, sources);
  }
  let dependency = 0;
  for (const [from, isDependency] of bundleSources.get(dir)?.[basename(file)] ?? []) {
    if (from > line) break;
    dependency = isDependency;
  }
  return dependency === 0;
}

/** An Error goes to pino's `err` serializer; anything else is described, never trusted to print. */
function describeReason(reason: unknown): Record<string, unknown> {
  return isErrorLike(reason) ? { err: reason } : { reason: printable(reason), reasonType: reason === null ? 'null' : typeof reason };
}

function isErrorLike(value: unknown): boolean {
  try {
    return value instanceof Error || (typeof value === 'object' && value !== null && typeof (value as { stack?: unknown }).stack === 'string');
  } catch {
    return false;
  }
}

function printable(value: unknown): string {
  if (typeof value === 'string') return value.length > 2000 ? `${value.slice(0, 2000)}…` : value;
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json.length > 2000 ? `${json.slice(0, 2000)}…` : json;
  } catch {
    // a BigInt, a cycle, a throwing toJSON: fall back to String
  }
  try {
    return String(value);
  } catch {
    return '(unprintable)';
  }
}
