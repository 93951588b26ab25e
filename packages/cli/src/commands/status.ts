import { type ConsumerStatus, createInboxAdmin, type InboxAdmin } from '@inboxkit/core/admin';
import type { Command } from 'commander';
import { settingsOf, withDatabase } from '../context.js';
import { formatAge, parseCount, parseDuration } from '../durations.js';
import { NotFoundError } from '../errors.js';
import { printJson, printLine, printTable } from '../output.js';
import { backlogJson, backlogLine, outboxStatus } from './outbox.js';

interface StatusFlags {
  readonly consumer?: string;
  readonly watch?: boolean;
  readonly interval: string;
  readonly exactUpTo: string;
}

const ESTIMATE_NOTE =
  '~ an estimate from the planner statistics (pg_class.reltuples, pg_stats: as fresh as the last ANALYZE); keys are counted exactly up to --exact-up-to per consumer.';

/**
 * `inboxkit status`: per consumer, keys, dead-lettered keys, the oldest key and crash-loop
 * suspects; the outbox's pending, oldest pending and failed messages when the outbox table
 * exists. No figure reads the whole table (docs/design.md, "Operations").
 */
export function registerStatus(program: Command): void {
  program
    .command('status')
    .description(
      'keys, dead-lettered keys, oldest key and crash-loop suspects per consumer; the outbox backlog when there is an outbox table',
    )
    .option('--consumer <name>', 'only this consumer')
    .option('--watch', 'refresh until interrupted')
    .option('--interval <duration>', 'refresh period with --watch', '5s')
    .option('--exact-up-to <n>', 'count keys exactly up to this many per consumer, estimate beyond', '10000')
    .option('--json', 'print JSON (with --watch: one document per refresh)')
    .action(async (flags: StatusFlags, command: Command) => {
      const settings = settingsOf(command);
      const intervalMs = parseDuration('--interval', flags.interval);
      const exactUpTo = parseCount('--exact-up-to', flags.exactUpTo);
      await withDatabase(settings, async (db) => {
        const admin = createInboxAdmin({ db, schema: settings.schema, table: settings.table });
        const once = async () => {
          const statuses = await collect(admin, flags.consumer, exactUpTo);
          // Nothing about an outbox when there is no outbox table.
          const outbox = await outboxStatus(db, settings, exactUpTo);
          if (settings.json) {
            printJson({
              at: new Date(),
              consumers: statuses,
              ...(outbox === undefined ? {} : { outbox: backlogJson(outbox) }),
            });
          } else {
            render(statuses, flags.watch === true);
            if (outbox !== undefined) printLine(backlogLine(outbox));
          }
        };
        await once();
        if (flags.watch !== true) return;
        await new Promise<void>((resolve, reject) => {
          let timer: NodeJS.Timeout | undefined;
          const stop = () => {
            clearTimeout(timer);
            resolve();
          };
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          const tick = () => {
            timer = setTimeout(() => {
              once().then(tick, (error: unknown) => {
                process.off('SIGINT', stop);
                process.off('SIGTERM', stop);
                reject(error);
              });
            }, intervalMs);
          };
          tick();
        });
      });
    });
}

async function collect(admin: InboxAdmin, consumer: string | undefined, exactUpTo: number): Promise<ConsumerStatus[]> {
  if (consumer !== undefined) {
    if (!(await admin.hasConsumer(consumer))) {
      throw new NotFoundError(`Consumer ${JSON.stringify(consumer)} has no keys and no crash-loop attempts.`);
    }
    return [await admin.consumerStatus(consumer, { exactUpTo })];
  }
  const statuses: ConsumerStatus[] = [];
  for (const name of await admin.consumers()) statuses.push(await admin.consumerStatus(name, { exactUpTo }));
  return statuses;
}

function render(statuses: readonly ConsumerStatus[], clear: boolean): void {
  if (clear && process.stdout.isTTY === true) process.stdout.write('\x1b[2J\x1b[H');
  const now = Date.now();
  if (statuses.length === 0) {
    printLine('No consumer has keys yet.');
    return;
  }
  printTable(
    ['consumer', 'keys', 'dead-lettered', 'oldest key', 'crash-loop suspects'],
    statuses.map((s) => [
      s.consumer,
      `${s.keysEstimated ? '~' : ''}${s.keys}`,
      `${s.deadLetteredEstimated ? '~' : ''}${s.deadLettered}`,
      s.oldestTimedOut ? 'timed out' : s.oldestKeyAt === null ? '-' : `${formatAge(now - s.oldestKeyAt.getTime())} ago`,
      s.crashLoopSuspects === 0 ? '0' : `${s.crashLoopSuspects} (most attempts: ${s.maxAttempts})`,
    ]),
  );
  if (statuses.some((s) => s.keysEstimated)) printLine(ESTIMATE_NOTE);
}
