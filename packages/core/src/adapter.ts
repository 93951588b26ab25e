/**
 * `@inboxkit/core/adapter`: **for adapter authors.** What the broker and HTTP adapters
 * (`@inboxkit/kafka`, `@inboxkit/rabbitmq`, `@inboxkit/http`) need and an application does
 * not. An adapter only translates: a broker message in, an `InboxMessage` out; an outcome
 * in, the broker's ack, commit, publish or hand-back out (docs/design.md, "Adapters").
 *
 * Its contents may change between minor versions while the project is 0.x: applications
 * should import from `@inboxkit/core` and the adapter packages instead.
 *
 * @module @inboxkit/core/adapter
 */

export { type Backoff, type BackoffOptions, backoffDelayMs, compileBackoff } from './backoff.js';
export {
  DEAD_LETTER_HEADER_PREFIX,
  DEAD_LETTER_HEADERS,
  type DeadLetterFailure,
  deadLetterFailure,
} from './dead-letter.js';
export { databaseFailure } from './error-classification.js';
export { toError } from './errors.js';
export { SafeEmitter } from './events.js';
export type { FenceRunner, TransactionFence } from './fence.js';
export { forgetExpiredKey } from './forget-expired-key.js';
export { checkIdentifier, type InboxTables, quoteIdentifier } from './identifiers.js';
export { inboxConfig, inboxTelemetry } from './inbox.js';
export type { InboxConfig } from './inbox-options.js';
export { loggerWith, logHandled, type MessageLogFields, outcomeLogFields } from './log-fields.js';
export { type MigrationSet, runMigrations } from './migration-runner.js';
export { bool, checkLogger, positiveInteger } from './option-checks.js';
export {
  createOutboxRelay,
  type OutboxPublish,
  type OutboxRelayEngineOptions,
  relayOptions,
} from './outbox/outbox-relay.js';
export { isSettled } from './outcome.js';
export { retryDelayMs, retrySpanMs } from './retry-policy.js';
export {
  asDeadLetter,
  type DeadLetterEntry,
  type DeadLetterRecorder,
  type HandBackReason,
  invalidMessageOutcome,
  type Settlement,
  type SettleOutcomeSteps,
  type SettleOutcomesSteps,
  settleOutcome,
  settleOutcomes,
} from './settle-outcome.js';
export { transactionSettings } from './sql/claim-message.js';
export type { InboxTelemetry } from './telemetry/inbox-telemetry.js';
export type { TelemetryConfig } from './telemetry/telemetry-options.js';
export { traceHeaders } from './telemetry/trace-context.js';
export type {
  BatchTrace,
  CarrierHeaders,
  MessageSource,
  MessageTrace,
  SpanAttributes,
} from './telemetry/trace-types.js';
export { truncateUtf8 } from './truncate.js';
