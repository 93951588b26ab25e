import {
  type BatchHandler,
  type BatchOptions,
  ConfigurationError,
  type MessageHandler,
  type ProcessOutcome,
} from '@inboxkit/core';
import { inboxTelemetry, logHandled, outcomeLogFields, positiveInteger } from '@inboxkit/core/adapter';
import type { KafkaMessageHandler } from './inbox-each-message.js';
import { ConsumerRuntime, type PreparedRecord, type SettleItem, withControls } from './internal/consumer-runtime.js';
import type { KafkaEachBatchPayload } from './kafka-client.js';
import type { KafkaInboxControl } from './kafka-inbox-control.js';
import type { KafkaInboxMessage } from './kafka-inbox-message.js';
import { COMMON_OPTIONS, compileKafkaInboxOptions, type KafkaInboxOptions } from './kafka-inbox-options.js';
import { batchSource, recordSource } from './record-telemetry.js';

/** Handles all of a batch's new records at once, typically with one bulk statement (see core's `BatchHandler`). */
export type KafkaBulkHandler<DB, V, R> = BatchHandler<DB, KafkaInboxMessage<V>, R>;

/** Options of {@link inboxEachBatch}: exactly one of `handler` and `bulkHandler`. */
export interface InboxEachBatchOptions<DB, V = unknown, R = unknown> extends KafkaInboxOptions<DB, V> {
  /** Runs once per new record, all inside the batch's transaction (`inbox.processBatch`). */
  readonly handler?: KafkaMessageHandler<DB, V, R>;
  /**
   * Runs once per batch with all its new records (duplicates removed), inside the batch's
   * transaction (`inbox.processBulk`): the fastest shape. Returns one result per record, or nothing.
   */
  readonly bulkHandler?: KafkaBulkHandler<DB, V, R>;
  /**
   * Most records processed in one transaction, in records. A fetched batch larger than this
   * is processed in several transactions. It is also the crash-loop window after an
   * assignment without a clean handover (that many records run one at a time; docs/kafka.md,
   * "Crash loops"). Default `1000`.
   */
  readonly maxBatchSize?: number;
}

/** A kafkajs `eachBatch` handler that also carries the controls of the running consumer. */
export type InboxEachBatchHandler = ((payload: KafkaEachBatchPayload) => Promise<void>) & KafkaInboxControl;

/** Thrown into the batch's transaction to roll it back when the batch is no longer ours to process. */
class BatchInterrupted extends Error {
  /** The heartbeat's error (the group is rebalancing...), handed back to the client. */
  readonly heartbeatError: unknown;

  constructor(heartbeatError?: unknown) {
    super('inboxkit: batch interrupted');
    this.heartbeatError = heartbeatError;
  }
}

/**
 * Wraps a handler for `kafkaConsumer.run({ eachBatch })`: a fetched batch is processed in
 * transactions of up to `maxBatchSize` records through the inbox's batch entry points (all
 * ids claimed in one statement, duplicates removed, a failing record set aside without
 * undoing its neighbours).
 *
 * Run the kafkajs consumer with `autoCommit: false` and `eachBatchAutoResolve: false`
 * (`runInboxConsumer` does): offsets are resolved and committed only for settled records.
 * Before each handler call the wrapper heartbeats and checks that the batch is still to be
 * processed (`isRunning()`, `isStale()`), so a long batch neither gets the member dropped
 * from the group (kafkajs #1083) nor goes on after a rebalance or seek.
 *
 * @example
 * ```ts
 * const eachBatch = inboxEachBatch({ kafkaConsumer, kafka, inbox, bulkHandler: async (trx, messages) => {
 *   await trx.insertInto('charges').values(messages.map((m) => ({ id: m.id, amount_cents: m.value.amount }))).execute()
 * } })
 * await kafkaConsumer.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch })
 * ```
 */
