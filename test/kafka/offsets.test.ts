// dedup: 'offsets' and 'offsets+ids' (Kafka offsets stored in Postgres), in the test process:
// a rebalance between two consumers, dead letters whose offsets are stored with them (a
// group whose Kafka offsets were reset does not apply or dead-letter anything again), and a
// message produced twice, caught with ids and not without.
import { NonRetryableError } from '@inboxkit/core';
import { type KafkaDedup, migrateKafkaOffsets } from '@inboxkit/kafka';
import { sql } from 'kysely';
import { beforeAll, describe, expect, it } from 'vitest';
import { seedDuplicateCharges, setUpKafkaFile } from './support/file-setup.ts';
import {
  type ChargeMessage,
  consumeToEnd,
  ledgerHandlers,
  ledgerTotals,
  type RunningConsumer,
  startInboxConsumer,
  testInbox,
} from './support/inbox-consumer.ts';
import {
  charge,
  createFreshTopic,
  produce,
  readTopic,
  sleep,
  topicSize,
  waitFor,
  waitForCommittedToEnd,
} from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_offsets');
beforeAll(async () => {
  const { error } = await migrateKafkaOffsets(setup.t.db);
  if (error) throw error;
});

/** The stored next offsets of a group's topic, by partition. */
async function storedOffsets(groupId: string, topic: string): Promise<Record<number, string>> {
  const { rows } = await sql<{ partition: number; next_offset: string }>`
    SELECT partition, next_offset::text AS next_offset FROM kafka_offsets WHERE group_id = ${groupId} AND topic = ${topic}`.execute(
    setup.t.db,
  );
  return Object.fromEntries(rows.map((r) => [r.partition, r.next_offset]));
}

