import { ConfigurationError, type Inbox, type InboxLogger } from '@inboxkit/core';
import {
  type Backoff,
  type BackoffOptions,
  compileBackoff,
  inboxConfig,
  positiveInteger,
} from '@inboxkit/core/adapter';
import { compileValueDecoder, type ValueDecoder, type ValueDecoding } from './decode.js';
import type { KafkaClient, KafkaConsumer, KafkaProducer } from './kafka-client.js';
import { compileMessageId, type MessageIdReader, type MessageIdSource } from './message-id.js';
import { DEFAULT_OFFSET_TABLE, type OffsetTable, offsetTable } from './offset-table.js';

/**
 * How redeliveries are recognised (docs/design.md, "Kafka offsets in Postgres"):
 *
 * - `'ids'`: each record's message id is a key in the inbox table (one row per message,
 *   purged after `retentionMs`). Catches a redelivery and a message produced twice.
 * - `'offsets'`: the next offset of each (group, topic, partition) is stored in Postgres
 *   (`migrateKafkaOffsets`), in the same transaction as the handler's writes; records
 *   below it are skipped, and after an assignment the consumer seeks to it. One row per
 *   partition, no purge. Catches redeliveries only: a message produced twice (two
 *   offsets) runs twice. Right with an idempotent producer (kafkajs `idempotent: true`,
 *   the Java client's default), whose retries never write a second copy.
 * - `'offsets+ids'`: both: the offsets fence the partition, the ids catch a message the
 *   producer sent twice (an application that retries a send, a non-idempotent producer).
 */
export type KafkaDedup = 'ids' | 'offsets' | 'offsets+ids';

/**
 * What `assertTopology` creates: missing dead-letter topics, with these settings (`-1`, the
 * default, leaves a count to the broker's `num.partitions` and `default.replication.factor`).
 * The same option name as RabbitMQ's, which declares its dead-letter queue.
 */
export interface TopologyOptions {
  /** Partitions of a dead-letter topic the adapter creates. Default `-1` (the broker's default). */
  readonly numPartitions?: number;
  /** Replicas of a dead-letter topic the adapter creates. Default `-1` (the broker's default). */
  readonly replicationFactor?: number;
}

/** Options shared by {@link inboxEachMessage} and {@link inboxEachBatch}. */
export interface KafkaInboxOptions<DB, V> {
  /**
   * The kafkajs consumer the handler runs on (`kafka.consumer({ groupId })`): the adapter
   * pauses, seeks and commits offsets through it. (`consumer`, in inboxkit, is the inbox's
   * name: `createInbox({ db, consumer })`.)
   */
  readonly kafkaConsumer: KafkaConsumer;
  /** The inbox (`createInbox(...)`) whose transactions the handler runs in. */
  readonly inbox: Inbox<DB>;
  /**
   * The kafkajs client (`new Kafka({ brokers })`) the consumer was made with. The adapter
   * makes its own clients with it, connects them when first needed and disconnects them on
   * `close()`: an admin client (the handover check when a partition is assigned, and the
   * dead-letter topics' check) and, at the first dead letter, an idempotent producer
   * (`acks: -1`, one request in flight, no topic auto-creation). A consumer that never
   * dead-letters never connects a producer.
   */
  readonly kafka: KafkaClient;
  /**
   * A producer of your own to publish dead letters with, instead of the adapter's: for a
   * client configured otherwise (`@confluentinc/kafka-javascript` takes acks in the
   * producer's configuration), or to share one. Keep its acks at -1 (every in-sync replica).
   * The adapter connects it before its first publish and never disconnects it. Default: the
   * adapter's own.
   */
  readonly producer?: KafkaProducer;
  /**
   * Create a missing dead-letter topic (`admin.createTopics`) before the first publish to it,
   * as RabbitMQ's `assertTopology` declares its dead-letter queue. Without it, a missing
   * dead-letter topic is an error: the record is not dead-lettered and its offset does not
   * move; its partition is paused (event `paused`, reason `dead_letter_failed`, a
   * `PublishError` with `failure: 'missing_topic'` naming the topic) and the record comes
   * back after the pause, until the topic exists. Default `false`.
   *
   * @example
   * ```ts
   * assertTopology: { numPartitions: 1, replicationFactor: 3 }
   * ```
   */
  readonly assertTopology?: boolean | TopologyOptions;
  /**
   * The consumer group (the kafkajs consumer's `groupId`): for the dead-letter headers and
   * the handover check. Default: learnt when the kafkajs consumer joins its group.
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
  /** Longest error stack put in a dead-letter header, in bytes of UTF-8 (cut at a character boundary). Default `4000`. */
  readonly maxStackLength?: number;
  /** Longest error message put in a dead-letter header, in bytes of UTF-8 (cut at a character boundary). Default `2000`. */
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
  /**
   * How redeliveries are recognised: by message id (`'ids'`), by offsets stored in
   * Postgres (`'offsets'`), or both (`'offsets+ids'`). See {@link KafkaDedup}. With
   * `'offsets'`, `messageId` defaults to `'offset'` (the id only names the record in dead
   * letters and crash-loop counts). Default `'ids'`.
   *
   * @example
   * ```ts
   * await migrateKafkaOffsets(db) // once, beside migrateInbox(db)
   * inboxEachBatch({ kafkaConsumer, kafka, inbox, dedup: 'offsets', bulkHandler })
   * ```
   */
  readonly dedup?: KafkaDedup;
  /** The offsets table (`dedup: 'offsets'`), in the inbox's schema. Default `'kafka_offsets'`. */
  readonly offsetTable?: string;
}

