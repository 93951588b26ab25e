import { createInbox } from '@inboxkit/core';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_purge');
});
afterAll(async () => {
  await t?.dispose();
});

async function seed(consumer: string, count: number, ageMs: number, prefix: string) {
  await sql`INSERT INTO processed_messages (consumer, message_id, processed_at)
    SELECT ${consumer}, ${prefix} || g, now() - make_interval(secs => ${ageMs / 1000})
    FROM generate_series(1, ${count}) AS g`.execute(t.db);
}

async function count(consumer: string) {
  const { rows } = await sql<{
    n: string;
  }>`SELECT count(*) AS n FROM processed_messages WHERE consumer = ${consumer}`.execute(t.db);
  return Number(rows[0]?.n);
}

describe('purge', () => {
  it('removes only expired keys of its own consumer, in batches', async () => {
    const day = 24 * 3600 * 1000;
    await seed('purge-a', 2500, 8 * day, 'old-');
    await seed('purge-a', 300, 1 * day, 'recent-');
    await seed('purge-b', 100, 30 * day, 'other-');
    const inbox = createInbox({ db: t.db, consumer: 'purge-a' });
    const purged: unknown[] = [];
    inbox.on('purged', (e) => purged.push(e));
    const result = await inbox.purge({ batchSize: 1000 });
    expect(result).toEqual({ deleted: 2500, batches: 3, skipped: false });
    expect(await count('purge-a')).toBe(300);
    expect(await count('purge-b')).toBe(100);
    expect(purged).toHaveLength(1);
    // A shorter window on demand.
    expect((await inbox.purge({ olderThanMs: 12 * 3600 * 1000 })).deleted).toBe(300);
    // Purged keys are new messages again.
    expect((await inbox.process({ id: 'old-1' }, async () => {})).status).toBe('processed');
  });

  it('two purgers at once do not fail and delete each key once', async () => {
    await seed('purge-c', 5000, 10 * 24 * 3600 * 1000, 'k-');
    const a = createInbox({ db: t.connect(2).db, consumer: 'purge-c' });
    const b = createInbox({ db: t.connect(2).db, consumer: 'purge-c' });
    const results = await Promise.all([
      a.purge({ batchSize: 200 }),
      b.purge({ batchSize: 200 }),
      a.purge({ batchSize: 200 }),
    ]);
    expect(results.reduce((sum, r) => sum + r.deleted, 0)).toBe(5000);
    // Which purger finds the lock taken depends on timing (the lock is per batch): that one
    // purger deletes at a time is the next test's, with a slow batch.
    expect(await count('purge-c')).toBe(0);
  });

  it('leaves no lock behind, so that the next purge from anywhere does the work', async () => {
    const day = 24 * 3600 * 1000;
    const a = createInbox({ db: t.connect(1).db, consumer: 'purge-e' });
    const b = createInbox({ db: t.connect(1).db, consumer: 'purge-e' });
    for (const [i, inbox] of [a, b, a, b].entries()) {
      await seed('purge-e', 150, 2 * day, `round-${i}-`);
      expect(await inbox.purge({ olderThanMs: day, batchSize: 100 })).toEqual({
        deleted: 150,
        batches: 2,
        skipped: false,
      });
      expect(await t.advisoryLocks()).toBe(0);
    }
  });

  it('one purger at a time: a purge that starts while another deletes a batch skips', async () => {
    // Each delete of the inbox table takes a while, so that the second purge starts inside one.
    await sql`CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$`.execute(t.db);
    await sql`CREATE TRIGGER slow_delete BEFORE DELETE ON processed_messages
      FOR EACH STATEMENT EXECUTE FUNCTION slow_delete()`.execute(t.db);
    try {
      await seed('purge-f', 300, 10 * 24 * 3600 * 1000, 'f-');
      const leader = createInbox({ db: t.connect(1).db, consumer: 'purge-f' }).purge({ batchSize: 100 });
      while ((await t.advisoryLocks()) === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      const other = createInbox({ db: t.connect(1).db, consumer: 'purge-f' });
      expect(await other.purge({ batchSize: 100 })).toEqual({ deleted: 0, batches: 0, skipped: true });
      expect(await leader).toEqual({ deleted: 300, batches: 4, skipped: false });
      expect(await count('purge-f')).toBe(0);
    } finally {
      await sql`DROP TRIGGER slow_delete ON processed_messages`.execute(t.db);
    }
  });

  it('rejects a bad batch size with a typed error', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'purge-d' });
    await expect(inbox.purge({ batchSize: 0 })).rejects.toMatchObject({ code: 'INBOX_CONFIGURATION' });
  });
});
