// What the fragments of docs/rabbitmq.md take from the root README's RabbitMQ quick start:
// its tables, its pool, an inbox on it, the broker's URL, the database's connection string
// and an outbox.
interface DB {
  charges: { id: string; user_id: string; amount_cents: number };
}
// biome-ignore lint/correctness/noUnusedVariables: the blocks this context is prepended to use it
interface Charge {
  userId: string;
  amountCents: number;
}
declare const db: import('kysely').Kysely<DB>;
declare const inbox: import('@inboxkit/core').Inbox<DB>;
declare const outbox: import('@inboxkit/core').Outbox;
declare const url: string;
declare const connectionString: string;

export {};
