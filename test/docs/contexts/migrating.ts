// Declarations the TypeScript blocks of docs/migrating.md use without defining them.
// Inline `import()` types, so that a block's own imports never clash with these.

interface DB {
  processed: { id: string; processed_at: import('kysely').Generated<Date> };
  charges: { id: string; user_id: string; amount_cents: number };
  published_movies: { id: string; title: string };
}
interface Charge {
  userId: string;
  amountCents: number;
}
declare const db: import('kysely').Kysely<DB>;
declare const kafka: import('kafkajs').Kafka;
declare const kafkaConsumer: import('kafkajs').Consumer;
