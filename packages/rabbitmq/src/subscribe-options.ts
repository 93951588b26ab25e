import { ConfigurationError, type Inbox, type InboxLogger } from '@inboxkit/core';
import { type Backoff, type BackoffOptions, checkLogger, compileBackoff, inboxConfig } from '@inboxkit/core/adapter';
import type { AmqpConnection } from './amqp-client.js';
import { compileDecoder, DECODE_NAMES, type Decode, type Decoder } from './decode.js';
import type { MessageIdOptions, MessageIdReader } from './message-id.js';
import type { RabbitBulkHandler, RabbitHandler, RabbitMessage } from './rabbit-message.js';

/**
 * Where dead letters are published, on a confirm channel, before the delivery is acked.
 * Give `queue` (published through the default exchange), or `exchange` (with `routingKey`,
 * else the message's original routing key). Publishes are `mandatory`: a dead letter that
 * no queue takes is not acked but requeued, never dropped.
 */
export interface DeadLetterTarget {
  /** Exchange to publish dead letters to. */
  readonly exchange?: string;
  /** Routing key for `exchange`. Default: the message's original routing key. */
  readonly routingKey?: string;
  /**
   * Queue of dead letters. Alone: published to it through the default exchange. With
   * `exchange`: only used by `assertTopology`, which declares it and binds it.
   */
  readonly queue?: string;
}

/**
 * Broker-delayed retries: a message whose handler still fails after the inbox's in-process
 * retries is published to a retry queue with a per-message TTL (`expiration`); when it
 * expires the retry queue dead-letters it back to the work queue. The wait holds no
 * prefetch slot and survives restarts.
 *
 * The retry queue needs `x-dead-letter-exchange: ''` and `x-dead-letter-routing-key: <queue>`
 * (`assertTopology` declares it so). RabbitMQ expires messages only at the head of a queue:
 * with delays that grow, a message may wait behind a longer one, up to the longest delay.
 */
export interface DelayedRetryOptions {
  /**
   * The delay before each broker retry, in milliseconds; its length is the number of broker
   * retries. After the last, the message is dead-lettered.
   *
   * @example [1_000, 10_000, 60_000]
   */
  readonly delaysMs: readonly number[];
  /** The retry queue. Default `'<queue>.retry'`. */
  readonly queue?: string;
}

/** Options of `assertTopology` when it is given as an object. */
export interface TopologyOptions {
  /**
   * Arguments of the work queue, e.g. `{ 'x-queue-type': 'quorum' }` or a
   * `x-dead-letter-exchange` for `deadLetter: 'nack'`. Default: none (a classic queue).
   */
  readonly queueArguments?: Readonly<Record<string, unknown>>;
}

/**
 * Options of {@link subscribe}. Checked once, when `subscribe` is called; a wrong one throws
 * `ConfigurationError` naming it.
 */
