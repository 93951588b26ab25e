// Dead-letter topics behave as RabbitMQ's dead-letter queues do: without `assertTopology` a
// missing one is an error that names it and loses nothing (the record's offset does not
// move, its partition pauses, the `paused` event says why), even on a broker that would
// auto-create topics; with `assertTopology` the consumer creates it. The dead-letter
// producer is the adapter's own, made from the `kafka` client at the first dead letter.
import { NonRetryableError } from '@inboxkit/core';
import { DEAD_LETTER_HEADERS, type KafkaClient, type KafkaProducerConfig, PublishError } from '@inboxkit/kafka';
import { describe, expect, it } from 'vitest';
import { setUpKafkaFile } from './support/file-setup.ts';
import {
  collectControlEvents,
  ledgerHandlers,
  ledgerTotals,
  startInboxConsumer,
  testInbox,
} from './support/inbox-consumer.ts';
import {
  charge,
  createTopics,
  produce,
  readTopic,
  uniqueName,
  waitFor,
  waitForCommittedToEnd,
} from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_dead_letter_topics');

/** The test client, recording the configuration of every producer the adapter makes with it. */
function recordingClient(): { kafka: KafkaClient; producers: (KafkaProducerConfig | undefined)[] } {
  const { kit } = setup;
  const producers: (KafkaProducerConfig | undefined)[] = [];
  return {
    producers,
    kafka: {
      producer: (config) => {
        producers.push(config);
        return kit.kafka.producer(config);
      },
      admin: () => kit.kafka.admin(),
    },
  };
}

/** A fresh one-partition topic *without* its dead-letter topic, holding c-1, the poison, c-3. */
async function topicWithPoison(label: string): Promise<{ topic: string; dlq: string; groupId: string }> {
  const { kit } = setup;
  const topic = uniqueName(label);
  await createTopics(kit.admin, [{ topic, numPartitions: 1 }]);
  await produce(kit.producer, topic, [charge('c-1'), charge('poison'), charge('c-3')]);
  return { topic, dlq: `${topic}.dlq`, groupId: uniqueName(`group-${label}`) };
}

const failOnPoison = (messages: readonly { id: string }[]) => {
  if (messages.some((m) => m.id === 'poison')) throw new NonRetryableError('poison');
};

describe.each(['eachMessage', 'eachBatch'] as const)('%s', (mode) => {
  it('without assertTopology, a missing dead-letter topic pauses the partition with an error naming it; nothing moves past the record, and it is dead-lettered once the topic exists', async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, groupId } = await topicWithPoison(`dlt-missing-${mode}`);
    const { kafka, producers } = recordingClient();
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      ...ledgerHandlers(mode, { before: failOnPoison }),
      inbox: testInbox(t.db, `dlt-missing-${mode}`),
      kafka,
      pause: { minDelayMs: 200, maxDelayMs: 400 },
    });
    const { paused, deadLettered } = collectControlEvents(control, 'paused', 'deadLettered');
    try {
      await waitFor(() => paused.length >= 3, { what: 'the partition to pause three times', timeoutMs: 30_000 });
      for (const event of paused) {
        expect(event).toMatchObject({ topic, partition: 0, offset: '1', reason: 'dead_letter_failed' });
        expect(event.error).toBeInstanceOf(PublishError);
        expect(event.error).toMatchObject({ code: 'INBOX_KAFKA_PUBLISH_FAILED', failure: 'missing_topic', topic: dlq });
        expect(event.error.message).toContain(JSON.stringify(dlq));
        expect(event.error.message).toMatch(/assertTopology/);
      }
      expect(deadLettered).toEqual([]);
      // Publishing was never tried: the broker (auto.create.topics.enable=true) made no topic.
      expect(await kit.admin.listTopics()).not.toContain(dlq);
      // The group's offset never passed the poison (c-1 alone may be committed).
      const [committed] = await kit.admin.fetchOffsets({ groupId, topics: [topic] });
      expect(Number(committed?.partitions[0]?.offset)).toBeLessThanOrEqual(1);
      expect((await ledgerTotals(t.db)).rows).toBeLessThanOrEqual(2);

      await createTopics(kit.admin, [{ topic: dlq, numPartitions: 1 }]);
      await waitForCommittedToEnd(kit.admin, groupId, topic);
    } finally {
      await control.close();
    }
    expect(deadLettered.map((event) => [event.message.id, event.deadLetterTopic])).toEqual([['poison', dlq]]);
    const [dead] = await readTopic(kit.kafka, dlq, 1);
    expect(dead?.headers[DEAD_LETTER_HEADERS.messageId]).toBe('poison');
    expect(await ledgerTotals(t.db)).toEqual({ rows: 2, distinct: 2, twice: [] });
    // One producer, the adapter's own: idempotent, one request in flight, no auto-creation.
    expect(producers).toEqual([{ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false }]);
  });

  it('with assertTopology, a missing dead-letter topic is created with the given settings and the record dead-lettered', async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, groupId } = await topicWithPoison(`dlt-assert-${mode}`);
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      ...ledgerHandlers(mode, { before: failOnPoison }),
      inbox: testInbox(t.db, `dlt-assert-${mode}`),
      kafka: kit.kafka,
      assertTopology: { numPartitions: 2 },
    });
    const { paused } = collectControlEvents(control, 'paused');
    try {
      await waitForCommittedToEnd(kit.admin, groupId, topic);
    } finally {
      await control.close();
    }
    expect(paused).toEqual([]);
    const { topics } = await kit.admin.fetchTopicMetadata({ topics: [dlq] });
    expect(topics[0]?.partitions).toHaveLength(2);
    const [dead] = await readTopic(kit.kafka, dlq, 1);
    expect(dead?.headers[DEAD_LETTER_HEADERS.reason]).toBe('non_retryable');
    expect(await ledgerTotals(t.db)).toEqual({ rows: 2, distinct: 2, twice: [] });
  });

  it('makes no producer while nothing is dead-lettered', async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const topic = uniqueName(`dlt-none-${mode}`);
    const groupId = uniqueName('group-dlt-none');
    await createTopics(kit.admin, [{ topic, numPartitions: 2 }]);
    await produce(
      kit.producer,
      topic,
      Array.from({ length: 20 }, (_, i) => charge(`ok-${i}`)),
    );
    const { kafka, producers } = recordingClient();
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      ...ledgerHandlers(mode),
      inbox: testInbox(t.db, `dlt-none-${mode}`),
      kafka,
    });
    try {
      await waitForCommittedToEnd(kit.admin, groupId, topic);
    } finally {
      await control.close();
    }
    expect(await ledgerTotals(t.db)).toEqual({ rows: 20, distinct: 20, twice: [] });
    expect(producers).toEqual([]);
  });
});
