// 5,000 messages of which 30% repeat an earlier id: exactly one business row per distinct
// id, whatever the prefetch, and with two consumers competing for the queue.
import { createInbox } from '@inboxkit/core';
import { subscribe } from '@inboxkit/rabbitmq';
import type { Kysely } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import type { TestDB } from '../support/postgres.ts';
import { amqpUrl, messagesInQueue, messagesWithDuplicates, uniqueName, waitFor } from './support/broker.ts';
import { setUpRabbitFile } from './support/file-setup.ts';
import { appliedTwice, inboxKeys, type LedgerBody, ledgerCounts, ledgerHandler } from './support/ledger.ts';
import { Subscriptions } from './support/subscriptions.ts';

const setup = setUpRabbitFile('duplicates');
const subscriptions = new Subscriptions();

afterEach(async () => {
  await subscriptions.closeAll();
});

const TOTAL = 5_000;

async function run(
  label: string,
  consumers: ReadonlyArray<{ prefetch: number; db: Kysely<TestDB>; maxBatchSize?: number; bulk?: boolean }>,
) {
  const { t, broker } = setup;
  const queue = uniqueName(label);
  broker.track(`${queue}.dlq`);
  await broker.declareQueue(queue);
  const { messages, distinct } = messagesWithDuplicates(label, TOTAL);
  await broker.publish(queue, messages);

  const consumer = uniqueName(label); // one consumer name: the competing subscriptions share the keys
  const handled = consumers.map(() => 0);
  let duplicates = 0;
  const started = Date.now();
  const subs = consumers.map(({ prefetch, db, maxBatchSize, bulk }, index) => {
    const inbox = createInbox({ db, consumer });
    inbox.on('duplicate', () => duplicates++);
    const count = (n: number) => {
      handled[index] = (handled[index] ?? 0) + n;
    };
    return subscriptions.add(
      subscribe<TestDB, LedgerBody, void>({
        inbox,
        url: amqpUrl(),
        queue,
        prefetch,
        maxBatchSize,
        decode: 'json',
        assertTopology: true,
        connectionName: `${queue} #${index}`,
        ...(bulk
          ? {
              bulkHandler: async (trx, batch) => {
                count(batch.length);
                await trx
                  .insertInto('ledger')
                  .values(batch.map((m) => ({ charge_id: m.id, amount_cents: m.body.amountCents })))
                  .execute();
              },
            }
          : { handler: ledgerHandler({ onMessage: () => count(1) }) }),
      }),
    );
  });
  await waitFor(
    `${distinct} ids applied`,
    async () => (await ledgerCounts(t.db, `${label}-`)).distinct === distinct,
    90_000,
    200,
  );
  await waitFor('every delivery acked', async () => (await messagesInQueue(queue)) === 0, 30_000, 250);
  const seconds = (Date.now() - started) / 1000;
  await Promise.all(subs.map((s) => s.close()));

  expect(await ledgerCounts(t.db, `${label}-`)).toEqual({ rows: distinct, distinct });
  expect(await appliedTwice(t.db, `${label}-`)).toEqual([]);
  expect(await inboxKeys(t.db, consumer)).toEqual({ processed: distinct, deadLettered: 0 });
  // Batches report a copy of a duplicate within the same batch as no event of its own (core).
  if (consumers.every((c) => c.maxBatchSize === undefined)) expect(duplicates).toBe(TOTAL - distinct);
  expect(handled.reduce((a, b) => a + b, 0)).toBe(distinct);
  expect(await broker.count(queue)).toBe(0); // all acked: closing requeued nothing
  expect(await broker.count(`${queue}.dlq`)).toBe(0);
  return { handled, seconds };
}

describe(`${TOTAL.toLocaleString('en')} messages with 30% duplicate ids`, () => {
  it('prefetch 1: exactly one business row per distinct id', async () => {
    await run('dup1', [{ prefetch: 1, db: setup.t.db }]);
  });

  it('prefetch 100: exactly one business row per distinct id', async () => {
    await run('dup100', [{ prefetch: 100, db: setup.t.db }]);
  });

  it('prefetch 100 with batches of up to 50 per transaction: exactly one business row per distinct id', async () => {
    await run('dupbatch', [{ prefetch: 100, db: setup.t.db, maxBatchSize: 50 }]);
  });

  it('prefetch 100 with a bulk handler, batches of up to 50: exactly one business row per distinct id', async () => {
    await run('dupbulk', [{ prefetch: 100, db: setup.t.db, maxBatchSize: 50, bulk: true }]);
  });

  it('two competing consumers (own connections and pools): exactly one business row per distinct id', async () => {
    const { handled } = await run('dup2c', [
      { prefetch: 20, db: setup.t.connect(5).db },
      { prefetch: 20, db: setup.t.connect(5).db },
    ]);
    expect(handled.every((n) => n > 0)).toBe(true); // both took part
  });
});
