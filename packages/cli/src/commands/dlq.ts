import { createInboxAdmin, DEFAULT_RETENTION_MS, type InboxAdmin } from '@inboxkit/core/admin';
import type { Command } from 'commander';
import type { Kysely } from 'kysely';
import { openDatabase, type Settings } from '../config.js';
import { settingsOf } from '../context.js';
import type { DlqEntry } from '../dlq/dlq-entry.js';
import type { DlqSource } from '../dlq/dlq-source.js';
import { openKafkaDlq } from '../dlq/kafka-dlq.js';
import { openRabbitDlq } from '../dlq/rabbitmq-dlq.js';
import { isSelected, refusal, type Selection } from '../dlq/selection.js';
import { formatAge, parseCount, parseDuration, parseInstant } from '../durations.js';
import { CliError, NotFoundError, UsageError } from '../errors.js';
import { formatDate, printJson, printLine, printRecord, printTable } from '../output.js';
import { progress } from '../progress.js';

interface SourceFlags {
  readonly topic?: string;
  readonly queue?: string;
  readonly group?: string;
  readonly limit?: string;
}

interface ReplayFlags extends SourceFlags {
  readonly id?: string[];
  readonly reason?: string;
  readonly since?: string;
  readonly until?: string;
  readonly all?: boolean;
  readonly maxReplays: string;
  readonly retention?: string;
  readonly force?: boolean;
  readonly dryRun?: boolean;
  readonly consumer?: string;
}

