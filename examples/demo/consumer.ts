// One process of the demo (so the demo can SIGKILL it), by `broker`:
//   DEMO_CONSUMER='{"broker":"kafka",...}' node examples/demo/consumer.ts
// - `kafka`, `rabbitmq`: a payments consumer. Each charge request inserts one row into
//   `charges` and enqueues a `charge.completed` event in the outbox, both in the inbox's
//   transaction. A request with a non-positive amount is refused for good (dead-lettered).
// - `relay`: the outbox relay, publishing the events to the `charge.completed` queue.
// - `notifications`: a consumer of that queue, writing one `notifications` row per event
//   through its own inbox.
// Counts go to the parent over IPC; SIGTERM shuts down gracefully.
import { createInbox, createOutbox, NonRetryableError } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { runInboxConsumer } from '@inboxkit/kafka';
import { createRabbitRelay, subscribe } from '@inboxkit/rabbitmq';
import { Kafka, logLevel } from 'kafkajs';
import type { Transaction } from 'kysely';

export interface ConsumerConfig {
  readonly broker: 'kafka' | 'rabbitmq' | 'relay' | 'notifications';
  readonly databaseUrl: string;
  readonly kafkaBrokers?: string[];
  readonly topic?: string;
  readonly groupId?: string;
  readonly amqpUrl?: string;
  readonly queue?: string;
  readonly deadLetterQueue?: string;
  /** The queue `charge.completed` events go to (through the default exchange). */
  readonly eventsQueue: string;
  /**
   * The bug fix the demo deploys before it replays the dead letters: a negative amount is a
   * refund. Without it, a non-positive amount is refused for good (dead-lettered).
   */
  readonly refunds?: boolean;
}

export interface ChargeRequest {
  readonly chargeId: string;
  readonly userId: string;
  readonly amountCents: number;
}

/** The `charge.completed` event a charge enqueues. */
export interface ChargeCompleted {
  readonly chargeId: string;
  readonly userId: string;
  readonly amountCents: number;
}

export interface DemoDB {
  charges: { charge_id: string; user_id: string; amount_cents: number; via: string };
  notifications: { charge_id: string; user_id: string; text: string };
}

const config = JSON.parse(process.env.DEMO_CONSUMER ?? '{}') as ConsumerConfig;
// DEMO_VERBOSE=1 logs what the consumer does to stderr (a pino logger fits here too).
const log = (level: string) => (fields: object, message?: string) => {
  if (process.env.DEMO_VERBOSE !== '1') return;
  const err = (fields as { err?: Error }).err;
  process.stderr.write(`[${config.broker} ${process.pid}] ${level} ${message ?? ''} ${err ? err.message : ''}\n`);
};
const logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
const db = createPgKysely<DemoDB>({ connectionString: config.databaseUrl, max: 4 });
const outbox = createOutbox({ db });
const inbox = createInbox({
  db,
  consumer: config.broker === 'notifications' ? 'demo.notifications' : `demo.payments.${config.broker}`,
  logger,
  retry: { retries: 2, minTimeout: 20, maxTimeout: 200 },
});

const counts = { processed: 0, duplicates: 0 };
inbox.on('processed', () => void counts.processed++);
inbox.on('duplicate', () => void counts.duplicates++);
const report = setInterval(() => {
  if (counts.processed + counts.duplicates === 0) return;
  process.send?.({ ...counts });
  counts.processed = 0;
  counts.duplicates = 0;
}, 200);

async function charge(trx: Transaction<DemoDB>, request: ChargeRequest): Promise<{ charged: number }> {
  if (!(request.amountCents > 0) && !(config.refunds && request.amountCents < 0)) {
    throw new NonRetryableError(`amount must be positive, got ${request.amountCents}`);
  }
  await trx
    .insertInto('charges')
    .values({
      charge_id: request.chargeId,
      user_id: request.userId,
      amount_cents: request.amountCents,
      via: config.broker,
    })
    .execute();
  // Published by the relay once this transaction commits; never if it rolls back. The key
  // keeps a user's events in order; the message id lets the notifications inbox drop a re-send.
  const event: ChargeCompleted = {
    chargeId: request.chargeId,
    userId: request.userId,
    amountCents: request.amountCents,
  };
  await outbox.enqueue(trx, {
    exchange: '',
    routingKey: config.eventsQueue,
    key: request.userId,
    payload: event,
    messageId: `charge.completed:${request.chargeId}`,
    headers: { type: 'charge.completed' },
  });
  return { charged: request.amountCents };
}

let stop: () => Promise<void>;
if (config.broker === 'kafka') {
  const kafka = new Kafka({
    clientId: `demo-${process.pid}`,
    brokers: config.kafkaBrokers ?? [],
    logLevel: logLevel.NOTHING,
  });
  // A short session so that the group hands a killed member's partitions on quickly.
  const kafkaConsumer = kafka.consumer({
    groupId: config.groupId ?? 'demo',
    sessionTimeout: 6000,
    heartbeatInterval: 500,
  });
  await kafkaConsumer.connect();
  await kafkaConsumer.subscribe({ topics: [config.topic ?? ''], fromBeginning: true });
  const control = await runInboxConsumer<DemoDB, ChargeRequest>(kafkaConsumer, {
    mode: 'eachBatch',
    inbox,
    kafka,
    groupId: config.groupId,
    messageId: { header: 'message-id' },
    decode: 'json',
    handler: (trx, message) => charge(trx, message.value),
    logger,
  });
  stop = () => control.close(); // also disconnects the clients the adapter made
} else if (config.broker === 'relay') {
  const relay = createRabbitRelay({
    outbox,
    url: config.amqpUrl,
    listen: { connectionString: config.databaseUrl },
    logger,
  });
  relay.on('published', ({ count }) => void (counts.processed += count));
  stop = () => relay.close();
} else if (config.broker === 'notifications') {
  const subscription = subscribe<DemoDB, ChargeCompleted>({
    inbox,
    url: config.amqpUrl,
    queue: config.eventsQueue,
    prefetch: 20,
    decode: 'json',
    deadLetter: { queue: `${config.eventsQueue}.dlq` },
    assertTopology: false,
    connectionName: `inboxkit-demo-notifications-${process.pid}`,
    logger,
    handler: async (trx, message) => {
      const { chargeId, userId, amountCents } = message.body;
      await trx
        .insertInto('notifications')
        .values({
          charge_id: chargeId,
          user_id: userId,
          text: amountCents < 0 ? `You were refunded ${-amountCents} cents.` : `You were charged ${amountCents} cents.`,
        })
        .execute();
    },
  });
  stop = () => subscription.close();
} else {
  const subscription = subscribe<DemoDB, ChargeRequest>({
    inbox,
    url: config.amqpUrl,
    queue: config.queue ?? '',
    prefetch: 50,
    decode: 'json',
    deadLetter: { queue: config.deadLetterQueue },
    assertTopology: false, // the demo declares its queues itself
    connectionName: `inboxkit-demo-${process.pid}`,
    logger,
    handler: (trx, message) => charge(trx, message.body),
  });
  stop = () => subscription.close();
}

process.send?.({ ready: true });
process.once('SIGTERM', () => {
  stop()
    .catch(() => {})
    .finally(async () => {
      clearInterval(report);
      process.send?.({ ...counts });
      await db.destroy();
      process.exit(0);
    });
});
