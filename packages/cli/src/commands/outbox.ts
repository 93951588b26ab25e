import { createOutbox, type FailedOutboxMessage, type Outbox, type OutboxBacklog } from '@inboxkit/core';
import type { Command } from 'commander';
import type { Kysely } from 'kysely';
import type { Settings } from '../config.js';
import { confirm } from '../confirm.js';
import { settingsOf, withDatabase } from '../context.js';
import { formatAge, parseCount } from '../durations.js';
import { CliError, NotFoundError, UsageError } from '../errors.js';
import { printJson, printLine, printTable } from '../output.js';

/** The longest message id the outbox stores (the inbox's default `maxIdLength`). */
const MAX_ID_LENGTH = 255;

interface ListFlags {
  readonly limit: string;
  readonly exactUpTo: string;
}

interface RetryFlags {
  readonly all?: boolean;
  readonly yes?: boolean;
}

/** `inboxkit outbox list | retry`: the outbox's failed messages, and putting them back in line. */
export function registerOutbox(program: Command): void {
  const outbox = program
    .command('outbox')
    .description('failed outbox messages: list them, put them back in line (--outbox-schema, --outbox-table)');

  outbox
    .command('list')
    .description('the backlog (pending, oldest pending) and the failed messages, oldest first')
    .option('--limit <n>', 'list at most this many failed messages', '100')
    .option('--exact-up-to <n>', 'count exactly up to this many rows, estimate beyond', '10000')
    .option('--json', 'print JSON')
    .action(async (flags: ListFlags, command: Command) => {
      const settings = settingsOf(command);
      const limit = parseCount('--limit', flags.limit);
      const exactUpTo = parseCount('--exact-up-to', flags.exactUpTo);
      await withDatabase(settings, async (db) => {
        const box = openOutbox(db, settings);
        const backlog = await readBacklog(box, settings, exactUpTo);
        const failed = await readFailed(box, limit);
        if (settings.json) {
          printJson({ backlog: backlogJson(backlog), failed: failed.map(failedJson) });
          return;
        }
        printLine(backlogLine(backlog));
        if (failed.length === 0) return;
        const now = Date.now();
        printTable(
          ['message id', 'destination', 'key', 'attempts', 'last error', 'age'],
          failed.map((m) => [
            m.messageId,
            destinationText(m),
            m.key ?? '-',
            m.attempts,
            clip(m.lastError ?? '-', 80),
            formatAge(now - m.createdAt.getTime()),
          ]),
        );
        if (failed.length === limit) printLine(`The first ${limit}; --limit shows more.`);
      });
    });

  outbox
    .command('retry')
    .description('put failed messages back in line with a fresh retry budget (asks first); a relay publishes them')
    .argument('[ids...]', 'message ids of failed messages')
    .option('--all', 'every failed message')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--json', 'print the result as JSON')
    .action(async (ids: string[], flags: RetryFlags, command: Command) => {
      const settings = settingsOf(command);
      const unique = [...new Set(ids)];
      if (unique.length === 0 && flags.all !== true) {
        throw new UsageError('Say what to retry: message ids, or --all.');
      }
      if (unique.length > 0 && flags.all === true) {
        throw new UsageError('--all retries every failed message: give it without ids.');
      }
      for (const id of unique) checkId(id);
      await withDatabase(settings, async (db) => {
        const box = openOutbox(db, settings);
        let count: number;
        if (flags.all === true) {
          const backlog = await readBacklog(box, settings, 10_000);
          if (backlog.failed === 0 && !backlog.failedEstimated) {
            if (settings.json) printJson({ retried: 0 });
            else printLine('No failed messages; nothing to retry.');
            return;
          }
          count = backlog.failed;
          if (!settings.json) printLine(`${backlog.failedEstimated ? 'About ' : ''}${count} failed message(s).`);
        } else {
          const found = await box.failed({ messageIds: unique, limit: 10_000 }).catch((error: unknown) => {
            throw isUndefinedTable(error) ? noOutbox(settings) : error;
          });
          const missing = unique.filter((id) => !found.some((m) => m.messageId === id));
          if (missing.length > 0) {
            throw new NotFoundError(
              `No failed outbox message with id ${missing.map((id) => JSON.stringify(id)).join(', ')}; nothing was retried.`,
            );
          }
          count = found.length;
          if (!settings.json) {
            printTable(
              ['message id', 'destination', 'attempts', 'last error'],
              found.map((m) => [m.messageId, destinationText(m), m.attempts, clip(m.lastError ?? '-', 80)]),
            );
          }
        }
        const ok = await confirm(
          `Retrying ${flags.all === true ? 'every failed outbox message' : `${count} failed outbox message(s)`}`,
          `Put ${flags.all === true ? 'every failed message' : `${count} failed message(s)`} back in line to be published?`,
          flags.yes,
        );
        if (!ok) throw new CliError('INBOXKIT_CLI_DECLINED', 'Not confirmed; nothing was retried.');
        const retried = await box.retryFailed(flags.all === true ? undefined : unique);
        if (settings.json) printJson({ retried });
        else printLine(`Put ${retried} message(s) back in line; a running relay publishes them.`);
      });
    });
}

