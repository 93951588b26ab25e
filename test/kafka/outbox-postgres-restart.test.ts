// Postgres restarted under a running Kafka relay (a private cluster: restarting the shared
// server would break the test files beside this one). The relay pauses, says why, resumes on
// its own once Postgres is back, listens again, and publishes what is enqueued after.
import { createOutbox, migrateOutbox, type RelayPauseReason } from '@inboxkit/core';
import { createKafkaRelay } from '@inboxkit/kafka';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { setUpKafkaFile } from './support/file-setup.ts';
import { createTopics, readTopic, sleep, uniqueName, waitFor } from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_outbox_pg', { privatePostgres: true });

describe('the Kafka relay while Postgres restarts', () => {
  it('pauses while Postgres is down and resumes on its own', async () => {
    const { t, kit, server } = setup;
    const migrated = await migrateOutbox(t.db);
    if (migrated.error) throw migrated.error;
    const topic = uniqueName('outbox-pg-restart');
    await createTopics(kit.admin, [{ topic, numPartitions: 1 }]);
    const producer = kit.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const outbox = createOutbox({ db: t.db });
    const relay = createKafkaRelay({
      outbox,
      producer,
      listen: { connectionString: t.url },
      pollIntervalMs: 100,
      pause: { minDelayMs: 100, maxDelayMs: 500 },
    });
    const paused: RelayPauseReason[] = [];
    let resumed = 0;
    relay.on('paused', (e) => paused.push(e.reason));
    relay.on('resumed', () => resumed++);
    const left = async () => {
      const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox`.execute(t.db);
      return rows[0]?.n ?? -1;
    };
    try {
      await outbox.enqueue(t.db, { topic, key: 'k', payload: 1, messageId: 'before-restart' });
      await waitFor(async () => (await left()) === 0, { what: 'the first message relayed', timeoutMs: 20_000 });
      server.stop();
      await waitFor(() => paused.length > 0, { what: 'the relay to pause', timeoutMs: 30_000 });
      await sleep(1000);
      server.start();
      await waitFor(() => resumed > 0, { what: 'the relay to resume', timeoutMs: 60_000 });
      await outbox.enqueue(t.db, { topic, key: 'k', payload: 2, messageId: 'after-restart' });
      await waitFor(async () => (await left()) === 0, { what: 'the second message relayed', timeoutMs: 20_000 });
    } finally {
      await relay.close();
      await producer.disconnect();
    }
    expect(new Set(paused)).toEqual(new Set(['database_unavailable']));
    const records = await readTopic(kit.kafka, topic, 2);
    expect(records.map((r) => r.headers['message-id'])).toEqual(['before-restart', 'after-restart']);
  });
});
