import { checkIdentifier, quoteIdentifier, runMigrations } from '@inboxkit/core/adapter';
import { type Kysely, sql } from 'kysely';
import type { Migration, MigrationResultSet } from 'kysely/migration';

/** Where the offsets table lives (`dedup: 'offsets'`). Both names are checked and quoted, never pasted. */
export interface KafkaOffsetTableOptions {
  /** Default `'public'` (use the inbox's schema). */
  readonly schema?: string;
  /** Default `'kafka_offsets'`. */
  readonly table?: string;
}

/** The offsets table's names, checked and quoted once. */
export interface OffsetTable {
  readonly schema: string;
  readonly table: string;
  /** `"schema"."table"` */
  readonly qualified: string;
}

export const DEFAULT_OFFSET_TABLE = 'kafka_offsets';

export function offsetTable(schema: unknown = 'public', table: unknown = DEFAULT_OFFSET_TABLE): OffsetTable {
  const s = checkIdentifier('schema', schema);
  const t = checkIdentifier('offsetTable', table, 63 - '_migration'.length);
  return Object.freeze({ schema: s, table: t, qualified: `${quoteIdentifier(s)}.${quoteIdentifier(t)}` });
}

/**
 * The offsets table's DDL as plain SQL, for teams whose migrations are run by another tool
 * (Flyway, Liquibase, dbmate, psql). Idempotent. `sql/0001_kafka_offsets.sql` in this
 * package is the same text for the default names.
 */
export function kafkaOffsetsSchemaSql(options: KafkaOffsetTableOptions = {}): string {
  const names = offsetTable(options.schema, options.table);
  return `-- inboxkit kafka 0001: the next offset of each (group, topic, partition), for dedup: 'offsets'.
CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(names.schema)};

-- One row per partition a consumer group processed, written in the same transaction as the
-- handler's business writes: the records before next_offset are applied. No purge needed.
CREATE TABLE IF NOT EXISTS ${names.qualified} (
  group_id     text        NOT NULL,
  topic        text        NOT NULL,
  partition    integer     NOT NULL,
  next_offset  bigint      NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition)
);
`;
}

/**
 * The offsets table's migrations for Kysely's `Migrator`, to merge into an application's own
 * migration provider (beside core's `inboxMigrations()`).
 *
 * @example
 * ```ts
 * const migrator = new Migrator({
 *   db,
 *   provider: { getMigrations: async () => ({ ...inboxMigrations(), ...kafkaOffsetsMigrations(), ...myMigrations }) },
 * })
 * ```
 */
export function kafkaOffsetsMigrations(options: KafkaOffsetTableOptions = {}): Record<string, Migration> {
  const names = offsetTable(options.schema, options.table);
  return {
    inboxkit_kafka_0001_offsets: {
      async up(db: Kysely<unknown>) {
        await sql.raw(kafkaOffsetsSchemaSql(options)).execute(db);
      },
      async down(db: Kysely<unknown>) {
        await sql.raw(`DROP TABLE IF EXISTS ${names.qualified};`).execute(db);
      },
    },
  };
}

/**
 * Brings the offsets table (`dedup: 'offsets'` and `'offsets+ids'`) up to date, with its own
 * migration history table (`<table>_migration` in the same schema, in the format of Kysely's
 * `Migrator`). Like the `Migrator`, it never throws: it returns `{ error, results }`. Safe to
 * call from several processes at once: like core's `migrateInbox` it runs in one transaction
 * behind a transaction-scoped advisory lock (no session state: fine behind PgBouncer in
 * transaction mode). Run `migrateInbox` too: the inbox table keeps dead letters and
 * crash-loop counts, and the message ids with `'offsets+ids'`.
 *
 * @example
 * ```ts
 * for (const { error } of [await migrateInbox(db), await migrateKafkaOffsets(db)]) if (error) throw error
 * ```
 */
export async function migrateKafkaOffsets<DB>(
  db: Kysely<DB>,
  options: KafkaOffsetTableOptions = {},
): Promise<MigrationResultSet> {
  let names: OffsetTable;
  try {
    names = offsetTable(options.schema, options.table);
  } catch (error) {
    return { error, results: undefined };
  }
  return runMigrations(db, {
    migrations: kafkaOffsetsMigrations(options),
    schema: names.schema,
    historyTable: `${names.table}_migration`,
    subject: `The Kafka offsets table ${names.qualified}`,
  });
}