describe('migrateKafkaOffsets', () => {
  it('migrates another table from several processes at once: one applies it, the others find it done', async () => {
    const results = await Promise.all([1, 2, 3].map(() => migrateKafkaOffsets(setup.t.db, { table: 'positions' })));
    for (const result of results) expect(result.error).toBeUndefined();
    expect(results.flatMap((r) => r.results ?? []).filter((r) => r.status === 'Success')).toHaveLength(1);
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM positions`.execute(setup.t.db);
    expect(rows[0]?.n).toBe('0');
  });
});

describe.each(['eachMessage', 'eachBatch'] as const)('%s', (mode) => {
  it('dedup offsets: a second consumer joining mid-run takes over partitions; each record applied once', async () => {
    const { t, kit } = setup;
    const { topic, groupId } = await seedDuplicateCharges(setup, {
      topic: `offsets-rebalance-${mode}`,
      group: 'offsets-rebalance',
      prefix: `or-${mode}`,
      total: 2000,
    });
    const handlers = ledgerHandlers(mode, {
      before: () => sleep(mode === 'eachMessage' ? 1 : 60),
      maxBatchSize: 40,
    });
    const settled = [0, 0];
    const consumers: RunningConsumer[] = [];
    const start = async (index: number) => {
      const running = await startInboxConsumer(kit.kafka, topic, groupId, {
        ...handlers,
        dedup: 'offsets',
        inbox: testInbox(t.db, `offsets-rebalance-${mode}`),
        kafka: kit.kafka,
      });
      running.control.on('settled', () => {
        settled[index] = (settled[index] ?? 0) + 1;
      });
      consumers.push(running);
    };
    try {
      await start(0);
      await waitFor(async () => (await ledgerTotals(t.db)).rows >= 300, { what: 'the first consumer to apply 300' });
      await start(1);
      await waitFor(() => (settled[1] ?? 0) > 0, { what: 'the second consumer to settle a record', timeoutMs: 30_000 });
      await waitForCommittedToEnd(kit.admin, groupId, topic);
    } finally {
      for (const running of consumers) await running.control.close();
    }
    const records = await topicSize(kit.admin, topic);
    expect(await ledgerTotals(t.db)).toEqual({ rows: records, distinct: records, twice: [] });
    expect(settled[0]).toBeGreaterThan(0);
    expect(settled[1]).toBeGreaterThan(0);
  });

  it.each(['offsets', 'offsets+ids'] as const)(
    'dedup %s: dead letters move the stored offset; a group whose Kafka offsets were reset applies nothing again',
    async (dedup) => {
      const { t, kit } = setup;
      await t.db.deleteFrom('ledger').execute();
      const { topic, groupId } = await createFreshTopic(kit.admin, {
        topic: `offsets-dlq-${mode}`,
        group: 'offsets-dlq',
        partitions: 1,
      });
      await produce(
        kit.producer,
        topic,
        Array.from({ length: 30 }, (_, i) => charge(`od-${i}`, i)),
      );
      const poison = new Set(['od-7', 'od-8', 'od-29']);
      const handlers = ledgerHandlers(mode, {
        before: (messages) => {
          if (messages.some((m: ChargeMessage) => poison.has(m.value.id))) throw new NonRetryableError('poison');
        },
        maxBatchSize: 10,
      });
      const options = {
        ...handlers,
        dedup,
        messageId: { header: 'message-id' },
        inbox: testInbox(t.db, `offsets-dlq-${mode}-${dedup}`),
        kafka: kit.kafka,
      } as const;
      await consumeToEnd(kit, topic, groupId, options);
      expect(await ledgerTotals(t.db)).toEqual({ rows: 27, distinct: 27, twice: [] });
      expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(3);
      // The last record was dead-lettered: its offset was stored with its dead letter.
      expect(await storedOffsets(groupId, topic)).toEqual({ 0: '30' });

      // Kafka's committed offsets go back to the start with nothing after the stored offset:
      // the consumer seeks there and commits it to Kafka too (for lag tools), though no later
      // record will ever move it (consumeToEnd waits for Kafka's committed offset at the end).
      await kit.admin.resetOffsets({ groupId, topic, earliest: true });
      let replayed = 0;
      await consumeToEnd(kit, topic, groupId, options, (control) =>
        control.on('settled', () => {
          replayed++;
        }),
      );
      expect(replayed).toBe(0);

      // Kafka's committed offsets go back to the start: they are not trusted. The consumer
      // seeks to the stored offset; only a new record is applied.
      await kit.admin.resetOffsets({ groupId, topic, earliest: true });
      await produce(kit.producer, topic, [charge('od-new', 1)]);
      let settled = 0;
      await consumeToEnd(kit, topic, groupId, options, (control) =>
        control.on('settled', () => {
          settled++;
        }),
      );
      // Sought past the 30 records, not handed them to skip.
      expect(settled).toBe(1);
      expect(await ledgerTotals(t.db)).toEqual({ rows: 28, distinct: 28, twice: [] });
      expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(3);
      expect(await storedOffsets(groupId, topic)).toEqual({ 0: '31' });
    },
  );

  it('dedup offsets+ids: the same id with other content is dead-lettered as a conflict, and its offset stored with it', async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, groupId } = await createFreshTopic(kit.admin, {
      topic: `offsets-conflict-${mode}`,
      group: 'offsets-conflict',
      partitions: 1,
    });
    await produce(kit.producer, topic, [charge('cf-0', 100), charge('cf-1'), charge('cf-0', 999), charge('cf-2')]);
    await consumeToEnd(kit, topic, groupId, {
      ...ledgerHandlers(mode),
      dedup: 'offsets+ids',
      inbox: testInbox(t.db, `offsets-conflict-${mode}`),
      kafka: kit.kafka,
    });
    expect(await ledgerTotals(t.db)).toEqual({ rows: 3, distinct: 3, twice: [] });
    const dlq = await readTopic(kit.kafka, `${topic}.dlq`, 1);
    expect(dlq.map((r) => r.headers['x-inboxkit-reason'])).toEqual(['payload_conflict']);
    expect(await storedOffsets(groupId, topic)).toEqual({ 0: '4' });
  });

  it.each([
    ['offsets', ['pd-0']],
    ['offsets+ids', []],
  ] as [KafkaDedup, string[]][])(
    'dedup %s: a message produced twice (two offsets) is applied %j twice',
    async (dedup, twice) => {
      const { t, kit } = setup;
      await t.db.deleteFrom('ledger').execute();
      const { topic, groupId } = await createFreshTopic(kit.admin, {
        topic: `offsets-produced-twice-${mode}`,
        group: 'offsets-produced-twice',
        partitions: 1,
      });
      const records = [charge('pd-0'), charge('pd-1'), charge('pd-0'), charge('pd-2')];
      await produce(kit.producer, topic, records);
      await consumeToEnd(kit, topic, groupId, {
        ...ledgerHandlers(mode),
        dedup,
        // The producer's id, so that the ledger names the charge (with 'offsets' it is not claimed).
        messageId: { header: 'message-id' },
        inbox: testInbox(t.db, `offsets-produced-twice-${mode}-${dedup}`),
        kafka: kit.kafka,
      });
      const totals = await ledgerTotals(t.db);
      expect(totals.twice).toEqual(twice);
      expect(totals.distinct).toBe(3);
      expect(await storedOffsets(groupId, topic)).toEqual({ 0: '4' });
    },
  );
});
