// The broker closes the consumer's connection mid-run (`rabbitmqctl close_connection` on
// this test's connection only, found by its connection_name): the subscription reconnects
// on its own, never acks a delivery on a channel it did not come on, and the totals are exact.
import { createInbox } from '@inboxkit/core';
import { subscribe } from '@inboxkit/rabbitmq';
import { describe, expect, it } from 'vitest';
import type { TestDB } from '../support/postgres.ts';
import {
  amqpUrl,
  closeConnectionsNamed,
  declareQueueWithDlq,
  messagesInQueue,
  messagesWithDuplicates,
  waitFor,
} from './support/broker.ts';
import { setUpRabbitFile } from './support/file-setup.ts';
import { appliedTwice, inboxKeys, type LedgerBody, ledgerCounts, ledgerHandler } from './support/ledger.ts';
import { collectSubscriptionEvents } from './support/subscriptions.ts';

const setup = setUpRabbitFile('cut');

describe('connection cut by the broker', () => {
  it('reconnects on its own, twice, and every id is applied exactly once', async () => {
    const { t, broker } = setup;
    const queue = await declareQueueWithDlq(broker, 'cut');
    const { messages, distinct } = messagesWithDuplicates('cut', 3_000);
    await broker.publish(queue, messages);

    const connectionName = `inboxkit test ${queue}`;
    const inbox = createInbox({ db: t.db, consumer: queue });
    let duplicates = 0;
    inbox.on('duplicate', () => duplicates++);
    const subscription = subscribe<TestDB, LedgerBody, void>({
      inbox,
      url: amqpUrl(),
      queue,
      prefetch: 50,
      decode: 'json',
      connectionName,
      reconnect: { minDelayMs: 50, maxDelayMs: 500 },
      handler: ledgerHandler({ delayMs: 1 }),
    });
    const { reconnecting, connected } = collectSubscriptionEvents(subscription, 'reconnecting', 'connected');
    try {
      await subscription.ready();
      for (const [cut, after] of [
        [1, 700],
        [2, 1_600],
      ] as const) {
        await waitFor(`${after} ids applied`, async () => (await ledgerCounts(t.db, 'cut-')).distinct >= after);
        expect(await closeConnectionsNamed(connectionName)).toBe(1);
        await waitFor(`consuming again after cut ${cut}`, () => connected.length === cut + 1, 30_000);
      }
      await waitFor('every id applied', async () => (await ledgerCounts(t.db, 'cut-')).distinct === distinct, 90_000);
      await waitFor('every delivery acked', async () => (await messagesInQueue(queue)) === 0, 30_000, 250);
    } finally {
      await subscription.close();
    }

    expect(reconnecting.length).toBe(2);
    // Deliveries of a dead channel were abandoned, never acked on the new one (406 unknown delivery tag).
    expect(reconnecting.map((event) => String(event.error?.message))).not.toContainEqual(
      expect.stringMatching(/PRECONDITION|unknown delivery tag/i),
    );
    expect(await ledgerCounts(t.db, 'cut-')).toEqual({ rows: distinct, distinct });
    expect(await appliedTwice(t.db, 'cut-')).toEqual([]);
    expect(await inboxKeys(t.db, queue)).toEqual({ processed: distinct, deadLettered: 0 });
    expect(duplicates).toBeGreaterThanOrEqual(messages.length - distinct);
    expect(await broker.count(queue)).toBe(0);
    expect(await broker.count(`${queue}.dlq`)).toBe(0);
  });
});
