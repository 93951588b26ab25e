import { migrateInbox } from '@inboxkit/core';
import type { Command } from 'commander';
import { settingsOf, withDatabase } from '../context.js';
import { CliError } from '../errors.js';
import { printJson, printTable } from '../output.js';

/** `inboxkit migrate`: brings the tables up to date; running it again changes nothing. */
export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('create or update the inbox tables (idempotent)')
    .option('--json', 'print the result as JSON')
    .action(async (_options: unknown, command: Command) => {
      const settings = settingsOf(command);
      const results = await withDatabase(settings, async (db) => {
        const steps: Array<{ tables: string; migration: string; status: string }> = [];
        const inbox = await migrateInbox(db, { schema: settings.schema, table: settings.table });
        for (const r of inbox.results ?? []) {
          steps.push({ tables: 'inbox', migration: r.migrationName, status: r.status });
        }
        if (inbox.error !== undefined) {
          throw new CliError('INBOXKIT_CLI_MIGRATION', `Migrating the inbox tables failed: ${String(inbox.error)}`);
        }
        // OUTBOX: the outbox tables' migration goes here, once core has one (the same
        // shape: call it, push its results, fail on its error).
        return steps;
      });
      if (settings.json) {
        printJson({ schema: settings.schema, table: settings.table, migrations: results });
        return;
      }
      if (results.length === 0) {
        process.stdout.write(`The inbox tables in schema ${settings.schema} are up to date.\n`);
        return;
      }
      printTable(
        ['tables', 'migration', 'status'],
        results.map((r) => [r.tables, r.migration, r.status]),
      );
    });
}
