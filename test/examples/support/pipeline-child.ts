// One stage of the outbox pipeline under chaos (test/examples/outbox-pipeline.test.ts), as a
// process of its own so that the test can SIGKILL it. Run with `node pipeline-child.ts` (Node
// strips the types); it imports the built packages.
//
//   PIPELINE='{"role":"ingest"|"relay"|"deliver", ...}' node pipeline-child.ts
//
// - ingest: Kafka -> inboxkit consumer; each input record is enqueued to the outbox in the
//   inbox's transaction (one enqueue call per batch), to the RabbitMQ queue, with the
//   record's key as the ordering key and no message id (the outbox draws one and stores it);
// - relay: the outbox -> RabbitMQ (createRabbitRelay), its connection named `connectionName`
//   so that the test can cut it; with INBOXKIT_TEST_RELAY_HALT_AFTER_CONFIRM=1 it stops
//   between the broker's confirm and its commit (the test then SIGKILLs it);
// - deliver: RabbitMQ -> inboxkit consumer writing one `pipeline_effects` row per message
//   (input id, key, sequence), one delivery at a time so that the row ids give the order
//   the effects were applied in.
// Prints `ready` once running, `duplicate <id>` per duplicate the inbox skipped. SIGTERM
// closes gracefully and prints `closed`.
import { writeSync } from 'node:fs';
import { createInbox, createOutbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { runInboxConsumer } from '@inboxkit/kafka';
import { createRabbitRelay, subscribe } from '@inboxkit/rabbitmq';
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';

export interface PipelineConfig {
  readonly role: 'ingest' | 'relay' | 'deliver';
  readonly databaseUrl: string;
  readonly amqpUrl: string;
  readonly queue: string;
  readonly connectionName: string;
  readonly kafkaBrokers?: string[];
  readonly topic?: string;
  readonly groupId?: string;
}

/** An input record's value, carried unchanged to the effect downstream. */
export interface PipelineInput {
  readonly inputId: string;
  readonly key: string;
  /** 1, 2, 3... per key, in the order the key's records were produced. */
  readonly seq: number;
}

interface PipelineDB {
  pipeline_effects: { input_id: string; key: string; seq: number };
}

const config = JSON.parse(process.env.PIPELINE ?? '{}') as PipelineConfig;
const say = (line: string): void => void writeSync(1, `${line}\n`);

const db = createPgKysely<PipelineDB>({ connectionString: config.databaseUrl, max: 4 });
const outbox = createOutbox({ db });
const pause = { minDelayMs: 100, maxDelayMs: 1000 };
let close: () => Promise<void>;

if (config.role === 'ingest') {
  const inbox = createInbox({
    db,
    consumer: 'pipeline.ingest',
    retry: { retries: 2, minTimeout: 20, maxTimeout: 200 },
  });
  inbox.on('duplicate', ({ messageId }) => say(`duplicate ${messageId}`));
  const kafka = new Kafka({
    clientId: `pipeline-ingest-${process.pid}`,
    brokers: config.kafkaBrokers ?? [],
    logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 100, retries: 8, maxRetryTime: 2000 },
  });
  const consumer = kafka.consumer({
    groupId: config.groupId ?? '',
    sessionTimeout: 6000,
    rebalanceTimeout: 10_000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 200,
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [config.topic ?? ''], fromBeginning: true });
  const control = await runInboxConsumer<PipelineDB, PipelineInput>(consumer, {
    mode: 'eachBatch',
    inbox,
    kafka,
    groupId: config.groupId,
    decode: 'json',
    maxBatchSize: 50,
    commitIntervalMs: 200,
    pause,
    bulkHandler: async (trx, messages) => {
      await outbox.enqueue(
        trx,
        messages.map((m) => ({ exchange: '', routingKey: config.queue, key: m.value.key, payload: m.value })),
      );
    },
  });
  close = () => control.close(); // also disconnects the clients the adapter made
} else if (config.role === 'relay') {
  const relay = createRabbitRelay({
    outbox,
    name: config.connectionName,
    connect: () => amqplib.connect(config.amqpUrl, { clientProperties: { connection_name: config.connectionName } }),
    listen: { connectionString: config.databaseUrl },
    batchSize: 50,
    pollIntervalMs: 200,
    pause,
  });
  close = () => relay.close();
} else {
  const inbox = createInbox({
    db,
    consumer: 'pipeline.deliver',
    retry: { retries: 2, minTimeout: 20, maxTimeout: 200 },
  });
  inbox.on('duplicate', ({ messageId }) => say(`duplicate ${messageId}`));
  const subscription = subscribe<PipelineDB, PipelineInput, void>({
    inbox,
    url: config.amqpUrl,
    queue: config.queue,
    prefetch: 1, // one delivery at a time: the effects' row ids are their order
    decode: 'json',
    assertTopology: false,
    connectionName: config.connectionName,
    requeueBackoff: { minDelayMs: 20, maxDelayMs: 500 },
    reconnect: { minDelayMs: 50, maxDelayMs: 1000 },
    handler: async (trx, message) => {
      const { inputId, key, seq } = message.body;
      await trx.insertInto('pipeline_effects').values({ input_id: inputId, key, seq }).execute();
    },
  });
  await subscription.ready();
  close = () => subscription.close();
}

say('ready');
process.once('SIGTERM', () => {
  void close()
    .catch((error: unknown) => say(`close failed: ${String(error)}`))
    .finally(async () => {
      await db.destroy();
      say('closed');
      process.exit(0);
    });
});
