/**
 * `npm run bench [-- --quick] [-- --database-url postgres://...] [-- --pg 14|15|16|17|18]`
 *
 * Runs each scenario against its peer in one run, on the same database, and prints a table plus one
 * `BENCH {json}` line per scenario; writes bench/results/latest.json. pgbench drives the insert
 * scenarios (a public harness, not hand-rolled timers).
 *
 * Scenarios: action-throughput, action-latency (against postgres.js `sql.subscribe`, with bare
 * pg-logical-replication and pg_recvlogical as reference rows), filter-overhead-1, filter-overhead-16
 * (direct transport), filter-overhead-16-2-instances (the same with a second bridge beside the first),
 * filter-floor-1, filter-floor-16 (the floor of any filter over dblink, see filterFloor),
 * big-transaction, filter-overhead-notify-1, filter-overhead-notify-16 (a bridge with
 * FILTER_TRANSPORT=notify, after the first has stopped). `--pg N` runs on the embedded PostgreSQL N (default
 * 18, others fetched once); the table and latest.json say which server version ran.
 */
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../bridge/embedded-postgres.js';
import { FILTER_TRIGGER } from '../bridge/filters/filter-service.js';
import { embeddedBinDir, parseMajor } from '../test/support/pg-versions.js';
import {
  actionExtension,
  createActionTables,
  latencyOurs,
  latencyPostgresJs,
  percentile,
  throughputLogicalReplication,
  throughputOurs,
  throughputPostgresJs,
  throughputRecvlogical,
} from './actions.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const urlArg = args[args.indexOf('--database-url') + 1];
const databaseUrl = args.includes('--database-url') ? urlArg : undefined;
const pgArg = args.includes('--pg') ? parseMajor(args[args.indexOf('--pg') + 1] ?? '', '--pg') : undefined;
if (pgArg !== undefined && databaseUrl !== undefined) throw new Error('--pg chooses the embedded server; it cannot be combined with --database-url');
const seconds = quick ? 3 : 10;
const bigRows = quick ? 300_000 : 5_000_000;
const throughputRows = quick ? 50_000 : 300_000;
const latencyRows = quick ? 200 : 1000;
const latencyIntervalMs = quick ? 20 : 10;
const SLOT = 'hb_bench';

interface BenchResult {
  scenario: string;
  ours: number;
  peer: number | null;
  ratio: number | null;
  unit: string;
  [key: string]: unknown;
}

function findTool(name: string): string {
  return [`/usr/lib/postgresql/15/bin/${name}`, `/usr/bin/${name}`].find((candidate) => existsSync(candidate)) ?? name;
}

async function pgbenchTps(url: string, script: string, clients: number): Promise<number> {
  const { stdout } = await run(findTool('pgbench'), [
    '-n',
    '-c',
    String(clients),
    '-j',
    String(Math.min(clients, 2)),
    '-T',
    String(seconds),
    '-f',
    script,
    url,
  ]);
  const match = /tps = ([\d.]+)/.exec(stdout);
  if (!match) throw new Error(`pgbench printed no tps:\n${stdout}`);
  return Number(match[1]);
}

