import { randomBytes } from 'node:crypto';
import { DEAD_LETTER_HEADERS } from '@inboxkit/kafka';
import { type IHeaders, Kafka, type KafkaMessage, logLevel, type Producer } from 'kafkajs';
import { CliError, describeError, NotFoundError, UnreachableError } from '../errors.js';
import {
  type Destination,
  type DlqEntry,
  entryFromHeaders,
  headerText,
  isDeadLetterHeader,
  REPLAYS_HEADER,
} from './dlq-entry.js';
import type { DlqSource, Visit } from './dlq-source.js';

const WALK_TIMEOUT_MS = 120_000;

/**
 * A Kafka dead-letter topic. It is read by the CLI's own consumer group (`--group`,
 * default `inboxkit-cli.<topic>`), which commits an offset only once the records before it
 * were all replayed (docs/design.md, "Operations"): Kafka keeps a position, not a set, so
 * a record not selected (or refused) holds the position there, and the records after it
 * are read again by the next `list` or `replay`, even those replayed. A replay of one of
 * those again is acked by the consumer as a duplicate (its key is processed by then).
 */
export async function openKafkaDlq(brokers: readonly string[], topic: string, groupId: string): Promise<DlqSource> {
  const kafka = new Kafka({
    clientId: 'inboxkit-cli',
    brokers: [...brokers],
    logLevel: logLevel.NOTHING,
    connectionTimeout: 3000,
    retry: { retries: 2, initialRetryTime: 300, maxRetryTime: 2000 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
  } catch (error) {
    throw new UnreachableError(`Cannot reach Kafka at ${brokers.join(',')}: ${describeError(error)}`, error);
  }
  let producer: Producer | undefined;
  const close = async () => {
    await producer?.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
  };
  try {
    const topics = await admin.listTopics();
    if (!topics.includes(topic)) throw new NotFoundError(`Kafka topic ${JSON.stringify(topic)} does not exist.`);
  } catch (error) {
    await close();
    throw error;
  }

  const replayRecord = async (message: KafkaMessage, destination: Destination, replays: number) => {
    if (destination.kind !== 'kafka') throw new Error('not a Kafka destination');
    if (producer === undefined) {
      producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
      await producer.connect();
    }
    const headers: IHeaders = {};
    for (const [name, value] of Object.entries(message.headers ?? {})) {
      if (!isDeadLetterHeader(name) && value !== undefined) headers[name] = value;
    }
    headers[REPLAYS_HEADER] = String(replays + 1);
    // acks -1: every in-sync replica has it before the dead letter is removed.
    await producer.send({
      topic: destination.topic,
      acks: -1,
      messages: [{ key: message.key, value: message.value, headers, partition: destination.partition }],
    });
  };

  return {
    name: `topic ${JSON.stringify(topic)}`,
    close,
    async walk(visit: Visit, options) {
      const watermarks = await admin.fetchTopicOffsets(topic);
      const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
      const start = new Map<number, bigint>();
      const end = new Map<number, bigint>();
      for (const w of watermarks) {
        const c = committed[0]?.partitions.find((p) => p.partition === w.partition)?.offset;
        const low = BigInt(w.low);
        const from = c === undefined || BigInt(c) < 0n ? low : BigInt(c) > low ? BigInt(c) : low;
        if (from < BigInt(w.high)) {
          start.set(w.partition, from);
          end.set(w.partition, BigInt(w.high));
        }
      }
      let total = 0;
      for (const [partition, from] of start) total += Number((end.get(partition) ?? from) - from);
      options.onTotal?.(options.limit === undefined ? total : Math.min(total, options.limit));
      if (start.size === 0) return;
      // One replay at a time per group: a second one would share the partitions, its
      // rebalance would take partitions from the first midway (docs/design.md, "Operations").
      if (options.removing) await refuseBusyGroup(admin, groupId, topic);
      // Only a replay reads as the CLI's group (and commits); a list reads as a throwaway
      // group that commits nothing, and skips what the CLI's group has passed.
      const consumer = kafka.consumer({
        groupId: options.removing ? groupId : `${groupId}.list-${randomBytes(4).toString('hex')}`,
        allowAutoTopicCreation: false,
        sessionTimeout: 10_000,
        heartbeatInterval: 1000,
        retry: { retries: 2 },
      });
      let visited = 0;
      const blocked = new Set<number>();
      // Once settled (done, or failed), no further record is visited: kafkajs may still
      // hand over batches until the consumer is disconnected.
      let settled = false;
      let settle: (error?: unknown) => void = () => {};
      const done = new Promise<void>((resolve, reject) => {
        settle = (error?: unknown) => {
          settled = true;
          if (error === undefined) resolve();
          else reject(error);
        };
      });
      // A replay visits nothing until it knows it joined the group alone; a later join (a
      // rebalance: another member came) stops it. What it replayed and committed stays done.
      let joins = 0;
      let alone: Promise<void> = Promise.resolve();
      if (options.removing) {
        let joined: (error?: unknown) => void = () => {};
        alone = new Promise<void>((resolve, reject) => {
          joined = (error?: unknown) => (error === undefined ? resolve() : reject(error));
        });
        alone.catch(() => {});
        consumer.on(consumer.events.GROUP_JOIN, () => {
          joins++;
          if (joins > 1) {
            settle(busyGroupError(groupId, topic, 'another member joined it during the replay; stopped'));
            return;
          }
          refuseBusyGroup(admin, groupId, topic, 1).then(
            () => joined(),
            (error: unknown) => {
              joined(error);
              settle(error);
            },
          );
        });
      }
      const finish = (partition: number) => {
        start.delete(partition);
        if (start.size === 0) settle();
      };
      try {
        await consumer.connect();
        await consumer.subscribe({ topic, fromBeginning: true });
        consumer.on(consumer.events.CRASH, (event) => settle(event.payload.error));
        await consumer.run({
          autoCommit: false,
          eachBatch: async ({ batch, heartbeat, isRunning, isStale }) => {
            const partition = batch.partition;
            const from = start.get(partition);
            const until = end.get(partition);
            if (from === undefined || until === undefined) return;
            try {
              await alone;
              for (const message of batch.messages) {
                if (settled || !isRunning() || isStale()) return;
                const offset = BigInt(message.offset);
                if (offset < from) continue;
                if (offset >= until) break;
                if (options.limit !== undefined && visited >= options.limit) {
                  start.clear();
                  settle();
                  return;
                }
                visited++;
                const entry = kafkaEntry(partition, message);
                const result = await visit(entry, () =>
                  replayRecord(message, entry.destination as Destination, entry.replays),
                );
                if (result === 'keep') blocked.add(partition);
                else if (options.removing && !blocked.has(partition)) {
                  await consumer.commitOffsets([{ topic, partition, offset: (offset + 1n).toString() }]);
                }
                await heartbeat();
              }
              if (BigInt(batch.lastOffset()) + 1n >= until) finish(partition);
            } catch (error) {
              // A commit refused because the group rebalanced under the replay: another
              // member came. The record was published; the next run publishes it again, a
              // duplicate the inbox skips.
              settle(
                isRebalanced(error)
                  ? busyGroupError(groupId, topic, 'another member joined it during the replay; stopped')
                  : error,
              );
            }
          },
        });
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          done,
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () =>
                reject(
                  new UnreachableError(
                    `Reading topic ${JSON.stringify(topic)} did not finish within ${WALK_TIMEOUT_MS / 1000} s.`,
                    undefined,
                  ),
                ),
              WALK_TIMEOUT_MS,
            );
          }),
        ]).finally(() => clearTimeout(timer));
      } finally {
        await consumer.disconnect().catch(() => {});
      }
    },
  };
}

