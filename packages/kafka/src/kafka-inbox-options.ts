import { ConfigurationError, type Inbox, type InboxLogger } from '@inboxkit/core';
import {
  type Backoff,
  type BackoffOptions,
  compileBackoff,
  inboxConfig,
  positiveInteger,
} from '@inboxkit/core/adapter';
import { compileValueDecoder, type ValueDecoder, type ValueDecoding } from './decode.js';
import type { KafkaAdmin, KafkaConsumer, KafkaProducer } from './kafka-client.js';
import { compileMessageId, type MessageIdReader, type MessageIdSource } from './message-id.js';

/** Options shared by {@link inboxEachMessage} and {@link inboxEachBatch}. */
export interface KafkaInboxOptions<DB, V> {
  /** The consumer the handler runs on: the adapter pauses, seeks and commits offsets through it. */
  readonly consumer: KafkaConsumer;
  /** The inbox (`createInbox(...)`) whose transactions the handler runs in. */
  readonly inbox: Inbox<DB>;
  /**
   * The producer dead-lettered records are published with; a record's offset moves only once
   * the broker acknowledged its dead letter. Keep its acks at -1 (every in-sync replica:
   * kafkajs' default for `send`; set `acks` in the producer's configuration with clients
   * that take it there). Connect it before the consumer runs.
   */
  readonly producer: KafkaProducer;
  /**
   * A connected admin client (`kafka.admin()`), used once per assignment to read the
   * metadata of the group's committed offsets: a partition whose previous owner shut down
   * gracefully (or that no member of the group ever processed) then skips the crash-loop
   * window. Without it every newly assigned partition starts with the window: its first new
   * records run one at a time (`maxBatchSize` of them in `eachBatch` mode). Default: none.
   */
  readonly admin?: KafkaAdmin;
  /**
   * The consumer group (the consumer's `groupId`): for the dead-letter headers and the
   * handover check. Default: learnt when the consumer joins.
   */
  readonly groupId?: string;
  /**
   * Where a record's message id (its key in the inbox) comes from. Default
   * `{ header: 'message-id' }` with no fallback: a record without the header is
   * dead-lettered. See {@link MessageIdSource}.
   */
  readonly messageId?: MessageIdSource;
  /** How record values are decoded for the handler. Default `'json'`. See {@link ValueDecoding}. */
  readonly decode?: ValueDecoding<V>;
  /** The dead-letter topic of a record's topic. Default `` `${topic}.dlq` ``. */
  readonly deadLetterTopic?: string | ((topic: string) => string);
  /** How long a dead-letter publish may wait for the broker's acknowledgement, in milliseconds. Default `30000`. */
  readonly deadLetterTimeoutMs?: number;
  /** Longest error stack put in a dead-letter header, in characters. Default `4000`. */
  readonly maxStackLength?: number;
  /** Longest error message put in a dead-letter header, in characters. Default `2000`. */
  readonly maxErrorMessageLength?: number;
  /**
   * Settled offsets are committed at most this often, in milliseconds, in the background;
   * always on shutdown. `0` commits after every record or batch. Default `1000`.
   */
  readonly commitIntervalMs?: number;
  /** How long a partition stays paused after an infrastructure error. Exponential with jitter; default `{ minDelayMs: 1000, maxDelayMs: 30000, factor: 2 }`. */
  readonly pause?: BackoffOptions;
  /** A pino-compatible logger. Default: the inbox's. */
  readonly logger?: InboxLogger;
}

/** The options, checked and compiled once. */
export interface KafkaInboxConfig<DB, V> {
  readonly consumer: KafkaConsumer;
  readonly inbox: Inbox<DB>;
  /** The inbox's longest id: a longer one is dead-lettered without naming it. */
  readonly maxIdLength: number;
  readonly producer: KafkaProducer;
  readonly admin: KafkaAdmin | undefined;
  readonly groupId: string | undefined;
  readonly messageId: MessageIdReader;
  readonly decode: ValueDecoder<V>;
  readonly decoderName: string;
  readonly deadLetterTopic: (topic: string) => string;
  readonly deadLetterTimeoutMs: number;
  readonly maxStackLength: number;
  readonly maxErrorMessageLength: number;
  readonly commitIntervalMs: number;
  readonly pause: Backoff;
  readonly logger: InboxLogger;
}

export const COMMON_OPTIONS: readonly string[] = [
  'consumer',
  'inbox',
  'producer',
  'admin',
  'groupId',
  'messageId',
  'decode',
  'deadLetterTopic',
  'deadLetterTimeoutMs',
  'maxStackLength',
  'maxErrorMessageLength',
  'commitIntervalMs',
  'pause',
  'logger',
];

