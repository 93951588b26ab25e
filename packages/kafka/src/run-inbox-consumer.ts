import { ConfigurationError } from '@inboxkit/core';
import { type InboxEachBatchOptions, inboxEachBatch } from './inbox-each-batch.js';
import { type InboxEachMessageOptions, inboxEachMessage } from './inbox-each-message.js';
import { runtimeOf } from './internal/consumer-runtime.js';
import type { KafkaConsumer } from './kafka-client.js';
import type { KafkaInboxControl } from './kafka-inbox-control.js';
import { checkSubscribeOptions, connectAndSubscribe, type KafkaSubscribeOptions } from './kafka-startup.js';

/**
 * What `runInboxConsumer` adds to the wrappers' options.
 *
 * @inline
 */
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
   * Connect and subscribe here, waiting for a broker that is down or restarting: the kafkajs
   * consumer and the adapter's admin client are connected and the consumer subscribed
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
  | (RunOptions & { readonly mode: 'eachMessage' } & Omit<InboxEachMessageOptions<DB, V, R>, 'kafkaConsumer'>)
  | (RunOptions & { readonly mode: 'eachBatch' } & Omit<InboxEachBatchOptions<DB, V, R>, 'kafkaConsumer'>);

/**
 * Runs a kafkajs consumer with an inbox wrapper and the settings it needs (`autoCommit:
 * false`, `eachBatchAutoResolve: false`), and resolves once the consumer runs. With the
 * `subscribe` option it connects and subscribes first, waiting for a broker that is not up
 * yet; without it, pass a consumer that is connected and subscribed.
 * Returns the controls: `close()` for SIGTERM, `on(event, listener)` for events.
 *
 * @throws `ConfigurationError` (from `@inboxkit/core`) (`code: 'INBOX_CONFIGURATION'`), as a
 * rejection, for a missing or invalid option, before anything connects.
 * @throws {@link "@inboxkit/kafka"!KafkaUnavailableError} (`code: 'INBOX_KAFKA_UNAVAILABLE'`) when, with
 * `subscribe`, the broker did not let the consumer start within `subscribe.timeoutMs`.
 *
 * @example
 * ```ts
 * const kafka = new Kafka({ brokers: ['127.0.0.1:9092'] })
 * const running = await runInboxConsumer<DB, { amountCents: number }>(kafka.consumer({ groupId: 'payments' }), {
 *   mode: 'eachBatch', kafka, inbox, groupId: 'payments',
 *   subscribe: { topics: ['charges'] },
 *   decode: 'json',
 *   bulkHandler: async (trx, messages) => {
 *     await trx.insertInto('charges').values(messages.map((m) => ({ id: m.id, amount_cents: m.value.amountCents }))).execute()
 *   },
 * })
 * process.once('SIGTERM', async () => {
 *   await running.close() // the consumer and the clients the adapter made
 *   await db.destroy() // yours
 * })
 * ```
 */
export async function runInboxConsumer<DB, V = unknown, R = unknown>(
  kafkaConsumer: KafkaConsumer,
  options: RunInboxConsumerOptions<DB, V, R>,
): Promise<KafkaInboxControl> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(
      "runInboxConsumer(kafkaConsumer, options) needs options: { mode: 'eachMessage' | 'eachBatch', ... }.",
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
  if (subscribe !== undefined) checkSubscribeOptions(subscribe, kafkaConsumer);
  // The wrapper is built (and its options checked) before any waiting: a wrong option
  // fails at once, not after the broker came back.
  if (mode === 'eachMessage') {
    const eachMessage = inboxEachMessage({
      ...(rest as Omit<InboxEachMessageOptions<DB, V, R>, 'kafkaConsumer'>),
      kafkaConsumer,
    });
    await startAndRun(eachMessage, subscribe, () =>
      kafkaConsumer.run({ ...autoCommit, partitionsConsumedConcurrently, eachMessage }),
    );
    return controlsOf(eachMessage);
  }
  if (mode === 'eachBatch') {
    const eachBatch = inboxEachBatch({
      ...(rest as Omit<InboxEachBatchOptions<DB, V, R>, 'kafkaConsumer'>),
      kafkaConsumer,
    });
    await startAndRun(eachBatch, subscribe, () =>
      kafkaConsumer.run({ ...autoCommit, eachBatchAutoResolve: false, partitionsConsumedConcurrently, eachBatch }),
    );
    return controlsOf(eachBatch);
  }
  throw new ConfigurationError(`Expected \`mode\` to be 'eachMessage' or 'eachBatch', got ${JSON.stringify(mode)}.`);
}

/**
 * With `subscribe`, connects the kafkajs consumer and the wrapper's admin client and
 * subscribes; then runs the consumer. When either fails, the clients the wrapper made are
 * closed before the error is thrown: no caller holds controls to close them.
 */
async function startAndRun(
  wrapper: KafkaInboxControl,
  subscribe: KafkaSubscribeOptions | undefined,
  run: () => Promise<void>,
): Promise<void> {
  const runtime = runtimeOf(wrapper);
  try {
    if (subscribe !== undefined) {
      await connectAndSubscribe(
        { kafkaConsumer: runtime.config.kafkaConsumer, admin: () => runtime.clients.admin() },
        subscribe,
      );
    }
    await run();
  } catch (error) {
    await runtime.abandon();
    throw error;
  }
}

function controlsOf(handler: KafkaInboxControl): KafkaInboxControl {
  return {
    close: handler.close,
    commit: handler.commit,
    on: handler.on,
    paused: handler.paused,
    assignment: handler.assignment,
  };
}
