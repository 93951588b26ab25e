import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { InboxLogger } from './logger.js';
import { silentLogger } from './logger.js';

/** Options of {@link createPgPool}: node-postgres' own, plus a logger. */
export interface PgPoolOptions extends pg.PoolConfig {
  /** Where connection errors are logged. Default: silent. */
  readonly logger?: InboxLogger;
}

/**
 * A node-postgres pool set up the way a long-running consumer needs it (docs/design.md,
 * "Clients"):
 * - an `error` listener on the pool and on every client, checked out or idle, so a
 *   connection dropped by the server (restart, failover, idle timeout) is logged instead of
 *   crashing the process with an unhandled `error` event;
 * - `connectionTimeoutMillis` defaulting to 5000, so `connect()` fails instead of waiting
 *   forever when the server is gone;
 * - `keepAlive` on.
 *
 * Broken clients are never reused: pg-pool drops a client that errored when it is released.
 *
 * @example
 * ```ts
 * import { createPgPool } from '@inboxkit/core/pg'
 * const pool = createPgPool({ connectionString: process.env.DATABASE_URL, max: 10 })
 * const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) })
 * ```
 */
export function createPgPool(options: PgPoolOptions = {}): pg.Pool {
  const { logger = silentLogger, ...config } = options;
  const pool = new pg.Pool({ connectionTimeoutMillis: 5000, keepAlive: true, ...config });
  pool.on('error', (error) => {
    logger.warn({ err: error }, 'inboxkit: an idle Postgres connection failed; it will be replaced');
  });
  pool.on('connect', (client) => {
    client.on('error', (error) => {
      logger.warn({ err: error }, 'inboxkit: a Postgres connection failed; its transaction is rolled back');
    });
  });
  return pool;
}

/**
 * A Kysely instance over {@link createPgPool}: the shortest way to a `db` for `createInbox`.
 *
 * @example
 * ```ts
 * const db = createPgKysely<DB>({ connectionString: process.env.DATABASE_URL })
 * const inbox = createInbox({ db, consumer: 'payments' })
 * ```
 */
export function createPgKysely<DB>(options: PgPoolOptions = {}): Kysely<DB> {
  return new Kysely<DB>({ dialect: new PostgresDialect({ pool: createPgPool(options) }) });
}
