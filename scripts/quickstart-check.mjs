#!/usr/bin/env node
// The README's quick start, run as a newcomer runs it, from a fresh clone: `npm install`, `npm start`
// in a terminal, the psql examples against the URL it prints, then Ctrl-C. Fails on any stack trace,
// warning or error in what they print, on any line it does not expect, on a lockfile the install
// rewrites, and on an exit that hangs or leaves a process behind. `npm test` (the third line of the
// quick start) is left out: it is the whole test suite, which CI runs anyway.
//
//   node scripts/quickstart-check.mjs [--worktree] [--keep]
//
// --worktree  lay this working tree's uncommitted changes over the clone (default: HEAD as committed)
// --keep      keep the clone (by default it is removed when the check passes, kept when it fails)
//
// Needs git, npm, psql and util-linux `script` (npm start runs on a terminal of its own, so that its
// logs look as they do to a person and Ctrl-C reaches it the way a keyboard's does). When port 8056 is
// taken, the bridge gets PORT set to a free one; nothing else differs from what a newcomer does.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repo = fileURLToPath(new URL('..', import.meta.url));
const { values: flags } = parseArgs({ options: { worktree: { type: 'boolean' }, keep: { type: 'boolean' } } });
const started = Date.now();

class CheckFailed extends Error {}
const fail = (message) => {
  throw new CheckFailed(message);
};
const seconds = (since) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** What the quick start's steps are, and what each must do; a README step not listed here fails the check. */
const SETUP = ['npm install', 'npm start', 'npm test'];
const PSQL = new Map([
  [
    `insert into articles (title) values ('short')`,
    { exit: 1, stderr: /^ERROR: {2}Article title is too short\. Expecting at least 10 characters\./, sqlstate: 'HB422' },
  ],
  [
    `insert into articles (title) values ('HelloWorld42') returning uuid`,
    {
      exit: 0,
      stdout: /^\s*uuid\s*\n-+\n\s*[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\s*\n\(1 row\)\n\nINSERT 0 1\n$/,
      action: 'item created',
    },
  ],
]);

/** The environment of a newcomer's shell: none of the caller's npm or hookbridge settings. */
function newcomerEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(npm_|INIT_CWD$|DATABASE_URL$|PG[A-Z]+$|HOOKBRIDGE_|EXTENSIONS_|FILTER_|ACTION_|LOG_LEVEL$|LOG_FORMAT$|HOST$|PORT$)/.test(key)) continue;
    env[key] = value;
  }
  return { ...env, TERM: process.env.TERM || 'xterm-256color', ...extra };
}

function git(cwd, ...args) {
  return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 * 1024 * 1024 });
}

/** The clone's state as git sees it: which files differ from HEAD, and how (--worktree starts with some). */
function cloneState(clone) {
  return git(clone, 'status', '--porcelain') + git(clone, 'diff');
}

