import type { InboxLogger } from '@inboxkit/core';
import type { KafkaConsumer, KafkaOffsetCommit } from '../kafka-client.js';
import type { KafkaInboxEmitter } from '../kafka-inbox-events.js';
import { CLEAN_METADATA, RUNNING_METADATA } from './handover.js';

/**
 * Commits consumed offsets explicitly, never through the client's auto-commit (which, in
 * kafkajs, runs at the end of a fetch rather than after our transaction, and does nothing
 * unless its own settings are set: kafkajs #1014, #1729).
 *
 * An offset is marked only once its record is settled in Postgres (and, for a dead letter,
 * acknowledged by the broker). Commits run in the background, at most one at a time, at
 * most every `intervalMs`: the database commit is what makes a record done, the offset
 * commit only shortens the replay after a restart (replayed records are duplicates).
 * Commits carry the `inboxkit:running` metadata; the final one of a graceful shutdown
 * carries `inboxkit:clean` (see {@link HandoverCheck}).
 */
export class OffsetCommitter {
  readonly #kafkaConsumer: KafkaConsumer;
  readonly #intervalMs: number;
  readonly #logger: InboxLogger;
  readonly #events: KafkaInboxEmitter;
  /** Next offset to consume, by `topic\u0000partition`, for every partition worked on. */
  readonly #latest = new Map<string, KafkaOffsetCommit>();
  /** Partitions whose latest offset is not committed yet. */
  readonly #dirty = new Set<string>();
  #lastCommitAt = 0;
  #running: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(kafkaConsumer: KafkaConsumer, intervalMs: number, logger: InboxLogger, events: KafkaInboxEmitter) {
    this.#kafkaConsumer = kafkaConsumer;
    this.#intervalMs = intervalMs;
    this.#logger = logger;
    this.#events = events;
  }

  /** Records that every record of the partition before `nextOffset` is settled. */
  mark(topic: string, partition: number, nextOffset: string): void {
    const key = partitionKey(topic, partition);
    this.#latest.set(key, { topic, partition, offset: nextOffset, metadata: RUNNING_METADATA });
    this.#dirty.add(key);
    this.#schedule();
  }

  /** Records a partition's position as already committed (by the handover marker). */
  committed(topic: string, partition: number, nextOffset: string): void {
    const key = partitionKey(topic, partition);
    if (!this.#latest.has(key)) {
      this.#latest.set(key, { topic, partition, offset: nextOffset, metadata: RUNNING_METADATA });
    }
  }

  /** Forgets partitions this member no longer owns. */
  retain(owned: (topic: string, partition: number) => boolean): void {
    for (const [key, commit] of this.#latest) {
      if (!owned(commit.topic, commit.partition)) {
        this.#latest.delete(key);
        this.#dirty.delete(key);
      }
    }
  }

  /**
   * Commits every pending offset now and waits for it (and for a commit already running).
   * With `clean`, commits every partition worked on with `inboxkit:clean`: call it only once
   * nothing is in flight and nothing more will be processed.
   */
  async flush(clean = false): Promise<void> {
    this.#clearTimer();
    while (this.#running !== undefined) await this.#running;
    if (clean) {
      const offsets = [...this.#latest.values()].map((commit) => ({ ...commit, metadata: CLEAN_METADATA }));
      if (offsets.length > 0) await this.#start(offsets);
    } else if (this.#dirty.size > 0) {
      await this.#start();
    }
  }

  /** Stops the timer; pending offsets can still be flushed. */
  close(): void {
    this.#closed = true;
    this.#clearTimer();
  }

  #schedule(): void {
    if (this.#closed || this.#running !== undefined || this.#timer !== undefined) return;
    const wait = this.#lastCommitAt + this.#intervalMs - Date.now();
    if (wait <= 0) {
      void this.#start();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#running === undefined && this.#dirty.size > 0) void this.#start();
    }, wait);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #start(given?: KafkaOffsetCommit[]): Promise<void> {
    const offsets = given ?? [...this.#dirty].flatMap((key) => this.#latest.get(key) ?? []);
    const sent = new Map(offsets.map((commit) => [partitionKey(commit.topic, commit.partition), commit.offset]));
    const run = (async () => {
      try {
        await this.#kafkaConsumer.commitOffsets(offsets);
        for (const [key, offset] of sent) {
          if (this.#latest.get(key)?.offset === offset) this.#dirty.delete(key);
        }
        this.#events.emit('committed', { offsets });
      } catch (thrown) {
        const error = thrown instanceof Error ? thrown : new Error(String(thrown));
        this.#logger.warn(
          { err: error },
          'inboxkit: committing Kafka offsets failed; they are retried with the next commit',
        );
        this.#events.emit('commitFailed', { error });
      } finally {
        this.#lastCommitAt = Date.now();
        this.#running = undefined;
      }
    })();
    this.#running = run;
    void run.then(() => {
      if (this.#dirty.size > 0) this.#schedule();
    });
    return run;
  }
}

export function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
