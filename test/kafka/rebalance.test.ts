// A second consumer joins the group mid-run: the partitions are shared out again (paused
// partitions, offsets and crash-loop windows follow the assignment) and the totals stay exact.
import type { KafkaInboxEvents } from '@inboxkit/kafka';
import { describe, expect, it } from 'vitest';
import { seedDuplicateCharges, setUpKafkaFile } from './support/file-setup.ts';
import {
  ledgerHandlers,
  ledgerTotals,
  type RunningConsumer,
  startInboxConsumer,
  testInbox,
} from './support/inbox-consumer.ts';
import { sleep, topicSize, waitFor, waitForCommittedToEnd } from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_rebalance');

describe.each(['eachMessage', 'eachBatch'] as const)('%s', (mode) => {
  it('a second consumer joining mid-run takes over partitions; every id is applied exactly once', async () => {
    const { t, kit } = setup;
    const { topic, groupId, distinct } = await seedDuplicateCharges(setup, {
      topic: `rebalance-${mode}`,
      group: 'rebalance',
      prefix: `r-${mode}`,
      total: 4000,
    });

    // Slow enough that the run is far from over when the second consumer has joined.
    const handlers = ledgerHandlers(mode, {
      before: () => sleep(mode === 'eachMessage' ? 1 : 60),
      maxBatchSize: 40,
    });
    const settled = [0, 0];
    const assigned: KafkaInboxEvents['assigned'][][] = [[], []];
    const consumers: RunningConsumer[] = [];
    let firstAssignment: { partitions: number[] }[] | undefined;
    let lastAssignment: { partitions: number[] }[][] = [];
    const start = async (index: number) => {
      const running = await startInboxConsumer(kit.kafka, topic, groupId, {
        ...handlers,
        inbox: testInbox(t.db, `rebalance-${mode}`),
        kafka: kit.kafka,
      });
      running.control.on('settled', () => {
        settled[index] = (settled[index] ?? 0) + 1;
      });
      running.control.on('assigned', (event) => assigned[index]?.push(event));
      consumers.push(running);
    };
    try {
      await start(0);
      firstAssignment = consumers[0]?.control.assignment();
      await waitFor(async () => (await ledgerTotals(t.db)).rows >= 600, { what: 'the first consumer to process 600' });
      await start(1);
      await waitFor(() => (settled[1] ?? 0) > 0, { what: 'the second consumer to settle a record', timeoutMs: 30_000 });
      const rowsWhenJoined = (await ledgerTotals(t.db)).rows;
      expect(rowsWhenJoined).toBeLessThan(distinct);
      await waitForCommittedToEnd(kit.admin, groupId, topic);
      lastAssignment = consumers.map((c) => c.control.assignment());
    } finally {
      for (const running of consumers) await running.control.close();
    }
    expect(await ledgerTotals(t.db)).toEqual({ rows: distinct, distinct, twice: [] });
    expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
    // The first consumer, which had all four partitions, was assigned again when the second
    // joined; they shared the four.
    const partitionsOf = (assignment: { partitions: number[] }[] | undefined) =>
      (assignment ?? []).reduce((n, a) => n + a.partitions.length, 0);
    expect(partitionsOf(firstAssignment)).toBe(4);
    expect(assigned[0]?.length).toBeGreaterThanOrEqual(1);
    const [first, second] = [partitionsOf(assigned[0]?.at(-1)?.assignment), partitionsOf(lastAssignment[1])];
    expect(first).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(0);
    expect(first + second).toBe(4);
    expect(settled[0]).toBeGreaterThan(0);
    expect(settled[1]).toBeGreaterThan(0);
  });
});
