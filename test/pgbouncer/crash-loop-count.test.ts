// A suspect delivery's crash-loop count runs on a second connection while its attempt's
// transaction holds the first. Behind PgBouncer with every server connection taken, that
// count queues in the pooler until `query_wait_timeout` and then fails: the message is not at
// fault, so it is handed back with its retry budget unspent, never dead-lettered, and a count
// that runs after its attempt gave up is taken back (docs/pgbouncer.md).
import { createInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PgBouncer, startPgBouncer } from '../support/pgbouncer.ts';
import { createTestDatabase, type TestDatabase, withDatabase } from '../support/postgres.ts';

let t: TestDatabase;
let bouncer: PgBouncer;
beforeAll(async () => {
  t = await createTestDatabase('pgbouncer_crash_loop');
  // One server connection, and a queue that gives up after 2 s.
  bouncer = await startPgBouncer({ upstreamUrl: t.directUrl, poolSize: 1, queryWaitTimeoutSec: 2 });
});
afterAll(async () => {
  await bouncer?.stop();
  await t?.dispose();
});

describe('a suspect behind a PgBouncer with no server connection to spare', () => {
  it('is handed back, never dead-lettered, and its late count is taken back', async () => {
    const pool = createPgPool({ connectionString: withDatabase(bouncer.url, t.name), max: 4 });
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
    try {
      const inbox = createInbox({ db, consumer: 'bounced', retry: { retries: 2, minTimeout: 10, maxTimeout: 20 } });
      const retries: number[] = [];
      inbox.on('retry', (e) => retries.push(e.attempt));
      let ran = 0;
      const outcome = await inbox.process(
        { id: 'suspect' },
        async () => {
          ran++;
        },
        { suspect: true },
      );
      expect(ran).toBe(0);
      expect(outcome).toMatchObject({ status: 'retry_later' });
      expect(retries).toEqual([]);
      const attempts = async () => {
        const { rows } = await sql<{ attempts: number }>`
          SELECT attempts FROM processed_messages_attempts WHERE consumer = 'bounced' AND message_id = 'suspect'`.execute(
          t.db,
        );
        return rows[0]?.attempts ?? 0;
      };
      await expect.poll(attempts, { timeout: 15_000 }).toBe(0);
    } finally {
      await db.destroy();
    }
  });
});