/** `inboxkit dlq list | show | replay` on a Kafka dead-letter topic or a RabbitMQ dead-letter queue. */
export function registerDlq(program: Command): void {
  const dlq = program.command('dlq').description('read and replay dead letters (Kafka: --topic, RabbitMQ: --queue)');
  const source = (command: Command) =>
    command
      .option('--topic <name>', 'the Kafka dead-letter topic (with --brokers or $KAFKA_BROKERS)')
      .option('--queue <name>', 'the RabbitMQ dead-letter queue (with --amqp-url or $AMQP_URL)')
      .option('--group <id>', "the CLI's Kafka consumer group (default inboxkit-cli.<topic>)")
      .option('--limit <n>', 'read at most this many dead letters');

  source(dlq.command('list').description('dead letters with reason, error, attempts and age'))
    .option('--json', 'print JSON')
    .action(async (flags: SourceFlags, command: Command) => {
      const settings = settingsOf(command);
      const entries = await readAll(settings, flags);
      const keys = await keyStatuses(settings, entries);
      if (settings.json) {
        printJson({ deadLetters: entries.map((e) => summary(e, keys)) });
        return;
      }
      if (entries.length === 0) {
        printLine('No dead letters.');
        return;
      }
      const now = Date.now();
      printTable(
        [
          'position',
          'message id',
          'consumer',
          'reason',
          'error',
          'attempts',
          'age',
          'replays',
          ...(keys ? ['key'] : []),
        ],
        entries.map((e) => [
          e.position,
          e.messageId ?? '-',
          e.consumer ?? '-',
          e.reason ?? '-',
          clip(`${e.errorName ?? ''}${e.errorMessage ? `: ${e.errorMessage}` : ''}`, 60),
          e.attempts ?? '-',
          e.failedAt === undefined ? '-' : formatAge(now - e.failedAt.getTime()),
          e.replays,
          ...(keys ? [keys.get(keyOf(e)) ?? 'none'] : []),
        ]),
      );
    });

  source(dlq.command('show').description('every header, the error stack and the payload of a dead letter'))
    .argument('<id>', 'the message id (or the position list shows)')
    .option('--json', 'print JSON')
    .action(async (id: string, flags: SourceFlags, command: Command) => {
      const settings = settingsOf(command);
      const entries = (await readAll(settings, flags)).filter((e) => e.messageId === id || e.position === id);
      if (entries.length === 0) throw new NotFoundError(`No dead letter with message id ${JSON.stringify(id)}.`);
      if (settings.json) {
        printJson({
          deadLetters: entries.map((e) => ({
            ...summary(e, undefined),
            payload: e.payload.toString('base64'),
            headers: e.headers,
          })),
        });
        return;
      }
      for (const e of entries) {
        printRecord([
          ['position', e.position],
          ['message id', e.messageId ?? '-'],
          ['consumer', e.consumer ?? '-'],
          ['reason', e.reason ?? '-'],
          ['error', `${e.errorName ?? '-'}${e.errorCode ? ` (${e.errorCode})` : ''}: ${e.errorMessage ?? ''}`],
          ['attempts', String(e.attempts ?? '-')],
          ['first seen', formatDate(e.firstSeenAt)],
          ['dead-lettered', formatDate(e.failedAt)],
          ['replays', String(e.replays)],
          ['destination', destinationText(e)],
          [
            'headers',
            Object.entries(e.headers)
              .filter(([n]) => n !== 'x-inboxkit-error-stack')
              .map(([n, v]) => `${n}: ${clip(v, 200)}`)
              .join('\n'),
          ],
          ['stack', e.errorStack ?? '-'],
          ['payload', payloadText(e.payload)],
        ]);
      }
    });

  source(
    dlq
      .command('replay')
      .description(
        're-publish dead letters to where they came from, with their ids, so they run again; exits 1 when any selected dead letter was refused (it stays)',
      ),
  )
    .option('--id <ids...>', 'these message ids')
    .option('--reason <reason>', 'dead-lettered for this reason (non_retryable, retries_exhausted, crash_loop...)')
    .option('--since <time>', 'dead-lettered at or after (ISO 8601, or a duration ago: 2h)')
    .option('--until <time>', 'dead-lettered at or before (ISO 8601, or a duration ago)')
    .option('--all', 'every dead letter')
    .option('--max-replays <n>', 'refuse a dead letter replayed this many times already', '3')
    .option('--retention <duration>', "the inbox's retention window: older dead letters are refused (default 7d)")
    .option('--force', 'replay dead letters older than the retention window too')
    .option(
      '--consumer <name>',
      'the inbox consumer of dead letters that carry no x-inboxkit-consumer header (RabbitMQ deadLetter: nack)',
    )
    .option('--dry-run', 'say what would be replayed; change nothing')
    .option('--json', 'print the result as JSON (no progress bar)')
    .action(async (flags: ReplayFlags, command: Command) => {
      const settings = settingsOf(command);
      const selection = selectionOf(flags);
      const limits = {
        maxReplays: parseCount('--max-replays', flags.maxReplays, 1),
        retentionMs:
          flags.retention === undefined ? DEFAULT_RETENTION_MS : parseDuration('--retention', flags.retention),
        force: flags.force === true,
        now: Date.now(),
      };
      const limit = flags.limit === undefined ? undefined : parseCount('--limit', flags.limit);
      const db = await openDatabase(settings);
      const outcomes: Array<ReturnType<typeof summary> & { action: string; why?: string }> = [];
      try {
        const admin = createInboxAdmin({ db, schema: settings.schema, table: settings.table });
        const dlqSource = await openSource(settings, flags);
        const bar = progress('replay', 0, !settings.json);
        try {
          await dlqSource.walk(
            async (found, replay) => {
              const entry =
                found.consumer === undefined && flags.consumer !== undefined
                  ? { ...found, consumer: flags.consumer }
                  : found;
              const record = (action: string, why?: string) => {
                outcomes.push({ ...summary(entry, undefined), action, ...(why === undefined ? {} : { why }) });
                bar.increment();
              };
              if (!isSelected(entry, selection)) {
                record('not_selected');
                return 'keep';
              }
              const refused = refusal(entry, limits);
              if (refused !== undefined) {
                record('refused', refused);
                return 'keep';
              }
              if (flags.dryRun === true) {
                record('would_replay');
                return 'keep';
              }
              // Clear the dead-lettered key first (a processed key stays: the replay is then
              // a duplicate). A crash after this and before the ack leaves the message in the
              // dead-letter destination, to be replayed by the next run.
              if (entry.consumer !== undefined && entry.messageId !== undefined) {
                await admin.forgetDeadLettered(entry.consumer, [entry.messageId]);
              }
              await replay();
              record('replayed');
              return 'remove';
            },
            { limit, removing: flags.dryRun !== true, onTotal: (total) => bar.grow(total) },
          );
        } finally {
          bar.stop();
          await dlqSource.close();
        }
      } finally {
        await db.destroy();
      }
      report(outcomes, settings.json, flags.dryRun === true);
      // A refused dead letter stays where it is: a script (or an operator) must not take
      // the replay for complete. The report above says which and why.
      const refused = outcomes.filter((o) => o.action === 'refused').length;
      if (refused > 0) {
        throw new CliError(
          'INBOXKIT_CLI_REFUSED',
          `${refused} selected dead letter(s) refused${flags.dryRun === true ? ' (dry run)' : ''}; they stay in the dead-letter destination (see "why").`,
        );
      }
    });
}

function report(
  outcomes: Array<{ position: string; messageId: string | null; action: string; why?: string }>,
  json: boolean,
  dryRun: boolean,
): void {
  const count = (action: string) => outcomes.filter((o) => o.action === action).length;
  if (json) {
    printJson({
      dryRun,
      replayed: count('replayed'),
      wouldReplay: count('would_replay'),
      refused: count('refused'),
      notSelected: count('not_selected'),
      deadLetters: outcomes,
    });
    return;
  }
  const shown = outcomes.filter((o) => o.action !== 'not_selected');
  if (shown.length > 0) {
    printTable(
      ['position', 'message id', 'action', 'why'],
      shown.map((o) => [o.position, o.messageId ?? '-', o.action, o.why ?? '']),
    );
  }
  printLine(
    dryRun
      ? `Dry run: ${count('would_replay')} would be replayed, ${count('refused')} refused, ${count('not_selected')} not selected; nothing changed.`
      : `Replayed ${count('replayed')}; refused ${count('refused')}; not selected ${count('not_selected')} (left in place).`,
  );
}

