import type { BatchHandler, HandlerContext, InboxMessage } from '@inboxkit/core';
import type { Transaction } from 'kysely';
import type { AmqpDeliveryFields, AmqpMessageProperties } from './amqp-client.js';

/**
 * A delivery as the handler sees it: the broker's message with its id and decoded body.
 * It is also the {@link InboxMessage} the inbox keys and fingerprints (`payload` is the
 * raw content).
 */
export interface RabbitMessage<T = unknown> extends InboxMessage {
  /**
   * The message id: `properties.messageId`, else the id header, else `messageId.from()`, else
   * (with `messageId.fallback: 'payload-hash'`) `sha256:` and the content's hex SHA-256.
   */
  readonly id: string;
  /** The raw content, fingerprinted by the inbox to tell a duplicate from a reused id. */
  readonly payload: Buffer;
  /** The raw content (same as `payload`). */
  readonly content: Buffer;
  /** The content as the `decode` option turned it. */
  readonly body: T;
  /** The message's properties, as amqplib decoded them. */
  readonly properties: AmqpMessageProperties;
  /** Where the delivery came from: delivery tag, exchange, routing key, redelivered flag. */
  readonly fields: AmqpDeliveryFields;
  /** `properties.headers`, or an empty object. */
  readonly headers: Readonly<Record<string, unknown>>;
  /** The broker says it may have delivered this message before. */
  readonly redelivered: boolean;
  /** A quorum queue's `x-delivery-count` (how often it came back), else 0. */
  readonly deliveryCount: number;
  /** The queue it was consumed from. */
  readonly queue: string;
}

/**
 * Handles one message inside the inbox's transaction. Every write made through `trx`
 * commits together with the message's key, or not at all; the delivery is acked only after
 * that commit. What it returns is stored and sent as the reply of a request (a message
 * with `replyTo` and `correlationId`), also to a duplicate of that request.
 */
export type RabbitHandler<DB, T, R> = (
  trx: Transaction<DB>,
  message: RabbitMessage<T>,
  context: HandlerContext,
) => Promise<R> | R;

/**
 * Handles all of a batch's *new* deliveries at once (duplicates removed, also within the
 * batch), inside the batch's transaction, typically with one bulk statement. May return
 * one result per message, in order: each is stored and sent as that request's reply.
 * A throw makes the batch run again one message at a time (each a one-message array) to
 * find the failing one; the others commit.
 */
export type RabbitBulkHandler<DB, T, R> = BatchHandler<DB, RabbitMessage<T>, R>;
