// Start-up during a Postgres outage: `waitForDatabase` and `migrateInbox({ waitForDatabase })`
// wait with backoff until the database answers, so a consumer started while Postgres is
// down (or restarting) comes up with it instead of exiting on its first error.
import {
  ConfigurationError,
  DatabaseUnavailableError,
  migrateInbox,
  type StartupRetry,
  waitForDatabase,
} from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseUrl, withDatabase } from '../../../test/support/postgres.ts';
import { freePort, type PrivatePostgres, startPrivatePostgres } from '../../../test/support/private-postgres.ts';

function kyselyOn(url: string): Kysely<unknown> {
  return new Kysely<unknown>({
    dialect: new PostgresDialect({
      pool: createPgPool({ connectionString: url, connectionTimeoutMillis: 2000, max: 2 }),
    }),
  });
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('a Postgres that is down when the consumer starts', () => {
  let server: PrivatePostgres;
  beforeAll(async () => {
    server = await startPrivatePostgres();
  });
  afterAll(() => {
    server?.dispose();
  });

  it('migrateInbox({ waitForDatabase }) waits, retrying, and migrates once the server is up', async () => {
    server.stop();
    const db = kyselyOn(server.url);
    try {
      const retries: StartupRetry[] = [];
      const migrating = migrateInbox(db, {
        waitForDatabase: { minDelayMs: 100, maxDelayMs: 400, onRetry: (retry) => retries.push(retry) },
      });
      let settled = false;
      void migrating.finally(() => {
        settled = true;
      });
      await until(() => retries.length >= 3 || settled, 'three failed probes');
      expect(settled).toBe(false);
      expect(retries.slice(0, 3).map((r) => r.attempt)).toEqual([1, 2, 3]);
      expect(retries[0]?.error.message).toMatch(/ECONNREFUSED|connect/);
      server.start();
      const { error, results } = await migrating;
      expect(error).toBeUndefined();
      expect(results?.map((r) => r.status)).toContain('Success');
      const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM processed_messages`.execute(db);
      expect(rows[0]?.n).toBe(0);
    } finally {
      await db.destroy();
    }
  });

  it('waitForDatabase rides out a restart of the server', async () => {
    server.stop();
    const db = kyselyOn(server.url);
    try {
      let retries = 0;
      const waiting = waitForDatabase(db, { minDelayMs: 100, maxDelayMs: 400, onRetry: () => retries++ });
      await until(() => retries >= 2, 'two failed probes');
      server.start();
      await expect(waiting).resolves.toBeUndefined();
    } finally {
      await db.destroy();
    }
  });
});

describe('waitForDatabase gives up when told to', () => {
  it('after timeoutMs: DatabaseUnavailableError, the last error as cause', async () => {
    const db = kyselyOn(`postgres://postgres@127.0.0.1:${await freePort()}/postgres`);
    try {
      let retries = 0;
      const error = await waitForDatabase(db, { timeoutMs: 1000, minDelayMs: 50, onRetry: () => retries++ }).then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      expect(error).toMatchObject({ code: 'INBOX_DATABASE_UNAVAILABLE' });
      expect((error as Error).message).toMatch(/^Postgres did not answer within waitForDatabase\.timeoutMs \(1000 ms/);
      expect((error as Error).cause).toBeInstanceOf(Error);
      expect(retries).toBeGreaterThanOrEqual(1);
    } finally {
      await db.destroy();
    }
  });

  it('when its signal aborts: rejects with the reason; migrateInbox returns it as its error', async () => {
    const db = kyselyOn(`postgres://postgres@127.0.0.1:${await freePort()}/postgres`);
    try {
      const controller = new AbortController();
      const reason = new Error('shutting down');
      const waiting = migrateInbox(db, { waitForDatabase: { signal: controller.signal, minDelayMs: 50 } });
      setTimeout(() => controller.abort(reason), 300);
      expect(await waiting).toEqual({ error: reason, results: undefined });
    } finally {
      await db.destroy();
    }
  });

  it('at once for what waiting cannot cure: a database that does not exist (3D000)', async () => {
    const db = kyselyOn(withDatabase(databaseUrl(), 'inboxkit_no_such_database'));
    try {
      let retries = 0;
      await expect(waitForDatabase(db, { onRetry: () => retries++ })).rejects.toMatchObject({ code: '3D000' });
      expect(retries).toBe(0);
    } finally {
      await db.destroy();
    }
  });

  it('refuses options it does not know, naming them', async () => {
    const db = kyselyOn(databaseUrl());
    try {
      await expect(waitForDatabase(db, { timeout: 5 } as never)).rejects.toThrow(ConfigurationError);
      await expect(waitForDatabase(db, { timeoutMs: -1 })).rejects.toThrow(/waitForDatabase\.timeoutMs/);
      await expect(waitForDatabase(db, { timeoutMs: 5000 })).resolves.toBeUndefined();
    } finally {
      await db.destroy();
    }
  });
});
