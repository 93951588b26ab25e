// docs/inbox.md: the blocks that make their own inbox.
interface DB {
  charges: { id: string; user_id: string; amount_cents: number };
}
declare const db: import('kysely').Kysely<DB>;

export {};