const PAUSE_DEFAULTS: Backoff = Object.freeze({ minDelayMs: 1000, maxDelayMs: 30_000, factor: 2 });

/** Checks the shared options; `known` lists every option the entry point accepts. */
export function compileKafkaInboxOptions<DB, V>(
  options: KafkaInboxOptions<DB, V>,
  entryPoint: string,
  known: readonly string[],
): KafkaInboxConfig<DB, V> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(
      `${entryPoint}() needs an options object: ${entryPoint}({ consumer, inbox, producer, handler }).`,
    );
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new ConfigurationError(`Unknown option \`${key}\` of ${entryPoint}(); known options: ${known.join(', ')}.`);
    }
  }
  const consumer = options.consumer as Partial<KafkaConsumer> | undefined;
  for (const method of ['commitOffsets', 'seek', 'pause', 'resume'] as const) {
    if (typeof consumer?.[method] !== 'function') {
      throw new ConfigurationError(
        `Expected \`consumer\` to be a Kafka consumer (kafka.consumer({ groupId })) with a ${method}() method.`,
      );
    }
  }
  const inbox = options.inbox as Partial<Inbox<DB>> | undefined;
  if (typeof inbox?.process !== 'function' || typeof inbox.recordDeadLetter !== 'function') {
    throw new ConfigurationError('Expected `inbox` to be an inbox made by createInbox({ db, consumer }).');
  }
  if (typeof (options.producer as Partial<KafkaProducer> | undefined)?.send !== 'function') {
    throw new ConfigurationError(
      'Expected `producer` to be a connected Kafka producer (kafka.producer()): dead-lettered records are published with it.',
    );
  }
  if (options.admin !== undefined && typeof (options.admin as Partial<KafkaAdmin>).fetchOffsets !== 'function') {
    throw new ConfigurationError(
      'Expected `admin` to be a connected Kafka admin client (kafka.admin()) with fetchOffsets().',
    );
  }
  if (options.groupId !== undefined && (typeof options.groupId !== 'string' || options.groupId.length === 0)) {
    throw new ConfigurationError('Expected `groupId` to be a non-empty string.');
  }
  const { name: decoderName, decode } = compileValueDecoder(options.decode);
  return Object.freeze({
    consumer: options.consumer,
    inbox: options.inbox,
    maxIdLength: inboxConfig(options.inbox).maxIdLength,
    producer: options.producer,
    admin: options.admin,
    groupId: options.groupId,
    messageId: compileMessageId(options.messageId),
    decode,
    decoderName,
    deadLetterTopic: compileDeadLetterTopic(
      options.deadLetterTopic,
      options.logger ?? inboxConfig(options.inbox).logger,
    ),
    deadLetterTimeoutMs: positiveInteger('deadLetterTimeoutMs', options.deadLetterTimeoutMs, 30_000),
    maxStackLength: positiveInteger('maxStackLength', options.maxStackLength, 4000),
    maxErrorMessageLength: positiveInteger('maxErrorMessageLength', options.maxErrorMessageLength, 2000),
    commitIntervalMs: nonNegativeInteger('commitIntervalMs', options.commitIntervalMs, 1000),
    pause: compileBackoff('pause', options.pause, PAUSE_DEFAULTS),
    logger: options.logger ?? inboxConfig(options.inbox).logger,
  });
}

/**
 * The dead-letter topic of a source topic. A function that throws or returns no name for a
 * topic would hand its records back for ever, stalling the partition: its records go to
 * the default `<topic>.dlq` instead, with an error logged (docs/design.md, "Liveness").
 */
function compileDeadLetterTopic(
  option: string | ((topic: string) => string) | undefined,
  logger: InboxLogger,
): (topic: string) => string {
  const fallback = (topic: string) => `${topic}.dlq`;
  if (option === undefined) return fallback;
  if (typeof option === 'string' && option.length > 0) return () => option;
  if (typeof option === 'function') {
    return (topic) => {
      let name: unknown;
      try {
        name = option(topic);
      } catch (error) {
        name = error;
      }
      if (typeof name === 'string' && name.length > 0) return name;
      logger.error(
        { topic, returned: name instanceof Error ? undefined : name, err: name instanceof Error ? name : undefined },
        `inboxkit: the deadLetterTopic function gave no topic name for ${JSON.stringify(topic)}; dead-lettering to ${JSON.stringify(fallback(topic))} instead`,
      );
      return fallback(topic);
    };
  }
  throw new ConfigurationError('Expected `deadLetterTopic` to be a topic name or a function (topic) => name.');
}

function nonNegativeInteger(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new ConfigurationError(`Expected \`${option}\` to be a whole number of at least 0, got ${String(value)}.`);
  }
  return value;
}