async function main(): Promise<void> {
  await mkdir(join(root, '.hookbridge'), { recursive: true });
  const work = await mkdtemp(join(root, '.hookbridge', 'bench-'));
  await chmod(work, 0o755);
  let embedded: EmbeddedPostgres | undefined;
  let bridge: ReturnType<typeof spawn> | undefined;
  const results: BenchResult[] = [];
  let serverVersion: string;
  try {
    if (!databaseUrl) {
      const binDir = pgArg === undefined ? undefined : await embeddedBinDir(pgArg);
      embedded = await startEmbeddedPostgres({ dataDir: join(work, 'pg'), persistent: false, binDir });
    }
    const url = databaseUrl ?? (embedded as EmbeddedPostgres).url;
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    serverVersion = (await pool.query<{ v: string }>(`select current_setting('server_version') as v`)).rows[0]?.v ?? '?';
    process.stdout.write(`PostgreSQL ${serverVersion} (${databaseUrl ? 'external' : 'embedded'})\n`);
    await pool.query(`
      drop table if exists bench_plain, bench_filtered, bench_plpgsql, bench_big;
      create table bench_plain (id bigserial primary key, v text);
      create table bench_filtered (id bigserial primary key, v text);
      create table bench_plpgsql (id bigserial primary key, v text);
      create table bench_big (id int primary key, v text);
      create or replace function bench_noop() returns trigger language plpgsql as $$ begin return new; end $$;
      create trigger bench_noop before insert on bench_plpgsql for each row execute function bench_noop();`);

    const extensions = join(work, 'extensions');
    const counter = join(work, 'big-count');
    await mkdir(join(extensions, 'hooks', 'bench'), { recursive: true });
    await writeFile(
      join(extensions, 'hooks', 'bench', 'index.js'),
      `const { writeFileSync } = require('node:fs');
       let seen = 0;
       module.exports = ({ filter, action }, { env }) => {
         filter('bench_filtered.items.create', () => undefined);
         action('bench_big.items.create', () => { seen += 1; if (seen % 10000 === 0) writeFileSync(env.COUNT_FILE, String(seen)); });
       };`,
    );
    await createActionTables(pool);
    await mkdir(join(extensions, 'hooks', 'bench-actions'), { recursive: true });
    await writeFile(join(extensions, 'hooks', 'bench-actions', 'index.js'), actionExtension());
    const tpDone = join(work, 'tp-done');
    const latDone = join(work, 'lat-done');
    const startBridge = (transport: 'direct' | 'notify') =>
      spawn(process.execPath, [join(root, 'dist', 'cli', 'cli.js'), 'start', '-e', extensions], {
        env: {
          ...process.env,
          FILTER_TRANSPORT: transport,
          DATABASE_URL: url,
          HOOKBRIDGE_SLOT: SLOT,
          COUNT_FILE: counter,
          TP_ROWS: String(throughputRows),
          TP_DONE: tpDone,
          LAT_ROWS: String(latencyRows),
          LAT_DONE: latDone,
          PORT: '0',
          LOG_FORMAT: 'json',
          LOG_LEVEL: 'warn',
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
    bridge = startBridge('direct');
    await waitUntil(
      async () => (await pool.query(`select 1 from pg_trigger where tgname = $1`, [FILTER_TRIGGER])).rowCount === 1,
      60_000,
      'the bridge never installed its filter trigger',
    );

    await waitUntil(
      async () => (await pool.query(`select 1 from pg_publication_tables where pubname = 'hookbridge' and tablename = 'bench_tp_ours'`)).rowCount === 1,
      60_000,
      'the bridge never published its tables',
    );
    const ours = await throughputOurs(pool, throughputRows, tpDone);
    const js = await throughputPostgresJs(url, pool, throughputRows);
    const lr = await throughputLogicalReplication(url, pool, throughputRows);
    const recv = await throughputRecvlogical(url, pool, throughputRows, findTool('pg_recvlogical'), join(work, 'recv.out'));
    results.push({
      scenario: 'action-throughput',
      ours: round(ours),
      peer: round(js),
      ratio: round(ours / js, 3),
      unit: 'rows/s',
      rows: throughputRows,
      pg_logical_replication: round(lr),
      pg_recvlogical: round(recv),
    });
    const oursLatency = await latencyOurs(pool, latencyRows, latencyIntervalMs, latDone);
    const jsLatency = await latencyPostgresJs(url, pool, latencyRows, latencyIntervalMs);
    results.push({
      scenario: 'action-latency',
      ours: round(percentile(oursLatency, 50), 2),
      peer: round(percentile(jsLatency, 50), 2),
      ratio: round(percentile(oursLatency, 50) / percentile(jsLatency, 50), 3),
      unit: 'ms p50 (lower is better)',
      ours_p99: round(percentile(oursLatency, 99), 2),
      peer_p99: round(percentile(jsLatency, 99), 2),
      rows: latencyRows,
      rate_per_second: Math.round(1000 / latencyIntervalMs),
    });

    // The accountability statement trigger on published tables (WAL carries no session data): the same
    // one-row insert into a published table (trigger, plus the bridge decoding it) and an unpublished one.
    await writeFile(join(work, 'published.sql'), `insert into bench_tp_ours (v) values ('x');\n`);
    await writeFile(join(work, 'unpublished.sql'), `insert into bench_plain (v) values ('x');\n`);
    const unpublished = await pgbenchTps(url, join(work, 'unpublished.sql'), 1);
    const published = await pgbenchTps(url, join(work, 'published.sql'), 1);
    results.push({
      scenario: 'accountability-overhead-1',
      ours: round(published),
      peer: round(unpublished),
      ratio: round(published / unpublished, 3),
      unit: 'rows/s (published table with accountability trigger / plain table)',
      clients: 1,
      seconds,
    });
    // Every statement emits the identity (a writer cannot talk the trigger out of it, sql/000005.sql):
    // what that costs a transaction of ten one-row statements.
    const ten = (table: string) => `begin;\n${`insert into ${table} (v) values ('x');\n`.repeat(10)}commit;\n`;
    await writeFile(join(work, 'published-10.sql'), ten('bench_tp_ours'));
    await writeFile(join(work, 'unpublished-10.sql'), ten('bench_plain'));
    const unpublished10 = (await pgbenchTps(url, join(work, 'unpublished-10.sql'), 1)) * 10;
    const published10 = (await pgbenchTps(url, join(work, 'published-10.sql'), 1)) * 10;
    results.push({
      scenario: 'accountability-overhead-10',
      ours: round(published10),
      peer: round(unpublished10),
      ratio: round(published10 / unpublished10, 3),
      unit: 'rows/s, 10 one-row inserts a transaction (published table with accountability trigger / plain table)',
      clients: 1,
      seconds,
    });

    for (const table of ['plain', 'filtered', 'plpgsql']) {
      await writeFile(join(work, `${table}.sql`), `insert into bench_${table} (v) values ('x');\n`);
    }
    const filterOverhead = async (transport: 'direct' | 'notify', clientCounts = [1, 16], suffix = '') => {
      for (const clients of clientCounts) {
        const plain = await pgbenchTps(url, join(work, 'plain.sql'), clients);
        const filtered = await pgbenchTps(url, join(work, 'filtered.sql'), clients);
        const plpgsql = await pgbenchTps(url, join(work, 'plpgsql.sql'), clients);
        results.push({
          scenario: `${transport === 'direct' ? `filter-overhead-${clients}` : `filter-overhead-notify-${clients}`}${suffix}`,
          ours: round(filtered),
          peer: round(plain),
          ratio: round(filtered / plain, 3),
          unit: 'rows/s',
          transport,
          plpgsql_trigger: round(plpgsql),
          // Wall time per row above the same insert with a no-op PL/pgSQL trigger, at this concurrency.
          us_per_row_over_plpgsql: round(1e6 / filtered - 1e6 / plpgsql, 1),
          clients,
          seconds,
        });
      }
    };
    await filterOverhead('direct');
    await filterFloor(pool, url, work, results);

    // Several bridges: a second one joins (a standby for actions; both answer filter calls, each
    // pgbench session choosing one), and the 16-client scenario runs again.
    const second = startBridge('direct');
    try {
      await waitUntil(
        async () =>
          (await pool.query(`select 1 from hookbridge.filter_endpoint where http is not null and backend_pid in (select pid from pg_stat_activity)`))
            .rowCount === 2,
        60_000,
        'the second bridge never joined',
      );
      await filterOverhead('direct', [16], '-2-instances');
    } finally {
      await stopBridge(second);
    }

    const started = Date.now();
    await pool.query(`insert into bench_big select g, 'row ' || g from generate_series(1, ${bigRows}) g`);
    const committed = Date.now();
    await waitUntil(async () => Number(await readFile(counter, 'utf8').catch(() => '0')) >= bigRows, 900_000, 'big transaction not delivered');
    const delivered = Date.now();
    const status = await readFile(`/proc/${bridge.pid}/status`, 'utf8');
    const peakMb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
    results.push({
      scenario: 'big-transaction',
      ours: round(peakMb),
      peer: null,
      ratio: null,
      unit: 'MB peak RSS',
      rows: bigRows,
      insert_seconds: round((committed - started) / 1000, 1),
      delivery_seconds: round((delivered - committed) / 1000, 1),
      rows_per_second: round(bigRows / ((delivered - committed) / 1000)),
    });

    // The notify transport: a bridge of its own (the direct one goes first, so every call takes notify).
    await stopBridge(bridge);
    bridge = startBridge('notify');
    await waitUntil(
      async () =>
        (await pool.query(`select 1 from hookbridge.filter_endpoint where transport = 'notify' and backend_pid in (select pid from pg_stat_activity)`))
          .rowCount === 1,
      60_000,
      'the notify bridge never published its endpoint',
    );
    await waitUntil(
      async () =>
        pool.query(`insert into bench_filtered (v) values ('warm-up')`).then(
          () => true,
          () => false,
        ),
      60_000,
      'filtered inserts never passed through the notify bridge',
    );
    await filterOverhead('notify');
    await pool.end();
  } finally {
    await stopBridge(bridge);
    if (databaseUrl) {
      const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
      await pool.query(`select pg_drop_replication_slot($1) from pg_replication_slots where slot_name = $1`, [SLOT]).catch(() => undefined);
      await pool.end();
    }
    await embedded?.stop();
    await rm(work, { recursive: true, force: true });
  }

  process.stdout.write(`\nPostgreSQL ${serverVersion}\n${'scenario'.padEnd(30)}${'ours'.padStart(12)}${'peer'.padStart(12)}${'ratio'.padStart(9)}  unit\n`);
  const line = (name: string, ours: unknown, peer: unknown, ratio: unknown, unit: string) =>
    process.stdout.write(`${name.padEnd(30)}${String(ours).padStart(12)}${String(peer ?? '—').padStart(12)}${String(ratio ?? '—').padStart(9)}  ${unit}\n`);
  for (const r of results) {
    line(r.scenario, r.ours, r.peer, r.ratio, r.unit);
    if (r.scenario === 'action-throughput') {
      line('  reference: pg-logical-replication', r['pg_logical_replication'], null, null, 'rows/s (bare, auto-ack, no handler)');
      line('  reference: pg_recvlogical', r['pg_recvlogical'], null, null, 'rows/s (raw stream, no decoding)');
    }
    if (r.scenario === 'action-latency') line('  p99', r['ours_p99'], r['peer_p99'], null, 'ms');
  }
  process.stdout.write('\n');
  for (const r of results) process.stdout.write(`BENCH ${JSON.stringify(r)}\n`);
  await mkdir(join(root, 'bench', 'results'), { recursive: true });
  await writeFile(
    join(root, 'bench', 'results', 'latest.json'),
    `${JSON.stringify({ at: new Date().toISOString(), quick, postgres: serverVersion, results }, null, 2)}\n`,
  );
}

/**
 * filter-floor-1/16: a PL/pgSQL trigger whose only work is one blocking dblink round trip to a process
 * that answers at once (floor-server.ts, the bridge's own wire server): what a filter over dblink costs
 * before it does anything. The filter-overhead rows are read against it. Skipped, saying why, only where
 * dblink is missing or this role may not call it; any other failure fails the bench.
 */
async function filterFloor(pool: pg.Pool, url: string, work: string, results: BenchResult[]): Promise<void> {
  const { rows } = await pool.query<{ schema: string }>(
    `select n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'dblink'`,
  );
  const schema = rows[0]?.schema;
  if (!schema) return void process.stdout.write('filter-floor skipped: dblink is not installed\n');
  const password = randomBytes(12).toString('hex');
  const server = spawn(process.execPath, ['--import', 'jiti/register', join(root, 'bench', 'floor-server.ts')], {
    cwd: root,
    env: { ...process.env, FLOOR_PASSWORD: password },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the floor server did not say its port within 30 s')), 30_000);
      server.stdout?.once('data', (chunk: Buffer) => {
        clearTimeout(timer);
        const port = Number(String(chunk).trim());
        if (Number.isInteger(port) && port > 0) resolve(port);
        else reject(new Error(`the floor server printed ${JSON.stringify(String(chunk))} instead of its port`));
      });
      server.once('error', reject);
      server.once('exit', (code) => reject(new Error(`the floor server exited (${code}) before listening`)));
    });
    const d = pg.escapeIdentifier(schema);
    const conninfo = `host=127.0.0.1 port=${port} user=floor password=${password} dbname=floor`;
    try {
      await pool.query(`
        drop table if exists bench_floor;
        create table bench_floor (id bigserial primary key, v text);
        create or replace function bench_floor() returns trigger language plpgsql as $$
        declare
          verdict text;
        begin
          if not coalesce('hb_floor' = any (${d}.dblink_get_connections()), false) then
            perform ${d}.dblink_connect('hb_floor', ${pg.escapeLiteral(conninfo)});
          end if;
          select r.v into verdict from ${d}.dblink('hb_floor', 'K ' || row_to_json(new)::text) as r(v text);
          return new;
        end $$;
        create trigger bench_floor before insert on bench_floor for each row execute function bench_floor();
        insert into bench_floor (v) values ('warm-up');`);
    } catch (error) {
      if ((error as pg.DatabaseError).code !== '42501') throw error;
      return void process.stdout.write(`filter-floor skipped: this role may not call dblink (${(error as Error).message})\n`);
    }
    await writeFile(join(work, 'floor.sql'), `insert into bench_floor (v) values ('x');\n`);
    for (const clients of [1, 16]) {
      const plain = await pgbenchTps(url, join(work, 'plain.sql'), clients);
      const floor = await pgbenchTps(url, join(work, 'floor.sql'), clients);
      results.push({
        scenario: `filter-floor-${clients}`,
        ours: round(floor),
        peer: round(plain),
        ratio: round(floor / plain, 3),
        unit: 'rows/s (reference: one dblink round trip per row to a process that answers at once; no hook, no proof, no bounded wait)',
        clients,
        seconds,
      });
    }
  } finally {
    server.kill();
    // Its trigger names a port that is free from now on: nothing of it stays behind.
    await pool.query('drop table if exists bench_floor; drop function if exists bench_floor()').catch(() => undefined);
  }
}

async function stopBridge(bridge: ReturnType<typeof spawn> | undefined): Promise<void> {
  if (!bridge || bridge.exitCode !== null) return;
  const closed = new Promise((resolve) => bridge.once('close', resolve));
  bridge.kill('SIGTERM');
  await closed;
}

function round(value: number, digits = 0): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

async function waitUntil(predicate: () => Promise<boolean>, timeoutMs: number, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(message);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

main().catch((error) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
