import {
  BrokerUnavailableForRelayError,
  ConfigurationError,
  type InboxLogger,
  type OutboxRecord,
  type OutboxRelay,
  type OutboxRelayOptions,
} from '@inboxkit/core';
import { createOutboxRelay, relayOptions } from '@inboxkit/core/adapter';
import type { AmqpConnection } from './amqp-client.js';
import { ConfirmPublisher } from './confirm-publisher.js';
import type { PublishError } from './publish-error.js';

/** Options of {@link createRabbitRelay}: the relay's own, plus how to reach the broker. */
export interface RabbitRelayOptions extends OutboxRelayOptions {
  /** The broker's AMQP URL. Give `url` or `connect`. */
  readonly url?: string;
  /** Opens a connection (called again after one is lost). Give `url` or `connect`. */
  readonly connect?: () => Promise<AmqpConnection>;
  /** The longest a publish waits for the broker's confirm, in milliseconds. Default `10000`. */
  readonly publishTimeoutMs?: number;
}

const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Publishes the outbox to RabbitMQ (docs/outbox.md) on a confirm channel: each message to
 * its exchange and routing key, persistent and mandatory, its id as `messageId` and its
 * headers as headers. A message the broker nacks or returns as unroutable (no queue bound),
 * or whose exchange does not exist, is refused: retried with backoff, then set aside. A lost
 * connection pauses the relay and is opened again. Starts at once; stop it with `close()`.
 *
 * @throws `ConfigurationError` (from `@inboxkit/core`) (`code: 'INBOX_CONFIGURATION'`) for a
 * missing or invalid option. A broker that is away throws nothing: the relay pauses and
 * tries again (event `paused`).
 *
 * @example
 * ```ts
 * const relay = createRabbitRelay({ outbox, url: 'amqp://guest:guest@127.0.0.1:5672', listen: { connectionString } })
 * process.once('SIGTERM', () => void relay.close())
 * ```
 */
export function createRabbitRelay(options: RabbitRelayOptions): OutboxRelay {
  const common = relayOptions(options, ['url', 'connect', 'publishTimeoutMs']);
  const connect = compileConnect(options);
  const timeoutMs = options.publishTimeoutMs ?? 10_000;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new ConfigurationError(`Expected \`publishTimeoutMs\` to be a positive number, got ${String(timeoutMs)}.`);
  }
  const broker = new RelayConnection(connect, timeoutMs, common.logger);
  return createOutboxRelay({
    ...common,
    publish: (records) => broker.publish(records),
    onClose: () => broker.close(),
  });
}

/** The relay's connection and confirm channel, opened on demand and again after a loss. */
class RelayConnection {
  readonly #connect: () => Promise<AmqpConnection>;
  readonly #publisher: ConfirmPublisher;
  #live: { connection: AmqpConnection; open: boolean } | undefined;

  constructor(connect: () => Promise<AmqpConnection>, timeoutMs: number, logger: InboxLogger | undefined) {
    this.#connect = connect;
    this.#publisher = new ConfirmPublisher(timeoutMs, logger ?? silent);
  }

  async publish(records: readonly OutboxRecord[]): Promise<(Error | undefined)[]> {
    const live = await this.#open();
    const settled = await Promise.allSettled(
      records.map((record) =>
        record.routingKey === null
          ? Promise.reject(
              new ConfigurationError(
                `Outbox message ${JSON.stringify(record.messageId)} is for a Kafka topic, not an exchange and routing key; this outbox is relayed to RabbitMQ.`,
              ),
            )
          : this.#publisher.publish({
              exchange: record.destination,
              routingKey: record.routingKey,
              content: record.payload,
              options: {
                persistent: true,
                mandatory: true,
                messageId: record.messageId,
                headers: { ...record.headers },
              },
            }),
      ),
    );
    const failures = settled.map((s) =>
      s.status === 'rejected' ? (s.reason as PublishError | ConfigurationError) : undefined,
    );
    const lost = failures.find((f) => f !== undefined && 'failure' in f && f.failure === 'not_connected');
    if (!live.open || lost !== undefined) {
      throw new BrokerUnavailableForRelayError('The connection to RabbitMQ was lost during the publish.', {
        cause: lost ?? failures.find((f) => f !== undefined),
      });
    }
    return failures;
  }

  async close(): Promise<void> {
    const live = this.#live;
    this.#live = undefined;
    await this.#publisher.close();
    if (live?.open === true) {
      live.open = false;
      await live.connection.close().catch(() => {});
    }
  }

  async #open(): Promise<{ connection: AmqpConnection; open: boolean }> {
    if (this.#live?.open === true) return this.#live;
    let connection: AmqpConnection;
    try {
      connection = await this.#connect();
    } catch (error) {
      throw new BrokerUnavailableForRelayError(
        `Could not connect to RabbitMQ: ${(error as Error)?.message ?? String(error)}`,
        { cause: error },
      );
    }
    const live = { connection, open: true };
    connection.on('error', () => {}); // a 'close' follows; never an unhandled 'error'
    connection.on('close', () => {
      live.open = false;
      if (this.#live === live) this.#publisher.useConnection(undefined);
    });
    this.#live = live;
    this.#publisher.useConnection(connection);
    return live;
  }
}

const noop = (): void => {};
const silent: InboxLogger = { debug: noop, info: noop, warn: noop, error: noop };

function compileConnect(options: RabbitRelayOptions): () => Promise<AmqpConnection> {
  if (options.url !== undefined && options.connect !== undefined) {
    throw new ConfigurationError('Give either `url` or `connect`, not both.');
  }
  if (options.connect !== undefined) {
    if (typeof options.connect !== 'function') {
      throw new ConfigurationError('Expected `connect` to be a function returning a promise of a connection.');
    }
    return options.connect;
  }
  if (typeof options.url !== 'string' || !/^amqps?:\/\//.test(options.url)) {
    throw new ConfigurationError(
      'Expected `url` to be an AMQP URL such as "amqp://guest:guest@localhost:5672" (or give `connect`).',
    );
  }
  const url = options.url;
  return async () => {
    const amqplib = await import('amqplib');
    const connection: AmqpConnection = await amqplib.connect(url, {
      clientProperties: { connection_name: 'inboxkit outbox relay' },
      timeout: CONNECT_TIMEOUT_MS,
    });
    return connection;
  };
}
