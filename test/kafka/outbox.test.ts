// The outbox relayed to Kafka (docs/outbox.md): only committed messages are published, once,
// with the key, headers and `message-id` header; two relays with writers enqueueing to the
// same keys at once keep each key's commit order at the consumer; a record the broker
// refuses (too large) is set aside without holding up other keys.
import { createOutbox, type Outbox, outboxSchemaSql } from '@inboxkit/core';
import { createKafkaRelay } from '@inboxkit/kafka';
import type { Producer } from 'kafkajs';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { setUpKafkaFile } from './support/file-setup.ts';
import { createTopics, readTopic, uniqueName, waitFor } from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_outbox');
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function freshOutbox(label: string): Promise<{ outbox: Outbox; table: string }> {
  const table = `${label}_${Math.random().toString(36).slice(2, 8)}`;
  await sql.raw(outboxSchemaSql({ table })).execute(setup.t.db);
  return { outbox: createOutbox({ db: setup.t.db, table }), table };
}

async function outboxRows(table: string): Promise<{ message_id: string; status: string }[]> {
  const { rows } = await sql<{ message_id: string; status: string }>`
    SELECT message_id, status FROM ${sql.table(table)} ORDER BY sequence`.execute(setup.t.db);
  return rows;
}

async function idempotentProducer(): Promise<Producer> {
  const producer = setup.kit.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  cleanups.push(() => producer.disconnect());
  return producer;
}

