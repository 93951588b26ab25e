import {
  BrokerUnavailableForRelayError,
  ConfigurationError,
  type OutboxRecord,
  type OutboxRelay,
  type OutboxRelayOptions,
} from '@inboxkit/core';
import { createOutboxRelay, relayOptions } from '@inboxkit/core/adapter';
import type { KafkaClient, KafkaHeaders, KafkaProducedRecord, KafkaProducer } from './kafka-client.js';

/** The header carrying an outbox message's id: the one the inbox consumer reads by default. */
export const MESSAGE_ID_HEADER = 'message-id';

/** Options of {@link createKafkaRelay}: the relay's own, plus the Kafka client (or a producer). */
export interface KafkaRelayOptions extends OutboxRelayOptions {
  /**
   * The kafkajs client, as the consumer adapter takes it: the relay makes its own producer
   * from it (`idempotent: true`, so the broker drops the copies of its own retries, and every
   * send waits for all in-sync replicas, `acks: -1`; one request in flight; no topic
   * auto-creation), connects it at the first publish and disconnects it in `close()`.
   * Give this or `producer`.
   */
  readonly kafka?: KafkaClient;
  /**
   * Instead of `kafka`: a connected producer of yours, made with `{ idempotent: true }`.
   * It stays yours to disconnect.
   */
  readonly producer?: KafkaProducer;
  /**
   * The longest a send may wait for the broker's acknowledgement, in milliseconds; past it
   * the batch is treated as not sent (and sent again). Default `30000`.
   */
  readonly sendTimeoutMs?: number;
}

/** kafkajs errors (by name) that say the cluster could not be reached, not that a message was refused. */
const UNREACHABLE = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
  'KafkaJSLockTimeout',
]);
const UNREACHABLE_MESSAGES = ['producer is disconnected', 'Closed connection', 'Connection error', 'ECONNREFUSED'];

/**
 * Publishes the outbox to Kafka (docs/outbox.md): each message to its topic, with its key
 * as the record key, its headers, and its id in the `message-id` header; a batch is one
 * `send` per topic, and its messages are deleted once the broker acknowledged them. Starts
 * at once; stop it with `close()`, which also disconnects the producer the relay made from
 * `kafka` (a `producer` you gave stays yours to disconnect).
 *
 * @throws `ConfigurationError` (from `@inboxkit/core`) (`code: 'INBOX_CONFIGURATION'`) for a
 * missing or invalid option. A broker that is away throws nothing: the relay pauses and
 * tries again (event `paused`).
 *
 * @example
 * ```ts
 * const relay = createKafkaRelay({ outbox, kafka, listen: { connectionString } }) // the database's URL
 * process.once('SIGTERM', () => void relay.close())
 * ```
 */
export function createKafkaRelay(options: KafkaRelayOptions): OutboxRelay {
  const common = relayOptions(options, ['kafka', 'producer', 'sendTimeoutMs']);
  const { kafka, producer: given } = options;
  if (kafka !== undefined && given !== undefined) {
    throw new ConfigurationError('Give the relay `kafka` (it makes its own producer) or `producer`, not both.');
  }
  if (given === undefined && typeof kafka?.producer !== 'function') {
    throw new ConfigurationError(
      'Expected `kafka` to be the kafkajs client (new Kafka({ brokers })), or `producer` a kafkajs producer made with `{ idempotent: true }`.',
    );
  }
  if (given !== undefined && typeof given.send !== 'function') {
    throw new ConfigurationError('Expected `producer` to be a kafkajs producer (made with `{ idempotent: true }`).');
  }
  const producer: KafkaProducer =
    given ??
    (kafka as KafkaClient).producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  // The relay's own producer connects at its first publish (and again after a failed connect).
  let connected: Promise<void> | undefined;
  const ready = (): Promise<void> => {
    if (given !== undefined) return Promise.resolve();
    if (connected === undefined) {
      const attempt = Promise.resolve().then(() => producer.connect?.());
      connected = attempt.then(() => undefined);
      attempt.catch(() => {
        connected = undefined;
      });
    }
    return connected;
  };
  const timeoutMs = options.sendTimeoutMs ?? 30_000;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new ConfigurationError(`Expected \`sendTimeoutMs\` to be a positive number, got ${String(timeoutMs)}.`);
  }
  return createOutboxRelay({
    ...common,
    ...(given === undefined ? { onClose: async () => void (await producer.disconnect?.()) } : {}),
    publish: async (records) => {
      try {
        await ready();
      } catch (error) {
        throw new BrokerUnavailableForRelayError(`Kafka did not answer: ${(error as Error).message}`, {
          cause: error,
        });
      }
      const byTopic = new Map<string, number[]>();
      const results: (Error | undefined)[] = records.map(() => undefined);
      records.forEach((record, i) => {
        if (record.routingKey !== null) {
          // A RabbitMQ message in the outbox a Kafka relay reads: sending it to a topic named
          // after its exchange would be a silent misdelivery.
          results[i] = new ConfigurationError(
            `Outbox message ${JSON.stringify(record.messageId)} is for an exchange and routing key, not a Kafka topic; this outbox is relayed to Kafka.`,
          );
          return;
        }
        const indexes = byTopic.get(record.destination);
        if (indexes === undefined) byTopic.set(record.destination, [i]);
        else indexes.push(i);
      });
      await Promise.all(
        [...byTopic].map(async ([topic, indexes]) => {
          try {
            await withTimeout(
              producer.send({ topic, messages: indexes.map((i) => kafkaRecord(records[i] as OutboxRecord)) }),
              timeoutMs,
            );
          } catch (error) {
            if (unreachable(error)) {
              throw new BrokerUnavailableForRelayError(`Kafka did not answer: ${(error as Error).message}`, {
                cause: error,
              });
            }
            for (const i of indexes) results[i] = error as Error;
          }
        }),
      );
      return results;
    },
  });
}

function kafkaRecord(record: OutboxRecord): KafkaProducedRecord {
  const headers: KafkaHeaders = { ...record.headers, [MESSAGE_ID_HEADER]: record.messageId };
  return { key: record.key, value: record.payload, headers };
}

function unreachable(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 5) return false;
  const { name, message } = error as { name?: unknown; message?: unknown };
  if (typeof name === 'string' && UNREACHABLE.has(name)) return true;
  if (typeof message === 'string' && UNREACHABLE_MESSAGES.some((m) => message.includes(m))) return true;
  const inner = error as { originalError?: unknown; cause?: unknown };
  return unreachable(inner.originalError, depth + 1) || unreachable(inner.cause, depth + 1);
}

class SendTimeout extends Error {
  constructor(ms: number) {
    super(`no acknowledgement from Kafka within sendTimeoutMs (${ms} ms)`);
    this.name = 'KafkaJSRequestTimeoutError';
  }
}

async function withTimeout(send: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  send.catch(() => {});
  try {
    await Promise.race([
      send,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new SendTimeout(ms)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
