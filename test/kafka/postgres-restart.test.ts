// Postgres restarted mid-run (a private cluster: restarting the shared server would break the
// test files running beside this one). The consumer pauses the partitions whose records could
// not be settled, seeks back, resumes after the backoff, and the totals are exact: nothing
// skipped, nothing dead-lettered, nothing applied twice.
import type { KafkaInboxEvents } from '@inboxkit/kafka';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';
import { type PrivatePostgres, startPrivatePostgres } from '../support/private-postgres.ts';
import {
  ledgerBulkHandler,
  ledgerHandler,
  ledgerTotals,
  startInboxConsumer,
  testInbox,
} from './support/inbox-consumer.ts';
import {
  chargesWithDuplicates,
  createTopics,
  type KafkaTestKit,
  kafkaTestKit,
  produce,
  sleep,
  topicSize,
  uniqueName,
  waitFor,
  waitForCommittedToEnd,
} from './support/kafka-testkit.ts';

let server: PrivatePostgres;
let t: TestDatabase;
let kit: KafkaTestKit;
beforeAll(async () => {
  server = await startPrivatePostgres();
  t = await createTestDatabase('kafka_pg_restart', { url: server.url });
  kit = await kafkaTestKit(inject('kafkaBrokers'));
});
afterAll(async () => {
  await kit?.dispose();
  await t?.dispose().catch(() => {});
  server?.dispose();
});

describe.each(['eachMessage', 'eachBatch'] as const)('%s', (mode) => {
  it('Postgres stopped mid-run: partitions pause, resume once it is back, totals exact', async () => {
    await t.db.deleteFrom('ledger').execute();
    const topic = uniqueName(`pg-restart-${mode}`);
    const groupId = uniqueName('pg-restart');
    await createTopics(kit.admin, [
      { topic, numPartitions: 4 },
      { topic: `${topic}.dlq`, numPartitions: 1 },
    ]);
    const records = chargesWithDuplicates(`pg-${mode}`, 3000, 0.3);
    const distinct = new Set(records.map((r) => r.id)).size;
    await produce(kit.producer, topic, records);
    const paused: KafkaInboxEvents['paused'][] = [];
    const resumed: KafkaInboxEvents['resumed'][] = [];
    const { control } = await startInboxConsumer(kit.kafka, topic, groupId, {
      ...(mode === 'eachMessage'
        ? { mode, handler: ledgerHandler }
        : { mode, bulkHandler: ledgerBulkHandler, maxBatchSize: 50 }),
      inbox: testInbox(t.db, `pg-restart-${mode}`),
      producer: kit.producer,
      admin: kit.admin,
      pause: { minDelayMs: 300, maxDelayMs: 1000 },
    });
    control.on('paused', (event) => paused.push(event));
    control.on('resumed', (event) => resumed.push(event));
    try {
      await waitFor(async () => (await ledgerTotals(t.db)).rows >= 400, { what: '400 records processed' });
      server.stop();
      await waitFor(() => paused.length > 0, { what: 'a partition to pause', timeoutMs: 30_000 });
      await sleep(2000);
      const pausedWhileDown = control.paused();
      expect(pausedWhileDown.length).toBeGreaterThan(0);
      server.start();
      await waitForCommittedToEnd(kit.admin, groupId, topic);
    } finally {
      await control.shutdown();
    }
    expect(paused.every((event) => event.reason === 'database_unavailable')).toBe(true);
    expect(paused[0]?.error).toMatchObject({ code: 'INBOX_DATABASE_UNAVAILABLE' });
    expect(resumed.length).toBeGreaterThan(0);
    expect(await ledgerTotals(t.db)).toEqual({ rows: distinct, distinct, twice: [] });
    expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
  });
});
