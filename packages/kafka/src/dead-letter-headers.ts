import {
  DEAD_LETTER_HEADERS as CORE_DEAD_LETTER_HEADERS,
  type DeadLetterEntry as CoreDeadLetterEntry,
  DEAD_LETTER_HEADER_PREFIX,
  deadLetterFailure,
  traceHeaders,
  truncateUtf8,
} from '@inboxkit/core/adapter';
import type { KafkaHeaders } from './kafka-client.js';
import type { KafkaInboxMessage } from './kafka-inbox-message.js';

/**
 * The headers of a dead-lettered record, besides the record's own (which are kept): core's
 * common set (reason, error, attempts, message id, consumer, times) plus where the record
 * came from. All values are UTF-8 text; the error message and stack are cut to
 * `maxErrorMessageLength` and `maxStackLength` bytes.
 */
export const DEAD_LETTER_HEADERS = {
  ...CORE_DEAD_LETTER_HEADERS,
  originalTopic: 'x-inboxkit-original-topic',
  originalPartition: 'x-inboxkit-original-partition',
  originalOffset: 'x-inboxkit-original-offset',
  /** The original record's timestamp, milliseconds since the epoch. */
  originalTimestamp: 'x-inboxkit-original-timestamp',
  /** The consumer group (kafkajs `groupId`) that consumed it. */
  consumerGroup: 'x-inboxkit-consumer-group',
  /** The id of the group member that dead-lettered it, when known. */
  memberId: 'x-inboxkit-member-id',
} as const;

/** One record to dead-letter and what became of it. */
export type DeadLetterEntry = CoreDeadLetterEntry<KafkaInboxMessage>;

/** Who dead-letters, for the headers (internal). */
export interface DeadLetterContext {
  readonly groupId: string | undefined;
  readonly memberId: string | undefined;
  /** The inbox's name (`createInbox({ consumer })`). */
  readonly consumer: string;
  readonly maxStackLength: number;
  readonly maxErrorMessageLength: number;
}

/** The dead-letter headers of one record: its own headers, then ours (which win). */
export function deadLetterHeaders(entry: DeadLetterEntry, context: DeadLetterContext, now: Date): KafkaHeaders {
  const { message, outcome } = entry;
  const headers: KafkaHeaders = {};
  for (const [name, value] of Object.entries(message.record.headers ?? {})) {
    // Our headers of an earlier dead-lettering are replaced, but the replay count stays.
    const ours = name.startsWith(DEAD_LETTER_HEADER_PREFIX) && name !== CORE_DEAD_LETTER_HEADERS.replays;
    if (!ours && value !== undefined) headers[name] = value;
  }
  // The trace goes on from the record's process span (docs/telemetry.md).
  const trace = traceHeaders(message);
  if (trace.traceparent !== undefined) delete headers.tracestate;
  Object.assign(headers, trace);
  const failure = deadLetterFailure(outcome, now);
  const H = DEAD_LETTER_HEADERS;
  headers[H.reason] = failure.reason;
  headers[H.errorName] = failure.error.name;
  headers[H.errorMessage] = truncateUtf8(failure.error.message, context.maxErrorMessageLength);
  headers[H.errorStack] = truncateUtf8(failure.error.stack ?? '', context.maxStackLength);
  if (failure.errorCode !== undefined) headers[H.errorCode] = failure.errorCode;
  headers[H.attempts] = String(failure.attempts);
  if (failure.messageId !== undefined) headers[H.messageId] = failure.messageId;
  headers[H.originalTopic] = message.topic;
  headers[H.originalPartition] = String(message.partition);
  headers[H.originalOffset] = message.offset;
  headers[H.originalTimestamp] = message.timestamp;
  if (context.groupId !== undefined) headers[H.consumerGroup] = context.groupId;
  headers[H.consumer] = context.consumer;
  if (context.memberId !== undefined) headers[H.memberId] = context.memberId;
  headers[H.firstSeenAt] = failure.firstSeenAt.toISOString();
  headers[H.failedAt] = now.toISOString();
  return headers;
}
