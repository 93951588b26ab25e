// Postgres restarted mid-run (a private cluster: restarting the shared server would break the
// test files running beside this one). The consumer pauses the partitions whose records could
// not be settled, seeks back, resumes after the backoff, and the totals are exact: nothing
// skipped, nothing dead-lettered, nothing applied twice.
import { describe, expect, it } from 'vitest';
import { seedDuplicateCharges, setUpKafkaFile } from './support/file-setup.ts';
import {
  collectControlEvents,
  ledgerHandlers,
  ledgerTotals,
  startInboxConsumer,
  testInbox,
} from './support/inbox-consumer.ts';
import { charge, produce, sleep, topicSize, waitFor, waitForCommittedToEnd } from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_pg_restart', { privatePostgres: true });

describe.each(['eachMessage', 'eachBatch'] as const)('%s', (mode) => {
  it('Postgres stopped mid-run: partitions pause, resume once it is back, totals exact', async () => {
    const { t, kit, server } = setup;
    const { topic, groupId, distinct } = await seedDuplicateCharges(setup, {
      topic: `pg-restart-${mode}`,
      group: 'pg-restart',
      prefix: `pg-${mode}`,
      total: 3000,
    });
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      ...ledgerHandlers(mode, { maxBatchSize: 50 }),
      inbox: testInbox(t.db, `pg-restart-${mode}`),
      kafka: kit.kafka,
      pause: { minDelayMs: 300, maxDelayMs: 1000 },
    });
    const { paused, resumed } = collectControlEvents(control, 'paused', 'resumed');
    try {
      await waitFor(async () => (await ledgerTotals(t.db)).rows >= 400, { what: '400 records processed' });
      server.stop();
      // Records produced while Postgres is down: a fast consumer may have settled all of the
      // seeded ones before the server went, and then nothing would have to pause.
      await produce(
        kit.producer,
        topic,
        Array.from({ length: 200 }, (_, i) => charge(`pg-${mode}-while-down-${i}`)),
      );
      await waitFor(() => paused.length > 0, { what: 'a partition to pause', timeoutMs: 30_000 });
      await sleep(2000);
      const pausedWhileDown = control.paused();
      expect(pausedWhileDown.length).toBeGreaterThan(0);
      server.start();
      await waitForCommittedToEnd(kit.admin, groupId, topic);
    } finally {
      await control.close();
    }
    expect(paused.every((event) => event.reason === 'database_unavailable')).toBe(true);
    expect(paused[0]?.error).toMatchObject({ code: 'INBOX_DATABASE_UNAVAILABLE' });
    expect(resumed.length).toBeGreaterThan(0);
    expect(await ledgerTotals(t.db)).toEqual({ rows: distinct + 200, distinct: distinct + 200, twice: [] });
    expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
  });
});
