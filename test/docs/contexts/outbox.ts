// docs/outbox.md: what its fragments take from the page around them.
interface OutboxPageDB {
  orders: { id: string; total_cents: number };
}
declare const db: import('kysely').Kysely<OutboxPageDB>;
/** The handler's transaction. */
declare const trx: import('kysely').Transaction<OutboxPageDB>;
declare const order: { id: string };
declare const kafka: import('kafkajs').Kafka;

export {};
