import { inboxSchemaSql, migrateInbox, migrateOutbox, outboxSchemaSql } from '@inboxkit/core';
import type { Command } from 'commander';
import { settingsOf, withDatabase } from '../context.js';
import { CliError, UsageError } from '../errors.js';
import { printJson, printTable } from '../output.js';

interface MigrateFlags {
  readonly inboxOnly?: boolean;
  readonly outboxOnly?: boolean;
}

/**
 * `inboxkit migrate`: brings the inbox tables and the outbox table up to date, each with
 * its own migration history; running it again changes nothing.
 */
export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('create or update the inbox tables and the outbox table (idempotent)')
    .option('--inbox-only', 'only the inbox tables')
    .option('--outbox-only', 'only the outbox table')
    .option('--json', 'print the result as JSON')
    .action(async (flags: MigrateFlags, command: Command) => {
      const settings = settingsOf(command);
      if (flags.inboxOnly === true && flags.outboxOnly === true) {
        throw new UsageError('--inbox-only and --outbox-only exclude each other; give neither to migrate both.');
      }
      // Both names checked before either migration runs: a bad outbox name changes nothing.
      inboxSchemaSql({ schema: settings.schema, table: settings.table });
      outboxSchemaSql({ schema: settings.outboxSchema, table: settings.outboxTable });
      const results = await withDatabase(settings, async (db) => {
        const steps: Array<{ tables: string; migration: string; status: string }> = [];
        if (flags.outboxOnly !== true) {
          const inbox = await migrateInbox(db, { schema: settings.schema, table: settings.table });
          for (const r of inbox.results ?? []) {
            steps.push({ tables: 'inbox', migration: r.migrationName, status: r.status });
          }
          if (inbox.error !== undefined) {
            throw new CliError('INBOXKIT_CLI_MIGRATION', `Migrating the inbox tables failed: ${String(inbox.error)}`);
          }
        }
        if (flags.inboxOnly !== true) {
          const outbox = await migrateOutbox(db, { schema: settings.outboxSchema, table: settings.outboxTable });
          for (const r of outbox.results ?? []) {
            steps.push({ tables: 'outbox', migration: r.migrationName, status: r.status });
          }
          if (outbox.error !== undefined) {
            throw new CliError('INBOXKIT_CLI_MIGRATION', `Migrating the outbox table failed: ${String(outbox.error)}`);
          }
        }
        return steps;
      });
      const what =
        flags.inboxOnly === true
          ? 'inbox tables'
          : flags.outboxOnly === true
            ? 'outbox table'
            : 'inbox and outbox tables';
      if (settings.json) {
        printJson({
          schema: settings.schema,
          table: settings.table,
          outboxSchema: settings.outboxSchema,
          outboxTable: settings.outboxTable,
          migrations: results,
        });
        return;
      }
      if (results.length === 0) {
        process.stdout.write(`The ${what} are up to date.\n`);
        return;
      }
      printTable(
        ['tables', 'migration', 'status'],
        results.map((r) => [r.tables, r.migration, r.status]),
      );
    });
}