export interface SubscribeOptions<DB, T = unknown, R = unknown> {
  /** The inbox (`createInbox`) whose transaction each handler runs in. Its `consumer` names the keys. */
  readonly inbox: Inbox<DB>;
  /**
   * The broker, e.g. `'amqp://user:pass@host:5672/vhost?heartbeat=10'`; `amqplib` is loaded
   * to connect. Give `url` or `connect`, not both.
   */
  readonly url?: string;
  /**
   * Opens a connection (called again for each reconnect), for TLS options, credentials
   * from a vault or another client with amqplib's shape. Give `url` or `connect`.
   *
   * @example () => amqplib.connect(url, { clientProperties: { connection_name: 'payments' } })
   */
  readonly connect?: () => Promise<AmqpConnection>;
  /** The queue to consume. */
  readonly queue: string;
  /**
   * Handles each new message; see {@link RabbitHandler}. Give exactly one of `handler` and
   * `bulkHandler`.
   */
  readonly handler?: RabbitHandler<DB, T, R>;
  /**
   * Handles each batch's new messages in one call (`inbox.processBulk`), for one bulk write
   * per transaction: the fastest shape, with `maxBatchSize` above 1. Duplicates are removed
   * first (also within the batch); a throw makes the batch run again one message at a time
   * to set the failing one aside. Redeliveries (possible crash repeats), and every delivery
   * with `maxBatchSize: 1`, come as one-message arrays, each in its own transaction. Give
   * exactly one of `handler` and `bulkHandler`. See {@link RabbitBulkHandler}.
   */
  readonly bulkHandler?: RabbitBulkHandler<DB, T, R>;
  /**
   * Deliveries in flight at most (the consumer's `basic.qos` prefetch count), hence handlers
   * running at once; keep the database pool about this size. Default `10`.
   */
  readonly prefetch?: number;
  /**
   * Deliveries that arrived together (up to this many) are handled in one transaction
   * (`inbox.processBatch`, or `inbox.processBulk` with `bulkHandler`): one commit for many
   * messages, which is where throughput comes from at a high prefetch. A `handler` still
   * runs once per message, inside the shared
   * transaction, so it sees the writes of the messages before it in the batch. A handler
   * that fails is rolled back alone (a savepoint pass) and retried on its own; the others
   * commit. Nothing waits for a batch to fill: what arrived in the same turn of the event
   * loop goes together. Redeliveries (possible crash repeats) always run alone. At most
   * `prefetch`. Default `1`: a transaction per message.
   */
  readonly maxBatchSize?: number;
  /** Where the id is found when `properties.messageId` is not set. Default: the `message-id` header. */
  readonly messageId?: MessageIdOptions;
  /** How the content becomes `message.body`. Default `'json'` (content that is not JSON is dead-lettered). See {@link Decode}. */
  readonly decode?: Decode<T>;
  /**
   * Where dead letters go: a {@link DeadLetterTarget}, or `'nack'` to reject them
   * (`nack`, requeue false) to the queue's own `x-dead-letter-exchange` (they then carry the
   * broker's `x-death` header but not inboxkit's failure headers). Default
   * `{ queue: '<queue>.dlq' }`.
   */
  readonly deadLetter?: DeadLetterTarget | 'nack';
  /**
   * Declare the topology on each connect: the work queue (durable), the dead-letter queue
   * and exchange (a durable fanout exchange, bound to `deadLetter.queue`) and the retry
   * queue. Leave it off when the topology is managed elsewhere. Default `false`.
   */
  readonly assertTopology?: boolean | TopologyOptions;
  /** Broker-delayed retries after the in-process ones. Default: none. */
  readonly delayedRetry?: DelayedRetryOptions;
  /** How long a dead-letter, retry or reply publish waits for the broker's confirm, in milliseconds. Default `10000`. */
  readonly publishTimeoutMs?: number;
  /** Backoff between reconnect attempts. Default `{ minDelayMs: 100, maxDelayMs: 30000, factor: 2 }`, with jitter. */
  readonly reconnect?: BackoffOptions;
  /**
   * Backoff before a delivery that could not be decided (Postgres unreachable, a lock
   * timeout, a failed dead-letter publish) is nacked back to the queue; it grows while
   * such failures follow each other. Default `{ minDelayMs: 500, maxDelayMs: 30000, factor: 2 }`.
   */
  readonly requeueBackoff?: BackoffOptions;
  /** How long `close()` waits for in-flight handlers, in milliseconds; the rest are redelivered later. Default `30000`. */
  readonly drainTimeoutMs?: number;
  /**
   * The connection's client-provided name (`connection_name`, shown by the management UI and
   * `rabbitmqctl list_connections`). Only with `url`. Default `'inboxkit <consumer> <queue>'`.
   */
  readonly connectionName?: string;
  /** A pino-compatible logger. Default: the inbox's. */
  readonly logger?: InboxLogger;
}

/** Where dead letters go, compiled. */
export type DeadLetterRoute =
  | {
      readonly kind: 'publish';
      readonly exchange: string;
      readonly routingKey: string | undefined;
      readonly queue: string | undefined;
    }
  | { readonly kind: 'nack' };

/** The options, checked and compiled once. */
export interface SubscriptionConfig<DB, T, R> {
  readonly inbox: Inbox<DB>;
  readonly consumer: string;
  readonly connect: () => Promise<AmqpConnection>;
  readonly queue: string;
  /** Runs one message in its own transaction: the user's `handler`, or `bulkHandler` given a one-message array. */
  readonly handler: RabbitHandler<DB, T, R>;
  /** Set when batches go through `inbox.processBulk`. */
  readonly bulkHandler: RabbitBulkHandler<DB, T, R> | undefined;
  readonly prefetch: number;
  readonly maxBatchSize: number;
  readonly messageId: MessageIdReader;
  readonly decoder: Decoder<T>;
  readonly deadLetter: DeadLetterRoute;
  readonly topology: TopologyOptions | undefined;
  readonly delayedRetry: { readonly queue: string; readonly delaysMs: readonly number[] } | undefined;
  readonly publishTimeoutMs: number;
  readonly reconnect: Backoff;
  readonly requeueBackoff: Backoff;
  readonly drainTimeoutMs: number;
  readonly logger: InboxLogger;
}