describe('the Kafka relay', () => {
  it('refuses bad options naming them', async () => {
    const { outbox } = await freshOutbox('kf_options');
    const producer = setup.kit.producer;
    expect(() => createKafkaRelay({ outbox } as never)).toThrow(/`kafka`.*`producer`/);
    expect(() => createKafkaRelay({ outbox, kafka: setup.kit.kafka, producer })).toThrow(/not both/);
    expect(() => createKafkaRelay({ outbox, producer, sendTimeoutMs: 0 })).toThrow(/`sendTimeoutMs`/);
    expect(() => createKafkaRelay({ outbox, producer, acks: 1 } as never)).toThrow(/Unknown option `acks`/);
  });

  it('publishes what committed exactly once with its key, headers and message id; nothing of a rollback', async () => {
    const { t, kit } = setup;
    const topic = uniqueName('outbox-commit');
    await createTopics(kit.admin, [{ topic, numPartitions: 1 }]);
    const { outbox, table } = await freshOutbox('kf_commit');
    // The relay makes (and on close disconnects) its own idempotent producer from the client.
    const relay = createKafkaRelay({ outbox, kafka: kit.kafka, listen: { connectionString: t.url } });
    cleanups.push(() => relay.close());

    await t.db
      .transaction()
      .execute(async (trx) => {
        await outbox.enqueue(trx, { topic, key: 'order-1', payload: { n: 0 }, messageId: 'rolled-back' });
        throw new Error('the handler failed after enqueueing');
      })
      .catch(() => {});
    await t.db.transaction().execute(async (trx) => {
      await outbox.enqueue(trx, {
        topic,
        key: 'order-1',
        payload: { n: 1 },
        messageId: 'order-1-accepted',
        headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      });
    });
    await waitFor(async () => (await outboxRows(table)).length === 0, { timeoutMs: 20_000, what: 'the relay' });
    const records = await readTopic(kit.kafka, topic, 1);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      key: 'order-1',
      value: '{"n":1}',
      headers: {
        'message-id': 'order-1-accepted',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      },
    });
  });

  it('keeps each key in commit order at the consumer with two relays and concurrent writers', async () => {
    const { t, kit } = setup;
    const topic = uniqueName('outbox-order');
    await createTopics(kit.admin, [{ topic, numPartitions: 4 }]);
    const { outbox, table } = await freshOutbox('kf_order');
    for (const n of [1, 2]) {
      const relay = createKafkaRelay({
        outbox,
        name: `relay-${n}`,
        producer: await idempotentProducer(),
        batchSize: 16,
        pollIntervalMs: 20,
        listen: { connectionString: t.url },
      });
      cleanups.push(() => relay.close());
    }
    const log = `${table}_commits`;
    await sql`CREATE TABLE ${sql.table(log)} (seq bigserial PRIMARY KEY, key text, message_id text)`.execute(t.db);
    const keys = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'];
    const writers = 4;
    const perWriter = 60;
    // Each transaction enqueues one or two messages of a key and then logs them: for one key,
    // the log's order is the commit order (the enqueue holds the key until commit).
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < perWriter; i++) {
          const key = keys[(w * 7 + i) % keys.length] as string;
          const ids = i % 4 === 0 ? [`${w}-${i}-a`, `${w}-${i}-b`] : [`${w}-${i}`];
          await t.db.transaction().execute(async (trx) => {
            await outbox.enqueue(
              trx,
              ids.map((messageId) => ({ topic, key, payload: { messageId }, messageId })),
            );
            await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
            for (const id of ids)
              await sql`INSERT INTO ${sql.table(log)} (key, message_id) VALUES (${key}, ${id})`.execute(trx);
          });
        }
      }),
    );
    const { rows: committed } = await sql<{ key: string; message_id: string }>`
      SELECT key, message_id FROM ${sql.table(log)} ORDER BY seq`.execute(t.db);
    await waitFor(async () => (await outboxRows(table)).length === 0, { timeoutMs: 60_000, what: 'the relays' });
    const records = await readTopic(kit.kafka, topic, committed.length, 60_000);
    expect(records).toHaveLength(committed.length);
    const byOffset = [...records].sort((a, b) => a.partition - b.partition || Number(a.offset) - Number(b.offset));
    for (const key of keys) {
      const expected = committed.filter((c) => c.key === key).map((c) => c.message_id);
      const got = byOffset.filter((r) => r.key === key).map((r) => r.headers['message-id']);
      expect(got, key).toEqual(expected);
    }
  });

  it('sets aside a record the broker refuses (too large), and a RabbitMQ message, and lets other keys flow', async () => {
    const { kit } = setup;
    const topic = uniqueName('outbox-too-large');
    await createTopics(kit.admin, [{ topic, numPartitions: 1 }]);
    const { outbox, table } = await freshOutbox('kf_poison');
    const relay = createKafkaRelay({
      outbox,
      producer: await idempotentProducer(),
      pollIntervalMs: 20,
      retry: { maxAttempts: 2, minDelayMs: 20, maxDelayMs: 50 },
    });
    cleanups.push(() => relay.close());
    const failed: string[] = [];
    relay.on('failed', (e) => failed.push(e.messageId));
    await outbox.enqueue(setup.t.db, [
      { topic, key: 'k1', payload: Buffer.alloc(3 * 1024 * 1024, 1), messageId: 'too-large' },
      { topic, key: 'k1', payload: 'behind', messageId: 'behind' },
      { topic, key: 'k2', payload: 'other', messageId: 'other-key' },
      { exchange: 'x', routingKey: 'r', key: 'k3', payload: 'for RabbitMQ', messageId: 'wrong-broker' },
    ]);
    await waitFor(() => failed.length === 2, { timeoutMs: 60_000, what: 'the too-large record set aside' });
    const records = await readTopic(kit.kafka, topic, 1);
    expect(records.map((r) => r.headers['message-id'])).toEqual(['other-key']);
    await waitFor(async () => (await outboxRows(table)).length === 3, { timeoutMs: 20_000, what: 'other-key deleted' });
    const [poison, wrongBroker] = await outbox.failed();
    expect(poison).toMatchObject({ messageId: 'too-large', attempts: 2 });
    expect(wrongBroker?.lastError).toMatch(/not a Kafka topic/);
    expect(await outboxRows(table)).toEqual([
      { message_id: 'too-large', status: 'failed' },
      { message_id: 'behind', status: 'pending' },
      { message_id: 'wrong-broker', status: 'failed' },
    ]);
  });
});
