/**
 * Runs the built CLI (`dist/cli/cli.js`, the bundle `npx hookbridge` runs) as a child process.
 * `npm test` builds first, so dist/ is never stale here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { testPgBin } from './database.js';
import { waitFor } from './helpers.js';

export const CLI = fileURLToPath(new URL('../../dist/cli/cli.js', import.meta.url));

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  timeoutMs?: number;
}

/** A clean environment: none of the developer's PG*, DATABASE_URL or hookbridge settings leak in. */
function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(PG|DATABASE_URL$|EXTENSIONS_|HOOKBRIDGE_|LOG_|PORT$|FILTER_)/.test(key)) continue;
    env[key] = value;
  }
  // The embedded binaries of this run's major (HOOKBRIDGE_TEST_PG_VERSION) are the run's, not a leak.
  const pgBin = testPgBin();
  if (pgBin !== undefined) env['HOOKBRIDGE_PG_BIN'] = pgBin;
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) env[key] = value;
  return env;
}

export async function runCli(args: string[], options: CliOptions = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd, env: childEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

export interface RunningCli {
  child: ChildProcess;
  output(): string;
  /** Parsed JSON log lines so far (non-JSON lines skipped). */
  logLines(): Array<Record<string, unknown>>;
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Sends `signal` and resolves with the exit code; SIGKILLs after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

export function startCli(args: string[], options: CliOptions = {}): RunningCli {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd,
    // PORT 0: test files run in parallel, each bridge takes a free HTTP port (logged as "http listening").
    // One filter worker, not the default two: filters still run off the main thread as in production,
    // and a bridge starts with half the CPU (each worker loads the hook runtime, knex and kysely: ~1.2 s
    // of CPU on 2 cores). Tests about workers set FILTER_WORKERS themselves.
    env: childEnv({ LOG_FORMAT: 'json', PORT: '0', FILTER_WORKERS: '1', ...options.env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const logLines = () =>
    output
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  return {
    child,
    output: () => output,
    logLines,
    waitForLog: (msg, timeoutMs = 60_000) =>
      Promise.race([
        waitFor(() => logLines().find((l) => l['msg'] === msg), {
          timeoutMs,
          message: () => `log line "${msg}" never came; output so far:\n${output}`,
        }),
        exited.then((code) => {
          // Give the poller one more look: the line may have come just before the exit.
          const line = logLines().find((l) => l['msg'] === msg);
          if (line) return line;
          throw new Error(`the CLI exited (code ${code}) before logging "${msg}":\n${output}`);
        }),
      ]),
    async stop(signal = 'SIGTERM', timeoutMs = 30_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
