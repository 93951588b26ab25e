import { type Kysely, sql } from 'kysely';
import type { Migration, MigrationResultSet } from 'kysely/migration';
import { ATTEMPTS_SUFFIX, type InboxTables, inboxTables, quoteIdentifier } from './identifiers.js';
import { runMigrations } from './migration-runner.js';
import { compilePartitionOptions, type PartitionOptions } from './partition-options.js';
import { claimFunctionSignature, claimFunctionSql } from './sql/claim-message.js';
import { partitionedTableSql } from './sql/partitioned-table.js';
import { type StartupWaitOptions, waitForDatabase } from './wait-for-database.js';

/** Where the inbox tables live. Both names are checked and quoted, never pasted. */
export interface InboxSchemaOptions {
  /** Default `'public'`. */
  readonly schema?: string;
  /** Default `'processed_messages'`. */
  readonly table?: string;
}

/**
 * The inbox's DDL as plain SQL, for teams whose migrations are run by another tool
 * (Flyway, Liquibase, dbmate, psql): every migration in order, each idempotent, so the
 * whole text may be run again after an upgrade. For the default names it is
 * `sql/0001_processed_messages.sql` followed by `sql/0002_claim_function.sql` in this
 * package; a database that has 0001 only needs 0002 applied.
 *
 * @example
 * ```ts
 * import { writeFileSync } from 'node:fs'
 * writeFileSync('V1__inbox.sql', inboxSchemaSql({ schema: 'billing', table: 'inbox_keys' }))
 * ```
 */
export function inboxSchemaSql(options: InboxSchemaOptions = {}): string {
  const tables = inboxTables(options.schema, options.table);
  return `${tablesSql(tables)}\n${claimFunctionSql(tables)}`;
}

/** Migration 0001: the tables. */
function tablesSql(tables: InboxTables): string {
  const schema = quoteIdentifier(tables.schema);
  const index = quoteIdentifier(`${tables.table}_processed_at_idx`);
  const attemptsIndex = quoteIdentifier(`${tables.table}${ATTEMPTS_SUFFIX}_last_idx`);
  return `-- inboxkit 0001: the inbox table and the crash-loop attempt counts.
CREATE SCHEMA IF NOT EXISTS ${schema};

-- One row per (consumer, message id) that was processed or dead-lettered, written in the
-- same transaction as the handler's business writes.
CREATE TABLE IF NOT EXISTS ${tables.qualified} (
  consumer      text        NOT NULL,
  message_id    text        NOT NULL,
  processed_at  timestamptz NOT NULL DEFAULT now(),
  payload_hash  bytea,
  result        jsonb,
  status        text        NOT NULL DEFAULT 'processed'
                CHECK (status IN ('processed', 'dead_lettered')),
  PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS ${index} ON ${tables.qualified} (processed_at);

-- Attempts of deliveries that may have crashed the process, committed before their
-- handler runs (never on the hot path).
CREATE TABLE IF NOT EXISTS ${tables.attemptsQualified} (
  consumer          text        NOT NULL,
  message_id        text        NOT NULL,
  attempts          integer     NOT NULL,
  first_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_attempt_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS ${attemptsIndex} ON ${tables.attemptsQualified} (last_attempt_at);
`;
}

/**
 * The SQL that turns the inbox table into one partitioned by time (docs/retention.md), for
 * teams whose migrations are run by another tool: run it after {@link inboxSchemaSql}, and
 * again after it whenever that is run again (0002 puts back the plain table's claim
 * function). Idempotent; a plain table with keys becomes the first partition, no key is
 * copied. `migrateInbox(db, { partitioned })` runs the same text.
 *
 * @example
 * ```ts
 * writeFileSync('V2__inbox_partitioned.sql', inboxPartitionSql({ partitioned: { intervalMs: 86_400_000 } }))
 * ```
 */
export function inboxPartitionSql(
  options: InboxSchemaOptions & { readonly partitioned?: PartitionOptions | true },
): string {
  return partitionedTableSql(
    inboxTables(options.schema, options.table),
    compilePartitionOptions(options.partitioned ?? true),
  );
}

