import type { InboxLogger } from '@inboxkit/core';
import { type DeadLetterContext, type DeadLetterEntry, deadLetterHeaders } from '../dead-letter-headers.js';
import type { KafkaProducedRecord } from '../kafka-client.js';
import type { TopologyOptions } from '../kafka-inbox-options.js';
import { PublishError } from '../publish-error.js';
import type { OwnClients } from './own-clients.js';

/** Options of {@link DeadLetterPublisher}. */
export interface DeadLetterPublisherOptions {
  readonly clients: OwnClients;
  readonly topicFor: (topic: string) => string;
  readonly timeoutMs: number;
  /** Set: a missing dead-letter topic is created. */
  readonly topology: Required<TopologyOptions> | undefined;
  readonly logger: InboxLogger;
}

/**
 * Publishes dead letters, each to its topic, and resolves once the broker acknowledged them
 * all (kafkajs sends with `acks: -1`, every in-sync replica). Before the first publish to a
 * topic it checks that the topic exists (one metadata request, remembered once it does):
 * publishing to a missing topic would either create it with the broker's defaults
 * (`auto.create.topics.enable`) or wait out the client's retries. A missing topic is
 * created with `assertTopology`, else the publish fails with `PublishError`
 * (`missing_topic`). Every failure rejects with {@link PublishError}: the caller must then
 * not move the offsets.
 */
export class DeadLetterPublisher {
  readonly #options: DeadLetterPublisherOptions;
  /** Dead-letter topics known to exist. */
  readonly #existing = new Set<string>();

  constructor(options: DeadLetterPublisherOptions) {
    this.#options = options;
  }

  /** Publishes the entries (one `send` per topic); returns the topic of each. */
  async publish(
    entries: readonly DeadLetterEntry[],
    context: DeadLetterContext,
  ): Promise<Map<DeadLetterEntry, string>> {
    const now = new Date();
    const byTopic = new Map<string, KafkaProducedRecord[]>();
    const topics = new Map<DeadLetterEntry, string>();
    for (const entry of entries) {
      const topic = this.#options.topicFor(entry.message.topic);
      topics.set(entry, topic);
      let records = byTopic.get(topic);
      if (records === undefined) {
        records = [];
        byTopic.set(topic, records);
      }
      records.push({
        key: entry.message.key,
        value: entry.message.payload,
        headers: deadLetterHeaders(entry, context, now),
        timestamp: entry.message.timestamp,
      });
    }
    for (const [topic, records] of byTopic) {
      await withTimeout(this.#publishTo(topic, records), this.#options.timeoutMs, topic);
    }
    return topics;
  }

  async #publishTo(topic: string, records: KafkaProducedRecord[]): Promise<void> {
    if (!this.#existing.has(topic)) await this.#ensureTopic(topic);
    const producer = await this.#options.clients.producer();
    // No per-send `acks`: kafkajs' default is -1 (every in-sync replica), and clients that
    // take acks only in the producer's configuration reject it here.
    await producer.send({ topic, messages: records });
  }

  /** Checks that the topic exists; creates it with `assertTopology`; else throws `missing_topic`. */
  async #ensureTopic(topic: string): Promise<void> {
    const admin = await this.#options.clients.admin();
    if ((await admin.listTopics()).includes(topic)) {
      this.#existing.add(topic);
      return;
    }
    const topology = this.#options.topology;
    if (topology === undefined) {
      throw new PublishError(
        'missing_topic',
        topic,
        'the topic does not exist. Create it, or set `assertTopology` to have the consumer create it; the record stays in its partition (paused) until then.',
      );
    }
    // `false`: another consumer created it in between.
    const created = await admin.createTopics({
      topics: [{ topic, numPartitions: topology.numPartitions, replicationFactor: topology.replicationFactor }],
      waitForLeaders: true,
    });
    this.#existing.add(topic);
    if (created) this.#options.logger.info({ topic }, 'inboxkit: created the dead-letter topic (assertTopology)');
  }
}

async function withTimeout(publish: Promise<void>, timeoutMs: number, topic: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new PublishError('timeout', topic, `not acknowledged within deadLetterTimeoutMs (${timeoutMs} ms).`)),
      timeoutMs,
    );
  });
  // A publish that loses the race must not reject unobserved.
  publish.catch(() => {});
  try {
    await Promise.race([publish, timeout]);
  } catch (error) {
    if (error instanceof PublishError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new PublishError('broker_error', topic, reason, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}
