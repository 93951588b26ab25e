// Helpers of the Kafka tests: clients on the broker the global setup resolved, topics with a
// random suffix, producing records with message-id headers, reading a dead-letter topic back,
// and waiting for a condition. Every test talks to a real broker (docs/design.md, "Tests and services").
import { randomBytes } from 'node:crypto';
import { type Admin, type IHeaders, Kafka, type KafkaConfig, logLevel, type Producer } from 'kafkajs';

/** Short session so a SIGKILLed member is dropped in seconds (the broker's minimum is 6 s). */
export const SESSION_TIMEOUT_MS = 6000;
export const HEARTBEAT_INTERVAL_MS = 500;

export function uniqueName(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}

/** A kafkajs client for tests: quiet unless KAFKAJS_LOG is set, quick retries. */
export function testKafka(
  brokers: string[],
  clientId = uniqueName('inboxkit-test'),
  config: Partial<KafkaConfig> = {},
): Kafka {
  return new Kafka({
    clientId,
    brokers,
    logLevel: process.env.KAFKAJS_LOG ? logLevel.INFO : logLevel.NOTHING,
    retry: { initialRetryTime: 100, retries: 8, maxRetryTime: 2000 },
    ...config,
  });
}

/** Consumer settings of the tests: short session, quick fetch loop. */
export const consumerSettings = {
  sessionTimeout: SESSION_TIMEOUT_MS,
  rebalanceTimeout: 10_000,
  heartbeatInterval: HEARTBEAT_INTERVAL_MS,
  maxWaitTimeInMs: 200,
} as const;

export async function createTopics(admin: Admin, topics: { topic: string; numPartitions: number }[]): Promise<void> {
  await admin.createTopics({ topics, waitForLeaders: true });
}

/** A topic with a random suffix and its one-partition `.dlq`, created, and a fresh group name for it. */
export async function createFreshTopic(
  admin: Admin,
  labels: { topic: string; group: string; partitions: number },
): Promise<{ topic: string; dlq: string; groupId: string }> {
  const topic = uniqueName(labels.topic);
  const groupId = uniqueName(labels.group);
  await createTopics(admin, [
    { topic, numPartitions: labels.partitions },
    { topic: `${topic}.dlq`, numPartitions: 1 },
  ]);
  return { topic, dlq: `${topic}.dlq`, groupId };
}

/** One record to produce: its message id header (or none), value and extra headers. */
export interface TestRecord {
  readonly id?: string;
  readonly value: Buffer | string | null;
  readonly key?: string;
  readonly headers?: IHeaders;
  /** A partition of its own choosing; else by key. */
  readonly partition?: number;
}

/** A charge as the tests produce it. */
export function charge(id: string, amount = 100): TestRecord {
  return { id, key: id, value: JSON.stringify({ id, userId: `u-${id.length}`, amount }) };
}

/**
 * `distinct` charges plus copies of some of them (same id, same payload, produced again),
 * shuffled: `duplicateShare` of the records are copies.
 */
export function chargesWithDuplicates(prefix: string, total: number, duplicateShare: number): TestRecord[] {
  const copies = Math.round(total * duplicateShare);
  const distinct = total - copies;
  const records = Array.from({ length: distinct }, (_, i) => charge(`${prefix}-${i}`, 100 + (i % 900)));
  for (let i = 0; i < copies; i++) records.push(records[(i * 7919) % distinct] as TestRecord);
  // Deterministic shuffle (so a failure can be replayed).
  let seed = 42;
  for (let i = records.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [records[i], records[j]] = [records[j] as TestRecord, records[i] as TestRecord];
  }
  return records;
}

/** Produces records in chunks, acknowledged by the broker. */
export async function produce(producer: Producer, topic: string, records: readonly TestRecord[]): Promise<void> {
  for (let i = 0; i < records.length; i += 500) {
    await producer.send({
      topic,
      acks: -1,
      messages: records.slice(i, i + 500).map((r) => ({
        key: r.key ?? r.id ?? null,
        value: r.value,
        ...(r.partition === undefined ? {} : { partition: r.partition }),
        headers: { ...(r.id === undefined ? {} : { 'message-id': r.id }), ...r.headers },
      })),
    });
  }
}

/** A record read back from a (dead-letter) topic, headers decoded as text. */
export interface ReadRecord {
  readonly partition: number;
  readonly offset: string;
  readonly key: string | null;
  readonly value: string | null;
  readonly headers: Record<string, string>;
}

/** Reads every record of a topic from the beginning, until `expected` are read or `timeoutMs` passed. */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  expected: number,
  timeoutMs = 20_000,
): Promise<ReadRecord[]> {
  const kafkaConsumer = kafka.consumer({ groupId: uniqueName('reader'), ...consumerSettings });
  const records: ReadRecord[] = [];
  await kafkaConsumer.connect();
  try {
    await kafkaConsumer.subscribe({ topics: [topic], fromBeginning: true });
    await kafkaConsumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(message.headers ?? {})) {
          if (value !== undefined) headers[name] = Array.isArray(value) ? String(value.at(-1)) : value.toString();
        }
        records.push({
          partition,
          offset: message.offset,
          key: message.key?.toString() ?? null,
          value: message.value?.toString() ?? null,
          headers,
        });
      },
    });
    await waitFor(() => records.length >= expected, { timeoutMs, what: `${expected} records on ${topic}` }).catch(
      () => undefined,
    );
    // A little longer: a record too many is a failure worth seeing.
    await sleep(300);
  } finally {
    await kafkaConsumer.disconnect();
  }
  return records;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it holds; rejects after `timeoutMs` naming `what`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<void> {
  const { timeoutMs = 60_000, intervalMs = 100, what = 'condition' } = options;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Fresh topic names and the clients of one test, disposed together. */
export interface KafkaTestKit {
  readonly kafka: Kafka;
  readonly admin: Admin;
  readonly producer: Producer;
  dispose(): Promise<void>;
}

export async function kafkaTestKit(brokers: string[]): Promise<KafkaTestKit> {
  const kafka = testKafka(brokers);
  const admin = kafka.admin();
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await admin.connect();
  await producer.connect();
  return {
    kafka,
    admin,
    producer,
    async dispose() {
      await producer.disconnect().catch(() => {});
      await admin.disconnect().catch(() => {});
    },
  };
}

/** Records in a topic (the sum of its partitions' high watermarks minus their low ones). */
export async function topicSize(admin: Admin, topic: string): Promise<number> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
}

/** Waits until the group committed every partition of `topic` up to its end: every record is settled. */
export async function waitForCommittedToEnd(
  admin: Admin,
  groupId: string,
  topic: string,
  timeoutMs = 90_000,
): Promise<void> {
  let last = '';
  await waitFor(
    async () => {
      const [ends, committed] = await Promise.all([
        admin.fetchTopicOffsets(topic),
        admin.fetchOffsets({ groupId, topics: [topic] }),
      ]);
      const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, p.offset]));
      last = ends.map((p) => `${p.partition}:${done.get(p.partition)}/${p.high}`).join(' ');
      return ends.every((p) => done.get(p.partition) === p.high);
    },
    { timeoutMs, intervalMs: 250, what: `group ${groupId} to commit ${topic} to its end` },
  ).catch((error: Error) => {
    throw new Error(`${error.message} (committed/end: ${last})`);
  });
}
