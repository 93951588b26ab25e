// dedup: 'offsets' (Kafka offsets stored in Postgres) against crashes and a zombie owner,
// with consumer child processes: a SIGKILL between the database commit and the Kafka offset
// commit, and an owner stopped (SIGSTOP) inside its transaction while the group hands its
// partitions to another member, then resumed (SIGCONT). No record applied twice, none lost.
import { migrateKafkaOffsets } from '@inboxkit/kafka';
import { sql } from 'kysely';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { type ChildConfig, startChildConsumer } from './support/child-consumer.ts';
import { seedDuplicateCharges, setUpKafkaFile } from './support/file-setup.ts';
import { ledgerTotals } from './support/inbox-consumer.ts';
import { sleep, topicSize, waitFor, waitForCommittedToEnd } from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_offsets_crash');
beforeAll(async () => {
  const { error } = await migrateKafkaOffsets(setup.t.db);
  if (error) throw error;
});

/** What the ledger must hold at the end: with ids, one row per charge; with offsets alone, one per record. */
async function expectExactlyOnce(
  dedup: 'offsets' | 'offsets+ids',
  topic: string,
  groupId: string,
  consumer: string,
  distinct: number,
): Promise<void> {
  const { t, kit } = setup;
  const records = await topicSize(kit.admin, topic);
  const expected = dedup === 'offsets' ? records : distinct;
  expect(await ledgerTotals(t.db)).toEqual({ rows: expected, distinct: expected, twice: [] });
  expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
  // One row per partition holds the position: the end of each partition.
  const { rows } = await sql<{ partition: number; next_offset: string }>`
    SELECT partition, next_offset::text AS next_offset FROM kafka_offsets WHERE group_id = ${groupId} AND topic = ${topic}
    ORDER BY partition`.execute(t.db);
  const ends = (await kit.admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition);
  expect(rows).toEqual(ends.map((p) => ({ partition: p.partition, next_offset: p.high })));
  // With offsets alone, the inbox table holds no key.
  const keys = await sql<{
    n: string;
  }>`SELECT count(*) AS n FROM processed_messages WHERE consumer = ${consumer}`.execute(t.db);
  expect(Number(keys.rows[0]?.n) > 0).toBe(dedup === 'offsets+ids');
}

describe.each([
  ['eachBatch', 'offsets'],
  ['eachMessage', 'offsets'],
  ['eachBatch', 'offsets+ids'],
] as const)('%s, dedup %s', (mode, dedup) => {
  it('SIGKILL mid-run, SIGKILL between database commit and Kafka commit, restart: each record applied once', async () => {
    const { t, kit } = setup;
    const { topic, groupId, distinct } = await seedDuplicateCharges(setup, {
      topic: `offsets-crash-${mode}`,
      group: 'offsets-crash',
      prefix: `oc-${mode}-${dedup}`,
      total: 2000,
    });
    const consumer = `offsets-crash-${mode}-${dedup}`;
    const base: ChildConfig = {
      brokers: inject('kafkaBrokers'),
      databaseUrl: t.url,
      topic,
      groupId,
      consumer,
      mode,
      dedup,
      maxBatchSize: 50,
      delayMs: mode === 'eachBatch' ? 40 : 0,
    };
    const rows = async () => (await ledgerTotals(t.db)).rows;

    const first = startChildConsumer(base);
    await first.running;
    await waitFor(async () => (await rows()) >= 300, { what: 'run 1 to apply 300 records' });
    first.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    const afterFirst = await rows();

    // Dies right after a transaction committed, before the Kafka offset is even marked: Kafka's
    // committed offset is behind the one stored in Postgres.
    const second = startChildConsumer({ ...base, killAfterProcessed: 300 });
    expect((await second.exited).signal).toBe('SIGKILL');
    const afterSecond = await rows();
    expect(afterSecond).toBeGreaterThan(afterFirst);

    const third = startChildConsumer(base);
    await third.running;
    await waitForCommittedToEnd(kit.admin, groupId, topic);
    third.kill('SIGTERM');
    expect(await third.exited).toEqual({ code: 0, signal: null });

    await expectExactlyOnce(dedup, topic, groupId, consumer, distinct);
  });
});

describe.each(['eachBatch', 'eachMessage'] as const)('%s, dedup offsets', (mode) => {
  it('an owner stopped inside its transaction, the group reassigning, a new owner, the old one resumed: each record applied once', async () => {
    const { t, kit } = setup;
    const { topic, groupId, distinct } = await seedDuplicateCharges(setup, {
      topic: `offsets-zombie-${mode}`,
      group: 'offsets-zombie',
      prefix: `oz-${mode}`,
      total: 1000,
    });
    const consumer = `offsets-zombie-${mode}`;
    const base: ChildConfig = {
      brokers: inject('kafkaBrokers'),
      databaseUrl: t.url,
      topic,
      groupId,
      consumer,
      mode,
      dedup: 'offsets',
      maxBatchSize: 50,
      // The new owner waits this long on the zombie's lock per attempt, without heartbeats:
      // well under the session timeout (6 s), or the group drops the new owner too.
      lockTimeoutMs: 1000,
    };
    // The old owner writes its rows, then waits inside its transaction; it is stopped there.
    const zombie = startChildConsumer({ ...base, stallFirstCallMs: 3000 });
    const successor = { child: undefined as ReturnType<typeof startChildConsumer> | undefined };
    try {
      await zombie.running;
      await waitFor(() => zombie.stdout().includes('"event":"in-transaction"'), {
        what: 'the first owner to be inside its transaction',
      });
      zombie.kill('SIGSTOP');
      const stalledRows = (await ledgerTotals(t.db)).rows;
      expect(stalledRows).toBe(0); // its rows are not committed

      // The group drops the stopped member; the new owner takes every partition and works
      // through those the zombie does not hold locked.
      successor.child = startChildConsumer(base);
      await successor.child.running;
      await waitFor(async () => (await ledgerTotals(t.db)).rows >= 400, {
        what: 'the new owner to apply records while the old one is stopped',
        timeoutMs: 90_000,
      });
      // The zombie's partition stays locked meanwhile: the new owner waits on the row.
      await sleep(2000);

      zombie.kill('SIGCONT');
      await waitForCommittedToEnd(kit.admin, groupId, topic);
      // Give the resumed zombie the time to commit whatever it still had, and to fail to.
      await sleep(3000);
    } finally {
      zombie.kill('SIGCONT');
      zombie.kill('SIGTERM');
      successor.child?.kill('SIGTERM');
      await zombie.exited;
      await successor.child?.exited;
    }
    await expectExactlyOnce('offsets', topic, groupId, consumer, distinct);
  });
});
