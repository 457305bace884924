#!/usr/bin/env node
/**
 * `npm run test:matrix [-- 14 16 ...]`: the integration suite on each supported PostgreSQL major in turn
 * (default 14 15 16 17 18), each on an embedded server of that version (HOOKBRIDGE_TEST_PG_VERSION; the
 * binaries are fetched once into .hookbridge/pg-binaries). Runs every version even when one fails, then
 * prints a summary and exits 1 if any failed. Needs a build (`npm run build`) for the CLI tests.
 *
 * A file that fails is run once more on its own, and the summary names it: passing then is reported as
 * FLAKY (the version still passes), failing again fails the version. Five runs of the suite give a flaky
 * test five chances; the summary keeps them in view instead of hiding them. Files run as many at once as
 * vitest.config.ts says (one more than there are cores). An earlier round found that more files at once
 * starved the bridges the CLI tests spawn on 2 cores; they now start one filter worker instead of two
 * (test/support/cli.ts), and three files at once passed whole runs of npm test and of the matrix. A file
 * reported FLAKY here is the first sign to look for.
 *
 * Files whose subject is the Node side alone (packaging, argument handling, type generation) run once, in
 * `npm test` on the default version, and so do single tests whose subject does not depend on the server's
 * version (they skip when HOOKBRIDGE_TEST_MATRIX=1, see inMatrixRun); MATRIX_ALL=1 runs them on every version too.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';

const MAJORS = ['14', '15', '16', '17', '18'];
const NODE_SIDE_ONLY = [
  'test/integration/package.test.ts',
  'test/integration/cli-scripting.test.ts',
  'test/integration/config-and-logging.test.ts',
  'test/integration/types-command.test.ts',
  'test/integration/public-api.test.ts',
  'test/integration/testcontainers.test.ts',
];

const requested = process.argv.slice(2);
const unknown = requested.filter((v) => !MAJORS.includes(v));
if (unknown.length > 0) {
  process.stderr.write(`test:matrix: unknown PostgreSQL version(s) ${unknown.join(', ')}; supported: ${MAJORS.join(', ')}\n`);
  process.exit(2);
}
const majors = requested.length > 0 ? requested : MAJORS;
// The files, named: vitest's --exclude does not reach a project that has an exclude list of its own.
const files = readdirSync('test/integration')
  .filter((name) => name.endsWith('.test.ts'))
  .map((name) => `test/integration/${name}`)
  .filter((file) => process.env.MATRIX_ALL === '1' || !NODE_SIDE_ONLY.includes(file));

/** Runs vitest; the exit code and the files that failed (from its JSON report). */
async function vitest(major, args) {
  const report = join(mkdtempSync(join(tmpdir(), 'hookbridge-matrix-')), 'report.json');
  const code = await new Promise((resolve) => {
    const child = spawn('npx', ['vitest', 'run', '--project', 'integration', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...args], {
      stdio: 'inherit',
      // HOOKBRIDGE_TEST_MATRIX: tests whose subject does not depend on the server's version ran in `npm test`.
      env: { ...process.env, HOOKBRIDGE_TEST_PG_VERSION: major, ...(process.env.MATRIX_ALL === '1' ? {} : { HOOKBRIDGE_TEST_MATRIX: '1' }) },
    });
    child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 128 : 1)));
  });
  let failed = [];
  try {
    const { testResults } = JSON.parse(readFileSync(report, 'utf8'));
    failed = testResults.filter((r) => r.status !== 'passed').map((r) => relative(process.cwd(), r.name));
  } catch {
    // No report (vitest itself failed): the exit code says so.
  }
  rmSync(dirname(report), { recursive: true, force: true });
  return { code, failed };
}

const results = [];
for (const major of majors) {
  process.stdout.write(`\n=== PostgreSQL ${major}: integration suite ===\n`);
  const started = Date.now();
  const first = await vitest(major, files);
  let flaky = [];
  let code = first.code;
  if (code !== 0 && first.failed.length > 0 && first.failed.length <= 5) {
    process.stdout.write(`\n=== PostgreSQL ${major}: again, on their own: ${first.failed.join(', ')} ===\n`);
    const again = await vitest(major, first.failed);
    if (again.code === 0) flaky = first.failed;
    code = again.code;
  }
  results.push({ major, code, flaky, seconds: Math.round((Date.now() - started) / 1000) });
}

process.stdout.write('\n=== test:matrix ===\n');
for (const { major, code, flaky, seconds } of results) {
  const verdict = code === 0 ? 'passed' : `FAILED (exit ${code})`;
  process.stdout.write(
    `PostgreSQL ${major}: ${verdict} in ${seconds} s${flaky.length > 0 ? `; FLAKY (failed, then passed alone): ${flaky.join(', ')}` : ''}\n`,
  );
}
process.exit(results.every((r) => r.code === 0) ? 0 : 1);
