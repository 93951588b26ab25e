// The payments consumer: charge requests from a Kafka topic become a charge and two ledger
// entries each, written with the inbox key in one transaction per batch.
//
//   node examples/kafka-payments/consumer.ts
//
// Reads DATABASE_URL, KAFKA_BROKERS, KAFKA_TOPIC (default payments.charge-requests) and
// KAFKA_GROUP_ID (default payments). SIGTERM or Ctrl-C shuts it down gracefully: no new
// fetches, the batch in flight commits, offsets are committed, the group is left.
import { createInbox, migrateInbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { type KafkaInboxMessage, runInboxConsumer } from '@inboxkit/kafka';
import { type Admin, Kafka, logLevel } from 'kafkajs';
import { type Generated, type Kysely, sql, type Transaction } from 'kysely';

/** What a producer sends; the `message-id` header carries `chargeId`. */
export interface ChargeRequest {
  readonly chargeId: string;
  readonly userId: string;
  readonly amountCents: number;
}

/** The example's own tables (names prefixed so they sit beside anything else). */
export interface PaymentsDB {
  kafka_payments_charges: {
    charge_id: string;
    user_id: string;
    amount_cents: number;
    created_at: Generated<Date>;
  };
  kafka_payments_ledger: {
    id: Generated<string>;
    charge_id: string;
    account: string;
    amount_cents: number;
  };
}

/** Creates the inbox table and the example's tables if they are missing. */
export async function createTables(db: Kysely<PaymentsDB>): Promise<void> {
  const { error } = await migrateInbox(db as Kysely<unknown>);
  if (error) throw error;
  await sql`CREATE TABLE IF NOT EXISTS kafka_payments_charges (
    charge_id text PRIMARY KEY,
    user_id text NOT NULL,
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    created_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
  await sql`CREATE TABLE IF NOT EXISTS kafka_payments_ledger (
    id bigserial PRIMARY KEY,
    charge_id text NOT NULL REFERENCES kafka_payments_charges (charge_id),
    account text NOT NULL,
    amount_cents integer NOT NULL
  )`.execute(db);
}

/** Creates the topic and its dead-letter topic (`<topic>.dlq`) if they are missing. */
export async function createTopics(admin: Admin, topic: string, numPartitions = 2): Promise<void> {
  await admin.createTopics({
    topics: [
      { topic, numPartitions },
      { topic: `${topic}.dlq`, numPartitions: 1 },
    ],
    waitForLeaders: true,
  });
}

/** What the consumer reports as it goes (printed by the command line, sent to a parent process). */
export type ConsumerEvent =
  | { readonly kind: 'ready'; readonly topic: string; readonly groupId: string }
  | { readonly kind: 'batch'; readonly charges: string[]; readonly ok: boolean; readonly error?: string }
  | {
      readonly kind: 'settled';
      readonly chargeId: string;
      readonly status: string;
      readonly partition: number;
      readonly offset: string;
    }
  | { readonly kind: 'committed'; readonly offsets: string[] }
  | { readonly kind: 'stopped' };

export interface ConsumerConfig {
  readonly databaseUrl: string;
  readonly brokers: string[];
  readonly topic: string;
  readonly groupId: string;
  /** Make the first bulk handler call fail after writing the charges (to show the rollback). */
  readonly failFirstBatch?: boolean;
  readonly onEvent?: (event: ConsumerEvent) => void;
}

export interface PaymentsConsumer {
  /** Stops fetching, lets the batch in flight commit, commits offsets, leaves the group, closes. */
  stop(): Promise<void>;
}

/** The charges of a batch's new records, in one statement. */
async function writeCharges(trx: Transaction<PaymentsDB>, messages: readonly KafkaInboxMessage<ChargeRequest>[]) {
  await trx
    .insertInto('kafka_payments_charges')
    .values(messages.map((m) => ({ charge_id: m.id, user_id: m.value.userId, amount_cents: m.value.amountCents })))
    .execute();
}

/** Two ledger entries per charge, in one statement. */
async function writeLedger(trx: Transaction<PaymentsDB>, messages: readonly KafkaInboxMessage<ChargeRequest>[]) {
  // Double entry: the user's account is debited, revenue credited; each charge sums to zero.
  await trx
    .insertInto('kafka_payments_ledger')
    .values(
      messages.flatMap((m) => [
        { charge_id: m.id, account: `user:${m.value.userId}`, amount_cents: -m.value.amountCents },
        { charge_id: m.id, account: 'revenue', amount_cents: m.value.amountCents },
      ]),
    )
    .execute();
}

export async function startPaymentsConsumer(config: ConsumerConfig): Promise<PaymentsConsumer> {
  const emit = config.onEvent ?? (() => {});
  const db = createPgKysely<PaymentsDB>({ connectionString: config.databaseUrl, max: 4 });
  await createTables(db);
  const inbox = createInbox({ db, consumer: 'examples.kafka-payments', retry: { retries: 3, minTimeout: 50 } });

  const kafka = new Kafka({ clientId: 'kafka-payments', brokers: config.brokers, logLevel: logLevel.NOTHING });
  // maxWaitTimeInMs: kafkajs' disconnect() waits for the fetch in flight, up to this long
  // (its default is 5000), so it bounds the time a shutdown takes.
  const kafkaConsumer = kafka.consumer({ groupId: config.groupId, sessionTimeout: 30_000, maxWaitTimeInMs: 1000 });
  await kafkaConsumer.connect();
  await kafkaConsumer.subscribe({ topics: [config.topic], fromBeginning: true });

  let failuresLeft = config.failFirstBatch ? 1 : 0;
  const control = await runInboxConsumer<PaymentsDB, ChargeRequest, { charged: number }>(kafkaConsumer, {
    mode: 'eachBatch',
    inbox,
    // The adapter makes its own clients with it: an admin client (the group's offsets
    // metadata, so a clean handover skips the crash-loop window; the dead-letter topic's
    // check) and, at the first dead letter, an idempotent producer for `<topic>.dlq`.
    kafka,
    groupId: config.groupId,
    messageId: { header: 'message-id' },
    decode: 'json',
    // Runs once per batch with its new records only: duplicates (re-sends, redeliveries,
    // repeats within the batch) were removed before. Everything goes through `trx`, the
    // transaction that also holds the records' inbox keys.
    bulkHandler: async (trx, messages) => {
      const charges = messages.map((m) => m.id);
      try {
        await writeCharges(trx, messages);
        if (failuresLeft > 0) {
          failuresLeft--;
          throw new Error('simulated failure between the charges and the ledger');
        }
        await writeLedger(trx, messages);
      } catch (error) {
        emit({ kind: 'batch', charges, ok: false, error: (error as Error).message });
        throw error; // rolled back: the charges above and the keys go with it
      }
      emit({ kind: 'batch', charges, ok: true });
      return messages.map((m) => ({ charged: m.value.amountCents })); // stored with each key
    },
  });
  control.on('settled', ({ message, outcome }) => {
    emit({
      kind: 'settled',
      chargeId: message.id,
      status: outcome.status,
      partition: message.partition,
      offset: message.offset,
    });
  });
  control.on('committed', ({ offsets }) => {
    emit({ kind: 'committed', offsets: offsets.map((o) => `p${o.partition}@${o.offset}`) });
  });
  emit({ kind: 'ready', topic: config.topic, groupId: config.groupId });

  let stopping: Promise<void> | undefined;
  return {
    stop() {
      stopping ??= (async () => {
        try {
          // pause, drain, commit offsets (inboxkit:clean), disconnect the kafkajs consumer and
          // the clients the adapter made
          await control.close();
        } finally {
          await db.destroy();
          emit({ kind: 'stopped' });
        }
      })();
      return stopping;
    },
  };
}

/** One line of the readable account. */
export function describe(event: ConsumerEvent): string {
  switch (event.kind) {
    case 'ready':
      return `consuming ${event.topic} as group ${event.groupId}`;
    case 'batch':
      return event.ok
        ? `bulk handler wrote ${event.charges.length} charge(s) and ${2 * event.charges.length} ledger entries`
        : `bulk handler failed on ${event.charges.length} records (${event.error}): all rolled back, run again one record per savepoint`;
    case 'settled':
      return event.status === 'duplicate'
        ? `${event.chargeId} p${event.partition}@${event.offset}: duplicate, skipped (already charged)`
        : `${event.chargeId} p${event.partition}@${event.offset}: ${event.status}`;
    case 'committed':
      return `offsets committed to Kafka: ${event.offsets.join(', ')}`;
    case 'stopped':
      return 'stopped: offsets committed, group left';
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
  const topic = process.env.KAFKA_TOPIC ?? 'payments.charge-requests';
  const verbose = process.env.VERBOSE !== '0';
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await createTopics(admin, topic);
  await admin.disconnect();

  const running = await startPaymentsConsumer({
    databaseUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    brokers,
    topic,
    groupId: process.env.KAFKA_GROUP_ID ?? 'payments',
    failFirstBatch: process.env.FAIL_FIRST_BATCH === '1',
    onEvent: (event) => {
      process.send?.(event); // to a parent process (main.ts), when there is one
      if (verbose || event.kind !== 'settled') console.log(describe(event));
    },
  });

  // The library installs no signal handler: this is the application's. A second signal
  // exits at once.
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(1);
      stopping = true;
      console.log(`${signal}: shutting down`);
      running.stop().then(
        () => process.exit(0),
        (error) => {
          console.error(error);
          process.exit(1);
        },
      );
    });
  }
}
