// The Kafka broker stopped mid-run (a private broker on free ports: the shared one serves the
// test files running beside this one). A record to dead-letter while the broker is down is
// not skipped: its publish fails, its partition pauses and seeks back, and once the broker is
// back the record is published to the DLQ, recorded, and its offset moves.
import { NonRetryableError } from '@inboxkit/core';
import { DeadLetterHeaders, type KafkaInboxEvents } from '@inboxkit/kafka';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KafkaBroker, startKafkaBroker } from '../support/kafka-broker.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';
import { ledgerHandler, ledgerTotals, startInboxConsumer, testInbox } from './support/inbox-consumer.ts';
import {
  charge,
  createTopics,
  type KafkaTestKit,
  kafkaTestKit,
  produce,
  readTopic,
  uniqueName,
  waitFor,
  waitForCommittedToEnd,
} from './support/kafka-testkit.ts';

let broker: KafkaBroker;
let t: TestDatabase;
let kit: KafkaTestKit;
beforeAll(async () => {
  [broker, t] = await Promise.all([startKafkaBroker(), createTestDatabase('kafka_broker_restart')]);
  kit = await kafkaTestKit(broker.brokers);
});
afterAll(async () => {
  await kit?.dispose();
  await broker?.dispose();
  await t?.dispose();
});

describe('broker down while a record is dead-lettered', () => {
  it('pauses instead of skipping, publishes once the broker is back, and every other record is processed once', async () => {
    const topic = uniqueName('broker-restart');
    const groupId = uniqueName('broker-restart');
    await createTopics(kit.admin, [
      { topic, numPartitions: 1 },
      { topic: `${topic}.dlq`, numPartitions: 1 },
    ]);
    const poison = 'br-poison';
    await produce(kit.producer, topic, [
      ...Array.from({ length: 100 }, (_, i) => charge(`br-a${i}`)),
      charge(poison),
      ...Array.from({ length: 100 }, (_, i) => charge(`br-b${i}`)),
    ]);

    // The poison's handler waits until the broker is down, then fails for good.
    let reachedPoison!: () => void;
    const poisonReached = new Promise<void>((resolve) => {
      reachedPoison = resolve;
    });
    let brokerDown!: () => void;
    const brokerIsDown = new Promise<void>((resolve) => {
      brokerDown = resolve;
    });
    const paused: KafkaInboxEvents['paused'][] = [];
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      mode: 'eachMessage',
      handler: async (trx, message) => {
        if (message.id === poison) {
          reachedPoison();
          await brokerIsDown;
          throw new NonRetryableError('poison');
        }
        await ledgerHandler(trx, message);
      },
      inbox: testInbox(t.db, 'broker-restart'),
      producer: kit.producer,
      admin: kit.admin,
      deadLetterTimeoutMs: 2000,
      pause: { minDelayMs: 300, maxDelayMs: 1500 },
    });
    control.on('paused', (event) => paused.push(event));
    try {
      await poisonReached;
      await broker.stop();
      brokerDown();
      await waitFor(() => paused.length > 0, { what: 'the partition to pause', timeoutMs: 30_000 });
      expect(paused[0]).toMatchObject({ reason: 'dead_letter_failed', offset: '100' });
      expect(paused[0]?.error).toMatchObject({ code: 'INBOX_KAFKA_DEAD_LETTER_FAILED' });
      // Nothing after the poison was settled while its dead letter could not be published.
      expect((await ledgerTotals(t.db)).rows).toBe(100);
      await broker.restart();
      await waitForCommittedToEnd(kit.admin, groupId, topic, 120_000);
    } finally {
      await control.shutdown();
    }
    expect(await ledgerTotals(t.db)).toEqual({ rows: 200, distinct: 200, twice: [] });
    const dead = await readTopic(kit.kafka, `${topic}.dlq`, 1);
    // A publish that timed out on our side may still have reached the broker: at least once.
    expect(dead.length).toBeGreaterThanOrEqual(1);
    expect(new Set(dead.map((r) => r.headers[DeadLetterHeaders.messageId]))).toEqual(new Set([poison]));
    expect(dead[0]?.headers[DeadLetterHeaders.reason]).toBe('non_retryable');
  });
});
