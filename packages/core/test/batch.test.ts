import { createInbox, NonRetryableError, type ProcessOutcome } from '@inboxkit/core';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_batch');
});
afterAll(async () => {
  await t?.dispose();
});

interface Charge {
  id: string;
  payload: string;
  amount: number;
}

/**
 * 1,000 deliveries of 700 distinct ids (30% duplicates: some repeated within a batch, some
 * already processed by an earlier batch); ids ending in 13 fail for good, ids ending in 7
 * fail once then succeed.
 */
function workload(): Charge[][] {
  const distinct = Array.from({ length: 700 }, (_, i) => ({ id: `c-${i}`, amount: i + 1 }));
  const deliveries = [...distinct];
  for (let i = 0; i < 300; i++) deliveries.push(distinct[(i * 7) % 700] as { id: string; amount: number });
  // deterministic shuffle
  let seed = 42;
  for (let i = deliveries.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [deliveries[i], deliveries[j]] = [deliveries[j] as never, deliveries[i] as never];
  }
  const batches: Charge[][] = [];
  for (let i = 0; i < deliveries.length; i += 100) {
    batches.push(deliveries.slice(i, i + 100).map((d) => ({ ...d, payload: JSON.stringify(d) })));
  }
  return batches;
}

const permanent = (id: string) => id.endsWith('13');
const flaky = (id: string) => id.endsWith('7');

async function check(consumer: string, outcomes: ProcessOutcome[]) {
  const expected = Array.from({ length: 700 }, (_, i) => `c-${i}`).filter((id) => !permanent(id));
  const rows = await t.db
    .selectFrom('charges')
    .select(['id', 'amount_cents'])
    .where('user_id', '=', consumer)
    .execute();
  expect(rows).toHaveLength(expected.length);
  expect(new Set(rows.map((r) => r.id))).toEqual(new Set(expected.map((id) => `${consumer}:${id}`)));
  const ledger = await sql<{
    n: string;
  }>`SELECT count(*) AS n FROM ledger WHERE charge_id LIKE ${`${consumer}:%`}`.execute(t.db);
  expect(Number(ledger.rows[0]?.n)).toBe(expected.length);
  const keys = await sql<{ status: string; n: string }>`
    SELECT status, count(*) AS n FROM processed_messages WHERE consumer = ${consumer} GROUP BY status`.execute(t.db);
  expect(Object.fromEntries(keys.rows.map((r) => [r.status, Number(r.n)]))).toEqual({ processed: expected.length });
  const counts = outcomes.reduce<Record<string, number>>((acc, o) => {
    acc[o.status] = (acc[o.status] ?? 0) + 1;
    return acc;
  }, {});
  expect(counts.processed).toBe(expected.length);
  expect((counts.processed ?? 0) + (counts.duplicate ?? 0) + (counts.dead_letter ?? 0)).toBe(1000);
  const dead = outcomes.filter((o) => o.status === 'dead_letter');
  expect(new Set(dead.map((o) => o.messageId)).size).toBe(700 - expected.length);
  expect(dead.every((o) => o.status === 'dead_letter' && o.reason === 'non_retryable')).toBe(true);
}

