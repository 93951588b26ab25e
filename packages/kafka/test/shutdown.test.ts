// Graceful shutdown (what a SIGTERM handler calls): no new record is taken, the one in flight
// finishes, every settled offset is committed, and the member leaves the group, so the next
// consumer starts right where this one stopped, with no replay and no session-timeout wait.

import { describe, expect, it } from 'vitest';
import { setUpKafkaFile } from '../../../test/kafka/support/file-setup.ts';
import { CLEAN_METADATA } from '../../../test/kafka/support/handover-metadata.ts';
import {
  consumeToEnd,
  ledgerHandler,
  ledgerHandlers,
  ledgerTotals,
  startInboxConsumer,
  testInbox,
} from '../../../test/kafka/support/inbox-consumer.ts';
import { charge, createFreshTopic, produce, sleep } from '../../../test/kafka/support/kafka-testkit.ts';
import { gate } from '../../../test/support/gate.ts';

const setup = setUpKafkaFile('kafka_shutdown');

describe.each(['eachMessage', 'eachBatch'] as const)('%s', (mode) => {
  it('close() finishes the record in flight, commits, leaves the group; the next consumer replays nothing', async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, groupId } = await createFreshTopic(kit.admin, {
      topic: `shutdown-${mode}`,
      group: 'shutdown',
      partitions: 1,
    });
    await produce(
      kit.producer,
      topic,
      Array.from({ length: 50 }, (_, i) => charge(`s-${i}`)),
    );
    const inbox = testInbox(t.db, `shutdown-${mode}`);
    const inFlight = gate();
    const released = gate();
    // eachBatch: batches of 10 (a fresh group: no crash-loop window), [20, 30) is in flight.
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      ...ledgerHandlers(mode, {
        before: async (messages) => {
          if (messages.some((m) => m.id === 's-20')) {
            inFlight.open();
            await released.promise;
          }
        },
        maxBatchSize: 10,
      }),
      inbox,
      kafka: kit.kafka,
      commitIntervalMs: 60_000, // only the shutdown commits
    });
    await inFlight.promise;
    let stopped = false;
    const shutdown = control.close().then(() => {
      stopped = true;
    });
    expect(control.close()).toBe(control.close());
    await sleep(500);
    expect(stopped).toBe(false); // waits for the record in flight
    released.open();
    await shutdown;

    const expected = mode === 'eachMessage' ? 21 : 30;
    expect((await ledgerTotals(t.db)).rows).toBe(expected);
    const [committed] = await kit.admin.fetchOffsets({ groupId, topics: [topic] });
    expect(committed?.partitions[0]).toMatchObject({ offset: String(expected), metadata: CLEAN_METADATA });

    // The next consumer of the group starts at once (the member left) where this one stopped.
    let duplicates = 0;
    const started = Date.now();
    let firstSettledAfterMs = -1;
    const logged: string[] = [];
    const logger = {
      debug: () => {},
      info: (_: object, message?: string) => logged.push(message ?? ''),
      warn: (_: object, message?: string) => logged.push(message ?? ''),
      error: (_: object, message?: string) => logged.push(message ?? ''),
    };
    await consumeToEnd(
      kit,
      topic,
      groupId,
      { mode: 'eachMessage', handler: ledgerHandler, inbox, kafka: kit.kafka, logger },
      (control) =>
        control.on('settled', ({ outcome }) => {
          if (firstSettledAfterMs < 0) firstSettledAfterMs = Date.now() - started;
          if (outcome.status === 'duplicate') duplicates++;
        }),
    );
    expect(duplicates).toBe(0);
    // A clean handover: the next consumer read `inboxkit:clean` and skipped the crash-loop window.
    expect(logged.filter((m) => m.includes('without a clean handover'))).toEqual([]);
    expect(logged.filter((m) => m.includes('Kafka consumer closed'))).toHaveLength(1);
    expect(firstSettledAfterMs).toBeLessThan(5000); // under the 6 s session timeout
    expect(await ledgerTotals(t.db)).toEqual({ rows: 50, distinct: 50, twice: [] });
  });
});
