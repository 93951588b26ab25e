// The `pgbouncer` project's own proof that its PgBouncer pools by transaction: without it, the
// other files of the project would pass on a session pooler (or on the server itself) and
// prove nothing about transaction mode.
import { createInbox } from '@inboxkit/core';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, pgbouncerUrl, type TestDatabase } from '../support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('pgbouncer_mode');
});
afterAll(async () => {
  await t?.dispose();
});

/** The server backend that runs `SELECT pg_backend_pid()` on `db`. */
async function backendPid(db: TestDatabase['db']): Promise<number> {
  const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(db);
  return rows[0]?.pid ?? -1;
}

describe('the test PgBouncer', () => {
  it('is in front of the test database', () => {
    expect(pgbouncerUrl()).toBeDefined();
    expect(new URL(t.url).port).toBe(new URL(pgbouncerUrl() ?? '').port);
    expect(t.url).not.toBe(t.directUrl);
  });

  it('runs consecutive transactions of one client connection on different server connections', async () => {
    const { db } = t.connect(1);
    // Four transactions at once from other clients: the pooler opens its server connections.
    const others = Array.from({ length: 4 }, () => t.connect(1).db);
    await Promise.all(others.map((other) => sql`SELECT pg_sleep(0.1)`.execute(other)));
    const pids = new Set<number>();
    for (let i = 0; i < 8; i++) pids.add(await backendPid(db));
    expect(pids.size).toBeGreaterThan(1);
    // Inside one transaction the server connection stays.
    const inside = await db.transaction().execute(async (trx) => {
      const seen = new Set<number>();
      for (let i = 0; i < 4; i++) seen.add(await backendPid(trx as never));
      return seen;
    });
    expect(inside.size).toBe(1);
  });

  it('processes, deduplicates and purges through it, leaving no session lock on any server connection', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'through-pgbouncer' });
    expect((await inbox.process({ id: 'p-1' }, async () => 'done')).status).toBe('processed');
    expect(await inbox.process({ id: 'p-1' }, async () => 'again')).toMatchObject({
      status: 'duplicate',
      result: 'done',
    });
    expect(await inbox.purge({ olderThanMs: 0 })).toMatchObject({ deleted: 1, skipped: false });
    expect(await t.advisoryLocks()).toBe(0);
  });
});
