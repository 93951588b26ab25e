// The names the fragments of docs/kafka.md use without defining them: an application's
// tables and value type, its pool, its kafkajs client and consumer, its inbox and outbox,
// a handler of each shape, and the controls of a running consumer.
interface DB {
  charges: { id: string; user_id: string; amount_cents: number };
  ledger: { charge: string; cents: number };
}
interface Charge {
  userId: string;
  amountCents: number;
}
declare const db: import('kysely').Kysely<DB>;
declare const kafka: import('kafkajs').Kafka;
declare const kafkaConsumer: import('kafkajs').Consumer;
declare const inbox: import('@inboxkit/core').Inbox<DB>;
declare const outbox: import('@inboxkit/core').Outbox;
declare const handler: import('@inboxkit/kafka').KafkaMessageHandler<DB, Charge, unknown>;
declare const bulkHandler: import('@inboxkit/kafka').KafkaBulkHandler<DB, Charge, unknown>;
/** The database's connection string (the relay's LISTEN connection). */
declare const connectionString: string;
declare const control: import('@inboxkit/kafka').KafkaInboxControl;

export {};
