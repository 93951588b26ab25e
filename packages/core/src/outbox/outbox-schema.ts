import { type Kysely, sql } from 'kysely';
import type { Migration, MigrationResultSet } from 'kysely/migration';
import { quoteIdentifier } from '../identifiers.js';
import { runMigrations } from '../migration-runner.js';
import { type StartupWaitOptions, waitForDatabase } from '../wait-for-database.js';
import { outboxTables } from './outbox-tables.js';

/** Where the outbox table lives. Both names are checked and quoted, never pasted. */
export interface OutboxSchemaOptions {
  /** Default `'public'`. */
  readonly schema?: string;
  /** Default `'outbox'`. */
  readonly table?: string;
}

/**
 * The outbox's DDL as plain SQL, for teams whose migrations are run by another tool.
 * Idempotent. `sql/outbox_0001.sql` in this package is the same text for the default names.
 *
 * @example
 * ```ts
 * await pool.query(outboxSchemaSql({ schema: 'billing' }))
 * ```
 */
export function outboxSchemaSql(options: OutboxSchemaOptions = {}): string {
  const tables = outboxTables(options.schema, options.table);
  const pending = quoteIdentifier(`${tables.table}_pending_idx`);
  const byKey = quoteIdentifier(`${tables.table}_key_idx`);
  const keyless = quoteIdentifier(`${tables.table}_keyless_idx`);
  const failed = quoteIdentifier(`${tables.table}_failed_idx`);
  return `-- inboxkit outbox 0001: the outbox table.
CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(tables.schema)};

-- One row per message to publish, written in the transaction that decided to send it and
-- deleted by a relay once the broker confirmed it.
CREATE TABLE IF NOT EXISTS ${tables.qualified} (
  sequence         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id       text        NOT NULL,
  destination      text        NOT NULL,           -- the Kafka topic, or the RabbitMQ exchange
  routing_key      text,                           -- RabbitMQ only
  key              text,                           -- the ordering key (and the Kafka record key)
  headers          jsonb       NOT NULL DEFAULT '{}',
  payload          bytea       NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  attempts         integer     NOT NULL DEFAULT 0, -- publishes the broker refused
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_error       text,
  status           text        NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'failed'))
);
CREATE INDEX IF NOT EXISTS ${pending} ON ${tables.qualified} (sequence) WHERE status = 'pending';
-- Not partial: the planner then uses it for the claim's per-key lookups, which compare
-- with a parameter (a partial index's predicate is not proven there).
CREATE INDEX IF NOT EXISTS ${byKey} ON ${tables.qualified} (key, sequence);
CREATE INDEX IF NOT EXISTS ${keyless} ON ${tables.qualified} (sequence) WHERE key IS NULL AND status = 'pending';
-- Failed rows only (\`outbox.failed()\`, \`retryFailed()\`, \`inboxkit outbox list | retry\`): a deep
-- backlog of pending rows is never read to find them.
CREATE INDEX IF NOT EXISTS ${failed} ON ${tables.qualified} (sequence) WHERE status = 'failed';
`;
}

/**
 * The outbox's migrations for Kysely's `Migrator`, to merge into an application's own
 * migration provider (beside {@link inboxMigrations}).
 *
 * @example
 * ```ts
 * provider: { getMigrations: async () => ({ ...inboxMigrations(), ...outboxMigrations(), ...mine }) }
 * ```
 */
export function outboxMigrations(options: OutboxSchemaOptions = {}): Record<string, Migration> {
  const tables = outboxTables(options.schema, options.table);
  return {
    inboxkit_outbox_0001: {
      async up(db: Kysely<unknown>) {
        await sql.raw(outboxSchemaSql(options)).execute(db);
      },
      async down(db: Kysely<unknown>) {
        await sql.raw(`DROP TABLE IF EXISTS ${tables.qualified};`).execute(db);
      },
    },
  };
}

/**
 * Brings the outbox table up to date with its own migration history table
 * (`<table>_migration` in the same schema), like {@link migrateInbox}: it never throws, it
 * returns `{ error, results }`, and may run in several processes at once.
 *
 * @example
 * ```ts
 * const { error } = await migrateOutbox(db, { waitForDatabase: { timeoutMs: 120_000 } })
 * if (error) throw error
 * ```
 */
export async function migrateOutbox<DB>(
  db: Kysely<DB>,
  options: OutboxSchemaOptions & { readonly waitForDatabase?: StartupWaitOptions } = {},
): Promise<MigrationResultSet> {
  if (options.waitForDatabase !== undefined) {
    try {
      await waitForDatabase(db, options.waitForDatabase);
    } catch (error) {
      return { error, results: undefined };
    }
  }
  const tables = outboxTables(options.schema, options.table);
  return runMigrations(db, {
    migrations: outboxMigrations(options),
    schema: tables.schema,
    historyTable: `${tables.table}_migration`,
    subject: `The outbox table ${tables.qualified}`,
  });
}
