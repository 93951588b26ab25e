import { ConfigurationError, type InboxLogger } from '@inboxkit/core';
import { backoffDelayMs, loggerWith, toError } from '@inboxkit/core/adapter';
import type { AmqpConnection, AmqpDelivery } from './amqp-client.js';
import { BrokerUnavailableError } from './broker-unavailable-error.js';
import { ConfirmPublisher } from './confirm-publisher.js';
import { ConsumerChannel } from './consumer-channel.js';
import { Delivery } from './delivery.js';
import { DeliveryProcessor } from './delivery-processor.js';
import { OwnRequeues } from './own-requeues.js';
import { sleep } from './sleep.js';
import type { SubscriptionConfig } from './subscribe-options.js';
import { SubscriptionEmitter, type SubscriptionEventName, type SubscriptionListener } from './subscription-events.js';
import { assertTopology } from './topology.js';

/**
 * Where a subscription stands:
 * - `connecting`: opening its first connection;
 * - `connected`: consuming;
 * - `reconnecting`: the connection or channel was lost, or could not be opened; trying again after a backoff;
 * - `closing`: `close()` was called and is draining;
 * - `closed`: done; it will not consume again.
 */
export type SubscriptionState = 'connecting' | 'connected' | 'reconnecting' | 'closing' | 'closed';

/** Options of {@link Subscription.ready}. */
export interface ReadyOptions {
  /** Gives up waiting after this many milliseconds (`BrokerUnavailableError`). Default: no limit. */
  readonly timeoutMs?: number;
  /** Gives up waiting when it aborts, with its reason. */
  readonly signal?: AbortSignal;
}

/** A connection of ours and whether it still lives. */
interface LiveConnection {
  readonly connection: AmqpConnection;
  open: boolean;
}

/**
 * A queue consumer whose handler's effects happen once per message id. Made by
 * {@link subscribe}; it connects, consumes and reconnects on its own until {@link close}.
 *
 * Reconnection is written here rather than borrowed from amqp-connection-manager or
 * amqplib's recovery because it needs control of what they hide (docs/design.md, "Clients"): a delivery is acked
 * only on the channel it came on (never on its replacement), prefetch and the consumer are
 * set up again on every new channel, and a consumer cancelled by `close()` stays cancelled.
 */
export class Subscription {
  /** The consumed queue. */
  readonly queue: string;
  readonly #config: SubscriptionConfig<unknown, unknown, unknown>;
  readonly #events: SubscriptionEmitter;
  readonly #publisher: ConfirmPublisher;
  readonly #processor: DeliveryProcessor<unknown, unknown, unknown>;
  readonly #ownRequeues = new OwnRequeues();
  readonly #abort = new AbortController();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #ready: Promise<void>;
  readonly #loop: Promise<void>;
  #resolveReady: () => void = () => {};
  #rejectReady: (error: Error) => void = () => {};
  #state: SubscriptionState = 'connecting';
  #connection: LiveConnection | undefined;
  #channel: ConsumerChannel | undefined;
  #closing: Promise<void> | undefined;
  /** Why the last connection attempt failed or the last channel was lost, for `ready({ timeoutMs })`. */
  #lastError: Error | undefined;
  readonly #logger: InboxLogger;

