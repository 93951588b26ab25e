import { type Kysely, sql } from 'kysely';
import type { Migration, MigrationResult, MigrationResultSet } from 'kysely/migration';
import { ConfigurationError } from './errors.js';
import { quoteIdentifier } from './identifiers.js';

/** What {@link runMigrations} brings up to date. */
export interface MigrationSet {
  /** The migrations, run in the order of their names. */
  readonly migrations: Record<string, Migration>;
  /** Schema of the history table (created if missing). */
  readonly schema: string;
  /** The history table's name, in the format of Kysely's `Migrator`. */
  readonly historyTable: string;
  /** What is migrated, for the advisory lock's key and for errors (the qualified table). */
  readonly subject: string;
}

/**
 * Runs the pending migrations of one set in ONE transaction behind a transaction-scoped
 * advisory lock (docs/pgbouncer.md): several processes may call it at once, a pooler in
 * transaction mode cannot leave a lock behind (Kysely's `Migrator` takes a session-level
 * one), and a failed migration leaves nothing behind. A history that names a migration this
 * version does not know was written by a newer inboxkit: refused. Never throws: it returns
 * `{ error, results }` like the `Migrator`.
 */
export async function runMigrations<DB>(db: Kysely<DB>, set: MigrationSet): Promise<MigrationResultSet> {
  const migrations = Object.entries(set.migrations).sort(([a], [b]) => a.localeCompare(b));
  const history = `${quoteIdentifier(set.schema)}.${quoteIdentifier(set.historyTable)}`;
  const lockKey = `inboxkit:migrate:${set.subject}`;
  try {
    return await (db as Kysely<unknown>).transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtextextended(${lockKey}, 0))`.execute(trx);
      await sql.raw(`CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(set.schema)}`).execute(trx);
      await sql
        .raw(`CREATE TABLE IF NOT EXISTS ${history} (
  name      varchar(255) NOT NULL PRIMARY KEY,
  timestamp varchar(255) NOT NULL
)`)
        .execute(trx);
      const { rows } = await sql<{ name: string }>`SELECT name FROM ${sql.raw(history)} ORDER BY name`.execute(trx);
      const executed = new Set(rows.map((row) => row.name));
      const unknown = [...executed].filter((name) => !migrations.some(([known]) => known === name));
      if (unknown.length > 0) {
        throw new ConfigurationError(
          `${set.subject} was migrated by a newer inboxkit (${unknown.join(', ')}); upgrade @inboxkit/core.`,
        );
      }
      const pending = migrations.filter(([name]) => !executed.has(name));
      const results: MigrationResult[] = [];
      for (const [index, [name, migration]] of pending.entries()) {
        try {
          await migration.up(trx);
          await sql`INSERT INTO ${sql.raw(history)} (name, timestamp) VALUES (${name}, ${new Date().toISOString()})`.execute(
            trx,
          );
          results.push({ migrationName: name, direction: 'Up', status: 'Success' });
        } catch (error) {
          results.push({ migrationName: name, direction: 'Up', status: 'Error' });
          for (const [later] of pending.slice(index + 1)) {
            results.push({ migrationName: later, direction: 'Up', status: 'NotExecuted' });
          }
          throw new MigrationFailed({ error, results });
        }
      }
      return { results };
    });
  } catch (error) {
    if (error instanceof MigrationFailed) return error.resultSet;
    return { error, results: undefined };
  }
}

/** Carries a failed migration's result set out of its transaction, which it rolls back. */
class MigrationFailed extends Error {
  readonly resultSet: MigrationResultSet;
  constructor(resultSet: MigrationResultSet) {
    super('inboxkit: a migration failed');
    this.resultSet = resultSet;
  }
}
