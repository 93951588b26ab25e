import { createInbox } from '@inboxkit/core';
import { createInboxAdmin, DEFAULT_RETENTION_MS } from '@inboxkit/core/admin';
import type { Command } from 'commander';
import { settingsOf, withDatabase } from '../context.js';
import { parseCount, parseDuration } from '../durations.js';
import { NotFoundError } from '../errors.js';
import { printJson, printLine, printTable } from '../output.js';
import { progress } from '../progress.js';

interface PurgeFlags {
  readonly consumer?: string;
  readonly retention?: string;
  readonly batchSize: string;
}

/** `inboxkit purge`: deletes expired keys with core's `Inbox.purge`, one consumer after another. */
export function registerPurge(program: Command): void {
  program
    .command('purge')
    .description('delete keys older than the retention window (default 7 days, the inbox default)')
    .option('--consumer <name>', 'only this consumer')
    .option('--retention <duration>', 'keep keys younger than this (7d, 36h...)')
    .option('--batch-size <n>', 'keys deleted per statement', '1000')
    .option('--json', 'print the result as JSON (no progress bar)')
    .action(async (flags: PurgeFlags, command: Command) => {
      const settings = settingsOf(command);
      const olderThanMs =
        flags.retention === undefined ? DEFAULT_RETENTION_MS : parseDuration('--retention', flags.retention);
      const batchSize = parseCount('--batch-size', flags.batchSize);
      const results = await withDatabase(settings, async (db) => {
        const admin = createInboxAdmin({ db, schema: settings.schema, table: settings.table });
        let consumers: string[];
        if (flags.consumer !== undefined) {
          if (!(await admin.hasConsumer(flags.consumer))) {
            throw new NotFoundError(`Consumer ${JSON.stringify(flags.consumer)} has no keys.`);
          }
          consumers = [flags.consumer];
        } else {
          consumers = await admin.consumers();
        }
        const before = new Date(Date.now() - olderThanMs);
        const done: PurgeReport[] = [];
        for (const consumer of consumers) {
          // The total is a bounded count: the bar grows if there turn out to be more.
          const total = await admin.countExpired(consumer, before);
          const bar = progress(`purge ${consumer}`, total, !settings.json);
          try {
            const inbox = createInbox({ db, consumer, schema: settings.schema, table: settings.table });
            const result = await inbox.purge({ olderThanMs, batchSize, onBatch: (n) => bar.increment(n) });
            // On a table partitioned by time, purge() drops whole partitions (their keys are
            // not counted in `deleted`): say so, or an operator reads "deleted 0".
            done.push({
              consumer,
              deleted: result.deleted,
              skipped: result.skipped,
              ...(result.partitions && { partitions: result.partitions }),
            });
          } finally {
            bar.stop();
          }
        }
        return done;
      });
      if (settings.json) {
        printJson({ olderThanMs, consumers: results });
        return;
      }
      if (results.length === 0) {
        printLine('No consumer has keys.');
        return;
      }
      printTable(
        ['consumer', 'deleted', 'note'],
        results.map((r) => [r.consumer, r.deleted, note(r)]),
      );
    });
}

/** One consumer's line of the report. */
interface PurgeReport {
  readonly consumer: string;
  readonly deleted: number;
  readonly skipped: boolean;
  /** On a partitioned table: the partition maintenance this purge did (docs/retention.md). */
  readonly partitions?: { readonly created: number; readonly dropped: number; readonly blocked: number };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function note(report: PurgeReport): string {
  if (report.skipped) return 'skipped: another process is purging it';
  const p = report.partitions;
  if (p === undefined) return '';
  const parts = [`dropped ${plural(p.dropped, 'partition')}`, `created ${p.created}`];
  if (p.blocked > 0) parts.push(`${p.blocked} left to the next purge (a lock was busy)`);
  return `partitioned table: ${parts.join(', ')}`;
}
