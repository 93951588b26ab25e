/**
 * `@inboxkit/kafka`: effectively-once kafkajs consumers on the inbox
 * ({@link runInboxConsumer}, or the wrappers {@link inboxEachMessage} and
 * {@link inboxEachBatch}), and the outbox relay to Kafka ({@link createKafkaRelay}).
 *
 * The public API, listed. Anything not exported here is internal.
 *
 * @module @inboxkit/kafka
 */

export type { BackoffOptions } from '@inboxkit/core/adapter';
export { DEAD_LETTER_HEADER_PREFIX } from '@inboxkit/core/adapter';
export { DEAD_LETTER_HEADERS } from './dead-letter-headers.js';
export type { KafkaRecordContext, ValueDecoding } from './decode.js';
export {
  type InboxEachBatchHandler,
  type InboxEachBatchOptions,
  inboxEachBatch,
  type KafkaBulkHandler,
} from './inbox-each-batch.js';
export {
  type InboxEachMessageHandler,
  type InboxEachMessageOptions,
  inboxEachMessage,
  type KafkaMessageHandler,
} from './inbox-each-message.js';
export type {
  KafkaAdmin,
  KafkaBatch,
  KafkaClient,
  KafkaCommittedOffset,
  KafkaConsumer,
  KafkaEachBatchPayload,
  KafkaEachMessagePayload,
  KafkaGroupJoinEvent,
  KafkaHeaders,
  KafkaOffsetCommit,
  KafkaProducedRecord,
  KafkaProducer,
  KafkaProducerConfig,
  KafkaRecord,
  KafkaRunConfig,
  KafkaTopicConfig,
  KafkaTopicPartitions,
} from './kafka-client.js';
export type { CloseOptions, KafkaInboxControl } from './kafka-inbox-control.js';
export type {
  KafkaInboxEventName,
  KafkaInboxEvents,
  KafkaInboxListener,
  PausedPartition,
  PauseReason,
} from './kafka-inbox-events.js';
export type { KafkaInboxMessage } from './kafka-inbox-message.js';
export type { KafkaDedup, KafkaInboxOptions, TopologyOptions } from './kafka-inbox-options.js';
export { createKafkaRelay, type KafkaRelayOptions, MESSAGE_ID_HEADER } from './kafka-relay.js';
export {
  type KafkaStartupRetry,
  type KafkaStartupStep,
  type KafkaSubscribeOptions,
  KafkaUnavailableError,
} from './kafka-startup.js';
export type { MessageIdFunction, MessageIdSource } from './message-id.js';
export {
  type KafkaOffsetTableOptions,
  kafkaOffsetsMigrations,
  kafkaOffsetsSchemaSql,
  migrateKafkaOffsets,
} from './offset-table.js';
export { PublishError, type PublishFailure } from './publish-error.js';
export { type RunInboxConsumerOptions, runInboxConsumer } from './run-inbox-consumer.js';
