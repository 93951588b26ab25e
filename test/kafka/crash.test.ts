// A consumer process killed with SIGKILL in the middle of a run, then restarted in the same
// group: no id lost, none applied twice. The second run is killed between the database
// commit of a record and the commit of its offset.

import { describe, expect, inject, it } from 'vitest';
import { startChildConsumer } from './support/child-consumer.ts';
import { seedDuplicateCharges, setUpKafkaFile } from './support/file-setup.ts';
import { RUNNING_METADATA } from './support/handover-metadata.ts';
import { ledgerTotals } from './support/inbox-consumer.ts';
import { topicSize, waitFor, waitForCommittedToEnd } from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_crash');

describe.each(['eachBatch', 'eachMessage'] as const)('%s', (mode) => {
  it('SIGKILL mid-run, SIGKILL between database commit and offset commit, restart: every id applied exactly once', async () => {
    const { t, kit } = setup;
    const { topic, groupId, distinct } = await seedDuplicateCharges(setup, {
      topic: `crash-${mode}`,
      group: 'crash',
      prefix: `k-${mode}`,
      total: 4000,
    });
    const base = {
      brokers: inject('kafkaBrokers'),
      databaseUrl: t.url,
      topic,
      groupId,
      consumer: `crash-${mode}`,
      mode,
      maxBatchSize: 100,
      // Slow enough that the kills land mid-run (a bulk insert of 100 rows takes milliseconds).
      delayMs: mode === 'eachBatch' ? 40 : 0,
    };
    const rows = async () => (await ledgerTotals(t.db)).rows;

    // Run 1: killed while it works.
    const first = startChildConsumer(base);
    await first.running;
    await waitFor(async () => (await rows()) >= 600, { what: 'run 1 to process 600 records' });
    first.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    const afterFirst = await rows();
    expect(afterFirst).toBeLessThan(distinct);
    // It left the partitions it worked on marked as being processed (the others have no
    // committed offset yet): the next owner opens the crash-loop window.
    const [marks] = await kit.admin.fetchOffsets({ groupId, topics: [topic] });
    const worked = (marks?.partitions ?? []).filter((p) => Number(p.offset) >= 0);
    expect(worked.length).toBeGreaterThan(0);
    expect(new Set(worked.map((p) => p.metadata))).toEqual(new Set([RUNNING_METADATA]));

    // Run 2: kills itself right after a record's transaction committed, before its offset is
    // marked (let alone committed).
    const second = startChildConsumer({ ...base, killAfterProcessed: 400 });
    expect((await second.exited).signal).toBe('SIGKILL');
    const afterSecond = await rows();
    expect(afterSecond).toBeGreaterThan(afterFirst);
    expect(afterSecond).toBeLessThan(distinct);

    // Run 3: to the end, then a graceful stop.
    const third = startChildConsumer(base);
    await third.running;
    await waitForCommittedToEnd(kit.admin, groupId, topic);
    third.kill('SIGTERM');
    expect(await third.exited).toEqual({ code: 0, signal: null });

    expect(await ledgerTotals(t.db)).toEqual({ rows: distinct, distinct, twice: [] });
    expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
  });
});
