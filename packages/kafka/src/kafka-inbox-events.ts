import type { ConflictOutcome, DeadLetterOutcome, InboxLogger, ProcessOutcome } from '@inboxkit/core';
import { SafeEmitter } from '@inboxkit/core/adapter';
import type { KafkaOffsetCommit } from './kafka-client.js';
import type { KafkaInboxMessage } from './kafka-inbox-message.js';

/** Why a partition was paused. Never a reason to skip or dead-letter a record. */
export type PauseReason =
  /** Postgres could not be reached. */
  | 'database_unavailable'
  /** Another delivery of the same id held its key longer than the inbox's `lockTimeoutMs`. */
  | 'lock_timeout'
  /** The dead-letter publish failed, or recording the dead letter in Postgres did. */
  | 'dead_letter_failed'
  /** Anything else that went wrong outside the handler (logged with the error). */
  | 'unexpected_error';

/** A paused partition, as `paused()` reports it. */
export interface PausedPartition {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly reason: PauseReason;
  readonly resumeAt: Date;
}

/** The events of a Kafka inbox consumer, each with one payload object. */
export interface KafkaInboxEvents {
  /**
   * A record is settled: processed, a duplicate, or dead-lettered (published and recorded).
   * Its offset may now be committed; it has not been yet. Listeners run synchronously.
   */
  settled: { message: KafkaInboxMessage; outcome: ProcessOutcome };
  /** A record was published to its dead-letter topic and the broker acknowledged it. */
  deadLettered: { message: KafkaInboxMessage; outcome: DeadLetterOutcome | ConflictOutcome; deadLetterTopic: string };
  /** A partition was paused after an infrastructure error; the record at `offset` comes back after `delayMs`. */
  paused: { topic: string; partition: number; offset: string; reason: PauseReason; error: Error; delayMs: number };
  /** A paused partition was resumed. */
  resumed: { topic: string; partition: number };
  /** Offsets were committed to the group. */
  committed: { offsets: KafkaOffsetCommit[] };
  /** An offset commit failed; the offsets stay pending and are committed with the next one. */
  commitFailed: { error: Error };
  /** The consumer joined its group with this assignment. */
  assigned: { groupId: string; memberId: string; assignment: { topic: string; partitions: number[] }[] };
}

/** The name of a consumer event (see {@link KafkaInboxEvents}). */
export type KafkaInboxEventName = keyof KafkaInboxEvents;
/** A listener of the event `E`, called with its payload. */
export type KafkaInboxListener<E extends KafkaInboxEventName> = (payload: KafkaInboxEvents[E]) => void;

/** The consumer's emitter: core's, with the Kafka consumer's events. */
export class KafkaInboxEmitter extends SafeEmitter<KafkaInboxEvents> {
  constructor(logger: InboxLogger) {
    super(
      ['settled', 'deadLettered', 'paused', 'resumed', 'committed', 'commitFailed', 'assigned'],
      logger,
      'Kafka consumer',
    );
  }
}
