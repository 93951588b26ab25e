// The subset of amqplib's promise API that the adapter uses, typed by shape (like kysely's
// `PostgresPool`). amqplib's own `ChannelModel`, `Channel` and `ConfirmChannel` fit as they
// are; so does any client with the same methods.

/** The properties of a message, as amqplib decodes them. Every field may be missing. */
export interface AmqpMessageProperties {
  readonly contentType?: unknown;
  readonly contentEncoding?: unknown;
  readonly headers?: Readonly<Record<string, unknown>> | undefined;
  readonly deliveryMode?: unknown;
  readonly priority?: unknown;
  readonly correlationId?: unknown;
  readonly replyTo?: unknown;
  readonly expiration?: unknown;
  readonly messageId?: unknown;
  readonly timestamp?: unknown;
  readonly type?: unknown;
  readonly userId?: unknown;
  readonly appId?: unknown;
}

/** Where a delivery came from. */
export interface AmqpDeliveryFields {
  readonly deliveryTag: number;
  /** The broker may have delivered this message before (to this or another consumer). */
  readonly redelivered: boolean;
  readonly exchange: string;
  readonly routingKey: string;
  readonly consumerTag?: string;
}

/** A message delivered to a consumer (amqplib's `ConsumeMessage`). */
export interface AmqpDelivery {
  readonly content: Buffer;
  readonly fields: AmqpDeliveryFields;
  readonly properties: AmqpMessageProperties;
}

/** Options of a publish (amqplib's `Options.Publish`), the ones the adapter sets. */
export interface AmqpPublishOptions {
  readonly mandatory?: boolean;
  readonly persistent?: boolean;
  readonly expiration?: string | number;
  readonly contentType?: string;
  readonly contentEncoding?: string;
  readonly headers?: Record<string, unknown>;
  readonly priority?: number;
  readonly correlationId?: string;
  readonly replyTo?: string;
  readonly messageId?: string;
  readonly timestamp?: number;
  readonly type?: string;
  readonly appId?: string;
  readonly userId?: string;
}

/** Options of `assertQueue`. */
export interface AmqpAssertQueueOptions {
  readonly durable?: boolean;
  readonly arguments?: Readonly<Record<string, unknown>>;
}

/** A channel deliveries are consumed and acknowledged on. */
export interface AmqpChannel {
  /** Sets how many unacknowledged deliveries the broker sends (the `prefetch` option). */
  prefetch(count: number, global?: boolean): Promise<unknown>;
  /** Starts a consumer on `queue`; `null` is delivered when the broker cancels it. */
  consume(
    queue: string,
    onMessage: (message: AmqpDelivery | null) => void,
    options?: { noAck?: boolean },
  ): Promise<{ consumerTag: string }>;
  /** Stops the consumer (on `close()`, which then settles the deliveries in flight). */
  cancel(consumerTag: string): Promise<unknown>;
  /** Acknowledges a delivery. */
  ack(message: AmqpDelivery, allUpTo?: boolean): void;
  /** Hands a delivery back to the queue (`requeue`), or rejects it. */
  nack(message: AmqpDelivery, allUpTo?: boolean, requeue?: boolean): void;
  /** Declares a queue (`assertTopology`). */
  assertQueue(queue: string, options?: AmqpAssertQueueOptions): Promise<unknown>;
  /** Declares an exchange (`assertTopology`). */
  assertExchange(exchange: string, type: string, options?: { durable?: boolean }): Promise<unknown>;
  /** Binds a queue to an exchange (`assertTopology`). */
  bindQueue(queue: string, source: string, pattern: string): Promise<unknown>;
  /** Closes the channel. */
  close(): Promise<void>;
  /** The channel closed. */
  on(event: 'close', listener: () => void): unknown;
  /** The channel failed (it closes after). */
  on(event: 'error', listener: (error: Error) => void): unknown;
}

/** A channel in confirm mode: each publish is acknowledged (or refused) by the broker. */
export interface AmqpConfirmChannel {
  /** Publishes a message; `callback` is called without an error once the broker confirmed it, with one if it refused. */
  publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: AmqpPublishOptions,
    callback: (error: unknown) => void,
  ): boolean;
  /** Closes the channel. */
  close(): Promise<void>;
  /** The channel closed. */
  on(event: 'close', listener: () => void): unknown;
  /** The channel failed (it closes after). */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** A `mandatory` publish that no queue took comes back here, before its confirm. */
  on(event: 'return', listener: (message: AmqpDelivery) => void): unknown;
}

/** A connection (amqplib's `ChannelModel`, what `amqplib.connect()` resolves to). */
export interface AmqpConnection {
  /** Opens a channel to consume on. */
  createChannel(): Promise<AmqpChannel>;
  /** Opens a channel in confirm mode, to publish dead letters, retries, replies and relayed messages on. */
  createConfirmChannel(): Promise<AmqpConfirmChannel>;
  /** Closes the connection. */
  close(): Promise<void>;
  /** The connection closed (with the error that closed it, if any). */
  on(event: 'close', listener: (error?: Error) => void): unknown;
  /** The connection failed. */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** The broker stopped reading from the connection (a resource alarm). */
  on(event: 'blocked', listener: (reason: string) => void): unknown;
  /** The broker reads from the connection again. */
  on(event: 'unblocked', listener: () => void): unknown;
}
