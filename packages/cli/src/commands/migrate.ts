import {
  inboxPartitionSql,
  inboxSchemaSql,
  migrateInbox,
  migrateOutbox,
  outboxSchemaSql,
  type PartitionOptions,
} from '@inboxkit/core';
import type { Command } from 'commander';
import { settingsOf, withDatabase } from '../context.js';
import { parseCount, parseDuration } from '../durations.js';
import { CliError, UsageError } from '../errors.js';
import { printJson, printTable } from '../output.js';

interface MigrateFlags {
  readonly inboxOnly?: boolean;
  readonly outboxOnly?: boolean;
  readonly partitioned?: boolean;
  readonly partitionInterval?: string;
  readonly premake?: string;
  readonly partitionRetention?: string;
}

/** The `partitioned` option of migrateInbox from the flags, or `undefined` for a plain table. */
function partitionOptions(flags: MigrateFlags): PartitionOptions | undefined {
  const given = (
    [
      ['--partition-interval', flags.partitionInterval],
      ['--premake', flags.premake],
      ['--partition-retention', flags.partitionRetention],
    ] as const
  ).filter(([, value]) => value !== undefined);
  if (flags.partitioned !== true) {
    if (given.length > 0) {
      throw new UsageError(`${given.map(([name]) => name).join(', ')} only go with --partitioned.`);
    }
    return undefined;
  }
  if (flags.outboxOnly === true) throw new UsageError('--partitioned is for the inbox table; drop --outbox-only.');
  return {
    ...(flags.partitionInterval !== undefined && {
      intervalMs: parseDuration('--partition-interval', flags.partitionInterval),
    }),
    ...(flags.premake !== undefined && { premake: parseCount('--premake', flags.premake) }),
    ...(flags.partitionRetention !== undefined && {
      retentionMs: parseDuration('--partition-retention', flags.partitionRetention),
    }),
  };
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
    .option('--partitioned', 'make the inbox table partitioned by time (docs/retention.md); give it on every run')
    .option('--partition-interval <duration>', 'length of one partition (default 1d)')
    .option('--premake <n>', 'partitions kept ready ahead of the current one (default 4)')
    .option('--partition-retention <duration>', "the table's retention floor: partitions go after it (default 7d)")
    .option('--json', 'print the result as JSON')
    .action(async (flags: MigrateFlags, command: Command) => {
      const settings = settingsOf(command);
      if (flags.inboxOnly === true && flags.outboxOnly === true) {
        throw new UsageError('--inbox-only and --outbox-only exclude each other; give neither to migrate both.');
      }
      const partitioned = partitionOptions(flags);
      // Everything checked before any migration runs: a bad name or setting changes nothing.
      inboxSchemaSql({ schema: settings.schema, table: settings.table });
      if (partitioned !== undefined) inboxPartitionSql({ schema: settings.schema, table: settings.table, partitioned });
      outboxSchemaSql({ schema: settings.outboxSchema, table: settings.outboxTable });
      const results = await withDatabase(settings, async (db) => {
        const steps: Array<{ tables: string; migration: string; status: string }> = [];
        if (flags.outboxOnly !== true) {
          const inbox = await migrateInbox(db, {
            schema: settings.schema,
            table: settings.table,
            ...(partitioned !== undefined && { partitioned }),
          });
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