export function inboxEachBatch<DB, V = unknown, R = unknown>(
  options: InboxEachBatchOptions<DB, V, R>,
): InboxEachBatchHandler {
  const config = compileKafkaInboxOptions(options, 'inboxEachBatch', [
    ...COMMON_OPTIONS,
    'handler',
    'bulkHandler',
    'maxBatchSize',
  ]);
  const { handler, bulkHandler } = options;
  if ((handler === undefined) === (bulkHandler === undefined)) {
    throw new ConfigurationError(
      'inboxEachBatch() needs exactly one of `handler` (called per record) and `bulkHandler` (called per batch).',
    );
  }
  if (handler !== undefined && typeof handler !== 'function') {
    throw new ConfigurationError('Expected `handler` to be a function (trx, message, context) => result.');
  }
  if (bulkHandler !== undefined && typeof bulkHandler !== 'function') {
    throw new ConfigurationError('Expected `bulkHandler` to be a function (trx, messages, context) => results.');
  }
  const maxBatchSize = positiveInteger('maxBatchSize', options.maxBatchSize, 1000);
  const runtime = new ConsumerRuntime(config, maxBatchSize);
  const { inbox } = config;
  const telemetry = inboxTelemetry(inbox);
  const single: MessageHandler<DB, KafkaInboxMessage<V>, R> = handler ??
  (async (trx, message, context) => {
    const results = await (bulkHandler as KafkaBulkHandler<DB, V, R>)(trx, [message], context);
    return results?.[0] as R;
  });

  const eachBatch = async (payload: KafkaEachBatchPayload): Promise<void> => {
    const { batch, resolveOffset } = payload;
    const { topic, partition } = batch;
    /** The debug line of a record the wrapper is done with (docs/telemetry.md, "Logging"). */
    const logRecord = (offset: string, outcome: ProcessOutcome | undefined, settled: boolean, started: number) => {
      if (outcome === undefined) return;
      logHandled(config.logger, () => ({
        consumer: inbox.consumer,
        topic,
        partition,
        offset,
        ...outcomeLogFields(outcome),
        settled,
        durationMs: Math.round(performance.now() - started),
      }));
    };
    const records = batch.messages;
    const first = records[0];
    if (first === undefined) return;
    if (runtime.stopping) {
      runtime.defer(topic, partition, first.offset);
      return;
    }
    if (runtime.pauses.intercept(topic, partition)) return;

    const checkpoint = async (): Promise<void> => {
      if (!payload.isRunning() || payload.isStale()) throw new BatchInterrupted();
      try {
        await payload.heartbeat();
      } catch (error) {
        throw new BatchInterrupted(error);
      }
    };

    runtime.enter();
    let position = 0;
    let handBack: unknown;
    try {
      while (position < records.length) {
        if (runtime.stopping) {
          runtime.defer(topic, partition, (records[position] as (typeof records)[number]).offset);
          break;
        }
        if (!payload.isRunning() || payload.isStale()) break;
        const window =
          runtime.assignments.window(topic, partition) ??
          (await runtime.startWindow(topic, partition, (records[position] as (typeof records)[number]).offset));
        // Sought to the offset stored in Postgres: the records come again from there.
        if (window === undefined) return;
        const fence = runtime.fence(topic, partition);
        const batchOptions: BatchOptions = { beforeMessage: checkpoint, fence };
        if (window.open) {
          // Crash-loop window: one record at a time, each a suspect.
          const record = records[position] as (typeof records)[number];
          const started = performance.now();
          const trace = telemetry.message(() => recordSource(runtime.assignments.groupId, topic, partition, record));
          const done: { outcome?: ProcessOutcome; settled: boolean; thrown?: unknown } = { settled: false };
          try {
            await trace.run(async () => {
              const { message, invalid } = runtime.prepare(topic, partition, record);
              trace.bind(message);
              const outcome =
                invalid ?? (await inbox.process(message, single, { suspect: true, beforeAttempt: checkpoint, fence }));
              window.count(outcome);
              done.outcome = outcome;
              done.settled = (await runtime.settle(topic, partition, [{ message, outcome }], resolveOffset)) === 1;
            });
          } catch (error) {
            done.thrown = error;
            throw error;
          } finally {
            trace.end(done.outcome, done.settled, done.thrown);
            logRecord(record.offset, done.outcome, done.settled, started);
          }
          if (!done.settled) return;
          position++;
          if (position < records.length) await checkpoint();
          continue;
        }
        const end = Math.min(records.length, position + maxBatchSize);
        const chunk = records.slice(position, end);
        const started = performance.now();
        // One span for the transaction, linked to each record's context (docs/telemetry.md).
        const trace = telemetry.batchTrace(batchSource(runtime.assignments.groupId, topic, partition), () =>
          chunk.map((record) => recordSource(runtime.assignments.groupId, topic, partition, record)),
        );
        const items: SettleItem[] = [];
        const done: { settled: number; thrown?: unknown } = { settled: 0 };
        try {
          await trace.run(async () => {
            const prepared: PreparedRecord<V>[] = [];
            const valid: KafkaInboxMessage<V>[] = [];
            for (const [i, record] of chunk.entries()) {
              const entry = runtime.prepare(topic, partition, record);
              // With a fence, an invalid record ends the transaction's run: the offset must
              // not move past it before it is dead-lettered. It is settled first, or next.
              if (fence !== undefined && entry.invalid !== undefined && prepared.length > 0) break;
              trace.bind(i, entry.message);
              prepared.push(entry);
              if (entry.invalid === undefined) valid.push(entry.message);
              else if (fence !== undefined) break;
            }
            let outcomes: ProcessOutcome[] = [];
            if (valid.length > 0) {
              const result =
                bulkHandler !== undefined
                  ? await inbox.processBulk(valid, bulkHandler, batchOptions)
                  : await inbox.processBatch(valid, handler as KafkaMessageHandler<DB, V, R>, batchOptions);
              outcomes = result.outcomes;
            }
            // With a fence, the outcomes may stop early (after a dead letter): the rest comes next.
            let next = 0;
            for (const entry of prepared) {
              const outcome = entry.invalid ?? outcomes[next++];
              if (outcome === undefined) break;
              items.push({ message: entry.message, outcome });
            }
            done.settled = await runtime.settle(topic, partition, items, resolveOffset);
          });
        } catch (error) {
          done.thrown = error;
          throw error;
        } finally {
          trace.end(
            items.map((item) => item.outcome),
            done.settled,
            done.thrown,
          );
          items.forEach((item, i) => {
            logRecord(item.message.offset, item.outcome, i < done.settled, started);
          });
        }
        if (done.settled < items.length) return;
        position += items.length;
      }
    } catch (error) {
      if (error instanceof BatchInterrupted) {
        // The batch's transaction was rolled back; its records come back with the next fetch
        // (or to the partition's next owner). A heartbeat error is the client's to handle.
        handBack = error.heartbeatError;
      } else {
        const record = records[Math.min(position, records.length - 1)] as (typeof records)[number];
        runtime.unexpected(topic, partition, record.offset, error);
      }
    } finally {
      runtime.leave();
    }
    if (handBack !== undefined) {
      void runtime.committer.flush();
      throw handBack;
    }
  };
  return withControls(eachBatch, runtime);
}
