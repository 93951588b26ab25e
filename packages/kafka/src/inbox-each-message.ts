import { ConfigurationError, type MessageHandler, type ProcessOutcome } from '@inboxkit/core';
import { inboxTelemetry, logHandled, outcomeLogFields } from '@inboxkit/core/adapter';
import { ConsumerRuntime, withControls } from './internal/consumer-runtime.js';
import type { KafkaEachMessagePayload } from './kafka-client.js';
import type { KafkaInboxControl } from './kafka-inbox-control.js';
import type { KafkaInboxMessage } from './kafka-inbox-message.js';
import { COMMON_OPTIONS, compileKafkaInboxOptions, type KafkaInboxOptions } from './kafka-inbox-options.js';
import { recordSource } from './record-telemetry.js';

/** Handles one record inside its own transaction (see core's `MessageHandler`). */
export type KafkaMessageHandler<DB, V, R> = MessageHandler<DB, KafkaInboxMessage<V>, R>;

/** Options of {@link inboxEachMessage}. */
export interface InboxEachMessageOptions<DB, V = unknown, R = unknown> extends KafkaInboxOptions<DB, V> {
  /**
   * Runs once per new record, in a transaction that also holds the record's inbox key;
   * its writes through `trx` commit together with the key or not at all.
   */
  readonly handler: KafkaMessageHandler<DB, V, R>;
}

/** A kafkajs `eachMessage` handler that also carries the controls of the running consumer. */
export type InboxEachMessageHandler = ((payload: KafkaEachMessagePayload) => Promise<void>) & KafkaInboxControl;

/**
 * Wraps a handler for `kafkaConsumer.run({ eachMessage })`: each record is processed
 * effectively once, in its own transaction, through `inbox.process`.
 *
 * - The offset moves only after the transaction committed (or, for a record that is
 *   dead-lettered, after the dead-letter topic acknowledged it); offsets are committed
 *   explicitly, so run the kafkajs consumer with `autoCommit: false` (`runInboxConsumer` does).
 * - Handler failures are retried in process by the inbox's retry policy, then dead-lettered;
 *   nothing is thrown into the client (kafkajs #1415).
 * - Postgres unreachable, or a dead-letter publish failing: the partition is paused and
 *   sought back to the record, and resumes after a backoff. Nothing is skipped.
 * - After a partition is assigned, its first record not yet in the inbox runs as a
 *   crash-loop suspect (docs/design.md, "Crash loops").
 * - With `dedup: 'offsets'`, the partition's next offset is stored in the record's
 *   transaction, and the consumer seeks to it after an assignment.
 *
 * @example
 * ```ts
 * const kafkaConsumer = kafka.consumer({ groupId: 'payments' })
 * const eachMessage = inboxEachMessage({ kafkaConsumer, kafka, inbox, handler: async (trx, message) => {
 *   await trx.insertInto('charges').values({ id: message.id, amount_cents: message.value.amount }).execute()
 * } })
 * await kafkaConsumer.run({ autoCommit: false, eachMessage })
 * process.once('SIGTERM', async () => {
 *   await eachMessage.close() // the kafkajs consumer and the clients the adapter made
 *   await db.destroy() // yours
 * })
 * ```
 */
export function inboxEachMessage<DB, V = unknown, R = unknown>(
  options: InboxEachMessageOptions<DB, V, R>,
): InboxEachMessageHandler {
  const config = compileKafkaInboxOptions(options, 'inboxEachMessage', [...COMMON_OPTIONS, 'handler']);
  const handler = options.handler;
  if (typeof handler !== 'function') {
    throw new ConfigurationError('Expected `handler` to be a function (trx, message, context) => result.');
  }
  const runtime = new ConsumerRuntime(config, 1);
  const { inbox } = config;
  const telemetry = inboxTelemetry(inbox);

  const eachMessage = async ({
    topic,
    partition,
    message: record,
    heartbeat,
  }: KafkaEachMessagePayload): Promise<void> => {
    if (runtime.stopping) {
      runtime.defer(topic, partition, record.offset);
      return;
    }
    if (runtime.pauses.intercept(topic, partition)) return;
    runtime.enter();
    const started = performance.now();
    // The record's process span, active while it is processed and settled (docs/telemetry.md).
    const trace = telemetry.message(() => recordSource(runtime.assignments.groupId, topic, partition, record));
    const done: { outcome?: ProcessOutcome; settled: boolean; thrown?: unknown } = { settled: false };
    try {
      await trace.run(async () => {
        const { message, invalid } = runtime.prepare(topic, partition, record);
        trace.bind(message);
        let outcome: ProcessOutcome;
        if (invalid !== undefined) outcome = invalid;
        else {
          const window =
            runtime.assignments.window(topic, partition) ??
            (await runtime.startWindow(topic, partition, record.offset));
          // Sought to the offset stored in Postgres: the records come again from there.
          if (window === undefined) return;
          const fence = runtime.fence(topic, partition);
          // A heartbeat before each attempt keeps the member in the group through the
          // retry policy's pauses (kafkajs sends it only once heartbeatInterval has passed).
          const beforeAttempt = () => (typeof heartbeat === 'function' ? heartbeat() : undefined);
          if (window.open) {
            outcome = await inbox.process(message, handler, { suspect: true, beforeAttempt, fence });
            window.count(outcome);
          } else {
            outcome = await inbox.process(message, handler, { beforeAttempt, fence });
          }
        }
        done.outcome = outcome;
        done.settled = (await runtime.settle(topic, partition, [{ message, outcome }])) === 1;
      });
    } catch (error) {
      done.thrown = error;
      runtime.unexpected(topic, partition, record.offset, error);
    } finally {
      trace.end(done.outcome, done.settled, done.thrown);
      const { outcome, settled } = done;
      if (outcome !== undefined) {
        logHandled(config.logger, () => ({
          consumer: inbox.consumer,
          topic,
          partition,
          offset: record.offset,
          ...outcomeLogFields(outcome),
          settled,
          durationMs: Math.round(performance.now() - started),
        }));
      }
      runtime.leave();
    }
  };
  return withControls(eachMessage, runtime);
}