const KNOWN = new Set([
  'inbox',
  'url',
  'connect',
  'queue',
  'handler',
  'bulkHandler',
  'prefetch',
  'maxBatchSize',
  'messageId',
  'decode',
  'deadLetter',
  'assertTopology',
  'delayedRetry',
  'publishTimeoutMs',
  'reconnect',
  'requeueBackoff',
  'drainTimeoutMs',
  'connectionName',
  'logger',
]);
/** A connect attempt that takes longer (a host that drops packets) fails and is retried. */
const CONNECT_TIMEOUT_MS = 30_000;
const MAX_DELAY_MS = 2 ** 31 - 1; // setTimeout's limit, and a sane bound for a message TTL

export function compileSubscribeOptions<DB, T, R>(options: SubscribeOptions<DB, T, R>): SubscriptionConfig<DB, T, R> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('subscribe() needs an options object: subscribe({ inbox, url, queue, handler }).');
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) {
      throw new ConfigurationError(`Unknown option \`${key}\`; known options: ${[...KNOWN].join(', ')}.`);
    }
  }
  const inbox = options.inbox as unknown;
  if (
    typeof inbox !== 'object' ||
    inbox === null ||
    typeof (inbox as { process?: unknown }).process !== 'function' ||
    typeof (inbox as { recordDeadLetter?: unknown }).recordDeadLetter !== 'function'
  ) {
    throw new ConfigurationError('Expected `inbox` to be an inbox made by createInbox() from @inboxkit/core.');
  }
  const queue = name('queue', options.queue);
  const { handler, bulkHandler } = compileHandlers(options);
  const consumer = options.inbox.consumer;
  const connect = compileConnect(options, consumer, queue);
  const logger = checkLogger(options.logger) ?? inboxConfig(options.inbox).logger;
  const deadLetter = compileDeadLetter(options.deadLetter, queue);
  const topology = compileTopology(options.assertTopology);
  if (
    deadLetter.kind === 'nack' &&
    topology !== undefined &&
    topology.queueArguments?.['x-dead-letter-exchange'] === undefined
  ) {
    throw new ConfigurationError(
      "With `deadLetter: 'nack'` and `assertTopology`, give the queue its dead-letter exchange: assertTopology: { queueArguments: { 'x-dead-letter-exchange': '...' } }; a queue without one drops rejected messages.",
    );
  }
  const prefetch = integer('prefetch', options.prefetch, 10, 1, 65_535);
  const maxBatchSize = integer('maxBatchSize', options.maxBatchSize, 1, 1, 65_535);
  if (maxBatchSize > prefetch) {
    throw new ConfigurationError(
      `\`maxBatchSize\` (${maxBatchSize}) must not exceed \`prefetch\` (${prefetch}): no more deliveries than that are ever in flight.`,
    );
  }
  return Object.freeze({
    inbox: options.inbox,
    consumer,
    connect,
    queue,
    handler,
    bulkHandler,
    prefetch,
    maxBatchSize,
    messageId: compileMessageId(options.messageId),
    decoder: compileDecode(options.decode),
    deadLetter,
    topology,
    delayedRetry: compileDelayedRetry(options.delayedRetry, queue),
    publishTimeoutMs: integer('publishTimeoutMs', options.publishTimeoutMs, 10_000, 1, MAX_DELAY_MS),
    reconnect: compileBackoff(
      'reconnect',
      options.reconnect,
      { minDelayMs: 100, maxDelayMs: 30_000, factor: 2 },
      MAX_DELAY_MS,
    ),
    requeueBackoff: compileBackoff(
      'requeueBackoff',
      options.requeueBackoff,
      {
        minDelayMs: 500,
        maxDelayMs: 30_000,
        factor: 2,
      },
      MAX_DELAY_MS,
    ),
    drainTimeoutMs: integer('drainTimeoutMs', options.drainTimeoutMs, 30_000, 0, MAX_DELAY_MS),
    logger,
  });
}

