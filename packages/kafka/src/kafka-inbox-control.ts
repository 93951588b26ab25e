import type { KafkaInboxEventName, KafkaInboxListener, PausedPartition } from './kafka-inbox-events.js';

/** Controls of a running inbox consumer (attached to the handlers, returned by `runInboxConsumer`). */
export interface KafkaInboxControl {
  /**
   * Graceful shutdown: stops taking new records (pauses every partition), lets the records
   * in flight finish, commits the offsets of everything settled, then disconnects the
   * kafkajs consumer, which stops it and leaves the group (kafkajs' `disconnect()` alone commits
   * nothing, kafkajs #507).
   * Calling it again returns the same promise. The library installs no signal handler:
   * call this from yours (`process.once('SIGTERM', ...)`).
   *
   * It also disconnects the admin client and the producer the adapter made itself. The
   * `kafka` client, a `producer` you passed and the database pool are yours (and may be
   * shared): close them after this resolves.
   */
  close(options?: CloseOptions): Promise<void>;
  /** Commits the offsets of every settled record now. */
  commit(): Promise<void>;
  /** Adds an event listener; returns a function that removes it. */
  on<E extends KafkaInboxEventName>(event: E, listener: KafkaInboxListener<E>): () => void;
  /** Partitions paused after an infrastructure error, and when each resumes. */
  paused(): PausedPartition[];
  /** The partitions assigned to this member at its last group join (empty when the client reports no joins). */
  assignment(): { topic: string; partitions: number[] }[];
}

/** Options of {@link KafkaInboxControl.close}. */
export interface CloseOptions {
  /** Disconnect the kafkajs consumer (which stops it and leaves the group) after the final commit. Default `true`. */
  readonly disconnect?: boolean;
}