/** The options, checked and compiled once. */
export interface KafkaInboxConfig<DB, V> {
  readonly kafkaConsumer: KafkaConsumer;
  readonly inbox: Inbox<DB>;
  /** The inbox's longest id: a longer one is dead-lettered without naming it. */
  readonly maxIdLength: number;
  readonly kafka: KafkaClient;
  /** The user's producer; `undefined`: the adapter makes its own. */
  readonly producer: KafkaProducer | undefined;
  /** Set when missing dead-letter topics are created. */
  readonly topology: Required<TopologyOptions> | undefined;
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
  readonly dedup: KafkaDedup;
  /** Set unless `dedup` is `'ids'`. */
  readonly offsetTable: OffsetTable | undefined;
}

export const COMMON_OPTIONS: readonly string[] = [
  'kafkaConsumer',
  'inbox',
  'kafka',
  'producer',
  'assertTopology',
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
  'dedup',
  'offsetTable',
];

/** Options of earlier versions, and what took their place. */
const RENAMED: Readonly<Record<string, string>> = {
  consumer: 'the kafkajs consumer is `kafkaConsumer` now',
  admin: 'the adapter makes its own admin client from `kafka`',
};

const PAUSE_DEFAULTS: Backoff = Object.freeze({ minDelayMs: 1000, maxDelayMs: 30_000, factor: 2 });

