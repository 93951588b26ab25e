import type { InboxLogger } from '@inboxkit/core';
import type { AmqpChannel } from './amqp-client.js';
import type { Delivery } from './delivery.js';

/**
 * The channel deliveries arrive on, with what the subscription needs to know of it: is it
 * still open (a delivery is acked only on the channel it came on, and only while that
 * channel lives), its consumer tag, and its unsettled deliveries.
 */
export class ConsumerChannel {
  readonly channel: AmqpChannel;
  /** The connection it was opened on. */
  readonly connection: object;
  /** Set when the broker confirmed the consumer; cleared when the consumer is cancelled. */
  consumerTag: string | undefined;
  /** Deliveries received on this channel and not yet acked or nacked. */
  readonly deliveries = new Set<Delivery>();
  /** Resolves (with the channel's error, if any) when the channel has closed. */
  readonly lost: Promise<Error | undefined>;
  #open = true;
  #error: Error | undefined;
  #resolveLost: (error: Error | undefined) => void = () => {};
  readonly #onClosed: (channel: ConsumerChannel, error: Error | undefined) => void;

  constructor(
    channel: AmqpChannel,
    connection: object,
    logger: InboxLogger,
    onClosed: (channel: ConsumerChannel, error: Error | undefined) => void,
  ) {
    this.channel = channel;
    this.connection = connection;
    this.#onClosed = onClosed;
    this.lost = new Promise((resolve) => {
      this.#resolveLost = resolve;
    });
    // Without an 'error' listener, amqplib's emitter would throw and crash the process.
    channel.on('error', (error: Error) => {
      this.#error = error;
      logger.warn({ err: error }, 'inboxkit: the consumer channel failed');
    });
    channel.on('close', () => this.markClosed(this.#error));
  }

  /** False once the channel closed or is closing: its deliveries can no longer be acked. */
  get open(): boolean {
    return this.#open;
  }

  /** Records that the channel is gone (its 'close' event, its connection's, or our own close). */
  markClosed(error?: Error): void {
    if (!this.#open) return;
    this.#open = false;
    this.consumerTag = undefined;
    this.#onClosed(this, error);
    this.#resolveLost(error);
  }
}
