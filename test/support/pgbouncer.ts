// A private PgBouncer in transaction mode in front of the test Postgres (docs/pgbouncer.md):
// each transaction of a client may run on another server connection, as behind a production
// pooler. Debian's `pgbouncer` (scripts/test.sh installs it), on a free port, with a small
// pool so that connections really switch.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { withParentDeathSignal } from './kafka-broker.ts';
import { freePort } from './private-postgres.ts';

const PGBOUNCER = process.env.INBOXKIT_PGBOUNCER ?? '/usr/sbin/pgbouncer';
const START_TIMEOUT_MS = 20_000;

export interface PgBouncer {
  /** `postgres://<user>@127.0.0.1:<port>/postgres`: the upstream server's databases, through the pooler. */
  readonly url: string;
  readonly port: number;
  /** Server connections per (database, user): what the clients share. */
  readonly poolSize: number;
  /** SIGTERM, wait for the exit; removes its folder. */
  stop(): Promise<void>;
}

export interface StartPgBouncerOptions {
  /** The Postgres to pool (host, port, user and password are taken from it). */
  readonly upstreamUrl: string;
  /** `default_pool_size`; default 4. */
  readonly poolSize?: number;
  /** `query_wait_timeout` in seconds (how long a query may queue for a server connection); PgBouncer's default 120. */
  readonly queryWaitTimeoutSec?: number;
}

/**
 * Starts PgBouncer with `pool_mode = transaction`, every database of the upstream server
 * (`* =`), trust auth for the upstream's user, no `server_reset_query` (transaction mode
 * runs none), and `server_round_robin = 1`: an idle server connection is taken in turn
 * rather than the one last used, so two consecutive transactions of one client usually
 * run on different server connections. As root it runs as the `postgres` user (PgBouncer
 * refuses to run as root).
 */
export async function startPgBouncer(options: StartPgBouncerOptions): Promise<PgBouncer> {
  const upstream = new URL(options.upstreamUrl);
  const user = decodeURIComponent(upstream.username || 'postgres');
  const password = decodeURIComponent(upstream.password);
  const poolSize = options.poolSize ?? 4;
  const dir = mkdtempSync(join(tmpdir(), 'inboxkit-pgbouncer-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, uid, gid);
  }
  const port = await freePort();
  const server = [
    `host=${upstream.hostname.replace(/^\[|\]$/g, '')}`,
    `port=${upstream.port || '5432'}`,
    `user=${user}`,
    ...(password === '' ? [] : [`password=${password}`]),
  ].join(' ');
  const config = join(dir, 'pgbouncer.ini');
  const logFile = join(dir, 'pgbouncer.log');
  writeFileSync(
    config,
    `[databases]
* = ${server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${join(dir, 'userlist.txt')}
pool_mode = transaction
default_pool_size = ${poolSize}
query_wait_timeout = ${options.queryWaitTimeoutSec ?? 120}
max_client_conn = 1000
server_reset_query =
server_round_robin = 1
ignore_startup_parameters = extra_float_digits
logfile = ${logFile}
pidfile = ${join(dir, 'pgbouncer.pid')}
`,
  );
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" ""\n`);
  const [file, argv] = withParentDeathSignal(PGBOUNCER, [...(asRoot ? ['-u', 'postgres'] : []), config]);
  const child: ChildProcess = spawn(file, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  // The parent-death signal does not survive PgBouncer's switch to the postgres user: kill it
  // on exit too.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (error) => {
      stderr += String(error);
      resolve();
    });
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (running()) child.kill('SIGTERM');
    await exited;
    process.off('exit', killOnExit);
    rmSync(dir, { recursive: true, force: true });
  };
  const url = `postgres://${encodeURIComponent(user)}@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (!running()) {
      const log = readLog(logFile);
      await stop();
      throw new Error(`PgBouncer (${PGBOUNCER}) exited at start: ${stderr}\n${log}`);
    }
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`PgBouncer did not answer on 127.0.0.1:${port}: ${(error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await client.end().catch(() => {});
    }
  }
  return { url, port, poolSize, stop };
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
