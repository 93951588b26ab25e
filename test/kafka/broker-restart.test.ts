// The Kafka broker stopped mid-run (a private broker on free ports: the shared one serves the
// test files running beside this one). A record to dead-letter while the broker is down is
// not skipped: its publish fails, its partition pauses and seeks back, and once the broker is
// back the record is published to the DLQ, recorded, and its offset moves.
import { NonRetryableError } from '@inboxkit/core';
import { DEAD_LETTER_HEADERS } from '@inboxkit/kafka';
import { describe, expect, it } from 'vitest';
import { gate } from '../support/gate.ts';
import { setUpKafkaFile } from './support/file-setup.ts';
import {
  collectControlEvents,
  ledgerHandler,
  ledgerTotals,
  startInboxConsumer,
  testInbox,
} from './support/inbox-consumer.ts';
import {
  charge,
  createFreshTopic,
  produce,
  readTopic,
  waitFor,
  waitForCommittedToEnd,
} from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_broker_restart', { privateBroker: true });

describe('broker down while a record is dead-lettered', () => {
  it('pauses instead of skipping, publishes once the broker is back, and every other record is processed once', async () => {
    const { t, kit, broker } = setup;
    const { topic, groupId } = await createFreshTopic(kit.admin, {
      topic: 'broker-restart',
      group: 'broker-restart',
      partitions: 1,
    });
    const poison = 'br-poison';
    await produce(kit.producer, topic, [
      ...Array.from({ length: 100 }, (_, i) => charge(`br-a${i}`)),
      charge(poison),
      ...Array.from({ length: 100 }, (_, i) => charge(`br-b${i}`)),
    ]);

    // The poison's handler waits until the broker is down, then fails for good.
    const poisonReached = gate();
    const brokerDown = gate();
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      mode: 'eachMessage',
      handler: async (trx, message) => {
        if (message.id === poison) {
          poisonReached.open();
          await brokerDown.promise;
          throw new NonRetryableError('poison');
        }
        await ledgerHandler(trx, message);
      },
      inbox: testInbox(t.db, 'broker-restart'),
      kafka: kit.kafka,
      deadLetterTimeoutMs: 2000,
      pause: { minDelayMs: 300, maxDelayMs: 1500 },
    });
    const { paused } = collectControlEvents(control, 'paused');
    try {
      await poisonReached.promise;
      await broker.stop();
      brokerDown.open();
      await waitFor(() => paused.length > 0, { what: 'the partition to pause', timeoutMs: 30_000 });
      expect(paused[0]).toMatchObject({ reason: 'dead_letter_failed', offset: '100' });
      expect(paused[0]?.error).toMatchObject({ code: 'INBOX_KAFKA_PUBLISH_FAILED', topic: `${topic}.dlq` });
      // Nothing after the poison was settled while its dead letter could not be published.
      expect((await ledgerTotals(t.db)).rows).toBe(100);
      await broker.restart();
      await waitForCommittedToEnd(kit.admin, groupId, topic, 120_000);
    } finally {
      await control.close();
    }
    expect(await ledgerTotals(t.db)).toEqual({ rows: 200, distinct: 200, twice: [] });
    const dead = await readTopic(kit.kafka, `${topic}.dlq`, 1);
    // A publish that timed out on our side may still have reached the broker: at least once.
    expect(dead.length).toBeGreaterThanOrEqual(1);
    expect(new Set(dead.map((r) => r.headers[DEAD_LETTER_HEADERS.messageId]))).toEqual(new Set([poison]));
    expect(dead[0]?.headers[DEAD_LETTER_HEADERS.reason]).toBe('non_retryable');
  });
});
