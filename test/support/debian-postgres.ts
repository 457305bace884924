/**
 * A throwaway cluster from Debian's PostgreSQL binaries (/usr/lib/postgresql/<major>/bin), for the tests
 * that must hold on a second major version besides the run's embedded one (PostgreSQL 15 is on every
 * machine this project is built on). Password authentication, wal_level=logical, loopback only; as root
 * it runs as the `postgres` OS user, which Debian's packages create.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export interface DebianPostgres {
  version: number;
  /** The superuser's URL on its `postgres` database. */
  url: string;
  stop(): Promise<void>;
}

export function debianPostgresAvailable(version: number): boolean {
  return existsSync(`/usr/lib/postgresql/${version}/bin/pg_ctl`) && existsSync(`/usr/share/postgresql/${version}/extension/dblink.control`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startDebianPostgres(version: number): Promise<DebianPostgres> {
  const bin = `/usr/lib/postgresql/${version}/bin`;
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const dir = await mkdtemp(join(tmpdir(), `hookbridge-pg${version}-`));
  await chmod(dir, 0o777);
  const data = join(dir, 'data');
  const password = randomBytes(16).toString('hex');
  const pwfile = join(dir, 'pw');
  await writeFile(pwfile, `${password}\n`, { mode: 0o644 });
  const as = (command: string, args: string[]) => (root ? exec('runuser', ['-u', 'postgres', '--', command, ...args]) : exec(command, args));
  const port = await freePort();
  try {
    await as(`${bin}/initdb`, ['-D', data, '-U', 'postgres', `--pwfile=${pwfile}`, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C', '--no-sync']);
    const settings = [
      `port=${port}`,
      "listen_addresses='127.0.0.1'",
      `unix_socket_directories='${dir}'`,
      'wal_level=logical',
      'max_wal_senders=20',
      'max_replication_slots=20',
      'fsync=off',
      'full_page_writes=off',
    ];
    await as(`${bin}/pg_ctl`, ['-D', data, '-l', join(dir, 'log'), '-w', '-t', '60', '-o', settings.map((s) => `-c ${s}`).join(' '), 'start']);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`PostgreSQL ${version} from ${bin} did not start: ${(error as Error).message}`, { cause: error });
  }
  return {
    version,
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async stop() {
      await as(`${bin}/pg_ctl`, ['-D', data, '-m', 'immediate', 'stop']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
