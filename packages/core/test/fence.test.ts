// A transaction fence (docs/design.md, "Kafka offsets in Postgres"): a position locked first
// and moved in the same commit as the handler's writes. Here a fence of the test's own over
// a one-row table, messages carrying their position: what core promises any fence.
import { createInbox, type InboxMessage, NonRetryableError } from '@inboxkit/core';
import type { FenceRunner, TransactionFence } from '@inboxkit/core/adapter';
import { CompiledQuery, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_fence');
  await sql`CREATE TABLE position (id int PRIMARY KEY, next int NOT NULL)`.execute(t.db);
});
afterAll(async () => {
  await t?.dispose();
});

interface Positioned extends InboxMessage {
  readonly at: number;
}

/** A fence over `position` row `id`: messages before `next` are covered. */
function positionFence(id: number, claimIds: boolean): TransactionFence {
  const one = async (trx: FenceRunner, text: string, parameters: unknown[]) =>
    (await trx.executeQuery(CompiledQuery.raw(text, parameters) as CompiledQuery<{ next: number }>)).rows[0]?.next;
  return {
    claimIds,
    async enter(trx) {
      await one(trx, 'INSERT INTO position VALUES ($1, 0) ON CONFLICT DO NOTHING', [id]);
      const next = (await one(trx, 'SELECT next FROM position WHERE id = $1 FOR UPDATE', [id])) ?? 0;
      return (message) => (message as Positioned).at < next;
    },
    async leave(trx, through) {
      if (through === undefined) return;
      await one(trx, 'UPDATE position SET next = GREATEST(next, $2) WHERE id = $1', [
        id,
        (through as Positioned).at + 1,
      ]);
    },
  };
}

async function positionOf(id: number): Promise<number | undefined> {
  const { rows } = await sql<{ next: number }>`SELECT next FROM position WHERE id = ${id}`.execute(t.db);
  return rows[0]?.next;
}

const message = (at: number, id: string, payload = id): Positioned => ({ id, payload, at });

describe('a batch with a fence', () => {
  it('stops after a dead letter: the position covers only what was decided before it', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'fence-dead-letter', retry: { retries: 0 } });
    const fence = positionFence(1, false);
    // Committed effects: ledger rows written through the transaction.
    const apply = async (trx: Parameters<Parameters<typeof inbox.processBatch>[1]>[0], m: Positioned) => {
      await trx
        .insertInto('ledger')
        .values({ charge_id: `fence-${m.id}`, amount_cents: 1 })
        .execute();
    };
    const applied = async () =>
      (
        await sql<{
          charge_id: string;
        }>`SELECT charge_id FROM ledger WHERE charge_id LIKE 'fence-%' ORDER BY id`.execute(t.db)
      ).rows.map((r) => r.charge_id.slice('fence-'.length));
    const { outcomes } = await inbox.processBatch(
      [message(0, 'a'), message(1, 'b'), message(2, 'poison'), message(3, 'c')],
      async (trx, m) => {
        if (m.id === 'poison') throw new NonRetryableError('poison');
        await apply(trx, m);
      },
      { fence },
    );
    expect(outcomes.map((o) => o.status)).toEqual(['processed', 'processed', 'dead_letter']);
    expect(await applied()).toEqual(['a', 'b']);
    expect(await positionOf(1)).toBe(2);

    // Recording the dead letter moves the position past it; the rest then runs, once.
    await inbox.recordDeadLetter(message(2, 'poison'), outcomes[2] as never, { fence });
    expect(await positionOf(1)).toBe(3);
    const again = await inbox.processBatch(
      [message(0, 'a'), message(1, 'b'), message(2, 'poison'), message(3, 'c')],
      apply,
      { fence },
    );
    expect(again.outcomes.map((o) => o.status)).toEqual(['duplicate', 'duplicate', 'duplicate', 'processed']);
    expect(await applied()).toEqual(['a', 'b', 'c']);
    expect(await positionOf(1)).toBe(4);
  });

  it('stops after a copy of an id with other content: the conflict is not covered before it is dead-lettered', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'fence-conflict' });
    const fence = positionFence(2, true);
    const { outcomes } = await inbox.processBulk(
      [message(0, 'x', 'one'), message(1, 'y'), message(2, 'x', 'two'), message(3, 'z')],
      async () => {},
      { fence },
    );
    expect(outcomes.map((o) => o.status)).toEqual(['processed', 'processed', 'conflict']);
    expect(await positionOf(2)).toBe(2);
  });

  it('without claimed ids, two messages with one id are two messages', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'fence-alone' });
    const fence = positionFence(3, false);
    const { outcomes } = await inbox.processBulk([message(0, 'same'), message(1, 'same')], async () => {}, {
      fence,
    });
    expect(outcomes.map((o) => o.status)).toEqual(['processed', 'processed']);
    expect(await positionOf(3)).toBe(2);
    const keys = await sql<{
      n: string;
    }>`SELECT count(*) AS n FROM processed_messages WHERE consumer = 'fence-alone'`.execute(t.db);
    expect(keys.rows[0]?.n).toBe('0');
  });
});
