import { randomUUID } from 'node:crypto';
import type { InboxLogger } from '@inboxkit/core';
import type { AmqpConfirmChannel, AmqpConnection, AmqpDelivery, AmqpPublishOptions } from './amqp-client.js';
import { PublishError } from './publish-error.js';

/** One publish, confirmed by the broker before {@link ConfirmPublisher.publish} resolves. */
export interface PublishRequest {
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  /**
   * With `mandatory: true`, a message no queue takes is returned by the broker and the
   * publish fails (`unroutable`) instead of being confirmed and silently dropped.
   */
  readonly options: AmqpPublishOptions;
}

/**
 * The header a mandatory publish carries with an id of its own: a `basic.return` brings the
 * message back with its headers, and this id names exactly the publish it belongs to. The
 * exchange and routing key cannot: two dead letters to one routing key may differ in
 * routability (a headers exchange, an alternate binding), and the wrong one taken as
 * returned would let the unroutable one count as confirmed and its source be acked.
 */
export const PUBLISH_ID_HEADER = 'x-inboxkit-publish-id';

/** A mandatory publish awaiting its confirm; a `basic.return` for it arrives first. */
interface Unconfirmed {
  readonly publishId: string;
  readonly exchange: string;
  readonly routingKey: string;
  returned: boolean;
}

interface OpenChannel {
  readonly channel: AmqpConfirmChannel;
  readonly connection: AmqpConnection;
  open: boolean;
  /** Mandatory publishes in the order they were sent. */
  readonly unconfirmed: Unconfirmed[];
}

/**
 * Publishes on a confirm channel of the current connection, opened on first use and again
 * after it closed. Every publish waits for the broker's confirm, at most `timeoutMs`
 * (a confirm can hang when the broker goes away, amqplib #530); a channel whose publish
 * timed out is closed and replaced.
 *
 * This channel is never the one deliveries arrive on: its failures (a publish to a missing
 * exchange closes it with 404) cost no unacked delivery.
 */
export class ConfirmPublisher {
  readonly #timeoutMs: number;
  readonly #logger: InboxLogger;
  #connection: AmqpConnection | undefined;
  #channel: Promise<OpenChannel> | undefined;

  constructor(timeoutMs: number, logger: InboxLogger) {
    this.#timeoutMs = timeoutMs;
    this.#logger = logger;
  }

  /** The connection to publish on from now on; `undefined` while there is none. */
  useConnection(connection: AmqpConnection | undefined): void {
    if (connection === this.#connection) return;
    this.#connection = connection;
    const previous = this.#channel;
    this.#channel = undefined;
    if (previous !== undefined)
      void previous.then(
        (open) => this.#discard(open),
        () => {},
      );
  }

  /** Publishes and waits for the confirm. Rejects with {@link PublishError}. */
  publish(request: PublishRequest): Promise<void> {
    const { exchange, routingKey } = request;
    return new Promise<void>((resolve, reject) => {
      let done = false;
      let open: OpenChannel | undefined;
      let entry: Unconfirmed | undefined;
      const finish = (error?: PublishError): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (open !== undefined && entry !== undefined) {
          const index = open.unconfirmed.indexOf(entry);
          if (index >= 0) open.unconfirmed.splice(index, 1);
        }
        if (error === undefined) resolve();
        else reject(error);
      };
      const timer = setTimeout(() => {
        finish(
          new PublishError('timeout', exchange, routingKey, `no confirm from the broker within ${this.#timeoutMs} ms`),
        );
        // The channel may be stuck; later publishes get a fresh one.
        if (open !== undefined) this.#discard(open);
      }, this.#timeoutMs);

      this.#open(exchange, routingKey).then(
        (channel) => {
          if (done) return;
          open = channel;
          let options = request.options;
          if (options.mandatory === true) {
            const publishId = randomUUID();
            options = { ...options, headers: { ...options.headers, [PUBLISH_ID_HEADER]: publishId } };
            entry = { publishId, exchange, routingKey, returned: false };
            channel.unconfirmed.push(entry);
          }
          const sent = entry;
          try {
            channel.channel.publish(exchange, routingKey, request.content, options, (error) => {
              if (error !== null && error !== undefined) {
                const closed = error instanceof Error && error.message === 'channel closed';
                finish(
                  new PublishError(
                    closed ? 'channel_closed' : 'nacked',
                    exchange,
                    routingKey,
                    closed ? 'the channel closed before the broker confirmed' : 'the broker nacked the message',
                    { cause: error },
                  ),
                );
              } else if (sent?.returned === true) {
                finish(
                  new PublishError(
                    'unroutable',
                    exchange,
                    routingKey,
                    'no queue is bound for it (the broker returned it); declare the queue or use assertTopology',
                  ),
                );
              } else {
                finish();
              }
            });
          } catch (error) {
            finish(
              new PublishError('channel_closed', exchange, routingKey, (error as Error).message ?? String(error), {
                cause: error,
              }),
            );
          }
        },
        (error: unknown) => {
          finish(
            error instanceof PublishError
              ? error
              : new PublishError(
                  'channel_closed',
                  exchange,
                  routingKey,
                  `could not open a confirm channel: ${(error as Error)?.message ?? String(error)}`,
                  { cause: error },
                ),
          );
        },
      );
    });
  }

