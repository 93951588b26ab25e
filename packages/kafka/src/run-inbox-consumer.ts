import { ConfigurationError } from '@inboxkit/core';
import { type InboxEachBatchOptions, inboxEachBatch } from './inbox-each-batch.js';
import { type InboxEachMessageOptions, inboxEachMessage } from './inbox-each-message.js';
import type { KafkaConsumer } from './kafka-client.js';
import type { KafkaInboxControl } from './kafka-inbox-control.js';
import { checkSubscribeOptions, connectAndSubscribe, type KafkaSubscribeOptions } from './kafka-startup.js';

/** What `runInboxConsumer` adds to the wrappers' options. */
interface RunOptions {
  /**
   * Partitions processed at the same time, each by its own handler call (kafkajs'
   * `partitionsConsumedConcurrently`). Records of one partition are always processed in
   * order. Default `1`.
   */
  readonly partitionsConsumedConcurrently?: number;
  /**
   * Set when the client takes `autoCommit` in the consumer's configuration and rejects it in
   * `run()` (the KafkaJS-compatible API of `@confluentinc/kafka-javascript`:
   * `kafka.consumer({ kafkaJS: { groupId, autoCommit: false } })`). The adapter then leaves it
   * out of `run()`, and **you** must have set it to `false`: offsets committed by the client
   * itself could move past records not yet committed in Postgres. Default `false`.
   */
  readonly autoCommitInConsumerConfig?: boolean;
  /**
   * Connect and subscribe here, waiting for a broker that is down or restarting: the
   * consumer, the producer and the `admin` client are connected and the consumer subscribed
   * to `topics`, each step retried with backoff until it succeeds, `timeoutMs` passed
   * (`KafkaUnavailableError`) or `signal` aborted. Without it, pass a consumer that is
   * already connected and subscribed. See {@link KafkaSubscribeOptions}.
   *
   * @example
   * ```ts
   * subscribe: { topics: ['charges'], onRetry: ({ step, error }) => log.warn({ step, err: error }, 'waiting for Kafka') }
   * ```
   */
  readonly subscribe?: KafkaSubscribeOptions;
}

/** Options of {@link runInboxConsumer}: `mode` picks the wrapper, the rest are its options. */
export type RunInboxConsumerOptions<DB, V = unknown, R = unknown> =
  | (RunOptions & { readonly mode: 'eachMessage' } & Omit<InboxEachMessageOptions<DB, V, R>, 'consumer'>)
  | (RunOptions & { readonly mode: 'eachBatch' } & Omit<InboxEachBatchOptions<DB, V, R>, 'consumer'>);

/**
 * Runs a connected, subscribed consumer with an inbox wrapper and the settings it needs
 * (`autoCommit: false`, `eachBatchAutoResolve: false`), and resolves once the consumer runs.
 * With the `subscribe` option it connects the clients and subscribes first, waiting for a
 * broker that is not up yet.
 * Returns the controls: `close()` for SIGTERM, `on(...)` for events.
 *
 * @example
 * ```ts
 * const consumer = kafka.consumer({ groupId: 'payments' })
 * await consumer.connect()
 * await consumer.subscribe({ topics: ['charges'] })
 * const running = await runInboxConsumer(consumer, {
 *   mode: 'eachBatch', inbox, producer, groupId: 'payments',
 *   bulkHandler: async (trx, messages) => { ... },
 * })
 * process.once('SIGTERM', async () => {
 *   await running.close() // the consumer only
 *   await Promise.all([producer.disconnect(), db.destroy()]) // yours
 * })
 * ```
 */
export async function runInboxConsumer<DB, V = unknown, R = unknown>(
  consumer: KafkaConsumer,
  options: RunInboxConsumerOptions<DB, V, R>,
): Promise<KafkaInboxControl> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(
      "runInboxConsumer(consumer, options) needs options: { mode: 'eachMessage' | 'eachBatch', ... }.",
    );
  }
  const { mode, partitionsConsumedConcurrently = 1, autoCommitInConsumerConfig = false, subscribe, ...rest } = options;
  if (!Number.isInteger(partitionsConsumedConcurrently) || partitionsConsumedConcurrently < 1) {
    throw new ConfigurationError(
      `Expected \`partitionsConsumedConcurrently\` to be a positive whole number, got ${String(partitionsConsumedConcurrently)}.`,
    );
  }
  if (typeof autoCommitInConsumerConfig !== 'boolean') {
    throw new ConfigurationError('Expected `autoCommitInConsumerConfig` to be a boolean.');
  }
  const autoCommit = autoCommitInConsumerConfig ? {} : { autoCommit: false };
  const clients = { consumer, producer: rest.producer, admin: rest.admin };
  if (subscribe !== undefined) checkSubscribeOptions(subscribe, clients);
  // The wrapper is built (and its options checked) before any waiting: a wrong option
  // fails at once, not after the broker came back.
  if (mode === 'eachMessage') {
    const eachMessage = inboxEachMessage({
      ...(rest as Omit<InboxEachMessageOptions<DB, V, R>, 'consumer'>),
      consumer,
    });
    if (subscribe !== undefined) await connectAndSubscribe(clients, subscribe);
    await consumer.run({ ...autoCommit, partitionsConsumedConcurrently, eachMessage });
    return controlsOf(eachMessage);
  }
  if (mode === 'eachBatch') {
    const eachBatch = inboxEachBatch({ ...(rest as Omit<InboxEachBatchOptions<DB, V, R>, 'consumer'>), consumer });
    if (subscribe !== undefined) await connectAndSubscribe(clients, subscribe);
    await consumer.run({ ...autoCommit, eachBatchAutoResolve: false, partitionsConsumedConcurrently, eachBatch });
    return controlsOf(eachBatch);
  }
  throw new ConfigurationError(`Expected \`mode\` to be 'eachMessage' or 'eachBatch', got ${JSON.stringify(mode)}.`);
}

function controlsOf(handler: KafkaInboxControl): KafkaInboxControl {
  return {
    close: handler.close,
    shutdown: handler.shutdown,
    commit: handler.commit,
    on: handler.on,
    paused: handler.paused,
    assignment: handler.assignment,
  };
}
