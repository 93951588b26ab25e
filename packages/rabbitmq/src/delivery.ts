import type { InboxLogger, ProcessOutcome } from '@inboxkit/core';
import type { AmqpDelivery } from './amqp-client.js';
import type { ConsumerChannel } from './consumer-channel.js';

/**
 * One delivery and its settlement. It is acked or nacked exactly once (a second ack of
 * the same delivery tag makes the broker close the channel), and only on the channel it
 * came on while that channel is open: after the channel died the delivery is abandoned,
 * the broker delivers it again and the inbox finds it a duplicate (acking it on a new
 * channel would close that one too, 406 unknown delivery tag, amqplib #271).
 */
export class Delivery {
  readonly raw: AmqpDelivery;
  readonly source: ConsumerChannel;
  /** The message id, once it was read. */
  id: string | undefined;
  /** What became of it, once decided (for its span, docs/telemetry.md). */
  outcome: ProcessOutcome | undefined;
  #settled = false;
  #finished = false;
  readonly #logger: InboxLogger;

  constructor(raw: AmqpDelivery, source: ConsumerChannel, logger: InboxLogger) {
    this.raw = raw;
    this.source = source;
    this.#logger = logger;
    source.deliveries.add(this);
  }

  get settled(): boolean {
    return this.#settled;
  }

  /** True once it was acked, or rejected without requeue: the broker forgot it. */
  get finished(): boolean {
    return this.#finished;
  }

  /** True while the delivery can still be acked (its channel is open). */
  get live(): boolean {
    return !this.#settled && this.source.open;
  }

  /** Acks it. Returns false when nothing was sent (already settled, or its channel is gone). */
  ack(): boolean {
    return (this.#finished = this.#settle('ack', (channel) => channel.ack(this.raw)));
  }

  /** Nacks it, back to the queue (`requeue`) or to the queue's dead-letter exchange. */
  nack(requeue: boolean): boolean {
    const sent = this.#settle(requeue ? 'nack-requeue' : 'nack', (channel) => channel.nack(this.raw, false, requeue));
    this.#finished = sent && !requeue;
    return sent;
  }

  /** Gives it up without a word to the broker: its channel died, the broker redelivers it. */
  abandon(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.source.deliveries.delete(this);
  }

  #settle(action: string, send: (channel: ConsumerChannel['channel']) => void): boolean {
    if (this.#settled) {
      this.#logger.error(
        { messageId: this.id, deliveryTag: this.raw.fields.deliveryTag, action },
        'inboxkit: a delivery was about to be settled twice; ignored',
      );
      return false;
    }
    this.#settled = true;
    this.source.deliveries.delete(this);
    if (!this.source.open) {
      this.#logger.debug(
        { messageId: this.id, deliveryTag: this.raw.fields.deliveryTag, action },
        'inboxkit: the channel of this delivery is gone; the broker will redeliver it',
      );
      return false;
    }
    try {
      send(this.source.channel);
      return true;
    } catch (error) {
      // amqplib throws once the channel is closing; the broker redelivers the message.
      this.#logger.debug({ err: error, messageId: this.id, action }, 'inboxkit: could not settle a delivery');
      return false;
    }
  }
}
