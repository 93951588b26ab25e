// @inboxkit/core: the public API, listed. Anything not exported here is internal.

export {
  DEAD_LETTER_HEADER_PREFIX,
  DEAD_LETTER_HEADERS,
  type DeadLetterFailure,
  deadLetterFailure,
} from './dead-letter.js';
export { databaseFailure } from './error-classification.js';
export {
  ConfigurationError,
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
  toError,
} from './errors.js';
export type {
  DeadLetterReason,
  InboxEventName,
  InboxEvents,
  InboxListener,
  RetryLaterReason,
  StoredStatus,
} from './events.js';
export { SafeEmitter } from './events.js';
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
export type { InboxConfig, InboxIsolationLevel, InboxOptions } from './inbox-options.js';
export type { InboxLogger } from './logger.js';
export { type InboxSchemaOptions, inboxMigrations, inboxSchemaSql, migrateInbox } from './migrations.js';
export { bool, checkLogger, positiveInteger } from './option-checks.js';
export {
  type ConflictOutcome,
  type DeadLetterOutcome,
  type DuplicateOutcome,
  isSettled,
  type ProcessedOutcome,
  type ProcessOutcome,
  type RetryLaterOutcome,
} from './outcome.js';
export {
  type RetryDecisionContext,
  type RetryOptions,
  type RetryPolicy,
  retryDelayMs,
  retrySpanMs,
} from './retry-policy.js';
export { retryUntilReady, type StartupRetry, type StartupWaitOptions, waitForDatabase } from './wait-for-database.js';
