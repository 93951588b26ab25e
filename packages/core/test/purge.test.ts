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
    expect(results.some((r) => r.skipped)).toBe(true);
    expect(await count('purge-c')).toBe(0);
  });

  it('rejects a bad batch size with a typed error', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'purge-d' });
    await expect(inbox.purge({ batchSize: 0 })).rejects.toMatchObject({ code: 'INBOX_CONFIGURATION' });
  });
});
