import type { InboxLogger } from '@inboxkit/core';
import { type Backoff, backoffDelayMs } from '@inboxkit/core/adapter';
import type { KafkaConsumer } from '../kafka-client.js';
import type { KafkaInboxEmitter, PausedPartition, PauseReason } from '../kafka-inbox-events.js';
import { partitionKey } from './offset-committer.js';

interface Paused {
  readonly topic: string;
  readonly partition: number;
  /** The record that comes back first when the partition resumes. */
  readonly offset: string;
  readonly reason: PauseReason;
  readonly resumeAt: number;
  readonly timer: NodeJS.Timeout;
}

/**
 * Partitions paused after an infrastructure error (Postgres down, dead-letter publish
 * failed). Pausing also seeks the partition back to the record that could not be settled,
 * so nothing after it is skipped; the partition resumes after a backoff that grows while
 * failures go on and resets after a record settles.
 *
 * Clients drop pauses when the group rebalances (kafkajs keeps them only within one
 * generation): {@link reapply} pauses again after a join, and {@link intercept} catches a
 * record of a partition that should be paused and pauses it again.
 */
export class PartitionPauses {
  readonly #kafkaConsumer: KafkaConsumer;
  readonly #backoff: Backoff;
  readonly #logger: InboxLogger;
  readonly #events: KafkaInboxEmitter;
  readonly #paused = new Map<string, Paused>();
  /** Failures in a row, by partition; cleared when a record of the partition settles. */
  readonly #failures = new Map<string, number>();
  #closed = false;

  constructor(kafkaConsumer: KafkaConsumer, backoff: Backoff, logger: InboxLogger, events: KafkaInboxEmitter) {
    this.#kafkaConsumer = kafkaConsumer;
    this.#backoff = backoff;
    this.#logger = logger;
    this.#events = events;
  }

  /** Pauses the partition and seeks it back to `offset`; it resumes by itself after a backoff. */
  pause(topic: string, partition: number, offset: string, reason: PauseReason, error: Error): void {
    const key = partitionKey(topic, partition);
    const failures = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.set(key, failures);
    const delayMs = backoffDelayMs(this.#backoff, failures);
    const previous = this.#paused.get(key);
    if (previous !== undefined) clearTimeout(previous.timer);
    const timer = setTimeout(() => this.#resume(key), delayMs);
    this.#paused.set(key, { topic, partition, offset, reason, resumeAt: Date.now() + delayMs, timer });
    this.#apply(topic, partition, offset);
    this.#logger.warn(
      { topic, partition, offset, reason, delayMs, err: error },
      'inboxkit: partition paused after an infrastructure error; its record comes back after the pause',
    );
    this.#events.emit('paused', { topic, partition, offset, reason, error, delayMs });
  }

  /** A record of the partition settled: the next failure starts the backoff afresh. */
  succeeded(topic: string, partition: number): void {
    if (this.#failures.size > 0) this.#failures.delete(partitionKey(topic, partition));
  }

  isPaused(topic: string, partition: number): boolean {
    return this.#paused.size > 0 && this.#paused.has(partitionKey(topic, partition));
  }

  /**
   * Called with each record handed over: when its partition should be paused (the client
   * lost the pause, e.g. in a rebalance), pauses it again, seeks back, and returns true:
   * the record must not be processed now.
   */
  intercept(topic: string, partition: number): boolean {
    if (this.#paused.size === 0) return false;
    const paused = this.#paused.get(partitionKey(topic, partition));
    if (paused === undefined) return false;
    this.#apply(topic, partition, paused.offset);
    return true;
  }

  /** After a (re)join: pause again what is still assigned, forget the rest. */
  reapply(owned: (topic: string, partition: number) => boolean): void {
    for (const [key, paused] of this.#paused) {
      if (owned(paused.topic, paused.partition)) {
        this.#apply(paused.topic, paused.partition, paused.offset);
      } else {
        clearTimeout(paused.timer);
        this.#paused.delete(key);
        this.#failures.delete(key);
      }
    }
  }

  list(): PausedPartition[] {
    return [...this.#paused.values()].map(({ topic, partition, offset, reason, resumeAt }) => ({
      topic,
      partition,
      offset,
      reason,
      resumeAt: new Date(resumeAt),
    }));
  }

  /** Cancels every resume timer (shutdown). */
  close(): void {
    this.#closed = true;
    for (const paused of this.#paused.values()) clearTimeout(paused.timer);
    this.#paused.clear();
  }

  #apply(topic: string, partition: number, offset: string): void {
    try {
      this.#kafkaConsumer.pause([{ topic, partitions: [partition] }]);
      this.#kafkaConsumer.seek({ topic, partition, offset });
    } catch (error) {
      // The consumer is not running (stopping, or restarting after a crash): the next
      // generation starts from the committed offset, which is not past this record.
      this.#logger.debug({ topic, partition, err: error }, 'inboxkit: could not pause the partition');
    }
  }

  #resume(key: string): void {
    const paused = this.#paused.get(key);
    if (paused === undefined || this.#closed) return;
    this.#paused.delete(key);
    try {
      this.#kafkaConsumer.resume([{ topic: paused.topic, partitions: [paused.partition] }]);
      this.#events.emit('resumed', { topic: paused.topic, partition: paused.partition });
    } catch (error) {
      this.#logger.debug({ key, err: error }, 'inboxkit: could not resume the partition');
    }
  }
}
