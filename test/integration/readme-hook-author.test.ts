/**
 * The README's example for hook authors ("Testing your hooks in Docker and in CI") run as it stands: its
 * blocks marked `<!-- hook-author-example: PATH -->` are written into a scratch project whose
 * `node_modules/hookbridge` is this checkout (its dist/, as a tarball install would have it), and vitest
 * runs the example's test file there in a process of its own, as the author's `npx vitest run` would
 * (and tsc checks it). With Docker, the example workflow's service and `wal_level` step run too.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { getContainerRuntimeClient, ImageName } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { createTestDatabase, inMatrixRun } from '../support/database.js';
import { waitFor, withClient } from '../support/helpers.js';
import { LOCAL_PG_IMAGE, testPgImage } from '../support/testcontainers.js';

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const TEST_FILE = 'test/hooks.test.ts';
const HOOK_FILE = 'extensions/hooks/slugify/index.ts';
const WORKFLOW_FILE = '.github/workflows/hooks.yml';

/** Each fenced block right after a `<!-- hook-author-example: PATH -->` line, by PATH. */
function exampleBlocks(readme: string): Map<string, string> {
  const blocks = new Map<string, string>();
  const pattern = /^<!-- hook-author-example: (\S+) -->\n```[a-z]*\n([\s\S]*?)^```$/gm;
  for (const match of readme.matchAll(pattern)) blocks.set(match[1]!, match[2]!);
  return blocks;
}

/** Whether a Docker engine answers, as the example itself decides. */
async function dockerAnswers(): Promise<boolean> {
  return getContainerRuntimeClient().then(
    () => true,
    () => false,
  );
}

let blocks: Map<string, string>;
let project: string;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/bridge/testing.js'))) {
    throw new Error('dist/ is missing: `npm run build` first (the example imports hookbridge/testing as an installed package would)');
  }
  blocks = exampleBlocks(await readFile(join(repoRoot, 'README.md'), 'utf8'));
  // Inside the checkout, so that vitest, pg and testcontainers resolve from its node_modules, as from the author's.
  project = join(repoRoot, '.hookbridge', `readme-example-${randomBytes(4).toString('hex')}`);
  await mkdir(join(project, 'node_modules'), { recursive: true });
  await symlink(repoRoot, join(project, 'node_modules', 'hookbridge'), 'dir');
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'my-hooks', private: true, type: 'module' }, null, 2));
  // An empty config of its own: vitest looks for one upwards, and would find the checkout's.
  await writeFile(join(project, 'vitest.config.mjs'), 'export default {};\n');
  for (const [path, content] of blocks) {
    await mkdir(dirname(join(project, path)), { recursive: true });
    await writeFile(join(project, path), content);
  }
});

afterAll(async () => {
  if (project) await rm(project, { recursive: true, force: true });
});

interface VitestRun {
  code: number | null;
  output: string;
  passed: number;
  failed: number;
}

