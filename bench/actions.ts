/**
 * Action scenarios: how fast committed rows reach a no-op handler, ours (durable slot, every change
 * acknowledged only after its handler) against what a user would pick instead: postgres.js
 * `sql.subscribe` (temporary slot), bare `pg-logical-replication` (auto-acknowledge) and
 * `pg_recvlogical` (no decoding into rows at all).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import postgres from 'postgres';

const run = promisify(execFile);

export const ACTION_TABLES = ['bench_tp_ours', 'bench_tp_js', 'bench_tp_lr', 'bench_tp_recv', 'bench_lat_ours', 'bench_lat_js'];

export function actionExtension(): string {
  // Counts rows; writes the time the last one arrived, and each row's commit-to-handler latency.
  return `
    const { writeFileSync, appendFileSync } = require('node:fs');
    let seen = 0;
    const latencies = [];
    module.exports = ({ action }, { env }) => {
      action('bench_tp_ours.items.create', () => {
        seen += 1;
        if (seen === Number(env.TP_ROWS)) writeFileSync(env.TP_DONE, String(Date.now()));
      });
      action('bench_lat_ours.items.create', ({ payload }) => {
        latencies.push(performance.timeOrigin + performance.now() - Number(payload.sent_at));
        if (latencies.length === Number(env.LAT_ROWS)) writeFileSync(env.LAT_DONE, JSON.stringify(latencies));
      });
    };`;
}

export async function createActionTables(pool: pg.Pool): Promise<void> {
  for (const table of ACTION_TABLES) {
    await pool.query(`drop table if exists ${table}; create table ${table} (id bigserial primary key, v text, sent_at double precision)`);
  }
  await pool.query(`drop publication if exists alltables; create publication alltables for table bench_tp_js, bench_lat_js`);
  await pool.query(`drop publication if exists bench_lr; create publication bench_lr for table bench_tp_lr, bench_tp_recv`);
}

/** Inserts `rows` rows in transactions of 1,000; resolves at the last commit. */
export async function insertRows(pool: pg.Pool, table: string, rows: number): Promise<number> {
  for (let done = 0; done < rows; done += 1000) {
    const count = Math.min(1000, rows - done);
    await pool.query(`insert into ${table} (v) select 'row ' || g from generate_series(1, $1) g`, [count]);
  }
  return Date.now();
}

async function waitUntil<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** rows/s from the first insert to the last row handled. */
export async function throughputOurs(pool: pg.Pool, rows: number, doneFile: string): Promise<number> {
  const started = Date.now();
  await insertRows(pool, 'bench_tp_ours', rows);
  const done = await waitUntil(async () => (existsSync(doneFile) ? Number(await readFile(doneFile, 'utf8')) : undefined), 600_000, 'our handler');
  return rows / ((done - started) / 1000);
}

export async function throughputPostgresJs(url: string, pool: pg.Pool, rows: number): Promise<number> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  let seen = 0;
  let done = 0;
  try {
    await sql.subscribe('insert:bench_tp_js', () => {
      seen += 1;
      if (seen === rows) done = Date.now();
    });
    const started = Date.now();
    await insertRows(pool, 'bench_tp_js', rows);
    await waitUntil(() => (done ? done : undefined), 600_000, 'postgres.js subscribe');
    return rows / ((done - started) / 1000);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export async function throughputLogicalReplication(url: string, pool: pg.Pool, rows: number): Promise<number> {
  await pool.query(`select pg_create_logical_replication_slot('bench_lr', 'pgoutput')`);
  const service = new LogicalReplicationService({ connectionString: url }, { acknowledge: { auto: true, timeoutSeconds: 10 } });
  let seen = 0;
  let done = 0;
  service.on('data', (_lsn: string, message: { tag: string }) => {
    if (message.tag === 'insert') {
      seen += 1;
      if (seen === rows) done = Date.now();
    }
  });
  service.on('error', () => undefined);
  try {
    void service.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: ['bench_lr'] }), 'bench_lr').catch(() => undefined);
    await waitUntil(
      async () => ((await pool.query(`select 1 from pg_replication_slots where slot_name = 'bench_lr' and active`)).rowCount ? true : undefined),
      30_000,
      'pg-logical-replication to start',
    );
    const started = Date.now();
    await insertRows(pool, 'bench_tp_lr', rows);
    await waitUntil(() => (done ? done : undefined), 600_000, 'pg-logical-replication');
    return rows / ((done - started) / 1000);
  } finally {
    await service.stop();
    await pool.query(`select pg_drop_replication_slot('bench_lr')`).catch(() => undefined);
  }
}

/** pg_recvlogical receives the raw stream up to the last commit's LSN (no decoding into rows). */
export async function throughputRecvlogical(url: string, pool: pg.Pool, rows: number, tool: string, outFile: string): Promise<number> {
  await pool.query(`select pg_create_logical_replication_slot('bench_recv', 'pgoutput')`);
  try {
    const started = Date.now();
    await insertRows(pool, 'bench_tp_recv', rows);
    const { rows: lsn } = await pool.query<{ lsn: string }>(`select pg_current_wal_lsn()::text as lsn`);
    await run(tool, [
      '-d',
      url,
      '--slot',
      'bench_recv',
      '--start',
      '--endpos',
      lsn[0]?.lsn ?? '0/0',
      '-o',
      'proto_version=1',
      '-o',
      'publication_names=bench_lr',
      '-f',
      outFile,
      '--no-loop',
    ]);
    return rows / ((Date.now() - started) / 1000);
  } finally {
    await pool.query(`select pg_drop_replication_slot('bench_recv')`).catch(() => undefined);
  }
}

/** Inserts one row every `intervalMs`, each carrying its send time. */
async function steadyInserts(pool: pg.Pool, table: string, rows: number, intervalMs: number): Promise<void> {
  for (let i = 0; i < rows; i++) {
    const next = Date.now() + intervalMs;
    // Sub-millisecond wall-clock time, comparable across the processes of this machine.
    await pool.query(`insert into ${table} (v, sent_at) values ('x', $1)`, [now()]);
    const wait = next - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

export async function latencyOurs(pool: pg.Pool, rows: number, intervalMs: number, doneFile: string): Promise<number[]> {
  await steadyInserts(pool, 'bench_lat_ours', rows, intervalMs);
  return waitUntil(async () => (existsSync(doneFile) ? (JSON.parse(await readFile(doneFile, 'utf8')) as number[]) : undefined), 120_000, 'our latency run');
}

export async function latencyPostgresJs(url: string, pool: pg.Pool, rows: number, intervalMs: number): Promise<number[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const latencies: number[] = [];
  try {
    await sql.subscribe('insert:bench_lat_js', (row) => latencies.push(now() - Number(row?.['sent_at'])));
    await steadyInserts(pool, 'bench_lat_js', rows, intervalMs);
    await waitUntil(() => (latencies.length >= rows ? true : undefined), 60_000, 'postgres.js latency run');
    return latencies;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
