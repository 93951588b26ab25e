import type { DeadLetterReason, InboxLogger, RetryLaterReason } from '@inboxkit/core';
import { SafeEmitter } from '@inboxkit/core/adapter';

/** Why a delivery was handed back to the queue (nack with requeue) instead of being acked. */
export type RequeueReason = RetryLaterReason | 'publish_failed' | 'unexpected_error';

/** The events a subscription emits, each with one payload object. */
export interface SubscriptionEvents {
  /** Consuming (again): a connection and channel are open, prefetch set, the consumer registered. */
  connected: { queue: string; consumerTag: string };
  /** The connection or channel was lost (or could not be opened); the next attempt follows after `delayMs`. */
  reconnecting: { queue: string; attempt: number; delayMs: number; error: Error | undefined };
  /** The broker cancelled the consumer (queue deleted, failover); it is registered again. */
  consumerCancelled: { queue: string };
  /** A message was published to the dead-letter destination (or nacked to the queue's dead-letter exchange) and acked. */
  deadLettered: { messageId: string | undefined; reason: DeadLetterReason; exchange: string; routingKey: string };
  /** A failed message was sent through the retry queue; it comes back after `delayMs`. */
  retryScheduled: { messageId: string; retry: number; delayMs: number };
  /** A delivery was nacked with requeue after `delayMs`, to be delivered again. */
  requeued: { messageId: string | undefined; reason: RequeueReason; delayMs: number; error: Error | undefined };
  /** Something went wrong that the subscription recovers from on its own; for monitoring. */
  error: { error: Error; during: string };
  /** `close()` finished. */
  closed: { queue: string };
}

/** The name of a subscription event (see {@link SubscriptionEvents}). */
export type SubscriptionEventName = keyof SubscriptionEvents;
/** A listener of the event `E`, called with its payload. */
export type SubscriptionListener<E extends SubscriptionEventName> = (payload: SubscriptionEvents[E]) => void;

/** The subscription's emitter: core's, with the subscription's events. */
export class SubscriptionEmitter extends SafeEmitter<SubscriptionEvents> {
  constructor(logger: InboxLogger) {
    super(
      [
        'connected',
        'reconnecting',
        'consumerCancelled',
        'deadLettered',
        'retryScheduled',
        'requeued',
        'error',
        'closed',
      ],
      logger,
      'subscription',
    );
  }
}
