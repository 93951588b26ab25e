// The subset of kafkajs' consumer and producer that the adapter uses, typed by shape (like
// kysely's `PostgresPool`). kafkajs 2.x's own `Consumer`, `Producer`, `EachMessagePayload` and
// `EachBatchPayload` fit as they are; so does any client offering the same KafkaJS-style API.
// Nothing here imports kafkajs.

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
  eachMessage?: (payload: KafkaEachMessagePayload) => Promise<void>;
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
  run(config: KafkaRunConfig): Promise<void>;
  disconnect(): Promise<void>;
  commitOffsets(offsets: KafkaOffsetCommit[]): Promise<void>;
  seek(target: { topic: string; partition: number; offset: string }): void;
  pause(topics: KafkaTopicPartitions[]): void;
  resume(topics: KafkaTopicPartitions[]): void;
  readonly events?: { readonly GROUP_JOIN: string };
  on?(eventName: string, listener: (event: KafkaGroupJoinEvent) => void): () => void;
}

/** A record to produce. */
export interface KafkaProducedRecord {
  key?: Buffer | string | null;
  value: Buffer | string | null;
  headers?: KafkaHeaders;
  timestamp?: string;
}

/** A producer (kafkajs' `Producer`), used for the dead-letter topic. */
export interface KafkaProducer {
  /** Called by `runInboxConsumer`'s `subscribe` option, when the producer has it. */
  connect?(): Promise<void>;
  send(record: { topic: string; messages: KafkaProducedRecord[] }): Promise<unknown>;
}

/** A committed offset as the admin client reports it. */
export interface KafkaCommittedOffset {
  readonly partition: number;
  /** `-1` when the group never committed an offset for the partition. */
  readonly offset: string;
  readonly metadata: string | null;
}

/**
 * An admin client (kafkajs' `Admin`), used only to read the group's committed offsets and
 * their metadata when a partition is assigned (see the `admin` option).
 */
export interface KafkaAdmin {
  /** Called by `runInboxConsumer`'s `subscribe` option, when the client has it. */
  connect?(): Promise<void>;
  fetchOffsets(options: {
    groupId: string;
    topics: string[];
  }): Promise<{ topic: string; partitions: KafkaCommittedOffset[] }[]>;
}
