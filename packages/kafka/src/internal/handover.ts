import type { InboxLogger } from '@inboxkit/core';
import type { KafkaAdmin, KafkaCommittedOffset, KafkaConsumer } from '../kafka-client.js';

/** Offset metadata committed while a member works on a partition. */
export const RUNNING_METADATA = 'inboxkit:running';
/** Offset metadata committed by a graceful shutdown, once nothing is in flight. */
export const CLEAN_METADATA = 'inboxkit:clean';

/**
 * Tells whether the previous owner of a newly assigned partition left it cleanly, so that
 * the crash-loop window (records run one at a time as suspects) is paid only after a crash,
 * not at every deploy or start.
 *
 * The marker is the metadata of the group's committed offset:
 * - before processing a partition, a member commits its fetch position with metadata
 *   `inboxkit:running` (and waits for it): from then on, a crash leaves that mark behind;
 * - its offset commits keep `inboxkit:running`;
 * - a graceful shutdown commits, after draining, `inboxkit:clean`.
 *
 * The next owner reads the metadata (through the adapter's admin client): `inboxkit:clean`,
 * or no committed offset at all (no member of the group ever processed the partition),
 * means no handler can have been in flight; anything else (a crash, a rebalance that moved
 * the partition away from a live member, a commit by another tool) opens the window. Before
 * the group id is known, or when reading or marking fails, the window opens: the safe side.
 */
export class HandoverCheck {
  readonly #admin: () => Promise<KafkaAdmin>;
  readonly #kafkaConsumer: KafkaConsumer;
  readonly #logger: InboxLogger;
  /** Committed offsets by topic, read once per group generation. */
  #lookups = new Map<string, Promise<Map<number, KafkaCommittedOffset> | undefined>>();

  constructor(admin: () => Promise<KafkaAdmin>, kafkaConsumer: KafkaConsumer, logger: InboxLogger) {
    this.#admin = admin;
    this.#kafkaConsumer = kafkaConsumer;
    this.#logger = logger;
  }

  /** Forgets what was read: a new generation may follow other members' work. */
  reset(): void {
    this.#lookups = new Map();
  }

  /**
   * Marks the partition as being worked on (committing `firstOffset`, the record about to be
   * processed) and returns whether its previous owner left it cleanly.
   */
  async claim(groupId: string | undefined, topic: string, partition: number, firstOffset: string): Promise<boolean> {
    let clean = false;
    if (groupId !== undefined) {
      const committed = await this.#read(groupId, topic);
      if (committed !== undefined) {
        const entry = committed.get(partition);
        clean = entry === undefined || Number(entry.offset) < 0 || entry.metadata === CLEAN_METADATA;
      }
    }
    try {
      await this.#kafkaConsumer.commitOffsets([{ topic, partition, offset: firstOffset, metadata: RUNNING_METADATA }]);
    } catch (error) {
      this.#logger.warn(
        { topic, partition, err: error },
        'inboxkit: could not mark the partition as being processed; its records start as crash-loop suspects',
      );
      return false;
    }
    return clean;
  }

  #read(groupId: string, topic: string): Promise<Map<number, KafkaCommittedOffset> | undefined> {
    let lookup = this.#lookups.get(topic);
    if (lookup === undefined) {
      lookup = this.#admin()
        .then((admin) => admin.fetchOffsets({ groupId, topics: [topic] }))
        .then(
          (topics) => new Map((topics.find((t) => t.topic === topic)?.partitions ?? []).map((p) => [p.partition, p])),
          (error: unknown) => {
            this.#logger.warn(
              { topic, groupId, err: error },
              'inboxkit: could not read the committed offsets; assigned partitions start with crash-loop suspects',
            );
            this.#lookups.delete(topic);
            return undefined;
          },
        );
      this.#lookups.set(topic, lookup);
    }
    return lookup;
  }
}