function selectionOf(flags: ReplayFlags): Selection {
  const selection: Selection = {
    ids: flags.id === undefined ? undefined : new Set(flags.id),
    reason: flags.reason,
    since: flags.since === undefined ? undefined : parseInstant('--since', flags.since),
    until: flags.until === undefined ? undefined : parseInstant('--until', flags.until),
    all: flags.all === true,
  };
  const narrowed =
    selection.ids !== undefined ||
    selection.reason !== undefined ||
    selection.since !== undefined ||
    selection.until !== undefined;
  if (!narrowed && !selection.all) {
    throw new UsageError('Say what to replay: --id, --reason, --since/--until, or --all.');
  }
  if (narrowed && selection.all)
    throw new UsageError('--all replays everything: give it alone, without --id, --reason, --since or --until.');
  return selection;
}

async function openSource(settings: Settings, flags: SourceFlags): Promise<DlqSource> {
  if ((flags.topic === undefined) === (flags.queue === undefined)) {
    throw new UsageError('Name the dead letters: --topic <kafka topic> or --queue <rabbitmq queue> (one of them).');
  }
  if (flags.topic !== undefined) {
    if (settings.brokers === undefined || settings.brokers.length === 0) {
      throw new UsageError('No Kafka brokers: set KAFKA_BROKERS or pass --brokers.');
    }
    return openKafkaDlq(settings.brokers, flags.topic, flags.group ?? `inboxkit-cli.${flags.topic}`);
  }
  if (settings.amqpUrl === undefined || settings.amqpUrl === '') {
    throw new UsageError('No RabbitMQ: set AMQP_URL or pass --amqp-url.');
  }
  return openRabbitDlq(settings.amqpUrl, flags.queue as string);
}

async function readAll(settings: Settings, flags: SourceFlags): Promise<DlqEntry[]> {
  const limit = flags.limit === undefined ? undefined : parseCount('--limit', flags.limit);
  const source = await openSource(settings, flags);
  const entries: DlqEntry[] = [];
  try {
    await source.walk(
      async (entry) => {
        entries.push(entry);
        return 'keep';
      },
      { limit, removing: false },
    );
  } finally {
    await source.close();
  }
  return entries;
}

const keyOf = (e: DlqEntry) => `${e.consumer}\u0000${e.messageId}`;

/** The inbox key status of each dead letter, when a database is configured. */
async function keyStatuses(settings: Settings, entries: readonly DlqEntry[]): Promise<Map<string, string> | undefined> {
  if (settings.databaseUrl === undefined || settings.databaseUrl === '') return undefined;
  const db: Kysely<unknown> = await openDatabase(settings);
  try {
    const admin: InboxAdmin = createInboxAdmin({ db, schema: settings.schema, table: settings.table });
    const byConsumer = new Map<string, string[]>();
    for (const e of entries) {
      if (e.consumer === undefined || e.messageId === undefined) continue;
      const ids = byConsumer.get(e.consumer) ?? [];
      ids.push(e.messageId);
      byConsumer.set(e.consumer, ids);
    }
    const statuses = new Map<string, string>();
    for (const [consumer, ids] of byConsumer) {
      const keys = await admin.read(consumer, ids);
      for (const [id, key] of keys) statuses.set(`${consumer}\u0000${id}`, key.status ?? 'attempts only');
    }
    return statuses;
  } finally {
    await db.destroy();
  }
}

function summary(e: DlqEntry, keys: Map<string, string> | undefined) {
  return {
    position: e.position,
    messageId: e.messageId ?? null,
    consumer: e.consumer ?? null,
    reason: e.reason ?? null,
    errorName: e.errorName ?? null,
    errorMessage: e.errorMessage ?? null,
    errorCode: e.errorCode ?? null,
    attempts: e.attempts ?? null,
    firstSeenAt: e.firstSeenAt ?? null,
    failedAt: e.failedAt ?? null,
    ageMs: e.failedAt === undefined ? null : Date.now() - e.failedAt.getTime(),
    replays: e.replays,
    destination: e.destination ?? null,
    ...(keys === undefined ? {} : { key: keys.get(keyOf(e)) ?? 'none' }),
  };
}

function destinationText(e: DlqEntry): string {
  const d = e.destination;
  if (d === undefined) return '-';
  if (d.kind === 'kafka') return `topic ${d.topic}${d.partition === undefined ? '' : ` partition ${d.partition}`}`;
  return `exchange ${JSON.stringify(d.exchange)} routing key ${JSON.stringify(d.routingKey)}`;
}

function payloadText(payload: Buffer): string {
  const text = payload.toString('utf8');
  // Text unless it has control characters or bytes that are not UTF-8.
  const binary = [...text].some((c) => {
    const code = c.codePointAt(0) ?? 0;
    return (code < 0x20 && c !== '\n' && c !== '\r' && c !== '\t') || code === 0xfffd;
  });
  return binary ? `base64:${payload.toString('base64')}` : clip(text, 4000);
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