/**
 * The inbox's migrations for Kysely's `Migrator`, to merge into an application's own
 * migration provider.
 *
 * @example
 * ```ts
 * const migrator = new Migrator({
 *   db,
 *   provider: { getMigrations: async () => ({ ...inboxMigrations(), ...myMigrations }) },
 * })
 * ```
 */
export function inboxMigrations(options: InboxSchemaOptions = {}): Record<string, Migration> {
  const tables = inboxTables(options.schema, options.table);
  return {
    inboxkit_0001_processed_messages: {
      async up(db: Kysely<unknown>) {
        await sql.raw(tablesSql(tables)).execute(db);
      },
      async down(db: Kysely<unknown>) {
        await sql
          .raw(`DROP TABLE IF EXISTS ${tables.attemptsQualified}; DROP TABLE IF EXISTS ${tables.qualified};`)
          .execute(db);
      },
    },
    inboxkit_0002_claim_function: {
      async up(db: Kysely<unknown>) {
        await sql.raw(claimFunctionSql(tables)).execute(db);
      },
      async down(db: Kysely<unknown>) {
        await sql.raw(`DROP FUNCTION IF EXISTS ${claimFunctionSignature(tables)};`).execute(db);
      },
    },
  };
}

/** Options of {@link migrateInbox}. */
export interface MigrateInboxOptions extends InboxSchemaOptions {
  /** Wait until the database answers before migrating (see {@link waitForDatabase}). */
  readonly waitForDatabase?: StartupWaitOptions;
  /**
   * Make the inbox table partitioned by time, so that expiry drops partitions instead of
   * deleting keys (docs/retention.md). Opt-in: the plain table is the default. A plain table
   * that already holds keys is converted in place (it becomes the first partition), under
   * an exclusive lock on it for the time the conversion takes. Running it again with other
   * settings changes them for partitions created from then on.
   */
  readonly partitioned?: PartitionOptions | true;
}

/**
 * Brings the inbox tables up to date with their own migration history table
 * (`<table>_migration` in the same schema, in the format of Kysely's `Migrator`). Like the
 * `Migrator`, it never throws: it returns `{ error, results }`. Safe to call from several
 * processes at once: it all runs in one transaction that first takes a transaction-scoped
 * advisory lock, so it works behind PgBouncer in transaction mode (docs/pgbouncer.md), and
 * a failed migration leaves nothing behind. A database migrated by a newer inboxkit is
 * refused with an error.
 *
 * With `waitForDatabase`, it first waits until the database answers (see
 * {@link waitForDatabase}), so a consumer started while Postgres restarts comes up with it;
 * a wait that times out or is aborted is returned as the `error`.
 *
 * @example
 * ```ts
 * const { error } = await migrateInbox(db, { waitForDatabase: { timeoutMs: 120_000 } })
 * if (error) throw error
 * ```
 */
export async function migrateInbox<DB>(db: Kysely<DB>, options: MigrateInboxOptions = {}): Promise<MigrationResultSet> {
  if (options.waitForDatabase !== undefined) {
    try {
      await waitForDatabase(db, options.waitForDatabase);
    } catch (error) {
      return { error, results: undefined };
    }
  }
  const tables = inboxTables(options.schema, options.table);
  const subject = `The inbox tables ${tables.qualified}`;
  let partitionSql: string | undefined;
  try {
    partitionSql = options.partitioned === undefined ? undefined : inboxPartitionSql(options);
  } catch (error) {
    return { error, results: undefined };
  }
  const migrated = await runMigrations(db, {
    migrations: inboxMigrations(options),
    schema: tables.schema,
    historyTable: `${tables.table}_migration`,
    subject,
  });
  if (migrated.error !== undefined || partitionSql === undefined) return migrated;
  // Not a numbered migration: it is re-run on every call, idempotent, behind the same lock.
  const results = [...(migrated.results ?? [])];
  try {
    await (db as Kysely<unknown>).transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`inboxkit:migrate:${subject}`}, 0))`.execute(trx);
      await sql.raw(partitionSql).execute(trx);
    });
  } catch (error) {
    results.push({ migrationName: 'inboxkit_partitioned', direction: 'Up', status: 'Error' });
    return { error, results };
  }
  results.push({ migrationName: 'inboxkit_partitioned', direction: 'Up', status: 'Success' });
  return { results };
}