  /** Closes the confirm channel, if one is open. Never throws. */
  async close(): Promise<void> {
    const current = this.#channel;
    this.#channel = undefined;
    this.#connection = undefined;
    if (current === undefined) return;
    try {
      const open = await current;
      if (open.open) {
        open.open = false;
        await open.channel.close();
      }
    } catch {
      // already closed, or never opened
    }
  }

  /** The open confirm channel of the current connection, opened when there is none. */
  async #open(exchange: string, routingKey: string): Promise<OpenChannel> {
    for (let tries = 0; tries < 2; tries++) {
      let pending = this.#channel;
      if (pending === undefined) {
        const connection = this.#connection;
        if (connection === undefined) {
          throw new PublishError('not_connected', exchange, routingKey, 'no connection to the broker at the moment');
        }
        const created = this.#create(connection);
        pending = created;
        this.#channel = created;
        created.catch(() => {
          if (this.#channel === created) this.#channel = undefined;
        });
      }
      const open = await pending;
      if (open.open && open.connection === this.#connection) return open;
      // It closed (or belongs to a previous connection): open another.
      if (this.#channel === pending) this.#channel = undefined;
    }
    throw new PublishError('channel_closed', exchange, routingKey, 'the confirm channel closed as soon as it opened');
  }

  async #create(connection: AmqpConnection): Promise<OpenChannel> {
    const channel = await connection.createConfirmChannel();
    const open: OpenChannel = { channel, connection, open: true, unconfirmed: [] };
    channel.on('error', (error: Error) => {
      this.#logger.warn(
        { err: error },
        'inboxkit: the confirm channel failed; a new one is opened for the next publish',
      );
    });
    channel.on('close', () => {
      open.open = false;
    });
    channel.on('return', (message: AmqpDelivery) => {
      // A return arrives before its publish's confirm; its publish id names the publish.
      const publishId = headerText(message.properties.headers?.[PUBLISH_ID_HEADER]);
      if (publishId !== undefined) {
        const match = open.unconfirmed.find((entry) => entry.publishId === publishId);
        if (match !== undefined) match.returned = true;
        return;
      }
      // Without it (a broker or plugin that drops headers) the publish cannot be told
      // apart: fail every candidate, so an unroutable one is never taken as confirmed (a
      // routable one is published again later, which costs a copy, never a loss).
      this.#logger.warn(
        { exchange: message.fields.exchange, routingKey: message.fields.routingKey },
        `inboxkit: a returned message has no ${PUBLISH_ID_HEADER} header; every publish awaiting a confirm to its exchange and routing key is failed`,
      );
      for (const entry of open.unconfirmed) {
        if (entry.exchange === message.fields.exchange && entry.routingKey === message.fields.routingKey) {
          entry.returned = true;
        }
      }
    });
    return open;
  }

  /** Closes a channel that is not to be used again (its publish timed out, or its connection was replaced). */
  #discard(open: OpenChannel): void {
    if (!open.open) return;
    open.open = false;
    open.channel.close().catch(() => {});
  }
}

function headerText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}
