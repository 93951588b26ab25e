// Declarations the TypeScript blocks of docs/operations.md use without defining them.
// Inline `import()` types, so that a block's own imports never clash with these.

interface DB {
  charges: { id: string; amount_cents: number };
}
declare const db: import('kysely').Kysely<DB>;
/** The application's own migrations, merged with inboxkit's. */
declare const myMigrations: Record<string, import('kysely/migration').Migration>;

export {};
