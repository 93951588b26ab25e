// Consumers killed with SIGKILL (docs/design.md, "Crash loops" and "Tests and services"): mid-run, between a commit
// and its ack, and by a message that kills the process every time it runs (crash loop).
// Each consumer is a process of its own (support/consumer-child.ts).
import { DEAD_LETTER_HEADERS } from '@inboxkit/rabbitmq';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { amqpUrl, declareQueueWithDlq, messagesWithDuplicates, waitFor } from './support/broker.ts';
import { type ChildConsumer, startChildConsumer, stopChild } from './support/child-consumer.ts';
import { setUpRabbitFile } from './support/file-setup.ts';
import { appliedTwice, inboxKeys, ledgerCounts } from './support/ledger.ts';

const setup = setUpRabbitFile('crash');
const children: ChildConsumer[] = [];

afterEach(async () => {
  await Promise.all(children.splice(0).map((child) => stopChild(child, 2_000)));
});

function start(queue: string, consumer: string, env: Record<string, string> = {}): ChildConsumer {
  const child = startChildConsumer({
    AMQP_URL: amqpUrl(),
    DATABASE_URL: setup.t.url,
    QUEUE: queue,
    CONSUMER: consumer,
    ...env,
  });
  children.push(child);
  return child;
}

describe('a consumer killed with SIGKILL', () => {
  it('mid-run, then restarted: no id lost, none applied twice', async () => {
    const { t, broker } = setup;
    const queue = await declareQueueWithDlq(broker, 'kill');
    const { messages, distinct } = messagesWithDuplicates('kill', 3_000);
    await broker.publish(queue, messages);

    const first = start(queue, queue, { PREFETCH: '50', HANDLER_DELAY_MS: '1' });
    await first.ready();
    await waitFor('a third of the ids applied', async () => (await ledgerCounts(t.db, 'kill-')).distinct >= 1_000);
    first.child.kill('SIGKILL');
    expect(await first.exited).toMatchObject({ signal: 'SIGKILL' });
    const atKill = await ledgerCounts(t.db, 'kill-');
    expect(atKill.distinct).toBeLessThan(distinct); // it died with work left

    const second = start(queue, queue, { PREFETCH: '50' });
    await second.ready();
    await waitFor(
      'every id applied',
      async () => (await ledgerCounts(t.db, 'kill-')).distinct === distinct,
      90_000,
      100,
    );
    await waitFor('the queue drained', async () => (await broker.count(queue)) === 0);
    await stopChild(second);
    expect(await second.exited).toMatchObject({ code: 0 });

    expect(await ledgerCounts(t.db, 'kill-')).toEqual({ rows: distinct, distinct });
    expect(await appliedTwice(t.db, 'kill-')).toEqual([]);
    expect(await inboxKeys(t.db, queue)).toEqual({ processed: distinct, deadLettered: 0 });
    expect(await broker.count(queue)).toBe(0);
    expect(await broker.count(`${queue}.dlq`)).toBe(0);
  });

  it('between the commit and the ack: the redelivery is acked as a duplicate, applied once', async () => {
    const { t, broker } = setup;
    const queue = await declareQueueWithDlq(broker, 'commitack');
    const ids = Array.from({ length: 200 }, (_, i) => `ca-${i}`);
    await broker.publish(
      queue,
      ids.map((id, i) => ({ id, body: { amountCents: i + 1 } })),
    );

    const first = start(queue, queue, { PREFETCH: '10', KILL_AFTER_COMMIT_OF: 'ca-100' });
    expect(await first.exited).toMatchObject({ signal: 'SIGKILL' });
    expect(first.output()).toContain('committed ca-100');
    // Committed, never acked: the next consumer gets it again and finds it a duplicate (below).
    expect(await ledgerCounts(t.db, 'ca-100')).toEqual({ rows: 1, distinct: 1 });
    expect((await ledgerCounts(t.db, 'ca-')).distinct).toBeLessThan(ids.length); // it died with work left

    const second = start(queue, queue, { PREFETCH: '10' });
    await second.ready();
    await waitFor('every id applied', async () => (await ledgerCounts(t.db, 'ca-')).distinct === ids.length);
    await waitFor('the queue drained', async () => (await broker.count(queue)) === 0);
    await waitFor('the redelivery of ca-100 seen as a duplicate', () => /^duplicate ca-100$/m.test(second.output()));
    await stopChild(second);

    expect(await ledgerCounts(t.db, 'ca-')).toEqual({ rows: ids.length, distinct: ids.length });
    expect(await broker.count(queue)).toBe(0);
    expect(await broker.count(`${queue}.dlq`)).toBe(0);
  });
});

describe('crash loop', () => {
  it('a message that kills its process every time is dead-lettered after crashLoopLimit attempts; no other is', async () => {
    const { t, broker } = setup;
    const queue = await declareQueueWithDlq(broker, 'crashloop');
    const ids = Array.from({ length: 40 }, (_, i) => `cl-${i}`);
    const poison = 'cl-17';
    await broker.publish(
      queue,
      ids.map((id, i) => ({ id, body: { amountCents: i + 1 } })),
    );

    const limit = 3;
    let crashes = 0;
    let runs = 0;
    const done = async () =>
      (await broker.count(`${queue}.dlq`)) === 1 &&
      (await ledgerCounts(t.db, 'cl-')).distinct === ids.length - 1 &&
      (await broker.count(queue)) === 0;
    // Restart the consumer each time it dies, as a supervisor would.
    while (runs < 8) {
      runs++;
      const child = start(queue, queue, { PREFETCH: '5', CRASH_ON: poison, CRASH_LOOP_LIMIT: String(limit) });
      let exited = false;
      void child.exited.then(() => {
        exited = true;
      });
      await waitFor('the consumer to die or finish', async () => exited || (await done()), 30_000, 100);
      if (!exited) {
        await stopChild(child);
        break;
      }
      expect(child.output()).toContain(`crashing on ${poison}`);
      crashes++;
    }

    // Once as a new delivery, then `limit` times as a counted suspect; the next is refused.
    expect(crashes).toBe(limit + 1);
    const dead = await broker.drain(`${queue}.dlq`);
    expect(dead.map((m) => m.properties.messageId)).toEqual([poison]);
    expect(dead[0]?.properties.headers).toMatchObject({
      [DEAD_LETTER_HEADERS.reason]: 'crash_loop',
      [DEAD_LETTER_HEADERS.errorName]: 'CrashLoopError',
      [DEAD_LETTER_HEADERS.errorCode]: 'INBOX_CRASH_LOOP',
      [DEAD_LETTER_HEADERS.attempts]: limit,
    });
    expect(await ledgerCounts(t.db, 'cl-')).toEqual({ rows: ids.length - 1, distinct: ids.length - 1 });
    expect(await ledgerCounts(t.db, poison)).toEqual({ rows: 0, distinct: 0 });
    expect(await inboxKeys(t.db, queue)).toEqual({ processed: ids.length - 1, deadLettered: 1 });
    const { rows } = await sql<{ n: string }>`
      SELECT count(*) AS n FROM processed_messages_attempts WHERE consumer = ${queue}`.execute(t.db);
    expect(Number(rows[0]?.n)).toBe(0); // innocent neighbours' attempts were cleared
  });
});