function kafkaEntry(partition: number, message: KafkaMessage): DlqEntry {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    const text = headerText(value);
    if (text !== undefined) headers[name] = text;
  }
  const topic = headers[DEAD_LETTER_HEADERS.originalTopic];
  const originalPartition = headers[DEAD_LETTER_HEADERS.originalPartition];
  const destination: Destination | undefined =
    topic === undefined
      ? undefined
      : { kind: 'kafka', topic, partition: originalPartition === undefined ? undefined : Number(originalPartition) };
  return entryFromHeaders(`${partition}/${message.offset}`, headers, message.value ?? Buffer.alloc(0), destination);
}

/**
 * The longest a replay waits for the members of its group to leave before refusing: a
 * replay killed a moment ago stays a member until its session times out (10 s, below); a
 * running replay, or a consumer using the group, stays.
 */
const BUSY_GROUP_WAIT_MS = 15_000;

/** Refuses to replay while the CLI's group has more than `self` members (another replay, or a consumer using the group). */
async function refuseBusyGroup(
  admin: ReturnType<Kafka['admin']>,
  groupId: string,
  topic: string,
  self = 0,
): Promise<void> {
  const deadline = Date.now() + (self === 0 ? BUSY_GROUP_WAIT_MS : 0);
  for (;;) {
    const { groups } = await admin.describeGroups([groupId]);
    const members = groups[0]?.members.length ?? 0;
    if (members <= self) return;
    if (Date.now() >= deadline) {
      throw busyGroupError(
        groupId,
        topic,
        `it has ${members - self} other member(s): another replay of the topic is running, or a consumer uses the group`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Kafka's answers to a member whose group rebalanced without it (or is rebalancing). */
const REBALANCED = new Set(['REBALANCE_IN_PROGRESS', 'UNKNOWN_MEMBER_ID', 'ILLEGAL_GENERATION']);

function isRebalanced(error: unknown): boolean {
  for (let e = error; e !== undefined && e !== null; e = (e as { cause?: unknown }).cause) {
    if (REBALANCED.has(String((e as { type?: unknown }).type))) return true;
    if ((e as { cause?: unknown }).cause === e) break;
  }
  return false;
}

function busyGroupError(groupId: string, topic: string, why: string): CliError {
  return new CliError(
    'INBOXKIT_CLI_BUSY',
    `Not replaying topic ${JSON.stringify(topic)} as consumer group ${JSON.stringify(groupId)}: ${why}. Run it again once that has ended.`,
  );
}
