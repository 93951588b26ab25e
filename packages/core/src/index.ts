/**
 * `@inboxkit/core`: the inbox ({@link createInbox}, {@link migrateInbox}), the outbox
 * ({@link createOutbox}, {@link migrateOutbox}), their options, outcomes, events and errors.
 * This is what an application imports; the broker packages build on it.
 *
 * The public API, listed: what adapters need besides is on `@inboxkit/core/adapter`;
 * anything exported from neither is internal.
 *
 * @module @inboxkit/core
 */

export {
  ConfigurationError,
  ConnectionBusyError,
  CrashLoopError,
  DatabaseUnavailableError,
  HandlerError,
  HandlerTimeoutError,
  hasCode,
  InboxError,
  InvalidMessageError,
  LockTimeoutError,
  NonRetryableError,
  PayloadConflictError,
} from './errors.js';
export type {
  DeadLetterReason,
  InboxEventName,
  InboxEvents,
  InboxListener,
  RetryLaterReason,
  StoredStatus,
} from './events.js';
export type { Payload } from './fingerprint.js';
export {
  type BatchHandler,
  type BatchOptions,
  type BatchResult,
  createInbox,
  type HandlerContext,
  Inbox,
  type MessageHandler,
  type ProcessOptions,
  type PurgeOptions,
  type PurgeResult,
  type StoredMessage,
} from './inbox.js';
export type { InboxMessage } from './inbox-message.js';
export type { InboxIsolationLevel, InboxOptions } from './inbox-options.js';
export type { InboxLogger } from './logger.js';
export {
  type InboxSchemaOptions,
  inboxMigrations,
  inboxPartitionSql,
  inboxSchemaSql,
  type MigrateInboxOptions,
  migrateInbox,
} from './migrations.js';
export {
  createOutbox,
  type FailedOutboxMessage,
  Outbox,
  type OutboxBacklog,
  type OutboxOptions,
} from './outbox/outbox.js';
export { BrokerUnavailableForRelayError, InvalidOutboxMessageError } from './outbox/outbox-errors.js';
export type { ListenClient, ListenOptions, ListenPool } from './outbox/outbox-listener.js';
export type {
  OutboxExchangeMessage,
  OutboxMessage,
  OutboxTopicMessage,
} from './outbox/outbox-message.js';
export {
  type OutboxRecord,
  OutboxRelay,
  type OutboxRelayOptions,
  type RelayRetryOptions,
} from './outbox/outbox-relay.js';
export type {
  OutboxRelayEventName,
  OutboxRelayEvents,
  OutboxRelayListener,
  RelayPauseReason,
} from './outbox/outbox-relay-events.js';
export { migrateOutbox, type OutboxSchemaOptions, outboxMigrations, outboxSchemaSql } from './outbox/outbox-schema.js';
export type {
  ConflictOutcome,
  DeadLetterOutcome,
  DuplicateOutcome,
  ProcessedOutcome,
  ProcessOutcome,
  RetryLaterOutcome,
} from './outcome.js';
export type { PartitionOptions } from './partition-options.js';
export { payloadHashId } from './payload-id.js';
export type {
  RetryDecisionContext,
  RetryOptions,
  RetryPolicy,
} from './retry-policy.js';
export type { TelemetryOptions } from './telemetry/telemetry-options.js';
export {
  type RetryUntilReadyRules,
  retryUntilReady,
  type StartupRetry,
  type StartupWaitOptions,
  waitForDatabase,
} from './wait-for-database.js';
