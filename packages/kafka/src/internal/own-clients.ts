import type { InboxLogger } from '@inboxkit/core';
import type { KafkaAdmin, KafkaClient, KafkaProducer } from '../kafka-client.js';

/**
 * The clients the adapter makes itself from the user's `kafka` client: an admin client and
 * (unless the user gave one) the dead-letter producer. Each is made and connected when
 * first needed, so a consumer that never dead-letters never connects a producer; a connect
 * that fails is tried again at the next need. `close()` disconnects what the adapter made,
 * never the user's producer.
 */
export class OwnClients {
  readonly #kafka: KafkaClient;
  readonly #userProducer: KafkaProducer | undefined;
  readonly #logger: InboxLogger;
  #admin: { client: KafkaAdmin; connected: Promise<KafkaAdmin> | undefined } | undefined;
  #producer: { client: KafkaProducer; connected: Promise<KafkaProducer> | undefined } | undefined;
  #closed = false;

  constructor(kafka: KafkaClient, userProducer: KafkaProducer | undefined, logger: InboxLogger) {
    this.#kafka = kafka;
    this.#userProducer = userProducer;
    this.#logger = logger;
  }

  /** The adapter's admin client, connected. */
  admin(): Promise<KafkaAdmin> {
    if (this.#closed) return Promise.reject(new Error('inboxkit: the Kafka consumer is closed'));
    this.#admin ??= { client: this.#kafka.admin(), connected: undefined };
    return connectOnce(this.#admin, () => this.#admin?.client.connect());
  }

  /** The dead-letter producer, connected: the user's, or an idempotent one of the adapter's own. */
  producer(): Promise<KafkaProducer> {
    if (this.#closed) return Promise.reject(new Error('inboxkit: the Kafka consumer is closed'));
    this.#producer ??= {
      client:
        this.#userProducer ??
        // kafkajs sends with acks -1 by default; idempotence keeps a retried send from writing twice.
        this.#kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false }),
      connected: undefined,
    };
    const own = this.#producer;
    return connectOnce(own, () => own.client.connect?.());
  }

  /** Disconnects the clients the adapter made. Never throws; later calls do nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const own: { disconnect?(): Promise<void> }[] = [];
    if (this.#admin !== undefined) own.push(this.#admin.client);
    if (this.#producer !== undefined && this.#userProducer === undefined) own.push(this.#producer.client);
    await Promise.all(
      own.map(async (client) => {
        try {
          await client.disconnect?.();
        } catch (error) {
          this.#logger.debug({ err: error }, 'inboxkit: disconnecting a Kafka client of the adapter failed');
        }
      }),
    );
  }
}

function connectOnce<C>(
  slot: { client: C; connected: Promise<C> | undefined },
  connect: () => Promise<void> | undefined,
): Promise<C> {
  if (slot.connected === undefined) {
    const connected = Promise.resolve()
      .then(connect)
      .then(() => slot.client);
    slot.connected = connected;
    connected.catch(() => {
      if (slot.connected === connected) slot.connected = undefined;
    });
  }
  return slot.connected;
}
