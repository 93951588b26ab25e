// Postgres goes away mid-run and comes back (a private cluster of this test's own:
// docs/design.md, "Tests and services"): deliveries are requeued after a backoff, none is
// acked without its commit, none is dead-lettered, and once the server is back the totals
// are exact.
import { createInbox } from '@inboxkit/core';
import { subscribe } from '@inboxkit/rabbitmq';
import { describe, expect, it } from 'vitest';
import type { TestDB } from '../support/postgres.ts';
import { amqpUrl, declareQueueWithDlq, messagesInQueue, messagesWithDuplicates, waitFor } from './support/broker.ts';
import { setUpRabbitFile } from './support/file-setup.ts';
import { appliedTwice, inboxKeys, type LedgerBody, ledgerCounts, ledgerHandler } from './support/ledger.ts';
import { collectSubscriptionEvents } from './support/subscriptions.ts';

const setup = setUpRabbitFile('pgrestart', { privatePostgres: true, poolSize: 10 });

describe('Postgres restarted mid-run', () => {
  it.each([
    ['a transaction per message', 1],
    ['batches of up to 10', 10],
  ])(
    '%s: acks nothing that was not committed, dead-letters nothing, and the totals are exact',
    async (_, maxBatchSize) => {
      const { t, broker, server } = setup;
      const queue = await declareQueueWithDlq(broker, 'pgrestart');
      const prefix = `pgr${maxBatchSize}`;
      const { messages, distinct } = messagesWithDuplicates(prefix, 2_000);
      await broker.publish(queue, messages);

      const inbox = createInbox({
        db: t.db,
        consumer: queue,
        retry: { retries: 2, minTimeout: 10, maxTimeout: 50 },
        crashLoopLimit: 2,
      });
      const subscription = subscribe<TestDB, LedgerBody, void>({
        inbox,
        url: amqpUrl(),
        queue,
        prefetch: 20,
        maxBatchSize,
        decode: 'json',
        requeueBackoff: { minDelayMs: 100, maxDelayMs: 1_000 },
        handler: ledgerHandler({ delayMs: 1 }),
      });
      const { requeued, deadLettered } = collectSubscriptionEvents(subscription, 'requeued', 'deadLettered');
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
