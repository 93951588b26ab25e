import {
  DEAD_LETTER_HEADERS as CORE_DEAD_LETTER_HEADERS,
  type DeadLetterEntry as CoreDeadLetterEntry,
  DEAD_LETTER_HEADER_PREFIX,
  deadLetterFailure,
  traceHeaders,
  truncateUtf8,
} from '@inboxkit/core/adapter';
import type { KafkaHeaders, KafkaProducedRecord, KafkaProducer } from './kafka-client.js';
import type { KafkaInboxMessage } from './kafka-inbox-message.js';
import { PublishError } from './publish-error.js';

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
  /** The consumer group that consumed it. */
  consumerGroup: 'x-inboxkit-consumer-group',
  /** The group member id of the consumer that dead-lettered it, when known. */
  memberId: 'x-inboxkit-member-id',
} as const;

/** One record to dead-letter and what became of it. */
export type DeadLetterEntry = CoreDeadLetterEntry<KafkaInboxMessage>;

/** Who dead-letters, for the headers. */
export interface DeadLetterContext {
  readonly groupId: string | undefined;
  readonly memberId: string | undefined;
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

/** Options of {@link publishDeadLetters}. */
export interface DeadLetterPublishOptions {
  readonly producer: KafkaProducer;
  readonly topicFor: (topic: string) => string;
  readonly timeoutMs: number;
  readonly context: DeadLetterContext;
}

/**
 * Publishes records to their dead-letter topics (one `send` per topic) and resolves once the
 * broker acknowledged all of them (with the producer's acks: kafkajs sends with `acks: -1`,
 * every in-sync replica, unless told otherwise). Rejects with {@link PublishError}:
 * the caller must then not move the offsets.
 */
export async function publishDeadLetters(
  entries: readonly DeadLetterEntry[],
  options: DeadLetterPublishOptions,
): Promise<Map<DeadLetterEntry, string>> {
  const now = new Date();
  const byTopic = new Map<string, { entries: DeadLetterEntry[]; records: KafkaProducedRecord[] }>();
  const topics = new Map<DeadLetterEntry, string>();
  for (const entry of entries) {
    const topic = options.topicFor(entry.message.topic);
    topics.set(entry, topic);
    let group = byTopic.get(topic);
    if (group === undefined) {
      group = { entries: [], records: [] };
      byTopic.set(topic, group);
    }
    group.entries.push(entry);
    group.records.push({
      key: entry.message.key,
      value: entry.message.payload,
      headers: deadLetterHeaders(entry, options.context, now),
      timestamp: entry.message.timestamp,
    });
  }
  for (const [topic, group] of byTopic) {
    // No per-send `acks`: kafkajs' default is -1 (every in-sync replica), and clients that
    // take acks only in the producer's configuration reject it here.
    await withTimeout(options.producer.send({ topic, messages: group.records }), options.timeoutMs, topic);
  }
  return topics;
}

async function withTimeout(send: Promise<unknown>, timeoutMs: number, topic: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new PublishError(
            topic,
            `Publishing to dead-letter topic ${JSON.stringify(topic)} was not acknowledged within deadLetterTimeoutMs (${timeoutMs} ms).`,
          ),
        ),
      timeoutMs,
    );
  });
  try {
    await Promise.race([send, timeout]);
  } catch (error) {
    if (error instanceof PublishError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new PublishError(topic, `Publishing to dead-letter topic ${JSON.stringify(topic)} failed: ${reason}`, {
      cause: error,
    });
  } finally {
    clearTimeout(timer);
  }
}
