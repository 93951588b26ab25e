// handlerTimeoutMs: a handler attempt past its time is rolled back (its running statement
// cancelled in Postgres, its signal aborted) and never commits, whatever it returns.
import { createInbox, HandlerTimeoutError } from '@inboxkit/core';
import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_handler_timeout');
});
afterAll(async () => {
  await t?.dispose();
});

const noRetry = { retries: 0 } as const;

function charge(id: string) {
  return { id, payload: id };
}

/** Resolves after `ms`, or rejects with the signal's reason once it is aborted. */
function wait(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

async function insertCharge(trx: Kysely<TestDB>, id: string): Promise<void> {
  await trx.insertInto('charges').values({ id, user_id: 'u', amount_cents: 1 }).execute();
}

async function chargeIds(prefix: string): Promise<string[]> {
  const rows = await t.db.selectFrom('charges').select('id').where('id', 'like', `${prefix}%`).orderBy('id').execute();
  return rows.map((row) => row.id);
}

async function keys(consumer: string): Promise<{ message_id: string; status: string }[]> {
  const { rows } = await sql<{ message_id: string; status: string }>`
    SELECT message_id, status FROM processed_messages WHERE consumer = ${consumer} ORDER BY message_id`.execute(t.db);
  return rows;
}

describe('handlerTimeoutMs', () => {
  it('aborts the signal of a handler waiting on an outside call, rolls its writes back, and retries, then dead-letters', async () => {
    const inbox = createInbox({
      db: t.db,
      consumer: 'timeout-signal',
      handlerTimeoutMs: 200,
      retry: { retries: 1, minTimeout: 1, maxTimeout: 1 },
    });
    const reasons: unknown[] = [];
    const outcome = await inbox.process(charge('ts-1'), async (trx, message, { signal }) => {
      await insertCharge(trx, `${message.id}-${reasons.length}`);
      try {
        await wait(30_000, signal);
      } catch (error) {
        reasons.push(error);
        throw error;
      }
    });
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'retries_exhausted', attempts: 2 });
    if (outcome.status !== 'dead_letter') throw new Error('unreachable');
    expect(outcome.error).toBeInstanceOf(HandlerTimeoutError);
    expect(outcome.error).toMatchObject({ code: 'INBOX_HANDLER_TIMEOUT', messageId: 'ts-1', timeoutMs: 200 });
    expect(reasons).toHaveLength(2);
    expect(reasons[0]).toBeInstanceOf(HandlerTimeoutError);
    expect(await chargeIds('ts-1')).toEqual([]);
    expect(await keys('timeout-signal')).toEqual([]);
  });

  it('cancels a statement that is still running in Postgres when the time runs out', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'timeout-statement', handlerTimeoutMs: 300, retry: noRetry });
    const started = performance.now();
    const outcome = await inbox.process(charge('st-1'), async (trx, message) => {
      await insertCharge(trx, message.id);
      await sql`SELECT pg_sleep(30)`.execute(trx);
    });
    const elapsed = performance.now() - started;
    expect(outcome).toMatchObject({ status: 'dead_letter', error: { code: 'INBOX_HANDLER_TIMEOUT' } });
    // pg_sleep(30) was cut short: the attempt ended long before the statement would have.
    expect(elapsed).toBeLessThan(20_000);
    expect(await chargeIds('st-1')).toEqual([]);
    expect(await keys('timeout-statement')).toEqual([]);
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'`.execute(t.db);
    expect(rows[0]?.n).toBe(0);
  });

  it('never commits an attempt that returned after its time, even with its writes done', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'timeout-late', handlerTimeoutMs: 100, retry: noRetry });
    const outcome = await inbox.process(charge('late-1'), async (trx, message) => {
      await insertCharge(trx, message.id);
      await wait(400); // ignores the signal
      return 'done';
    });
    expect(outcome).toMatchObject({ status: 'dead_letter', error: { code: 'INBOX_HANDLER_TIMEOUT' } });
    expect(await chargeIds('late-1')).toEqual([]);
    expect(await keys('timeout-late')).toEqual([]);
  });

  it('leaves a handler within its time alone, and the connection usable after a timeout', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'timeout-ok', handlerTimeoutMs: 2_000, retry: noRetry });
    const slow = await inbox.process(charge('ok-slow'), async (trx, message, { signal }) => {
      await insertCharge(trx, message.id);
      await wait(50, signal);
      return { signalAborted: signal.aborted };
    });
    expect(slow).toMatchObject({ status: 'processed', result: { signalAborted: false } });
    const strict = createInbox({ db: t.db, consumer: 'timeout-ok', handlerTimeoutMs: 50, retry: noRetry });
    for (let i = 0; i < 3; i++) {
      const outcome = await strict.process(charge(`ok-timeout-${i}`), async (trx) => {
        await sql`SELECT pg_sleep(5)`.execute(trx);
      });
      expect(outcome.status).toBe('dead_letter');
    }
    // Every connection of the pool still works, inside and outside transactions.
    const after = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        inbox.process(charge(`ok-after-${i}`), (trx, message) => insertCharge(trx, message.id)),
      ),
    );
    expect(after.map((outcome) => outcome.status)).toEqual(Array(10).fill('processed'));
    expect(await chargeIds('ok-')).toHaveLength(11);
  });

  it('sets aside only the slow message of a batch (per-message handler); the others commit', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'timeout-batch', handlerTimeoutMs: 200, retry: noRetry });
    const ids = ['tb-1', 'tb-2', 'tb-slow', 'tb-4', 'tb-5'];
    const result = await inbox.processBatch(ids.map(charge), async (trx, message, { signal }) => {
      await insertCharge(trx, message.id);
      if (message.id === 'tb-slow') await wait(30_000, signal);
    });
    expect(result.outcomes.map((outcome) => outcome.status)).toEqual([
      'processed',
      'processed',
      'dead_letter',
      'processed',
      'processed',
    ]);
    expect(result.outcomes[2]).toMatchObject({ error: { code: 'INBOX_HANDLER_TIMEOUT', messageId: 'tb-slow' } });
    expect(await chargeIds('tb-')).toEqual(['tb-1', 'tb-2', 'tb-4', 'tb-5']);
  });

  it('falls back from a bulk handler past its time to one message at a time; only the slow one fails', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'timeout-bulk', handlerTimeoutMs: 200, retry: noRetry });
    const ids = ['tk-1', 'tk-2', 'tk-slow', 'tk-4'];
    const result = await inbox.processBulk(ids.map(charge), async (trx, messages, { signal }) => {
      for (const message of messages) await insertCharge(trx, message.id);
      if (messages.some((message) => message.id === 'tk-slow')) await sql`SELECT pg_sleep(30)`.execute(trx);
      void signal;
    });
    expect(result.outcomes.map((outcome) => outcome.status)).toEqual([
      'processed',
      'processed',
      'dead_letter',
      'processed',
    ]);
    expect(await chargeIds('tk-')).toEqual(['tk-1', 'tk-2', 'tk-4']);
    expect((await keys('timeout-bulk')).map((key) => key.message_id)).toEqual(['tk-1', 'tk-2', 'tk-4']);
  });

  it('is checked at construction', () => {
    for (const bad of [0, -1, 1.5, '100', 2 ** 31]) {
      expect(() => createInbox({ db: t.db, consumer: 'x', handlerTimeoutMs: bad as number })).toThrow(
        /`handlerTimeoutMs`/,
      );
    }
  });
});