function openOutbox(db: Kysely<unknown>, settings: Settings): Outbox {
  return createOutbox({ db, schema: settings.outboxSchema, table: settings.outboxTable, notify: true });
}

/** Whether an error says the table does not exist (SQLSTATE 42P01). */
function isUndefinedTable(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '42P01';
}

function noOutbox(settings: Settings): NotFoundError {
  return new NotFoundError(
    `No outbox table ${settings.outboxSchema}.${settings.outboxTable}; \`inboxkit migrate\` creates it (or name it with --outbox-schema/--outbox-table).`,
  );
}

async function readBacklog(box: Outbox, settings: Settings, exactUpTo: number): Promise<OutboxBacklog> {
  try {
    return await box.backlog({ exactUpTo });
  } catch (error) {
    if (isUndefinedTable(error)) throw noOutbox(settings);
    throw error;
  }
}

async function readFailed(box: Outbox, limit: number): Promise<FailedOutboxMessage[]> {
  const all: FailedOutboxMessage[] = [];
  let after: string | undefined;
  while (all.length < limit) {
    const page = await box.failed({ limit: Math.min(1000, limit - all.length), after });
    all.push(...page);
    if (page.length === 0) break;
    after = page[page.length - 1]?.sequence;
  }
  return all;
}

/**
 * The outbox's backlog for `status`, or `undefined` when there is no outbox table (a
 * service that uses only the inbox): `status` then says nothing about an outbox.
 */
export async function outboxStatus(
  db: Kysely<unknown>,
  settings: Settings,
  exactUpTo: number,
): Promise<OutboxBacklog | undefined> {
  try {
    return await openOutbox(db, settings).backlog({ exactUpTo });
  } catch (error) {
    if (isUndefinedTable(error)) return undefined;
    throw error;
  }
}

export function backlogJson(b: OutboxBacklog) {
  return {
    ...b,
    oldestPendingAgeMs: b.oldestPendingAt === null ? null : Math.max(0, Date.now() - b.oldestPendingAt.getTime()),
  };
}

/** `outbox: 12 pending (oldest 3s ago), 1 failed`. */
export function backlogLine(b: OutboxBacklog): string {
  const oldest =
    b.oldestPendingAt === null ? '' : ` (oldest ${formatAge(Date.now() - b.oldestPendingAt.getTime())} ago)`;
  return `outbox: ${b.pendingEstimated ? '~' : ''}${b.pending} pending${oldest}, ${b.failedEstimated ? '~' : ''}${b.failed} failed${
    b.pendingEstimated || b.failedEstimated ? ' (~ estimated from the planner statistics)' : ''
  }`;
}

function failedJson(m: FailedOutboxMessage) {
  return { ...m, ageMs: Math.max(0, Date.now() - m.createdAt.getTime()) };
}

function destinationText(m: FailedOutboxMessage): string {
  return m.routingKey === null ? m.destination : `${JSON.stringify(m.destination)} / ${m.routingKey}`;
}

/** An id the outbox could hold; anything else is a usage error. */
function checkId(id: string): void {
  if (id.length === 0 || id.length > MAX_ID_LENGTH || id.includes('\u0000')) {
    throw new UsageError(
      `Expected a message id of 1 to ${MAX_ID_LENGTH} characters without NUL; got ${JSON.stringify(id.slice(0, 64))}.`,
    );
  }
}

function clip(text: string, max: number): string {
  const line = text.split('\n')[0] ?? text;
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}
