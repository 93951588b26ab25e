// Postgres goes away mid-run and comes back (a private cluster of this test's own,
// DESIGN.md section 7): deliveries are requeued after a backoff, none is acked without its
// commit, none is dead-lettered, and once the server is back the totals are exact.
import { createInbox } from '@inboxkit/core';
import { type RabbitMessage, type SubscriptionEvents, subscribe } from '@inboxkit/rabbitmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../support/postgres.ts';
import { type PrivatePostgres, startPrivatePostgres } from '../support/private-postgres.ts';
import {
  amqpUrl,
  messagesInQueue,
  messagesWithDuplicates,
  openTestBroker,
  type TestBroker,
  uniqueName,
  waitFor,
} from './support/broker.ts';
import { appliedTwice, inboxKeys, ledgerCounts } from './support/ledger.ts';

type Body = { n: number; amountCents: number };

let server: PrivatePostgres;
let t: TestDatabase;
let broker: TestBroker;

beforeAll(async () => {
  server = await startPrivatePostgres();
  t = await createTestDatabase('rabbitmq_pgrestart', { url: server.url, poolSize: 10 });
  broker = await openTestBroker('pgrestart');
});
afterAll(async () => {
  await broker?.dispose();
  await t?.dispose().catch(() => {});
  server?.dispose();
});

describe('Postgres restarted mid-run', () => {
  it.each([
    ['a transaction per message', 1],
    ['batches of up to 10', 10],
  ])(
    '%s: acks nothing that was not committed, dead-letters nothing, and the totals are exact',
    async (_, maxBatchSize) => {
      const queue = uniqueName('pgrestart');
      await broker.declareQueue(queue);
      await broker.declareQueue(`${queue}.dlq`);
      const prefix = `pgr${maxBatchSize}`;
      const { messages, distinct } = messagesWithDuplicates(prefix, 2_000);
      await broker.publish(queue, messages);

      const inbox = createInbox({
        db: t.db,
        consumer: queue,
        retry: { retries: 2, minTimeout: 10, maxTimeout: 50 },
        crashLoopLimit: 2,
      });
      const subscription = subscribe<TestDB, Body, void>({
        inbox,
        url: amqpUrl(),
        queue,
        prefetch: 20,
        maxBatchSize,
        decode: 'json',
        requeueBackoff: { minDelayMs: 100, maxDelayMs: 1_000 },
        handler: async (trx, message: RabbitMessage<Body>) => {
          await new Promise((resolve) => setTimeout(resolve, 1));
          await trx
            .insertInto('ledger')
            .values({ charge_id: message.id, amount_cents: message.body.amountCents })
            .execute();
        },
      });
      const requeued: SubscriptionEvents['requeued'][] = [];
      const deadLettered: SubscriptionEvents['deadLettered'][] = [];
      subscription.on('requeued', (event) => requeued.push(event));
      subscription.on('deadLettered', (event) => deadLettered.push(event));
      try {
        await subscription.ready();
        await waitFor('500 ids applied', async () => (await ledgerCounts(t.db, `${prefix}-`)).distinct >= 500);
        server.stop(); // fast shutdown: in-flight transactions are cut off
        const downAt = requeued.length;
        await waitFor('deliveries requeued while Postgres is down', () => requeued.length >= downAt + 20, 20_000);
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        server.start();
        await waitFor(
          'every id applied',
          async () => (await ledgerCounts(t.db, `${prefix}-`)).distinct === distinct,
          90_000,
          200,
        );
        await waitFor('every delivery acked', async () => (await messagesInQueue(queue)) === 0, 30_000, 250);
      } finally {
        await subscription.close();
      }

      expect(requeued.filter((event) => event.reason === 'database_unavailable').length).toBeGreaterThanOrEqual(20);
      expect(deadLettered).toEqual([]);
      expect(await ledgerCounts(t.db, `${prefix}-`)).toEqual({ rows: distinct, distinct });
      expect(await appliedTwice(t.db, `${prefix}-`)).toEqual([]);
      expect(await inboxKeys(t.db, queue)).toEqual({ processed: distinct, deadLettered: 0 });
      expect(await broker.count(queue)).toBe(0); // every delivery acked, after its commit
      expect(await broker.count(`${queue}.dlq`)).toBe(0);
    },
  );
});
