import {
  DEAD_LETTER_HEADERS as CORE_DEAD_LETTER_HEADERS,
  type DeadLetterFailure,
  truncateUtf8,
} from '@inboxkit/core/adapter';
import type { AmqpDelivery, AmqpPublishOptions } from './amqp-client.js';

/**
 * The headers a dead-lettered message carries, all prefixed `x-inboxkit-`: core's common
 * set (reason, error, attempts, message id, consumer, times) plus where the message came
 * from. The message keeps its content, its properties (but `expiration`) and its own
 * headers besides these. The error message is cut to 1 KiB and the stack to 4 KiB of UTF-8.
 */
export const DEAD_LETTER_HEADERS = {
  ...CORE_DEAD_LETTER_HEADERS,
  /** The exchange the message was first published to (`''` for the default exchange). */
  originalExchange: 'x-inboxkit-original-exchange',
  /** The routing key it was first published with. */
  originalRoutingKey: 'x-inboxkit-original-routing-key',
  /** The queue it was consumed from. */
  originalQueue: 'x-inboxkit-original-queue',
  /** Broker-delayed retries done so far (set on messages going through the retry queue). */
  retries: 'x-inboxkit-retries',
} as const;

const STACK_LIMIT_BYTES = 4096;
const MESSAGE_LIMIT_BYTES = 1024;

/** What is known of a failure when the message is dead-lettered. */
export interface FailureInfo extends DeadLetterFailure {
  readonly failedAt: Date;
  readonly consumer: string;
  readonly queue: string;
}

/**
 * The exchange and routing key the message was first published with: a message that went
 * through the retry queue arrives from the default exchange, so the original ones travel in
 * our own headers.
 */
export function originalAddress(delivery: AmqpDelivery): { exchange: string; routingKey: string } {
  const headers = delivery.properties.headers;
  const exchange = headers?.[DEAD_LETTER_HEADERS.originalExchange];
  const routingKey = headers?.[DEAD_LETTER_HEADERS.originalRoutingKey];
  if (typeof exchange === 'string' && typeof routingKey === 'string') return { exchange, routingKey };
  return { exchange: delivery.fields.exchange, routingKey: delivery.fields.routingKey };
}

/** The failure headers of a dead-lettered message. */
export function failureHeaders(delivery: AmqpDelivery, info: FailureInfo): Record<string, unknown> {
  const original = originalAddress(delivery);
  return {
    [DEAD_LETTER_HEADERS.reason]: info.reason,
    [DEAD_LETTER_HEADERS.errorName]: info.error.name,
    [DEAD_LETTER_HEADERS.errorMessage]: truncateUtf8(info.error.message, MESSAGE_LIMIT_BYTES),
    [DEAD_LETTER_HEADERS.errorStack]: truncateUtf8(info.error.stack ?? '', STACK_LIMIT_BYTES),
    [DEAD_LETTER_HEADERS.errorCode]: info.errorCode,
    [DEAD_LETTER_HEADERS.attempts]: info.attempts,
    [DEAD_LETTER_HEADERS.messageId]: info.messageId,
    [DEAD_LETTER_HEADERS.originalExchange]: original.exchange,
    [DEAD_LETTER_HEADERS.originalRoutingKey]: original.routingKey,
    [DEAD_LETTER_HEADERS.originalQueue]: info.queue,
    [DEAD_LETTER_HEADERS.consumer]: info.consumer,
    [DEAD_LETTER_HEADERS.firstSeenAt]: info.firstSeenAt.toISOString(),
    [DEAD_LETTER_HEADERS.failedAt]: info.failedAt.toISOString(),
  };
}

/**
 * Publish options that carry a delivery's properties on (content type, message id,
 * correlation id, its headers merged with `headers`...), persistent, without `expiration`
 * (a dead letter must not expire) and without `userId` (the broker refuses one that is not
 * the connection's user).
 */
export function republishOptions(
  delivery: AmqpDelivery,
  headers: Record<string, unknown>,
  overrides: AmqpPublishOptions = {},
): AmqpPublishOptions {
  const p = delivery.properties;
  const merged: Record<string, unknown> = { ...(p.headers ?? {}) };
  for (const [key, value] of Object.entries(headers)) {
    if (value !== undefined) merged[key] = value;
  }
  return {
    contentType: asString(p.contentType),
    contentEncoding: asString(p.contentEncoding),
    correlationId: asString(p.correlationId),
    replyTo: asString(p.replyTo),
    messageId: asString(p.messageId),
    type: asString(p.type),
    appId: asString(p.appId),
    timestamp: typeof p.timestamp === 'number' ? p.timestamp : undefined,
    priority: typeof p.priority === 'number' ? p.priority : undefined,
    persistent: true,
    headers: merged,
    ...overrides,
  };
}

function asString(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}
