// Declarations the TypeScript blocks of docs/telemetry.md use without defining them.
// Inline `import()` types, so that a block's own imports never clash with these.

interface DB {
  charges: { id: string; amount_cents: number };
}
declare const db: import('kysely').Kysely<DB>;

export {};