describe('processBatch (per-message handler)', () => {
  it('1,000 messages with 30% duplicates and failing handlers commit exactly the right rows', async () => {
    const consumer = 'batch-per-message';
    const inbox = createInbox({ db: t.db, consumer, retry: { retries: 2, minTimeout: 1, randomize: false } });
    const failedOnce = new Set<string>();
    let beforeCalls = 0;
    const outcomes: ProcessOutcome[] = [];
    for (const batch of workload()) {
      const result = await inbox.processBatch(
        batch,
        async (trx, message) => {
          await trx
            .insertInto('charges')
            .values({ id: `${consumer}:${message.id}`, user_id: consumer, amount_cents: message.amount })
            .execute();
          await trx
            .insertInto('ledger')
            .values({ charge_id: `${consumer}:${message.id}`, amount_cents: message.amount })
            .execute();
          if (permanent(message.id)) throw new NonRetryableError(`charge ${message.id} is refused`);
          if (flaky(message.id) && !failedOnce.has(message.id)) {
            failedOnce.add(message.id);
            throw new Error('transient');
          }
          return { ok: message.id };
        },
        { beforeMessage: () => void beforeCalls++ },
      );
      expect(result.outcomes).toHaveLength(batch.length);
      result.outcomes.forEach((o, i) => {
        expect(o.messageId).toBe(batch[i]?.id);
      });
      outcomes.push(...result.outcomes);
    }
    await check(consumer, outcomes);
    expect(beforeCalls).toBeGreaterThan(700);
    const stored = await inbox.find('c-1');
    expect(stored).toMatchObject({ status: 'processed', result: { ok: 'c-1' } });
  });

  it('runs the first occurrence of an id repeated within a batch, and a copy with other content is a conflict', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'in-batch' });
    let runs = 0;
    const result = await inbox.processBatch(
      [
        { id: 'a', payload: '1' },
        { id: 'a', payload: '1' },
        { id: 'b', payload: '1' },
        { id: 'a', payload: 'other' },
      ],
      async () => {
        runs++;
        return runs;
      },
    );
    expect(result.outcomes.map((o) => o.status)).toEqual(['processed', 'duplicate', 'processed', 'conflict']);
    expect(result.outcomes[1]).toMatchObject({ result: 1 });
    expect(runs).toBe(2);
  });

  it('emits one duplicate event per duplicate delivery, copies within the batch included', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'dup-events' });
    await inbox.process({ id: 'seen' }, async () => {});
    const duplicates: string[] = [];
    inbox.on('duplicate', (e) => duplicates.push(e.messageId));
    const result = await inbox.processBatch(
      [{ id: 'seen' }, { id: 'seen' }, { id: 'new' }, { id: 'new' }],
      async () => {},
    );
    expect(result.outcomes.map((o) => o.status)).toEqual(['duplicate', 'duplicate', 'processed', 'duplicate']);
    expect(duplicates.sort()).toEqual(['new', 'seen', 'seen']);
  });

  it('a failing handler does not undo its neighbours and leaves no key behind', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'neighbours', retry: { retries: 0 } });
    const result = await inbox.processBatch([{ id: 'n1' }, { id: 'n2' }, { id: 'n3' }], async (trx, message) => {
      await trx
        .insertInto('ledger')
        .values({ charge_id: `neighbours:${message.id}`, amount_cents: 1 })
        .execute();
      if (message.id === 'n2') throw new Error('n2 fails');
    });
    expect(result.outcomes.map((o) => o.status)).toEqual(['processed', 'dead_letter', 'processed']);
    const ledger = await sql<{
      charge_id: string;
    }>`SELECT charge_id FROM ledger WHERE charge_id LIKE 'neighbours:%' ORDER BY 1`.execute(t.db);
    expect(ledger.rows.map((r) => r.charge_id)).toEqual(['neighbours:n1', 'neighbours:n3']);
    expect(await inbox.find('n2')).toBeUndefined();
  });

  it('rolls the whole batch back and rejects when beforeMessage throws', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'aborted' });
    let calls = 0;
    await expect(
      inbox.processBatch([{ id: 'x1' }, { id: 'x2' }], async () => {}, {
        beforeMessage: () => {
          if (++calls === 2) throw new Error('lost the partition');
        },
      }),
    ).rejects.toThrow('lost the partition');
    expect(await inbox.find('x1')).toBeUndefined();
  });
});

describe('processBulk (per-batch handler)', () => {
  it('1,000 messages with 30% duplicates and failing handlers commit exactly the right rows', async () => {
    const consumer = 'batch-bulk';
    const inbox = createInbox({ db: t.db, consumer, retry: { retries: 2, minTimeout: 1, randomize: false } });
    const failedOnce = new Set<string>();
    const seenBatchSizes: number[] = [];
    const outcomes: ProcessOutcome[] = [];
    for (const batch of workload()) {
      const result = await inbox.processBulk(batch, async (trx, messages) => {
        seenBatchSizes.push(messages.length);
        expect(new Set(messages.map((m) => m.id)).size).toBe(messages.length); // duplicates removed
        await sql`INSERT INTO charges (id, user_id, amount_cents)
          SELECT ${`${consumer}:`} || id, ${consumer}, amount FROM unnest(${messages.map((m) => m.id)}::text[], ${messages.map((m) => m.amount)}::int[]) AS r(id, amount)`.execute(
          trx,
        );
        await sql`INSERT INTO ledger (charge_id, amount_cents)
          SELECT ${`${consumer}:`} || id, amount FROM unnest(${messages.map((m) => m.id)}::text[], ${messages.map((m) => m.amount)}::int[]) AS r(id, amount)`.execute(
          trx,
        );
        for (const message of messages) {
          if (permanent(message.id)) throw new NonRetryableError(`charge ${message.id} is refused`);
          if (flaky(message.id) && !failedOnce.has(message.id)) {
            failedOnce.add(message.id);
            throw new Error('transient');
          }
        }
        return messages.map((m) => m.amount);
      });
      outcomes.push(...result.outcomes);
    }
    await check(consumer, outcomes);
    // Most calls were bulk (many messages at once), the rest the per-message fallback.
    expect(Math.max(...seenBatchSizes)).toBeGreaterThan(50);
    expect(await inbox.find('c-3')).toMatchObject({ result: 4 });
  });
});