function compileHandlers<DB, T, R>(
  options: SubscribeOptions<DB, T, R>,
): { handler: RabbitHandler<DB, T, R>; bulkHandler: RabbitBulkHandler<DB, T, R> | undefined } {
  const { handler, bulkHandler } = options;
  if (handler !== undefined && bulkHandler !== undefined) {
    throw new ConfigurationError(
      'Give either `handler` (called per message) or `bulkHandler` (called per batch, with `maxBatchSize`), not both.',
    );
  }
  if (bulkHandler !== undefined) {
    if (typeof bulkHandler !== 'function') {
      throw new ConfigurationError('Expected `bulkHandler` to be a function (trx, messages, context) => results.');
    }
    const single: RabbitHandler<DB, T, R> = async (trx, message: RabbitMessage<T>, context) => {
      const results = await bulkHandler(trx, [message], context);
      return results?.[0] as R;
    };
    return { handler: single, bulkHandler };
  }
  if (handler === undefined) {
    throw new ConfigurationError(
      'subscribe() needs a `handler` (trx, message, context) => result, or a `bulkHandler` (trx, messages, context) => results.',
    );
  }
  if (typeof handler !== 'function') {
    throw new ConfigurationError('Expected `handler` to be a function (trx, message, context) => result.');
  }
  return { handler, bulkHandler: undefined };
}

function compileConnect<DB, T, R>(
  options: SubscribeOptions<DB, T, R>,
  consumer: string,
  queue: string,
): () => Promise<AmqpConnection> {
  if (options.url !== undefined && options.connect !== undefined) {
    throw new ConfigurationError('Give either `url` or `connect`, not both.');
  }
  if (options.connect !== undefined) {
    if (typeof options.connect !== 'function') {
      throw new ConfigurationError('Expected `connect` to be a function returning a promise of a connection.');
    }
    if (options.connectionName !== undefined) {
      throw new ConfigurationError(
        '`connectionName` applies to `url` only; with `connect`, pass clientProperties: { connection_name } to amqplib.connect yourself.',
      );
    }
    return options.connect;
  }
  if (typeof options.url !== 'string' || !/^amqps?:\/\//.test(options.url)) {
    throw new ConfigurationError(
      'Expected `url` to be an AMQP URL such as "amqp://guest:guest@localhost:5672" (or give `connect`).',
    );
  }
  const url = options.url;
  const connectionName =
    options.connectionName === undefined
      ? `inboxkit ${consumer} ${queue}`
      : name('connectionName', options.connectionName);
  return async () => {
    const amqplib = await import('amqplib');
    const connection: AmqpConnection = await amqplib.connect(url, {
      clientProperties: { connection_name: connectionName },
      timeout: CONNECT_TIMEOUT_MS,
    });
    return connection;
  };
}

function compileMessageId(options: MessageIdOptions | undefined): MessageIdReader {
  if (options === undefined) return { header: 'message-id', from: undefined, payloadHash: false };
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(
      "Expected `messageId` to be an object: { header?, from?, fallback?: 'payload-hash' }.",
    );
  }
  for (const key of Object.keys(options)) {
    if (key !== 'header' && key !== 'from' && key !== 'fallback') {
      throw new ConfigurationError(`Unknown option \`messageId.${key}\`; known: header, from, fallback.`);
    }
  }
  if (options.from !== undefined && typeof options.from !== 'function') {
    throw new ConfigurationError('Expected `messageId.from` to be a function (delivery) => string | undefined.');
  }
  if (options.fallback !== undefined && options.fallback !== 'payload-hash') {
    throw new ConfigurationError(
      `Expected \`messageId.fallback\` to be 'payload-hash' (an id derived from the content), got ${JSON.stringify(options.fallback)}.`,
    );
  }
  return {
    header: options.header === undefined ? 'message-id' : name('messageId.header', options.header),
    from: options.from,
    payloadHash: options.fallback === 'payload-hash',
  };
}

function compileDecode<T>(decode: Decode<T> | undefined): Decoder<T> {
  if (decode === undefined) return compileDecoder<T>('json');
  if (typeof decode !== 'function' && !DECODE_NAMES.includes(decode)) {
    throw new ConfigurationError(
      `Expected \`decode\` to be 'buffer', 'text', 'json' or a function (content, delivery) => body; got ${JSON.stringify(decode)}.`,
    );
  }
  return compileDecoder(decode);
}

