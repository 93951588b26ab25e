/**
 * `@inboxkit/rabbitmq`: effectively-once amqplib consumers on the inbox ({@link subscribe}),
 * and the outbox relay to RabbitMQ ({@link createRabbitRelay}).
 *
 * The public API, listed. Anything not exported here is internal.
 *
 * @module @inboxkit/rabbitmq
 */

export type { BackoffOptions } from '@inboxkit/core/adapter';
export { DEAD_LETTER_HEADER_PREFIX } from '@inboxkit/core/adapter';
export type {
  AmqpAssertQueueOptions,
  AmqpChannel,
  AmqpConfirmChannel,
  AmqpConnection,
  AmqpDelivery,
  AmqpDeliveryFields,
  AmqpMessageProperties,
  AmqpPublishOptions,
} from './amqp-client.js';
export { BrokerUnavailableError } from './broker-unavailable-error.js';
export { DEAD_LETTER_HEADERS } from './dead-letter-headers.js';
export type { Decode } from './decode.js';
export { REPLY_HEADERS } from './delivery-processor.js';
export type { MessageIdOptions } from './message-id.js';
export { PublishError, type PublishFailure } from './publish-error.js';
export type { RabbitBulkHandler, RabbitHandler, RabbitMessage } from './rabbit-message.js';
export { createRabbitRelay, type RabbitRelayOptions } from './rabbit-relay.js';
export { subscribe } from './subscribe.js';
export type {
  DeadLetterTarget,
  DelayedRetryOptions,
  SubscribeOptions,
  TopologyOptions,
} from './subscribe-options.js';
export { type ReadyOptions, Subscription, type SubscriptionState } from './subscription.js';
export type {
  RequeueReason,
  SubscriptionEventName,
  SubscriptionEvents,
  SubscriptionListener,
} from './subscription-events.js';
