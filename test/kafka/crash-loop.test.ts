// Crash loop (docs/design.md, "Crash loops"): a record whose handler kills its own process every time.
// The test restarts the consumer until that record is in the dead-letter topic; it must get
// there after `crashLoopLimit` counted attempts, and no other record may.
import { DEAD_LETTER_HEADERS } from '@inboxkit/kafka';
import { describe, expect, inject, it } from 'vitest';
import { startChildConsumer } from './support/child-consumer.ts';
import { setUpKafkaFile } from './support/file-setup.ts';
import { ledgerTotals } from './support/inbox-consumer.ts';
import {
  charge,
  createFreshTopic,
  produce,
  readTopic,
  type TestRecord,
  waitForCommittedToEnd,
} from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_crash_loop');

describe('a record that kills the process every time', () => {
  it('is dead-lettered after crashLoopLimit attempts across restarts, and no other record is', async () => {
    const { t, kit } = setup;
    const { topic, groupId } = await createFreshTopic(kit.admin, {
      topic: 'crash-loop',
      group: 'crash-loop',
      partitions: 2,
    });
    const poison = 'cl-poison';
    // Partition 0: 200 records, the poison, 200 more. Partition 1: 200 records. With batches
    // of 50, the first run meets the poison in a batch (after the 50-record window of
    // suspects): it dies without an attempt counted. Later runs meet it as a suspect.
    const records: TestRecord[] = [
      ...Array.from({ length: 200 }, (_, i) => ({ ...charge(`cl-a${i}`), partition: 0 })),
      { ...charge(poison), partition: 0 },
      ...Array.from({ length: 200 }, (_, i) => ({ ...charge(`cl-b${i}`), partition: 0 })),
      ...Array.from({ length: 200 }, (_, i) => ({ ...charge(`cl-c${i}`), partition: 1 })),
    ];
    await produce(kit.producer, topic, records);
    const crashLoopLimit = 2;
    const base = {
      brokers: inject('kafkaBrokers'),
      databaseUrl: t.url,
      topic,
      groupId,
      consumer: 'crash-loop',
      mode: 'eachBatch' as const,
      maxBatchSize: 50,
      crashLoopLimit,
      killOnHandlerId: poison,
    };

    let kills = 0;
    for (let run = 1; run <= crashLoopLimit + 3; run++) {
      const child = startChildConsumer(base);
      const finished = waitForCommittedToEnd(kit.admin, groupId, topic, 60_000).then(() => 'done' as const);
      const outcome = await Promise.race([child.exited.then(() => 'exited' as const), finished]);
      if (outcome === 'done') {
        child.kill('SIGTERM');
        expect(await child.exited).toEqual({ code: 0, signal: null });
        break;
      }
      expect((await child.exited).signal).toBe('SIGKILL');
      kills++;
    }
    // Run 1 died in a batch (no attempt counted), runs 2..limit+1 as a suspect (attempts 1..limit),
    // run limit+2 dead-letters it without running the handler.
    expect(kills).toBe(crashLoopLimit + 1);

    const dead = await readTopic(kit.kafka, `${topic}.dlq`, 1);
    expect(dead).toHaveLength(1);
    expect(dead[0]?.headers).toMatchObject({
      'message-id': poison,
      [DEAD_LETTER_HEADERS.reason]: 'crash_loop',
      [DEAD_LETTER_HEADERS.errorName]: 'CrashLoopError',
      [DEAD_LETTER_HEADERS.errorCode]: 'INBOX_CRASH_LOOP',
      [DEAD_LETTER_HEADERS.attempts]: String(crashLoopLimit),
      [DEAD_LETTER_HEADERS.originalTopic]: topic,
      [DEAD_LETTER_HEADERS.originalPartition]: '0',
      [DEAD_LETTER_HEADERS.originalOffset]: '200',
    });
    expect(await ledgerTotals(t.db)).toEqual({ rows: 600, distinct: 600, twice: [] });
    const poisonRows = await t.db.selectFrom('ledger').selectAll().where('charge_id', '=', poison).execute();
    expect(poisonRows).toHaveLength(0);
  });
});
