// The subset of kafkajs' client, consumer, producer and admin that the adapter uses, typed by
// shape (like kysely's `PostgresPool`). kafkajs 2.x's own `Kafka`, `Consumer`, `Producer`,
// `Admin`, `EachMessagePayload` and `EachBatchPayload` fit as they are; so does any client
// offering the same KafkaJS-style API. Nothing here imports kafkajs.

/** Record headers as kafkajs decodes them: bytes or text, a list when a key repeats. */
export interface KafkaHeaders {
  [key: string]: Buffer | string | (Buffer | string)[] | undefined;
}

/** A record as the consumer hands it over (kafkajs' `KafkaMessage`). */
export interface KafkaRecord {
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  /** Milliseconds since the epoch, as a decimal string. */
  readonly timestamp: string;
  /** The record's offset in its partition, as a decimal string (offsets exceed 2^53). */
  readonly offset: string;
  readonly headers?: KafkaHeaders | undefined;
}

/** What a kafkajs `eachMessage` handler receives. */
export interface KafkaEachMessagePayload {
  readonly topic: string;
  readonly partition: number;
  readonly message: KafkaRecord;
  /** Sends a heartbeat when the heartbeat interval has passed. */
  heartbeat(): Promise<void>;
}

/** A fetched batch of one partition (kafkajs' `Batch`). */
export interface KafkaBatch {
  readonly topic: string;
  readonly partition: number;
  readonly messages: readonly KafkaRecord[];
}

/** What a kafkajs `eachBatch` handler receives. */
export interface KafkaEachBatchPayload {
  readonly batch: KafkaBatch;
  /** Marks the record at `offset` as consumed (in memory; committing is separate). */
  resolveOffset(offset: string): void;
  /** Sends a heartbeat when the heartbeat interval has passed; throws while the group rebalances. */
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping. */
  isRunning(): boolean;
  /** True when a seek is pending on the partition: the rest of the batch is not to be processed. */
  isStale(): boolean;
}

/** A topic and some of its partitions (all of them when `partitions` is left out). */
export interface KafkaTopicPartitions {
  topic: string;
  partitions?: number[];
}

/** An offset to commit: the offset of the *next* record to consume. */
export interface KafkaOffsetCommit {
  topic: string;
  partition: number;
  offset: string;
  metadata?: string | null;
}

/** Options of `consumer.run()` that the adapter sets. */
export interface KafkaRunConfig {
  autoCommit?: boolean;
  eachBatchAutoResolve?: boolean;
  partitionsConsumedConcurrently?: number;
  /** The inbox wrapper of `inboxEachMessage`. */
  eachMessage?: (payload: KafkaEachMessagePayload) => Promise<void>;
  /** The inbox wrapper of `inboxEachBatch`. */
  eachBatch?: (payload: KafkaEachBatchPayload) => Promise<void>;
}

/** The instrumentation event sent after a consumer joined its group (kafkajs' `GROUP_JOIN`). */
export interface KafkaGroupJoinEvent {
  readonly payload: {
    readonly groupId: string;
    readonly memberId: string;
    /** Partitions assigned to this member, by topic. */
    readonly memberAssignment: { readonly [topic: string]: readonly number[] };
  };
}

/**
 * A consumer (kafkajs' `Consumer`). `on` and `events` are optional (and may throw "not
 * implemented"): with them the adapter learns of each new assignment (re-applying pauses,
 * forgetting revoked partitions at once); without them it finds out from the records it is
 * handed.
 */
