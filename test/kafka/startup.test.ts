// Start-up during a Kafka outage (a private broker on free ports: the shared one serves the
// test files running beside this one). With the `subscribe` option, runInboxConsumer connects
// the clients and subscribes itself, retrying with backoff, so a consumer started while the
// broker is down comes up once it is back, and processes what was waiting.
import { type KafkaStartupRetry, KafkaUnavailableError, runInboxConsumer } from '@inboxkit/kafka';
import { describe, expect, it } from 'vitest';
import type { TestDB } from '../support/postgres.ts';
import { setUpKafkaFile } from './support/file-setup.ts';
import { type ChargeValue, ledgerHandler, ledgerTotals, testInbox } from './support/inbox-consumer.ts';
import {
  charge,
  consumerSettings,
  createFreshTopic,
  produce,
  testKafka,
  waitFor,
  waitForCommittedToEnd,
} from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_startup', { privateBroker: true });

/** Clients whose own retries give up quickly, so that runInboxConsumer's wait is what rides the outage out. */
function impatientClients(brokers: string[], groupId: string) {
  const kafka = testKafka(brokers, undefined, { retry: { initialRetryTime: 100, retries: 1, maxRetryTime: 300 } });
  return { kafka, kafkaConsumer: kafka.consumer({ groupId, ...consumerSettings }) };
}

describe('runInboxConsumer({ subscribe }) while the broker is down', () => {
  it('retries connect and subscribe with backoff, comes up when the broker does, and processes the waiting records', async () => {
    const { t, kit, broker } = setup;
    const { topic, groupId } = await createFreshTopic(kit.admin, { topic: 'startup', group: 'startup', partitions: 2 });
    await produce(
      kit.producer,
      topic,
      Array.from({ length: 20 }, (_, i) => charge(`st-${i}`)),
    );
    await broker.stop();

    const { kafka, kafkaConsumer } = impatientClients(broker.brokers, groupId);
    const retries: KafkaStartupRetry[] = [];
    const starting = runInboxConsumer<TestDB, ChargeValue>(kafkaConsumer, {
      mode: 'eachBatch',
      bulkHandler: async (trx, messages) => {
        for (const message of messages) await ledgerHandler(trx, message);
      },
      inbox: testInbox(t.db, 'startup'),
      kafka,
      groupId,
      commitIntervalMs: 200,
      subscribe: {
        topics: [topic],
        fromBeginning: true,
        minDelayMs: 200,
        maxDelayMs: 1000,
        onRetry: (retry) => retries.push(retry),
      },
    });
    let started = false;
    void starting.then(
      () => {
        started = true;
      },
      () => {},
    );
    try {
      await waitFor(() => retries.length >= 2, { what: 'two failed start-up attempts', timeoutMs: 60_000 });
      expect(started).toBe(false);
      expect(retries[0]).toMatchObject({ step: 'connect-kafka-consumer', attempt: 1 });
      await broker.restart();
      const control = await starting;
      try {
        await waitForCommittedToEnd(kit.admin, groupId, topic, 120_000);
      } finally {
        await control.close();
      }
      expect(await ledgerTotals(t.db)).toEqual({ rows: 20, distinct: 20, twice: [] });
    } finally {
      await starting.then(
        () => undefined,
        () => kafkaConsumer.disconnect().catch(() => {}),
      );
    }
  });

  it('gives up after subscribe.timeoutMs with KafkaUnavailableError, and at once when its signal aborts', async () => {
    const { t } = setup;
    // Nothing listens on this address.
    const { kafka, kafkaConsumer } = impatientClients(['127.0.0.1:1'], 'startup-nowhere');
    const options = {
      mode: 'eachMessage' as const,
      handler: ledgerHandler,
      inbox: testInbox(t.db, 'startup-nowhere'),
      kafka,
      groupId: 'startup-nowhere',
    };
    const error = await runInboxConsumer<TestDB, ChargeValue>(kafkaConsumer, {
      ...options,
      subscribe: { topics: ['nowhere'], timeoutMs: 1500, minDelayMs: 100 },
    }).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect(error).toBeInstanceOf(KafkaUnavailableError);
    expect(error).toMatchObject({ code: 'INBOX_KAFKA_UNAVAILABLE' });
    expect((error as Error).message).toMatch(
      /^Kafka \(connect-kafka-consumer\) did not answer within subscribe\.timeoutMs \(/,
    );

    const controller = new AbortController();
    const reason = new Error('SIGTERM during start-up');
    const aborted = runInboxConsumer<TestDB, ChargeValue>(kafkaConsumer, {
      ...options,
      subscribe: { topics: ['nowhere'], signal: controller.signal, minDelayMs: 100 },
    });
    setTimeout(() => controller.abort(reason), 300);
    await expect(aborted).rejects.toBe(reason);
    await expect(
      runInboxConsumer<TestDB, ChargeValue>(kafkaConsumer, { ...options, subscribe: { topics: [] } }),
    ).rejects.toThrow(/subscribe\.topics/);
  });

  it('a start-up that fails after the admin client connected disconnects the clients the adapter made', async () => {
    const { t, broker } = setup;
    const { kafka, kafkaConsumer } = impatientClients(broker.brokers, 'startup-bad-topic');
    const made: string[] = [];
    // The adapter's admin client, with its disconnect recorded.
    const recording = {
      producer: kafka.producer.bind(kafka),
      admin: () => {
        const admin = kafka.admin();
        made.push('admin');
        const disconnect = admin.disconnect.bind(admin);
        admin.disconnect = async () => {
          made.push('admin disconnected');
          await disconnect();
        };
        return admin;
      },
    };
    const retries: KafkaStartupRetry[] = [];
    // The admin client connects; the subscription is refused (no such topic name is valid).
    const error = await runInboxConsumer<TestDB, ChargeValue>(kafkaConsumer, {
      mode: 'eachMessage',
      handler: ledgerHandler,
      inbox: testInbox(t.db, 'startup-bad-topic'),
      kafka: recording,
      subscribe: {
        topics: ['not a valid topic name!'],
        timeoutMs: 1500,
        minDelayMs: 100,
        onRetry: (retry) => retries.push(retry),
      },
    }).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    await kafkaConsumer.disconnect();
    expect(error).toBeInstanceOf(KafkaUnavailableError);
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every((retry) => retry.step === 'subscribe')).toBe(true);
    expect(made).toEqual(['admin', 'admin disconnected']);
  });
});
