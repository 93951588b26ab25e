// The crash-loop count of a suspect delivery runs on a second connection while the attempt's
// transaction holds the first (docs/design.md, "Crash loops"). When that second connection
// cannot be had, or its statement is stuck (a busy pool, a pooler's queue, a lock), the
// message is not at fault: it must not spend its retry budget, let alone be dead-lettered,
// and a count that lands after the attempt gave up must be taken back.
import { createInbox } from '@inboxkit/core';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_crash_loop_count');
});
afterAll(async () => {
  await t?.dispose();
});

async function attemptsOf(consumer: string, id: string): Promise<number | undefined> {
  const { rows } = await sql<{ attempts: number }>`
    SELECT attempts FROM processed_messages_attempts WHERE consumer = ${consumer} AND message_id = ${id}`.execute(t.db);
  return rows[0]?.attempts;
}

describe('the crash-loop count cannot be made', () => {
  it('with every other pool connection busy, a suspect is handed back, never dead-lettered, its budget unspent', async () => {
    const { pool, db } = t.connect(2);
    const held = await pool.connect(); // the one connection besides the attempt's
    try {
      const inbox = createInbox({
        db,
        consumer: 'busy-pool',
        lockTimeoutMs: 200,
        retry: { retries: 2, minTimeout: 10, maxTimeout: 20 },
      });
      const retries: number[] = [];
      inbox.on('retry', (e) => retries.push(e.attempt));
      let ran = 0;
      const outcome = await inbox.process(
        { id: 'suspect-1' },
        async () => {
          ran++;
        },
        { suspect: true },
      );
      expect(ran).toBe(0);
      expect(outcome).toMatchObject({ status: 'retry_later' });
      expect(retries).toEqual([]);
      expect(await attemptsOf('busy-pool', 'suspect-1')).toBeUndefined();
    } finally {
      held.release();
    }
    // Once a connection is free again, the same delivery runs.
    const inbox = createInbox({ db, consumer: 'busy-pool' });
    expect(await inbox.process({ id: 'suspect-1' }, async () => 'ok', { suspect: true })).toMatchObject({
      status: 'processed',
    });
  });

  it('with the count stuck behind a lock, the attempt gives up in bounded time and the late count is taken back', async () => {
    const { db } = t.connect(4);
    const consumer = 'stuck-count';
    await sql`INSERT INTO processed_messages_attempts (consumer, message_id, attempts) VALUES (${consumer}, 'suspect-2', 1)`.execute(
      t.db,
    );
    // Another transaction holds the attempts row: the count's upsert waits for it.
    const blocker = await t.pool.connect();
    await blocker.query('BEGIN');
    await blocker.query(
      `SELECT 1 FROM processed_messages_attempts WHERE consumer = $1 AND message_id = 'suspect-2' FOR UPDATE`,
      [consumer],
    );
    const inbox = createInbox({ db, consumer, lockTimeoutMs: 300, retry: { retries: 3, minTimeout: 10 } });
    const retries: number[] = [];
    inbox.on('retry', (e) => retries.push(e.attempt));
    let ran = 0;
    const started = performance.now();
    let outcome: Awaited<ReturnType<typeof inbox.process>>;
    try {
      outcome = await inbox.process(
        { id: 'suspect-2' },
        async () => {
          ran++;
        },
        { suspect: true },
      );
    } finally {
      await blocker.query('COMMIT');
      blocker.release();
    }
    expect(performance.now() - started).toBeLessThan(60_000);
    expect(ran).toBe(0);
    expect(outcome).toMatchObject({ status: 'retry_later' });
    expect(retries).toEqual([]);
    // The counts that ran after their attempt had given up are taken back: one crash recorded before, one now.
    await expect.poll(() => attemptsOf(consumer, 'suspect-2'), { timeout: 10_000 }).toBe(1);
  });
});