/** Checks the shared options; `known` lists every option the entry point accepts. */
export function compileKafkaInboxOptions<DB, V>(
  options: KafkaInboxOptions<DB, V>,
  entryPoint: string,
  known: readonly string[],
): KafkaInboxConfig<DB, V> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(
      `${entryPoint}() needs an options object: ${entryPoint}({ kafkaConsumer, kafka, inbox, handler }).`,
    );
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      const hint = RENAMED[key] === undefined ? '' : ` (${RENAMED[key]})`;
      throw new ConfigurationError(
        `Unknown option \`${key}\` of ${entryPoint}()${hint}; known options: ${known.join(', ')}.`,
      );
    }
  }
  const kafkaConsumer = options.kafkaConsumer as Partial<KafkaConsumer> | undefined;
  for (const method of ['commitOffsets', 'seek', 'pause', 'resume'] as const) {
    if (typeof kafkaConsumer?.[method] !== 'function') {
      throw new ConfigurationError(
        `Expected \`kafkaConsumer\` to be a Kafka consumer (kafka.consumer({ groupId })) with a ${method}() method.`,
      );
    }
  }
  const inbox = options.inbox as Partial<Inbox<DB>> | undefined;
  if (typeof inbox?.process !== 'function' || typeof inbox.recordDeadLetter !== 'function') {
    throw new ConfigurationError('Expected `inbox` to be an inbox made by createInbox({ db, consumer }).');
  }
  const kafka = options.kafka as Partial<KafkaClient> | undefined;
  if (typeof kafka?.producer !== 'function' || typeof kafka.admin !== 'function') {
    throw new ConfigurationError(
      'Expected `kafka` to be the Kafka client the consumer was made with (new Kafka({ brokers }) from kafkajs), with producer() and admin().',
    );
  }
  if (options.producer !== undefined && typeof (options.producer as Partial<KafkaProducer>).send !== 'function') {
    throw new ConfigurationError(
      'Expected `producer` to be a Kafka producer (kafka.producer()) with send(), or to be left out (the adapter then makes its own).',
    );
  }
  if (options.groupId !== undefined && (typeof options.groupId !== 'string' || options.groupId.length === 0)) {
    throw new ConfigurationError('Expected `groupId` to be a non-empty string.');
  }
  const { name: decoderName, decode } = compileValueDecoder(options.decode);
  const dedup = options.dedup ?? 'ids';
  if (dedup !== 'ids' && dedup !== 'offsets' && dedup !== 'offsets+ids') {
    throw new ConfigurationError(
      `Expected \`dedup\` to be 'ids', 'offsets' or 'offsets+ids', got ${JSON.stringify(options.dedup)}.`,
    );
  }
  if (dedup === 'ids' && options.offsetTable !== undefined) {
    throw new ConfigurationError("`offsetTable` is only used with `dedup: 'offsets'` or `'offsets+ids'`.");
  }
  return Object.freeze({
    kafkaConsumer: options.kafkaConsumer,
    inbox: options.inbox,
    maxIdLength: inboxConfig(options.inbox).maxIdLength,
    kafka: options.kafka,
    producer: options.producer,
    topology: compileTopology(options.assertTopology),
    groupId: options.groupId,
    messageId: compileMessageId(options.messageId ?? (dedup === 'offsets' ? 'offset' : undefined)),
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
    dedup,
    offsetTable:
      dedup === 'ids'
        ? undefined
        : offsetTable(inboxConfig(options.inbox).tables.schema, options.offsetTable ?? DEFAULT_OFFSET_TABLE),
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

function compileTopology(option: boolean | TopologyOptions | undefined): Required<TopologyOptions> | undefined {
  if (option === undefined || option === false) return undefined;
  if (option === true) return { numPartitions: -1, replicationFactor: -1 };
  if (typeof option !== 'object' || option === null) {
    throw new ConfigurationError(
      'Expected `assertTopology` to be a boolean or { numPartitions?, replicationFactor? }.',
    );
  }
  for (const key of Object.keys(option)) {
    if (key !== 'numPartitions' && key !== 'replicationFactor') {
      throw new ConfigurationError(
        `Unknown option \`assertTopology.${key}\`; known options: numPartitions, replicationFactor.`,
      );
    }
  }
  return {
    numPartitions: topicCount('assertTopology.numPartitions', option.numPartitions),
    replicationFactor: topicCount('assertTopology.replicationFactor', option.replicationFactor),
  };
}

/** A partition or replica count: a positive whole number, or -1 for the broker's default. */
function topicCount(option: string, value: unknown): number {
  if (value === undefined) return -1;
  if (typeof value !== 'number' || !Number.isInteger(value) || (value < 1 && value !== -1)) {
    throw new ConfigurationError(
      `Expected \`${option}\` to be a positive whole number (or -1 for the broker's default), got ${String(value)}.`,
    );
  }
  return value;
}

function nonNegativeInteger(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new ConfigurationError(`Expected \`${option}\` to be a whole number of at least 0, got ${String(value)}.`);
  }
  return value;
}
