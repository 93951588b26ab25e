// Declarations the TypeScript blocks of docs/migrating.md use without defining them.
// Inline `import()` types, so that a block's own imports never clash with these; exported,
// so that this file is a module of its own when the test sources are type-checked.

export interface DB {
  processed: { id: string; processed_at: import('kysely').Generated<Date> };
  charges: { id: string; user_id: string; amount_cents: number };
  published_movies: { id: string; title: string };
}
export interface Charge {
  userId: string;
  amountCents: number;
}
export declare const db: import('kysely').Kysely<DB>;
export declare const kafka: import('kafkajs').Kafka;
export declare const kafkaConsumer: import('kafkajs').Consumer;