  /** @internal Use {@link subscribe}. */
  constructor(config: SubscriptionConfig<unknown, unknown, unknown>) {
    this.queue = config.queue;
    this.#config = config;
    // Every line of the subscription names the inbox too (docs/telemetry.md, "Logging");
    // the delivery processor names it itself.
    this.#logger = loggerWith(config.logger, { consumer: config.consumer });
    this.#events = new SubscriptionEmitter(this.#logger);
    this.#publisher = new ConfirmPublisher(config.publishTimeoutMs, this.#logger);
    this.#processor = new DeliveryProcessor(
      config,
      this.#publisher,
      this.#events,
      this.#ownRequeues,
      this.#abort.signal,
    );
    this.#ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.#ready.catch(() => {}); // nobody may be waiting for it
    this.#loop = this.#run();
  }

  /** Where the subscription stands; see {@link SubscriptionState}. */
  get state(): SubscriptionState {
    return this.#state;
  }

  /** Deliveries being handled right now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Resolves once the subscription consumes for the first time; rejects if it is closed
   * before. It keeps trying to connect meanwhile (with the `reconnect` backoff), however
   * long the broker is away: a consumer started during an outage comes up with the broker.
   *
   * With `timeoutMs`, rejects with {@link BrokerUnavailableError} (the last connection error
   * as `cause`) if it is not consuming by then; with `signal`, with the signal's reason when
   * it aborts. Either way the subscription goes on trying: `close()` it to stop.
   */
  ready(options: ReadyOptions = {}): Promise<void> {
    const { timeoutMs, signal } = options;
    if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0)) {
      return Promise.reject(
        new ConfigurationError(
          `Expected \`timeoutMs\` to be a number of milliseconds of at least 0, got ${String(timeoutMs)}.`,
        ),
      );
    }
    if (timeoutMs === undefined && signal === undefined) return this.#ready;
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => finish(() => reject(signal?.reason));
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        settle();
      };
      if (signal?.aborted === true) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined && Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          const last = this.#lastError;
          finish(() =>
            reject(
              new BrokerUnavailableError(
                this.queue,
                `Not consuming from queue ${JSON.stringify(this.queue)} within ${timeoutMs} ms` +
                  (last === undefined ? '.' : `; the last error: ${last.message}`),
                last === undefined ? undefined : { cause: last },
              ),
            ),
          );
        }, timeoutMs);
      }
      this.#ready.then(
        () => finish(resolve),
        (error: unknown) => finish(() => reject(error)),
      );
    });
  }

  /** Adds an event listener; returns a function that removes it. A throwing listener is logged, never rethrown. */
  on<E extends SubscriptionEventName>(event: E, listener: SubscriptionListener<E>): () => void {
    return this.#events.on(event, listener);
  }

  /** Removes an event listener. */
  off<E extends SubscriptionEventName>(event: E, listener: SubscriptionListener<E>): void {
    this.#events.off(event, listener);
  }

  /**
   * Stops for good: cancels the consumer (no new deliveries), waits for the deliveries in
   * flight to finish and be acked (at most `drainTimeoutMs`; those still running are
   * redelivered later and deduplicated), then closes the channels and the connection.
   * Every step runs even when an earlier one failed; failures are logged and reported as
   * `error` events, never thrown. Calling it again returns the same promise.
   *
   * It closes only what the subscription opened: the inbox's database pool is the caller's
   * (and may be shared), and keeps the process alive until it is closed too.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  // ---------------------------------------------------------------------------------------
  // Connecting and reconnecting
  // ---------------------------------------------------------------------------------------

  get #stopping(): boolean {
    return this.#abort.signal.aborted;
  }

  /** Opens a connection and a consuming channel, waits until they are lost, backs off, again. */
  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stopping) {
      let error: Error | undefined;
      try {
        const channel = await this.#open();
        failures = 0;
        error = await channel.lost;
      } catch (thrown) {
        error = toError(thrown);
      }
      if (this.#stopping) break;
      this.#lastError = error;
      failures++;
      const delayMs = backoffDelayMs(this.#config.reconnect, failures);
      this.#state = 'reconnecting';
      this.#logger.warn(
        { err: error, queue: this.queue, attempt: failures, delayMs },
        'inboxkit: not consuming; reconnecting after a backoff',
      );
      this.#events.emit('reconnecting', { queue: this.queue, attempt: failures, delayMs, error });
      await sleep(delayMs, this.#abort.signal);
    }
  }

  /** A consuming channel: on the current connection if it lives, else on a new one. */
  async #open(): Promise<ConsumerChannel> {
    let live = this.#connection;
    if (live === undefined || !live.open) live = await this.#connect();
    this.#throwIfStopping();
    const consumer = new ConsumerChannel(await live.connection.createChannel(), live, this.#logger, (channel, error) =>
      this.#channelClosed(channel, error),
    );
    this.#channel = consumer;
    try {
      this.#throwIfStopping();
      await consumer.channel.prefetch(this.#config.prefetch);
      const topology = this.#config.topology;
      if (topology !== undefined) {
        await assertTopology(consumer.channel, {
          queue: this.queue,
          options: topology,
          deadLetter: this.#config.deadLetter,
          retryQueue: this.#config.delayedRetry?.queue,
        });
      }
      this.#throwIfStopping();
      await this.#consume(consumer);
      this.#throwIfStopping();
    } catch (error) {
      await closeChannel(consumer, this.#config.publishTimeoutMs);
      throw error;
    }
    return consumer;
  }

  async #connect(): Promise<LiveConnection> {
    const connection = await this.#config.connect();
    const live: LiveConnection = { connection, open: true };
    // Without an 'error' listener, amqplib's emitter would throw and crash the process.
    connection.on('error', (error: Error) => {
      this.#logger.warn({ err: error, queue: this.queue }, 'inboxkit: the broker connection failed');
    });
    connection.on('close', (error?: Error) => {
      live.open = false;
      if (this.#connection === live) {
        this.#connection = undefined;
        this.#publisher.useConnection(undefined);
      }
      // amqplib closes the connection's channels too; a client that does not is covered here.
      const channel = this.#channel;
      if (channel !== undefined && channel.connection === live) channel.markClosed(error);
    });
    connection.on('blocked', (reason: string) => {
      this.#logger.warn({ reason, queue: this.queue }, 'inboxkit: the broker blocked the connection');
    });
    connection.on('unblocked', () => {
      this.#logger.info({ queue: this.queue }, 'inboxkit: the broker unblocked the connection');
    });
    if (this.#stopping) {
      await connection.close().catch(() => {});
      throw new Error('inboxkit: the subscription was closed while connecting');
    }
    this.#connection = live;
    this.#publisher.useConnection(connection);
    return live;
  }

  /** Registers the consumer on the channel (again, after the broker cancelled it). */
  async #consume(consumer: ConsumerChannel): Promise<void> {
    const { consumerTag } = await consumer.channel.consume(
      this.queue,
      (message: AmqpDelivery | null) => this.#onMessage(consumer, message),
      { noAck: false },
    );
    consumer.consumerTag = consumerTag;
    if (this.#stopping) return;
    this.#state = 'connected';
    this.#logger.info({ queue: this.queue, consumerTag }, 'inboxkit: consuming');
    this.#events.emit('connected', { queue: this.queue, consumerTag });
    this.#resolveReady();
  }

  #throwIfStopping(): void {
    if (this.#stopping) throw new Error('inboxkit: the subscription is closing');
  }

  /** A channel is gone: its unsettled deliveries come back from the broker, flagged redelivered. */
  #channelClosed(channel: ConsumerChannel, error: Error | undefined): void {
    for (const delivery of channel.deliveries) {
      // This process did not crash on them: their redelivery is no crash-loop suspect.
      if (delivery.id !== undefined) this.#ownRequeues.add(delivery.id);
    }
    if (!this.#stopping) {
      this.#logger.warn(
        { err: error, queue: this.queue, unsettled: channel.deliveries.size },
        'inboxkit: the consumer channel closed; its unacked deliveries will be redelivered',
      );
    }
  }

  // ---------------------------------------------------------------------------------------
  // Deliveries
  // ---------------------------------------------------------------------------------------

  #onMessage(consumer: ConsumerChannel, message: AmqpDelivery | null): void {
    // Called by amqplib inside its frame handler: this must never throw.
    try {
      if (message === null) {
        this.#onCancelled(consumer);
        return;
      }
      const delivery = new Delivery(message, consumer, this.#logger);
      const task: Promise<void> = this.#processor.handle(delivery).finally(() => {
        this.#inFlight.delete(task);
      });
      this.#inFlight.add(task);
    } catch (error) {
      this.#logger.error({ err: error, queue: this.queue }, 'inboxkit: could not take a delivery');
    }
  }

  /**
   * The broker cancelled the consumer (`null` delivery, amqplib #176): the queue was deleted
   * or its leader moved. Register it again after a backoff on the same channel, whose
   * deliveries can still be acked; if that fails the broker closes the channel, and the
   * reconnect loop takes over (declaring the queue again with `assertTopology`).
   */
  #onCancelled(consumer: ConsumerChannel): void {
    consumer.consumerTag = undefined;
    if (this.#stopping || !consumer.open) return;
    this.#logger.warn({ queue: this.queue }, 'inboxkit: the broker cancelled the consumer; subscribing again');
    this.#events.emit('consumerCancelled', { queue: this.queue });
    this.#state = 'reconnecting';
    void (async () => {
      await sleep(backoffDelayMs(this.#config.reconnect, 1), this.#abort.signal);
      if (this.#stopping || !consumer.open) return;
      try {
        await this.#consume(consumer);
      } catch (error) {
        this.#events.emit('error', { error: toError(error), during: 'subscribing again after a cancel' });
        // Usually the broker closed the channel already (404); make sure, so the loop reconnects.
        await closeChannel(consumer, this.#config.publishTimeoutMs);
      }
    })();
  }

  // ---------------------------------------------------------------------------------------
  // Closing
  // ---------------------------------------------------------------------------------------

  async #close(): Promise<void> {
    this.#state = 'closing';
    this.#abort.abort();
    const step = async (during: string, action: () => Promise<unknown>): Promise<void> => {
      try {
        await action();
      } catch (thrown) {
        const error = toError(thrown);
        this.#logger.warn({ err: error, queue: this.queue }, `inboxkit: close: ${during} failed`);
        this.#events.emit('error', { error, during: `close: ${during}` });
      }
    };
    // 1. No new deliveries.
    await step('cancelling the consumer', async () => {
      const consumer = this.#channel;
      const tag = consumer?.consumerTag;
      if (consumer === undefined || tag === undefined || !consumer.open) return;
      await within(
        consumer.channel.cancel(tag),
        this.#config.publishTimeoutMs,
        'the broker did not confirm the cancel',
      );
      consumer.consumerTag = undefined;
    });
    // 2. Finish the deliveries in flight (their waits for a requeue are cut short).
    await step('draining in-flight deliveries', () => this.#drain());
    // 3. Close the publisher's channel, the consumer channel, the connection.
    await step('closing the confirm channel', () => this.#publisher.close());
    await step('closing the channel and connection', () => this.#teardown());
    // A connect attempt in progress is not waited for past publishTimeoutMs: if it succeeds
    // later, the loop closes that connection itself.
    await step('stopping the reconnect loop', () =>
      within(this.#loop, this.#config.publishTimeoutMs, 'a connect attempt is still in progress'),
    );
    // The loop may have opened something while it stopped.
    await step('closing what the loop opened last', () => this.#teardown());
    this.#state = 'closed';
    this.#rejectReady(new Error(`inboxkit: the subscription to ${JSON.stringify(this.queue)} was closed`));
    this.#logger.info({ queue: this.queue }, 'inboxkit: subscription closed');
    this.#events.emit('closed', { queue: this.queue });
  }

  async #drain(): Promise<void> {
    const deadline = Date.now() + this.#config.drainTimeoutMs;
    while (this.#inFlight.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `${this.#inFlight.size} deliveries still in flight after drainTimeoutMs (${this.#config.drainTimeoutMs} ms); the broker redelivers them`,
        );
      }
      await within(Promise.allSettled([...this.#inFlight]), left, 'drain timed out').catch(() => {});
    }
  }

  /** Closes the consumer channel and the connection, if open. Never throws. */
  async #teardown(): Promise<void> {
    const channel = this.#channel;
    this.#channel = undefined;
    if (channel !== undefined) await closeChannel(channel, this.#config.publishTimeoutMs);
    const live = this.#connection;
    this.#connection = undefined;
    this.#publisher.useConnection(undefined);
    if (live?.open === true) {
      live.open = false;
      await within(live.connection.close(), this.#config.publishTimeoutMs, 'connection close timed out').catch(
        () => {},
      );
    }
  }
}

/**
 * Closes a consumer channel (its unacked deliveries go back to the queue). Never throws,
 * and never waits longer than `timeoutMs`: amqplib's close never resolves when the
 * connection goes away before the broker's CloseOk.
 */
async function closeChannel(consumer: ConsumerChannel, timeoutMs: number): Promise<void> {
  if (!consumer.open) return;
  consumer.markClosed();
  await within(consumer.channel.close(), timeoutMs, 'channel close timed out').catch(() => {});
}

/** `promise`, or a rejection after `ms` milliseconds. The timer is cleared either way. */
function within<V>(promise: Promise<V>, ms: number, message: string): Promise<V> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