/** `vitest run` in the scratch project, in an environment of its own (none of this run's settings). */
async function runExample(env: Record<string, string>): Promise<VitestRun> {
  const childEnv: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(VITEST|TEST$|NODE_ENV$|DATABASE_URL$|PG|HOOKBRIDGE_|POSTGRES_)/.test(key)) continue;
    childEnv[key] = value;
  }
  Object.assign(childEnv, env);
  const report = join(project, `report-${randomBytes(3).toString('hex')}.json`);
  const child = spawn(process.execPath, [join(repoRoot, 'node_modules/vitest/vitest.mjs'), 'run', '--reporter=json', `--outputFile=${report}`], {
    cwd: project,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  const results = JSON.parse(await readFile(report, 'utf8').catch(() => '{}')) as { numPassedTests?: number; numFailedTests?: number };
  return { code, output, passed: results.numPassedTests ?? 0, failed: results.numFailedTests ?? 0 };
}

function expectPassed(result: VitestRun): void {
  expect({ code: result.code, passed: result.passed, failed: result.failed }, result.output).toEqual({ code: 0, passed: 1, failed: 0 });
}

describe('the README example for hook authors', () => {
  it('has the hook, its test file and a workflow', () => {
    expect([...blocks.keys()].sort()).toEqual([WORKFLOW_FILE, HOOK_FILE, TEST_FILE].sort());
  });

  // The type check, and the runs on a server of the example's own, do not depend on the run's server: once, in `npm test`.
  it.skipIf(inMatrixRun)('type-checks under strict TypeScript (NodeNext), with the types hookbridge ships', async () => {
    await writeFile(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
        },
        include: ['test', 'extensions'],
      }),
    );
    const tsc = await run(process.execPath, [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', project]).then(
      () => '',
      (error: { stdout?: string; message: string }) => error.stdout || error.message,
    );
    expect(tsc).toBe('');
  });

  it('passes against a server given in DATABASE_URL, writing there', async () => {
    const db = await createTestDatabase('readme_example');
    try {
      expectPassed(await runExample({ DATABASE_URL: db.url }));
      const rows = await withClient(db.url, async (c) => (await c.query('select title, slug from articles')).rows);
      expect(rows).toEqual([{ title: 'Hello, World!', slug: 'hello-world' }]);
    } finally {
      await db.drop();
    }
  }, 180_000);

  it.skipIf(inMatrixRun)(
    'without DATABASE_URL: Postgres in Docker where an engine answers, else the embedded PostgreSQL 18',
    async (ctx) => {
      if (!(await dockerAnswers())) {
        // The embedded server is then the only Postgres the example can have had.
        expectPassed(await runExample({}));
        return;
      }
      const image = await usableImage();
      if (!image) return ctx.skip(`Docker answers but has neither ${testPgImage()} nor ${LOCAL_PG_IMAGE}: run scripts/docker/prepare.sh`);
      // A tag of this test's own, so that Docker's events show that the example started a container from it.
      const tag = `hookbridge-test/readme-example:${randomBytes(4).toString('hex')}`;
      await run('docker', ['tag', image, tag]);
      // Watched live: the daemon keeps only its last 256 events, and health checks make many.
      const since = String(Math.floor(Date.now() / 1000) - 1);
      const watcher = spawn(
        'docker',
        ['events', '--since', since, '--filter', 'type=container', '--filter', 'event=start', '--filter', `image=${tag}`, '--format', '{{.ID}}'],
        {
          stdio: ['ignore', 'pipe', 'ignore'],
        },
      );
      let started = '';
      watcher.stdout.on('data', (chunk) => (started += chunk));
      try {
        // No registry here, hence no reaper (an image of its own), as the README says.
        const result = await runExample({ POSTGRES_IMAGE: tag, TESTCONTAINERS_RYUK_DISABLED: 'true' });
        expectPassed(result);
        await waitFor(() => started.trim() !== '', { timeoutMs: 5_000, message: `Docker reported no container started from ${tag}:\n${result.output}` });
        expect(started.trim().split('\n')).toHaveLength(1);
      } finally {
        watcher.kill();
        await run('docker', ['rmi', tag]).catch(() => undefined);
      }
    },
    180_000,
  );

  it.skipIf(inMatrixRun)(
    "with Docker: the workflow's service and wal_level step give a server the test file passes on",
    async (ctx) => {
      if (!(await dockerAnswers())) return ctx.skip('no Docker engine answers: the workflow needs one');
      const image = await usableImage();
      if (!image) return ctx.skip(`Docker answers but has neither ${testPgImage()} nor ${LOCAL_PG_IMAGE}: run scripts/docker/prepare.sh`);
      const workflow = parseYaml(blocks.get(WORKFLOW_FILE)!) as Workflow;
      const job = workflow.jobs.test;
      const service = job.services.postgres;
      // The official image, which the local one stands in for where no registry can be reached.
      expect(service.image).toBe('postgres:18');
      expect(service.ports).toEqual(['5432:5432']);
      const step = job.steps.find((s) => s.name === 'wal_level=logical');
      expect(step?.run).toBeDefined();

      // As the runner starts a service: its env and options; its port on a free one of ours instead of 5432.
      const { stdout: created } = await run(
        'bash',
        [
          '-c',
          `docker run -d ${service.options} ${Object.keys(service.env)
            .map((k) => `-e ${k}`)
            .join(' ')} -p 127.0.0.1::5432 "$IMAGE"`,
        ],
        { env: { ...process.env, ...service.env, IMAGE: image } },
      );
      const id = created.trim();
      try {
        await waitFor(async () => (await run('docker', ['inspect', '--format', '{{.State.Health.Status}}', id])).stdout.trim() === 'healthy', {
          timeoutMs: 90_000,
          intervalMs: 500,
          message: 'the service never became healthy through its own health check',
        });
        // GitHub runs a step with `bash -e`, its expressions already substituted.
        await run('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', step!.run!.replaceAll('${{ job.services.postgres.id }}', id)], {
          timeout: 90_000,
        });
        const { stdout: published } = await run('docker', ['port', id, '5432/tcp']);
        const url = new URL(job.env.DATABASE_URL);
        url.host = published.trim().split('\n')[0]!;
        expect(await withClient(url.toString(), async (c) => (await c.query('show wal_level')).rows)).toEqual([{ wal_level: 'logical' }]);
        expectPassed(await runExample({ DATABASE_URL: url.toString() }));
      } finally {
        await run('docker', ['rm', '-f', id]).catch(() => undefined);
      }
    },
    240_000,
  );
});

interface Workflow {
  jobs: {
    test: {
      services: { postgres: { image: string; env: Record<string, string>; ports: string[]; options: string } };
      env: { DATABASE_URL: string };
      steps: Array<{ name?: string; run?: string; uses?: string }>;
    };
  };
}

/** The image the example may use here without a registry: this run's, or the local one, if the engine has it. */
async function usableImage(): Promise<string | undefined> {
  const client = await getContainerRuntimeClient();
  for (const image of [testPgImage(), LOCAL_PG_IMAGE]) {
    if (await client.image.exists(ImageName.fromString(image))) return image;
  }
  return undefined;
}
