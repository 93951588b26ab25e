// Runs an inboxkit consumer in the test process, and the business handlers the tests use:
// each record adds one row to `ledger` (which has no unique constraint, so a record applied
// twice shows up as two rows).
import { createInbox, type Inbox, type InboxOptions } from '@inboxkit/core';
import {
  type KafkaInboxControl,
  type KafkaInboxEventName,
  type KafkaInboxEvents,
  type KafkaInboxMessage,
  type RunInboxConsumerOptions,
  runInboxConsumer,
} from '@inboxkit/kafka';
import type { Consumer, Kafka } from 'kafkajs';
import { type Kysely, sql } from 'kysely';
import { collectEvents } from '../../support/events.ts';
import type { TestDB } from '../../support/postgres.ts';
import { consumerSettings, type KafkaTestKit, waitForCommittedToEnd } from './kafka-testkit.ts';

export interface ChargeValue {
  readonly id: string;
  readonly userId: string;
  readonly amount: number;
}

export type ChargeMessage = KafkaInboxMessage<ChargeValue>;

/** The per-record handler: one ledger row. */
export async function ledgerHandler(trx: Kysely<TestDB>, message: ChargeMessage): Promise<void> {
  await trx.insertInto('ledger').values({ charge_id: message.id, amount_cents: message.value.amount }).execute();
}

/** The per-batch handler: one bulk insert of the batch's ledger rows. */
export async function ledgerBulkHandler(trx: Kysely<TestDB>, messages: readonly ChargeMessage[]): Promise<void> {
  await trx
    .insertInto('ledger')
    .values(messages.map((m) => ({ charge_id: m.id, amount_cents: m.value.amount })))
    .execute();
}

/**
 * The ledger handler options of a mode: `ledgerHandler` per record (eachMessage), or
 * `ledgerBulkHandler` per batch of up to `maxBatchSize` (eachBatch); with `before`, each call
 * first runs it on its records (one for eachMessage), to fail, wait or count.
 */
export function ledgerHandlers(
  mode: 'eachMessage' | 'eachBatch',
  options: { before?: (messages: readonly ChargeMessage[]) => void | Promise<void>; maxBatchSize?: number } = {},
):
  | { mode: 'eachMessage'; handler: typeof ledgerHandler }
  | { mode: 'eachBatch'; bulkHandler: typeof ledgerBulkHandler; maxBatchSize?: number } {
  const { before, maxBatchSize } = options;
  if (mode === 'eachMessage') {
    if (before === undefined) return { mode, handler: ledgerHandler };
    return {
      mode,
      handler: async (trx, message) => {
        await before([message]);
        await ledgerHandler(trx, message);
      },
    };
  }
  return {
    mode,
    ...(maxBatchSize === undefined ? {} : { maxBatchSize }),
    bulkHandler:
      before === undefined
        ? ledgerBulkHandler
        : async (trx, messages) => {
            await before(messages);
            await ledgerBulkHandler(trx, messages);
          },
  };
}

/** Ledger totals: rows, distinct charges, and the charges with more than one row. */
export async function ledgerTotals(db: Kysely<TestDB>): Promise<{ rows: number; distinct: number; twice: string[] }> {
  const { rows } = await sql<{ rows: string; distinct: string }>`
    SELECT count(*) AS rows, count(DISTINCT charge_id) AS distinct FROM ledger`.execute(db);
  const twice = await sql<{ charge_id: string }>`
    SELECT charge_id FROM ledger GROUP BY charge_id HAVING count(*) > 1 ORDER BY charge_id LIMIT 20`.execute(db);
  return {
    rows: Number(rows[0]?.rows ?? 0),
    distinct: Number(rows[0]?.distinct ?? 0),
    twice: twice.rows.map((r) => r.charge_id),
  };
}

export function testInbox(
  db: Kysely<TestDB>,
  consumer: string,
  options: Partial<InboxOptions<TestDB>> = {},
): Inbox<TestDB> {
  return createInbox<TestDB>({
    db,
    consumer,
    retry: { retries: 2, minTimeout: 5, maxTimeout: 20, randomize: false },
    ...options,
  });
}

export interface RunningConsumer {
  readonly kafkaConsumer: Consumer;
  readonly control: KafkaInboxControl;
}

/** Connects a kafkajs consumer of `topic` in `groupId` (from the beginning) and runs it with the inbox wrapper. */
export async function startInboxConsumer(
  kafka: Kafka,
  topic: string,
  groupId: string,
  options: RunInboxConsumerOptions<TestDB, ChargeValue>,
): Promise<RunningConsumer> {
  const kafkaConsumer = kafka.consumer({ groupId, ...consumerSettings });
  await kafkaConsumer.connect();
  await kafkaConsumer.subscribe({ topics: [topic], fromBeginning: true });
  const control = await runInboxConsumer<TestDB, ChargeValue>(kafkaConsumer, {
    groupId,
    commitIntervalMs: 200,
    pause: { minDelayMs: 200, maxDelayMs: 1000 },
    ...options,
  });
  return { kafkaConsumer, control };
}

/** Runs an inbox consumer until its group committed `topic` to the end, then shuts it down; `watch` sees it first. */
export async function consumeToEnd(
  kit: KafkaTestKit,
  topic: string,
  groupId: string,
  options: RunInboxConsumerOptions<TestDB, ChargeValue>,
  watch: (control: KafkaInboxControl) => void = () => {},
): Promise<void> {
  const { control } = await startInboxConsumer(kit.kafka, topic, groupId, options);
  watch(control);
  try {
    await waitForCommittedToEnd(kit.admin, groupId, topic);
  } finally {
    await control.close();
  }
}

/** Records the control's events of the given names from now on (collectEvents, typed for Kafka). */
export function collectControlEvents<K extends KafkaInboxEventName>(
  control: KafkaInboxControl,
  ...names: K[]
): { [N in K]: KafkaInboxEvents[N][] } {
  return collectEvents<KafkaInboxEvents, K>(control, ...names);
}
