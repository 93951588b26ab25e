// @inboxkit/core/admin on a real Postgres: the consumers (a loose index scan), the bounded
// figures and their estimates, and forgetting keys: any key, or only dead-lettered ones.
import { createInbox, NonRetryableError } from '@inboxkit/core';
import { createInboxAdmin } from '@inboxkit/core/admin';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_admin');
});
afterAll(async () => {
  await t?.dispose();
});

async function seed(consumer: string, ids: readonly string[]) {
  const inbox = createInbox({ db: t.db, consumer });
  for (const id of ids) {
    const message = { id, payload: id };
    const outcome = await inbox.process(message, () => {
      if (id.startsWith('dead')) throw new NonRetryableError('no');
      return id;
    });
    if (outcome.status === 'dead_letter') await inbox.recordDeadLetter(message, outcome);
  }
}

describe('InboxAdmin', () => {
  it('lists every consumer, with keys or with crash-loop attempts only', async () => {
    await seed('adm-b', ['1']);
    await seed('adm-a', ['1', '2']);
    await sql`INSERT INTO processed_messages_attempts (consumer, message_id, attempts) VALUES ('adm-c', 'x', 1)`.execute(
      t.db,
    );
    const admin = createInboxAdmin({ db: t.db });
    expect(await admin.consumers()).toEqual(expect.arrayContaining(['adm-a', 'adm-b', 'adm-c']));
    expect(await admin.hasConsumer('adm-c')).toBe(true);
    expect(await admin.hasConsumer('adm-none')).toBe(false);
  });

  it('counts exactly up to exactUpTo, estimates from the statistics beyond', async () => {
    await seed('adm-count', ['1', '2', '3', 'dead-4']);
    const admin = createInboxAdmin({ db: t.db });
    expect(await admin.consumerStatus('adm-count')).toMatchObject({
      keys: 4,
      keysEstimated: false,
      deadLettered: 1,
      crashLoopSuspects: 0,
    });
    await sql`INSERT INTO processed_messages (consumer, message_id, status)
      SELECT 'adm-big', 'k' || g, CASE WHEN g % 10 = 0 THEN 'dead_lettered' ELSE 'processed' END
      FROM generate_series(1, 5000) g`.execute(t.db);
    await sql`ANALYZE processed_messages`.execute(t.db);
    const big = await admin.consumerStatus('adm-big', { exactUpTo: 100 });
    expect(big.keysEstimated).toBe(true);
    expect(big.deadLetteredEstimated).toBe(true);
    // The statistics see the table as it is: nearly all of it is this consumer, a tenth dead-lettered.
    expect(big.keys).toBeGreaterThan(4000);
    expect(big.keys).toBeLessThan(6000);
    expect(big.deadLettered).toBeGreaterThan(300);
    expect(big.deadLettered).toBeLessThan(700);
  });

  it('forgetDeadLettered deletes only dead-lettered keys; forget deletes any, with its attempts', async () => {
    await seed('adm-forget', ['ok-1', 'dead-1', 'dead-2']);
    await sql`INSERT INTO processed_messages_attempts (consumer, message_id, attempts) VALUES ('adm-forget', 'ok-1', 2)`.execute(
      t.db,
    );
    const admin = createInboxAdmin({ db: t.db });
    expect((await admin.forgetDeadLettered('adm-forget', ['ok-1', 'dead-1', 'none'])).sort()).toEqual(['dead-1']);
    expect((await admin.find('adm-forget', 'ok-1'))?.status).toBe('processed');
    expect(await admin.find('adm-forget', 'dead-1')).toBeUndefined();
    expect((await admin.find('adm-forget', 'dead-2'))?.status).toBe('dead_lettered');

    const forgotten = await admin.forget('adm-forget', ['ok-1', 'dead-2']);
    expect([...forgotten.keys].sort()).toEqual(['dead-2', 'ok-1']);
    expect(forgotten.attempts).toEqual(['ok-1']);
    expect(await admin.read('adm-forget', ['ok-1', 'dead-2'])).toEqual(new Map());
  });

  it('countExpired bounds the count a purge progress bar starts from; purge reports each batch (onBatch)', async () => {
    await sql`INSERT INTO processed_messages (consumer, message_id, processed_at)
      SELECT 'adm-purge', 'p' || g, now() - interval '10 days' FROM generate_series(1, 25) g`.execute(t.db);
    await seed('adm-purge', ['fresh']);
    const admin = createInboxAdmin({ db: t.db });
    const before = new Date(Date.now() - 9 * 24 * 3600 * 1000);
    expect(await admin.countExpired('adm-purge', before)).toBe(25);
    expect(await admin.countExpired('adm-purge', before, 10)).toBe(10);
    const batches: number[] = [];
    const inbox = createInbox({ db: t.db, consumer: 'adm-purge' });
    const result = await inbox.purge({
      olderThanMs: 9 * 24 * 3600 * 1000,
      batchSize: 10,
      onBatch: (n) => batches.push(n),
    });
    expect(result).toMatchObject({ deleted: 25, batches: 3 });
    expect(batches).toEqual([10, 10, 5]);
  });

  it('refuses ids that cannot be keys before any statement', async () => {
    const admin = createInboxAdmin({ db: t.db });
    await expect(admin.find('adm-a', '')).rejects.toMatchObject({ code: 'INBOX_INVALID_MESSAGE' });
    await expect(admin.forget('adm-a', ['a\u0000b'])).rejects.toMatchObject({ code: 'INBOX_INVALID_MESSAGE' });
    await expect(admin.consumerStatus('')).rejects.toMatchObject({ code: 'INBOX_CONFIGURATION' });
  });
});
