import { randomBytes } from 'node:crypto';
import { migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { type Generated, Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { inject } from 'vitest';

/** The business tables the tests write to. */
export interface TestDB {
  charges: { id: string; user_id: string; amount_cents: number; created_at: Generated<Date> };
  ledger: { id: Generated<number>; charge_id: string; amount_cents: number };
}

/** The admin URL the global setup resolved (or DATABASE_URL). */
export function databaseUrl(): string {
  return inject('databaseUrl');
}

/**
 * The PgBouncer (transaction mode) the `pgbouncer` project's global setup started in front of
 * that server, or `undefined` in the other projects (test/support/pgbouncer.ts).
 */
export function pgbouncerUrl(): string | undefined {
  return inject('pgbouncerUrl');
}

export interface TestDatabase {
  /** What the code under test connects to: through PgBouncer in the `pgbouncer` project. */
  readonly url: string;
  /** The same database on the server itself, never pooled: for checks of the server's state. */
  readonly directUrl: string;
  readonly name: string;
  readonly pool: pg.Pool;
  readonly db: Kysely<TestDB>;
  /** A new pool and Kysely instance on the same database (for separate connections). */
  connect(poolSize?: number): { pool: pg.Pool; db: Kysely<TestDB> };
  /** Rows in `charges`. */
  countCharges(): Promise<number>;
  /**
   * Advisory locks any session holds in this database, read on the server itself: a session
   * lock left behind by a pooled connection shows here (docs/pgbouncer.md).
   */
  advisoryLocks(): Promise<number>;
  dispose(): Promise<void>;
}

/**
 * A database of its own for one test file (created, migrated, dropped at the end), so
 * test files run in parallel without seeing each other's rows. In the `pgbouncer` project
 * (and without `url`), every connection of the test goes through its PgBouncer in
 * transaction mode: the same test bodies then run behind a pooler.
 */
export async function createTestDatabase(
  label: string,
  options: { url?: string; poolSize?: number } = {},
): Promise<TestDatabase> {
  const adminUrl = options.url ?? databaseUrl();
  const name = `ik_${label.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const directUrl = withDatabase(adminUrl, name);
  const pooler = options.url === undefined ? pgbouncerUrl() : undefined;
  const url = pooler === undefined ? directUrl : withDatabase(pooler, name);
  const pools: pg.Pool[] = [];
  const dbs: Kysely<TestDB>[] = [];
  const connect = (poolSize = options.poolSize ?? 10) => {
    const pool = createPgPool({ connectionString: url, max: poolSize });
    const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
    pools.push(pool);
    dbs.push(db);
    return { pool, db };
  };
  const { pool, db } = connect();
  const migrated = await migrateInbox(db as Kysely<unknown>);
  if (migrated.error) throw migrated.error;
  await sql`CREATE TABLE charges (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    amount_cents integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
  await sql`CREATE TABLE ledger (id bigserial PRIMARY KEY, charge_id text NOT NULL, amount_cents integer NOT NULL)`.execute(
    db,
  );
  return {
    url,
    directUrl,
    name,
    pool,
    db,
    connect,
    async countCharges() {
      const row = await db.selectFrom('charges').select(sql<string>`count(*)`.as('n')).executeTakeFirstOrThrow();
      return Number(row.n);
    },
    async advisoryLocks() {
      const client = new pg.Client({ connectionString: directUrl });
      await client.connect();
      try {
        const { rows } = await client.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks
           WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        );
        return rows[0]?.n ?? 0;
      } finally {
        await client.end();
      }
    },
    async dispose() {
      for (const d of dbs) await d.destroy().catch(() => {});
      const cleanup = new pg.Client({ connectionString: adminUrl });
      await cleanup.connect();
      try {
        await cleanup.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await cleanup.end();
      }
    },
  };
}

/** The same server URL with another database name. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