export interface KafkaConsumer {
  /** Only for `runInboxConsumer`'s `subscribe` option, which connects the consumer itself. */
  connect?(): Promise<void>;
  /** Only for `runInboxConsumer`'s `subscribe` option. */
  subscribe?(subscription: { topics: (string | RegExp)[]; fromBeginning?: boolean }): Promise<void>;
  /** Starts consuming with the inbox wrapper (`runInboxConsumer` calls it). */
  run(config: KafkaRunConfig): Promise<void>;
  /** Called by `close()` of `runInboxConsumer`. */
  disconnect(): Promise<void>;
  /** Commits offsets to Kafka: the adapter does, after their records committed in Postgres. */
  commitOffsets(offsets: KafkaOffsetCommit[]): Promise<void>;
  /** Moves a partition to an offset: back to a record handed back for later, or to the offset stored in Postgres. */
  seek(target: { topic: string; partition: number; offset: string }): void;
  /** Pauses partitions: one whose record must wait (see `PauseReason`), or all while the consumer stops. */
  pause(topics: KafkaTopicPartitions[]): void;
  /** Resumes paused partitions. */
  resume(topics: KafkaTopicPartitions[]): void;
  /** The instrumentation event names (kafkajs' `consumer.events`). */
  readonly events?: { readonly GROUP_JOIN: string };
  /** Adds an instrumentation listener; returns a function that removes it. */
  on?(eventName: string, listener: (event: KafkaGroupJoinEvent) => void): () => void;
}

/** A record to produce. */
export interface KafkaProducedRecord {
  key?: Buffer | string | null;
  value: Buffer | string | null;
  headers?: KafkaHeaders;
  timestamp?: string;
}

/** A producer (kafkajs' `Producer`), used for the dead-letter topics. */
export interface KafkaProducer {
  /** Called once before the first dead letter is published (harmless on a connected kafkajs producer). */
  connect?(): Promise<void>;
  /** Called by `close()` on the producer the adapter made itself. */
  disconnect?(): Promise<void>;
  /** Publishes records to a topic; resolves once the broker acknowledged them. */
  send(record: { topic: string; messages: KafkaProducedRecord[] }): Promise<unknown>;
}

/** The producer settings the adapter asks for when it makes its own producer (kafkajs' `ProducerConfig`). */
export interface KafkaProducerConfig {
  /** Each record written once per send, whatever the retries (with acks -1, kafkajs' default for `send`). */
  idempotent?: boolean;
  /** One request in flight per broker connection: retries cannot reorder dead letters. */
  maxInFlightRequests?: number;
  /** Never create a topic by publishing to it: a missing dead-letter topic is an error (see `assertTopology`). */
  allowAutoTopicCreation?: boolean;
}

/** A topic to create (kafkajs' `ITopicConfig`); `-1` leaves the count to the broker's defaults. */
export interface KafkaTopicConfig {
  topic: string;
  numPartitions?: number;
  replicationFactor?: number;
}

/** A committed offset as the admin client reports it. */
export interface KafkaCommittedOffset {
  readonly partition: number;
  /** `-1` when the group never committed an offset for the partition. */
  readonly offset: string;
  readonly metadata: string | null;
}

/**
 * An admin client (kafkajs' `Admin`), made by the adapter from the {@link KafkaClient}: it
 * reads the group's committed offsets and their metadata when a partition is assigned
 * (docs/design.md, "Crash loops"), checks that a dead-letter topic exists before the first
 * publish to it, and creates it with `assertTopology`.
 */
export interface KafkaAdmin {
  /** Connects the admin client. */
  connect(): Promise<void>;
  /** Disconnects it (on `close()`). */
  disconnect(): Promise<void>;
  /** A group's committed offsets, with their metadata. */
  fetchOffsets(options: {
    groupId: string;
    topics: string[];
  }): Promise<{ topic: string; partitions: KafkaCommittedOffset[] }[]>;
  /** The names of the cluster's topics. */
  listTopics(): Promise<string[]>;
  /** Creates topics (`assertTopology`). */
  createTopics(options: { topics: KafkaTopicConfig[]; waitForLeaders?: boolean }): Promise<boolean>;
}

/**
 * The client the consumer was made with (kafkajs' `Kafka`, `new Kafka({ brokers })`). The
 * adapter makes its own admin client with it, and its own producer for dead letters (unless
 * the `producer` option gives one), and disconnects both on `close()`.
 *
 * @example
 * ```ts
 * const kafka = new Kafka({ clientId: 'payments', brokers: ['127.0.0.1:9092'] })
 * await runInboxConsumer(kafka.consumer({ groupId: 'payments' }), { mode: 'eachMessage', kafka, inbox, handler })
 * ```
 */
export interface KafkaClient {
  /** Makes a producer (for dead letters, or a relay's publishes). */
  producer(config?: KafkaProducerConfig): KafkaProducer;
  /** Makes an admin client. */
  admin(): KafkaAdmin;
}
