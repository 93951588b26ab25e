// Declarations the TypeScript blocks of docs/retention.md use without defining them.
// Inline `import()` types, so that a block's own imports never clash with these.

declare const db: import('kysely').Kysely<unknown>;

export {};