/** The README's quick start: its setup lines and its psql examples, checked against what this script knows. */
function readQuickStart(readme) {
  const section = /^## Quick start\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? fail('README.md has no "## Quick start" section');
  const blocks = [...section.matchAll(/^```sh\n([\s\S]*?)^```/gm)].map((m) =>
    m[1]
      .split('\n')
      .map((line) => line.replace(/\s+#.*$/, '').trim())
      .filter(Boolean),
  );
  const [setup, examples] = blocks;
  if (JSON.stringify(setup) !== JSON.stringify(SETUP))
    fail(`the quick start's first block changed: ${JSON.stringify(setup)}; update SETUP in ${fileURLToPath(import.meta.url)}`);
  const psql = (examples ?? []).map((line) => {
    const sql = /^psql '<printed url>' -c "(.*)"$/.exec(line)?.[1];
    if (!sql || !PSQL.has(sql)) fail(`a quick start line this check does not know: ${line}; add it to PSQL in ${fileURLToPath(import.meta.url)}`);
    return sql;
  });
  if (psql.length === 0) fail('the quick start shows no psql example');
  return psql;
}

function findPsql() {
  if (spawnSync('psql', ['--version']).status === 0) return 'psql';
  const debian = existsSync('/usr/lib/postgresql')
    ? readdirSync('/usr/lib/postgresql')
        .map((v) => `/usr/lib/postgresql/${v}/bin/psql`)
        .filter(existsSync)
    : [];
  return debian.at(-1) ?? fail('psql is not installed (the quick start uses it)');
}

async function portIsFree(port) {
  return new Promise((resolve) => {
    const server = createServer().once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A terminal's text as a person reads it: no colours, cursor moves, spinners or carriage returns. */
function plain(text) {
  /* eslint-disable no-control-regex -- terminal escapes are control characters */
  return text
    .replace(/\x1b\][^\x07]*\x07/g, '')
    .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
    .replace(/[\u2800-\u28ff]/g, '')
    .replace(/\r/g, '');
  /* eslint-enable no-control-regex */
}

const STACK_FRAME = /^\s*at\s.*(:\d+:\d+\)?|\(native\)|\(<anonymous>\))$/;
const LOG_LINE = /^\[\d\d:\d\d:\d\d\.\d{3}\] (TRACE|DEBUG|INFO|WARN|ERROR|FATAL)\b(.*)$/;

/** Every line npm start printed must be one a newcomer expects to see: the problems, one per log entry or line. */
function unexpectedLines(transcript) {
  const problems = [];
  let entry = null; // the log entry that indented lines belong to: { head, level, reported }
  // The terminal echoes Ctrl-C as ^C at the start of the line the next output goes on.
  for (const line of transcript.split('\n').map((l) => l.replace(/^\^C/, ''))) {
    const log = LOG_LINE.exec(line);
    if (log) {
      entry = { head: line, level: log[1], reported: !['INFO', 'DEBUG', 'TRACE'].includes(log[1]) };
      if (entry.reported) problems.push(`a ${log[1]} entry: ${line}`);
    } else if (/^\s+\S/.test(line) && entry) {
      if (!entry.reported && (STACK_FRAME.test(line) || /^\s*"?stack"?:/.test(line) || /\b\w*Error\b/.test(line))) {
        problems.push(`an error or stack trace in the entry: ${entry.head}`);
        entry.reported = true;
      }
    } else {
      entry = null;
      if (STACK_FRAME.test(line)) problems.push(`a stack trace: ${line}`);
      else if (!(line.trim() === '' || /^> /.test(line) || line === 'Embedded Postgres is running. Connect with:' || /^ {2}psql '[^']+'$/.test(line))) {
        problems.push(`unexpected output: ${line}`);
      }
    }
  }
  return problems;
}

/** pids of processes running inside the clone (npm, the bridge, its embedded Postgres): this check's own. */
function processesIn(dir) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readlinkSync(`/proc/${entry}/cwd`).startsWith(dir)) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

async function main() {
  const work = mkdtempSync(join(tmpdir(), 'hookbridge-quickstart-'));
  // As root, the embedded Postgres runs as the postgres OS user, which must reach the clone (README).
  chmodSync(work, 0o755);
  const clone = join(work, 'hookbridge');
  let terminal;
  let passed = false;
  try {
    let t = Date.now();
    console.log(`== git clone ${repo} ${clone}${flags.worktree ? " (with the working tree's changes)" : ''}`);
    git(work, 'clone', '--quiet', repo, clone);
    if (flags.worktree) {
      for (const file of git(repo, 'ls-files', '-z', '--modified', '--others', '--exclude-standard').split('\0').filter(Boolean)) {
        if (!existsSync(join(repo, file))) continue;
        mkdirSync(dirname(join(clone, file)), { recursive: true });
        copyFileSync(join(repo, file), join(clone, file));
      }
      for (const file of git(repo, 'ls-files', '-z', '--deleted').split('\0').filter(Boolean)) rmSync(join(clone, file), { force: true });
    }
    const before = cloneState(clone);
    const examples = readQuickStart(readFileSync(join(clone, 'README.md'), 'utf8'));
    const psql = findPsql();
    console.log(`   ${seconds(t)}`);

    t = Date.now();
    console.log('== npm install');
    const install = spawnSync('npm', ['install'], { cwd: clone, env: newcomerEnv(), encoding: 'utf8', timeout: 600_000 });
    const installOutput = `${install.stdout}${install.stderr}`;
    if (install.status !== 0) fail(`npm install exited ${install.status ?? install.signal}:\n${installOutput}`);
    const installProblems = installOutput
      .split('\n')
      .filter(
        (line) =>
          !(
            line.trim() === '' ||
            /^> /.test(line) ||
            /^(added|changed|removed|up to date)\b.* in \S+$/.test(line) ||
            /^\d+ packages? (is|are) looking for funding$/.test(line) ||
            /^ {2}run `npm fund` for details$/.test(line) ||
            line === 'found 0 vulnerabilities'
          ),
      );
    if (installProblems.length > 0) fail(`npm install printed what a newcomer should not see:\n${installProblems.join('\n')}`);
    const after = cloneState(clone);
    if (after !== before) fail(`npm install changed the clone:\n${git(clone, 'status', '--short')}${git(clone, 'diff', '--stat')}`);
    console.log(`   ${seconds(t)}, the clone unchanged`);

    t = Date.now();
    const port = (await portIsFree(8056)) ? 8056 : await freePort();
    console.log(`== npm start${port === 8056 ? '' : ` (PORT=${port}: 8056 is taken on this machine)`}`);
    if (spawnSync('script', ['--version']).status !== 0) fail('util-linux `script` is missing: it gives npm start its terminal');
    terminal = spawn('script', ['-qfec', 'npm start', '/dev/null'], {
      cwd: clone,
      env: newcomerEnv(port === 8056 ? {} : { PORT: String(port) }),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let raw = '';
    terminal.stdout.on('data', (chunk) => (raw += chunk));
    terminal.stderr.on('data', (chunk) => (raw += chunk));
    const exited = new Promise((resolve) => terminal.once('exit', (code, signal) => resolve(code ?? signal)));
    const waitFor = async (pattern, ms, what) => {
      const deadline = Date.now() + ms;
      while (!pattern.test(plain(raw))) {
        if (terminal.exitCode !== null) fail(`npm start ended (${terminal.exitCode}) before ${what}:\n${plain(raw)}`);
        if (Date.now() > deadline) fail(`no ${what} within ${ms / 1000} s:\n${plain(raw)}`);
        await sleep(200);
      }
    };
    await waitFor(/^\[[\d:.]+\] INFO\b.*: ready$/m, 300_000, 'ready line');
    const url = /^ {2}psql '([^']+)'$/m.exec(plain(raw))?.[1] ?? fail(`npm start printed no psql URL:\n${plain(raw)}`);
    console.log(`   ready after ${seconds(t)}`);

    for (const path of ['/health', '/metrics']) {
      const response = await fetch(`http://127.0.0.1:${port}${path}`);
      const body = await response.text();
      if (response.status !== 200) fail(`GET ${path} answered ${response.status}: ${body.slice(0, 500)}`);
      console.log(`== GET ${path}: 200`);
    }

    for (const sql of examples) {
      const expected = PSQL.get(sql);
      console.log(`== psql '<printed url>' -c "${sql}"`);
      const shown = raw.length;
      const run = spawnSync(psql, [url, '-c', sql], { env: newcomerEnv(), encoding: 'utf8', timeout: 30_000 });
      if (run.status !== expected.exit) fail(`psql exited ${run.status ?? run.signal}, expected ${expected.exit}:\n${run.stdout}${run.stderr}`);
      if (expected.stderr && !expected.stderr.test(run.stderr)) fail(`psql printed ${JSON.stringify(run.stderr)}, expected ${expected.stderr}`);
      if (expected.stdout && !expected.stdout.test(run.stdout)) fail(`psql printed ${JSON.stringify(run.stdout)}, expected ${expected.stdout}`);
      if (expected.exit === 0 && run.stderr !== '') fail(`psql printed on stderr: ${run.stderr}`);
      if (expected.sqlstate) {
        const verbose = spawnSync(psql, [url, '-v', 'VERBOSITY=verbose', '-c', sql], { env: newcomerEnv(), encoding: 'utf8', timeout: 30_000 });
        if (!verbose.stderr.startsWith(`ERROR:  ${expected.sqlstate}:`)) fail(`expected SQLSTATE ${expected.sqlstate}, psql printed: ${verbose.stderr}`);
      }
      console.log(`${run.stdout}${run.stderr}`.trimEnd().replace(/^/gm, '   '));
      if (expected.action) {
        const deadline = Date.now() + 15_000;
        while (!plain(raw.slice(shown)).includes(expected.action)) {
          if (Date.now() > deadline) fail(`the action hook's "${expected.action}" did not show within 15 s:\n${plain(raw.slice(shown))}`);
          await sleep(200);
        }
        console.log(`   the bridge logged "${expected.action}"`);
      }
    }

    t = Date.now();
    console.log('== Ctrl-C');
    terminal.stdin.write('\x03');
    const code = await Promise.race([exited, sleep(30_000).then(() => 'still running')]);
    if (code === 'still running') fail(`npm start did not exit within 30 s of Ctrl-C:\n${plain(raw)}`);
    if (code !== 0 && code !== 130) fail(`npm start exited ${code} after Ctrl-C:\n${plain(raw)}`);
    for (let i = 0; processesIn(clone).length > 0 && i < 50; i++) await sleep(200);
    const left = processesIn(clone);
    if (left.length > 0) fail(`processes still running 10 s after Ctrl-C: ${left.join(', ')}`);
    console.log(`   exited ${code} after ${seconds(t)}`);

    const problems = unexpectedLines(plain(raw));
    if (problems.length > 0)
      fail(
        `npm start printed what a newcomer should not see (${problems.length} lines):\n${problems.slice(0, 40).join('\n')}\n\n--- the whole output ---\n${plain(raw)}`,
      );
    if (cloneState(clone) !== before) fail(`the quick start changed the clone:\n${git(clone, 'status', '--short')}`);
    passed = true;
    console.log(`\nquick start OK in ${seconds(started)}`);
  } finally {
    if (terminal && terminal.exitCode === null) terminal.kill('SIGTERM');
    for (const signal of ['SIGTERM', 'SIGKILL']) {
      const pids = processesIn(clone);
      for (const pid of pids) {
        try {
          process.kill(pid, signal);
        } catch {
          // already gone
        }
      }
      for (let i = 0; pids.length > 0 && processesIn(clone).length > 0 && i < 25; i++) await sleep(200);
    }
    if (passed && !flags.keep) rmSync(work, { recursive: true, force: true });
    else console.log(`the clone is kept in ${clone}`);
  }
}

main().catch((error) => {
  console.error(`\nquick start FAILED after ${seconds(started)}: ${error instanceof CheckFailed ? error.message : error.stack}`);
  process.exit(1);
});