function compileDeadLetter(option: DeadLetterTarget | 'nack' | undefined, queue: string): DeadLetterRoute {
  if (option === undefined) return { kind: 'publish', exchange: '', routingKey: `${queue}.dlq`, queue: `${queue}.dlq` };
  if (option === 'nack') return { kind: 'nack' };
  if (typeof option !== 'object' || option === null) {
    throw new ConfigurationError(
      "Expected `deadLetter` to be { queue } , { exchange, routingKey? } or 'nack' (the queue's own x-dead-letter-exchange).",
    );
  }
  for (const key of Object.keys(option)) {
    if (key !== 'exchange' && key !== 'routingKey' && key !== 'queue') {
      throw new ConfigurationError(`Unknown option \`deadLetter.${key}\`; known: exchange, routingKey, queue.`);
    }
  }
  const target = {
    exchange: option.exchange === undefined ? undefined : name('deadLetter.exchange', option.exchange, true),
    routingKey: option.routingKey === undefined ? undefined : name('deadLetter.routingKey', option.routingKey, true),
    queue: option.queue === undefined ? undefined : name('deadLetter.queue', option.queue),
  };
  if (target.exchange === undefined || target.exchange === '') {
    if (target.queue === undefined) {
      throw new ConfigurationError('`deadLetter` needs a `queue` or an `exchange` to publish dead letters to.');
    }
    if (target.routingKey !== undefined) {
      throw new ConfigurationError(
        '`deadLetter.routingKey` needs `deadLetter.exchange`; with `deadLetter.queue` alone, dead letters go to that queue.',
      );
    }
    if (target.queue === queue) {
      throw new ConfigurationError('`deadLetter.queue` must not be the consumed queue itself.');
    }
    return { kind: 'publish', exchange: '', routingKey: target.queue, queue: target.queue };
  }
  return { kind: 'publish', exchange: target.exchange, routingKey: target.routingKey, queue: target.queue };
}

function compileTopology(option: boolean | TopologyOptions | undefined): TopologyOptions | undefined {
  if (option === undefined || option === false) return undefined;
  if (option === true) return {};
  if (typeof option !== 'object' || option === null) {
    throw new ConfigurationError('Expected `assertTopology` to be a boolean or { queueArguments }.');
  }
  for (const key of Object.keys(option)) {
    if (key !== 'queueArguments') {
      throw new ConfigurationError(`Unknown option \`assertTopology.${key}\`; known: queueArguments.`);
    }
  }
  const args = option.queueArguments;
  if (args !== undefined && (typeof args !== 'object' || args === null || Array.isArray(args))) {
    throw new ConfigurationError('Expected `assertTopology.queueArguments` to be an object of queue arguments.');
  }
  return { queueArguments: args };
}

function compileDelayedRetry(
  option: DelayedRetryOptions | undefined,
  queue: string,
): SubscriptionConfig<unknown, unknown, unknown>['delayedRetry'] {
  if (option === undefined) return undefined;
  if (typeof option !== 'object' || option === null) {
    throw new ConfigurationError('Expected `delayedRetry` to be an object: { delaysMs, queue? }.');
  }
  for (const key of Object.keys(option)) {
    if (key !== 'delaysMs' && key !== 'queue') {
      throw new ConfigurationError(`Unknown option \`delayedRetry.${key}\`; known: delaysMs, queue.`);
    }
  }
  const delays = option.delaysMs as unknown;
  if (!Array.isArray(delays) || delays.length === 0) {
    throw new ConfigurationError(
      'Expected `delayedRetry.delaysMs` to be a non-empty array of delays in milliseconds, e.g. [1000, 10000, 60000].',
    );
  }
  const delaysMs = delays.map((delay: unknown, index) =>
    integer(`delayedRetry.delaysMs[${index}]`, delay ?? Number.NaN, 0, 1, MAX_DELAY_MS),
  );
  const retryQueue = option.queue === undefined ? `${queue}.retry` : name('delayedRetry.queue', option.queue);
  if (retryQueue === queue) {
    throw new ConfigurationError('`delayedRetry.queue` must not be the consumed queue itself.');
  }
  return Object.freeze({ queue: retryQueue, delaysMs: Object.freeze(delaysMs) });
}

function integer(option: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigurationError(
      `Expected \`${option}\` to be a whole number from ${min} to ${max}, got ${String(value)}.`,
    );
  }
  return value;
}

/** A queue, exchange or header name: a string of at most 255 bytes (AMQP shortstr). */
function name(option: string, value: unknown, allowEmpty = false): string {
  if (typeof value !== 'string' || (!allowEmpty && value.length === 0)) {
    throw new ConfigurationError(`Expected \`${option}\` to be a non-empty string, got ${JSON.stringify(value)}.`);
  }
  if (Buffer.byteLength(value, 'utf8') > 255) {
    throw new ConfigurationError(`Expected \`${option}\` to be at most 255 bytes long (an AMQP short string).`);
  }
  return value;
}
